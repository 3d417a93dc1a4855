//! Commit record decoding (`CommitRecord::from_json`) and the offline auditor over it.
//!
//! The input format and what is checked: `commit_record_input.rs`, which `tests/fuzz_corpus.rs`
//! also runs over the committed seeds in a plain `cargo test`.

#![no_main]

mod commit_record_input;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| commit_record_input::run(data));
