//! `grantry-example`: the `grantry` command line with one more provider linked in.
//!
//! The `grantry` binary links the providers named by its features. A provider from another crate
//! gets in by a binary that names it too; everything else is grantry's own command line:
//!
//! ```sh
//! cargo run -p grantry-provider-example -- providers
//! ENABLE_EXAMPLE_INTEGRATION=true EXAMPLE_CLIENT_ID=… EXAMPLE_CLIENT_SECRET=… \
//!   EXAMPLE_REDIRECT_URI=http://127.0.0.1:8080/settings/connections \
//!   EXAMPLE_BASE_URL=https://tasks.example.com GRANTRY_ENCRYPTION_KEY=… GRANTRY_JWT_SECRET=… \
//!   cargo run -p grantry-provider-example -- serve
//! ```

fn main() -> std::process::ExitCode {
    // Name every provider crate, or the linker drops it and its registration with it.
    grantry::link_providers();
    grantry_provider_example::link();
    grantry::cli::run()
}
