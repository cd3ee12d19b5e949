//! lanyard: an OpenID Connect issuer for Kubernetes, and a drop-in for Dex.

pub mod admin;
pub mod api;
pub mod clock;
pub mod config;
pub mod keys;
pub mod kube;
pub mod login;
pub mod manage;
pub mod metrics;
pub mod oidc;
pub mod server;
pub mod storage;
pub mod web;
