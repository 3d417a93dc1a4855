//! Approval, submit and commit request bodies through the real route handler (`RegistryApi`).
//!
//! The input format and what is checked: `approve_request_input.rs`, which `tests/fuzz_corpus.rs`
//! also runs over the committed seeds in a plain `cargo test`.

#![no_main]

mod approve_request_input;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| approve_request_input::run(data));
