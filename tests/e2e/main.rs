//! End-to-end tests of the `grantry` binary.

mod cli;
mod helpers;
