//! The `grantry` command line, reusable by any binary that links more providers.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use grantry_core::keyring::KeyRing;
use grantry_core::provider::check_built;
use grantry_core::provider::factories;
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
    Demo {
        /// Listen on a GRANTRY_BIND that is not loopback (anyone who reaches it can sign in as
        /// the demo admin).
        #[arg(long)]
        allow_remote: bool,
    },
}

/// Runs the `grantry` command line (serve, migrate, keygen, reencrypt, providers, demo) with the
/// providers linked into the calling binary, and answers its exit code.
///
/// A binary that adds providers of its own names their crates (so the linker keeps their
/// registrations) and calls this:
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     grantry::link_providers();
///     grantry::cli::run()
/// }
/// ```
pub fn run() -> ExitCode {
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
    match runtime.block_on(execute(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> Result<(), ServerError> {
    #[cfg(feature = "demo")]
    if let Command::Demo { allow_remote } = command {
        return crate::demo::run(allow_remote).await;
    }
    let config = Config::load()?;
    logging::init(&config.log_level)?;
    match command {
        Command::Serve => {
            let state = grantry_server::prepare(&config).await?;
            let served =
                grantry_server::serve(&config, state, grantry_server::shutdown_signal()).await;
            let _ = tokio::task::spawn_blocking(logging::flush).await;
            served
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
            if report.refused > 0 {
                eprintln!(
                    "warning: {} connection(s) hold tokens that do not open for their user (moved or tampered); marked needs_reauth",
                    report.refused
                );
            }
            store.close().await;
            Ok(())
        }
        Command::Providers => {
            let mut ids = Vec::new();
            let mut first_error = None;
            for factory in factories()? {
                let state = match (factory.build)(&config.providers) {
                    Ok(built) if built.is_empty() => "disabled".to_owned(),
                    Ok(built) => {
                        let names: Vec<String> = built.iter().map(|p| p.id().to_owned()).collect();
                        ids.extend(names.iter().cloned());
                        format!("enabled ({})", names.join(", "))
                    }
                    Err(e) => {
                        let line = format!("misconfigured: {e}");
                        first_error.get_or_insert(e);
                        line
                    }
                };
                println!("{:<16} {:<28} {}", factory.id, factory.name, state);
            }
            if let Some(e) = first_error {
                return Err(e.into());
            }
            let built: Vec<&str> = ids.iter().map(String::as_str).collect();
            check_built(&config.providers, &built)?;
            Ok(())
        }
        Command::Keygen => Ok(()),
        #[cfg(feature = "demo")]
        Command::Demo { .. } => Ok(()),
    }
}
