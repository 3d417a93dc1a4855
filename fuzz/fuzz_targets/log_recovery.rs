//! Log recovery over arbitrary segment files (`src/log/recovery.rs`, on `FaultIo`).
//!
//! The input format and what is checked: `log_recovery_input.rs`, which `tests/fuzz_corpus.rs`
//! also runs over the committed seeds in a plain `cargo test`.

#![no_main]

mod log_recovery_input;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| log_recovery_input::run(data));
