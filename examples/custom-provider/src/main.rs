//! `grantry-example`: grantry with one more provider linked in.
//!
//! The `grantry` binary links the providers named by its features. A provider from another
//! crate gets in by a binary that links both: this one names the `grantry` facade (Atlassian and
//! the generic OAuth 2.0 provider) and `grantry_provider_example`, then offers the commands of
//! `grantry` that depend on the linked providers:
//!
//! ```sh
//! cargo run -p grantry-provider-example -- providers
//! ENABLE_EXAMPLE_INTEGRATION=true EXAMPLE_CLIENT_ID=… EXAMPLE_CLIENT_SECRET=… \
//!   EXAMPLE_REDIRECT_URI=http://127.0.0.1:8080/settings/connections \
//!   EXAMPLE_BASE_URL=https://tasks.example.com GRANTRY_ENCRYPTION_KEY=… GRANTRY_JWT_SECRET=… \
//!   cargo run -p grantry-provider-example -- serve
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use grantry_core::{build_providers, factories};
use grantry_server::{Config, ServerError, logging};

#[derive(Parser)]
#[command(
    name = "grantry-example",
    version,
    about = "grantry with the example provider linked in"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate the database and serve the HTTP API.
    Serve,
    /// List the providers linked into this binary and whether each is enabled.
    Providers,
}

fn main() -> ExitCode {
    // Name every provider crate, or the linker drops it and its registration with it.
    grantry::link_providers();
    grantry_provider_example::link();
    let cli = Cli::parse();
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
    let config = Config::load()?;
    match command {
        Command::Serve => {
            logging::init(&config.log_level)?;
            let state = grantry_server::prepare(&config).await?;
            grantry_server::serve(&config, state, grantry_server::shutdown_signal()).await
        }
        Command::Providers => {
            // The same listing as `grantry providers`.
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
    }
}
