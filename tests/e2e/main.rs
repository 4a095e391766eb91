//! End-to-end tests of the `grantry` binary.

mod admin_pages;
mod browser;
mod cli;
mod connect;
mod content;
mod data_center;
mod demo;
mod faults;
mod harness;
mod helpers;
mod hostile;
mod jira_webhooks;
mod lifecycle;
mod observability;
mod openapi;
mod personal_data;
mod process;
mod receiver;
mod secrets;
mod storm;
mod tampering;
mod webhooks;
