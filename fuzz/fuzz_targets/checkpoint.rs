//! Checkpoint decoding: `restore::restore` with an arbitrary checkpoint payload (either payload
//! version) against a valid log, and arbitrary checkpoint *files* (framing, CRC, name) through
//! `log::open`. The input format and what is checked: `checkpoint_input.rs`, which
//! `tests/fuzz_corpus.rs` also runs over the committed seeds in a plain `cargo test`.

#![no_main]

mod checkpoint_input;
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checkpoint_input::run(data));
