//! End-to-end tests of the `grantry` binary.

mod cli;
mod connect;
mod demo;
mod faults;
mod harness;
mod helpers;
mod lifecycle;
mod process;
mod secrets;
