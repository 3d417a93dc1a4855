//! svc-registry: an authoritative, append-only registry of quorum-signed descriptors.
//!
//! Modules in reading order: the pure domain first, then configuration, then the roles (threads)
//! that move data between the network, the writer and the disk. See docs/ARCHITECTURE.md.

pub mod error;
pub mod clock;
pub mod domain;
pub mod config;
pub mod http;
pub mod metrics;
pub mod snapshot;
pub mod log;
pub mod roles;
pub mod api;
pub mod app;
pub mod logging;
pub mod cli;
pub mod restore;
