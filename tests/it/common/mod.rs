#![allow(dead_code)]
//! Shared test support: fresh PostgreSQL databases and a real server to talk to.

#[macro_use]
mod macros;
pub mod browser;
pub mod fake_github;
pub mod federation;
pub mod postgres;
pub mod process;
pub mod saml_idp;
pub mod server;
pub mod slapd;
pub mod tls;
