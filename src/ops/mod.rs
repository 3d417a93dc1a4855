//! Operator controls shared by the admin routes (metrics listener), the signal loop (SIGHUP) and
//! the write path: the write plane's readiness, maintenance mode, chaos faults, the commit budget
//! and hot backups.
//!
//! Plain shared state — atomics and short mutexes — touched by `metrics-worker-0` (admin
//! routes), the main thread (SIGHUP), the `fsync` thread (sync timings) and the registry workers
//! (the budget check before a commit). Two helper threads exist: `chaos-timer`, started by the
//! first timed injection (it ends within a second of its [`Chaos`] being dropped), and one
//! short-lived `backup` thread per backup, at most one at a time.
//!
//! Every switch is logged with `audit=1`.

//!
//! Files: `plane.rs` ([`WritePlane`]: is the write plane ready and why not), `maintenance.rs`,
//! `chaos.rs`, `budget.rs`, `backup.rs`.

mod backup;
mod budget;
mod chaos;
mod maintenance;
mod plane;

pub use backup::*;
pub use budget::*;
pub use chaos::*;
pub use maintenance::Maintenance;
pub use plane::{FollowState, Readiness, WritePlane};
