//! One module per thread role. Each opens by saying which thread runs it, which channels go in
//! and out (all bounded but the writer's `internal` channel, argued in app.rs), which state it
//! owns alone, and how it shuts down. `reply` is the typed answer handle of the writer.

pub mod checkpoint;
pub mod follower;
pub mod fsync;
pub mod reply;
pub mod retention;
pub mod sse;
pub mod tlog;
pub mod verifier;
pub mod writer;
