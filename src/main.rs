//! The `grantry` binary: the command line of [`grantry::cli`] with the providers of its features.

use std::process::ExitCode;

/// mimalloc: the server allocates many small, short-lived values per request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    grantry::link_providers();
    grantry::cli::run()
}
