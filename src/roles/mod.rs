//! One module per thread role. Each opens by saying which thread runs it, which channels go in
//! and out (all bounded), which state it owns alone, and how it shuts down.

pub mod checkpoint;
pub mod fsync;
pub mod reply;
pub mod sse;
pub mod verifier;
pub mod writer;
