//! Proposal parsing and validation (`domain::proposal::parse`) and the application of it.
//!
//! The input format and what is checked: `proposal_input.rs`, which `tests/fuzz_corpus.rs`
//! also runs over the committed seeds in a plain `cargo test`.

#![no_main]

mod common;
mod proposal_input;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| proposal_input::run(data));
