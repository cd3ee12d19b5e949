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

/// Asserts that a stored key begins with 12 hex digits of the current time in milliseconds
/// (within a minute), as lanyard's time-ordered keys do.
pub fn assert_begins_with_now(key: &str) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64;
    let key_ms = key
        .get(..12)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok());
    assert!(
        key_ms.is_some_and(|ms| now_ms.abs_diff(ms) < 60_000),
        "{key} begins with the time"
    );
}
