#![allow(dead_code)]
//! Shared test support: fresh PostgreSQL databases and a real server to talk to.

#[macro_use]
mod macros;
pub mod browser;
pub mod connector_config;
pub mod fake_github;
pub mod fake_google;
pub mod fake_microsoft;
pub mod fake_oauth;
pub mod federation;
pub mod https_fake;
pub mod postgres;
pub mod process;
pub mod saml_idp;
pub mod server;
pub mod slapd;
pub mod tls;
pub mod upstream_login;
