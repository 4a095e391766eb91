//! The `grantry` command: serve, migrate, keygen, reencrypt, providers.

use std::process::ExitCode;

#[cfg(feature = "demo")]
mod demo;

use clap::{Parser, Subcommand};
use grantry_core::{KeyRing, build_providers, factories};
use grantry_server::{Config, ServerError, logging};

#[derive(Parser)]
#[command(
    name = "grantry",
    version,
    about = "OAuth 2.0 connection server: connect accounts, keep tokens encrypted and fresh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate the database and serve the HTTP API.
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Print a new random encryption key (base64 of 32 bytes).
    Keygen,
    /// Re-seal every stored token under the current GRANTRY_ENCRYPTION_KEY.
    Reencrypt,
    /// List the providers linked into this binary and whether each is enabled.
    Providers,
    /// Try the whole flow locally: a fake Atlassian, the server, a throw-away database.
    #[cfg(feature = "demo")]
    Demo,
}

fn main() -> ExitCode {
    grantry::link_providers();
    let cli = Cli::parse();
    if let Command::Keygen = cli.command {
        println!("{}", KeyRing::generate_key_base64());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), ServerError> {
    #[cfg(feature = "demo")]
    if let Command::Demo = command {
        return demo::run().await;
    }
    let config = Config::load()?;
    logging::init(&config.log_level)?;
    match command {
        Command::Serve => {
            let state = grantry_server::prepare(&config).await?;
            grantry_server::serve(&config, state, grantry_server::shutdown_signal()).await
        }
        Command::Migrate => {
            let store = grantry_server::open_store(&config).await?;
            println!("migrated {}", config.database_url);
            store.close().await;
            Ok(())
        }
        Command::Reencrypt => {
            let (store, vault) = grantry_server::open_vault(&config).await?;
            let report = vault.reencrypt().await?;
            println!(
                "re-encrypted {} connection(s) to key {}; {} already current",
                report.moved,
                vault.keys().current_key_id(),
                report.current
            );
            store.close().await;
            Ok(())
        }
        Command::Providers => {
            for factory in factories()? {
                let state = match (factory.build)(&config.providers) {
                    Ok(built) if built.is_empty() => "disabled".to_owned(),
                    Ok(built) => format!(
                        "enabled ({})",
                        built
                            .iter()
                            .map(|p| p.id().to_owned())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Err(e) => format!("misconfigured: {e}"),
                };
                println!("{:<16} {:<20} {}", factory.id, factory.name, state);
            }
            build_providers(&config.providers)?;
            Ok(())
        }
        Command::Keygen => Ok(()),
        #[cfg(feature = "demo")]
        Command::Demo => Ok(()),
    }
}
