//! svc-registry: an authoritative, append-only registry of quorum-signed descriptors.
//!
//! Modules in reading order: the pure domain first, then configuration, then the roles (threads)
//! that move data between the network, the writer and the disk. See docs/ARCHITECTURE.md.

pub mod api;
pub mod app;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod history;
pub mod http;
pub mod log;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod restore;
pub mod roles;
pub mod snapshot;
pub mod storage;
pub mod tail;
pub mod tlog;
pub mod wake;
