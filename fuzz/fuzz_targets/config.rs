//! Config parsing, validation, printing and reload planning (`Config::from_toml`).
//!
//! The input format and what is checked: `config_input.rs`, which `tests/fuzz_corpus.rs`
//! also runs over the committed seeds in a plain `cargo test`.

#![no_main]

mod config_input;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| config_input::run(data));
