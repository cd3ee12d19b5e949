//! The integration tests as one binary, a module per area and the shared helpers in `common`:
//! every test binary links the whole crate, which takes minutes on a two-core machine. Run one
//! area with `cargo test --test it <area>::`.
//!
//! The modules share one process: a test must not change process-wide state (environment,
//! current directory, umask); it passes such settings to the child processes it starts.

#[macro_use]
mod common;

mod admin;
mod authproxy;
mod binary;
mod browser_login;
mod config;
mod connector_swap;
mod dex_config;
mod dex_connectors;
mod dex_docs;
mod dex_flow;
mod dex_frontend;
mod faults;
mod github;
mod gitlab;
mod google;
mod grpc_connectors;
mod hardening;
mod key_rotation;
mod keys;
mod kube;
mod kubeconfig_page;
mod ldap;
mod login;
mod microsoft;
mod oauth_connector;
mod oauth_surface;
mod oidc_connector;
mod oidc_flow;
mod reload;
mod replicas;
mod saml;
mod server_behaviour;
mod storage_conformance;
mod token_exchange;
