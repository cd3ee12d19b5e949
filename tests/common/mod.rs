#![allow(dead_code)]
//! Shared test support: fresh PostgreSQL databases and a real server to talk to.

pub mod browser;
pub mod postgres;
pub mod process;
pub mod server;
