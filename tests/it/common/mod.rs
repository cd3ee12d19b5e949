#![allow(dead_code)]
//! Shared test support: fresh PostgreSQL databases and a real server to talk to.

#[macro_use]
mod macros;
pub mod browser;
pub mod config_check;
pub mod fake_github;
pub mod fake_oauth;
pub mod federation;
pub mod postgres;
pub mod process;
pub mod server;
pub mod slapd;
pub mod tls;
