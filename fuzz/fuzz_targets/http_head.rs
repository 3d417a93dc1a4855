//! The HTTP transport (parser + connection state machine) fed arbitrary bytes.
//!
//! The input format and what is checked: `http_head_input.rs`, which `tests/fuzz_corpus.rs`
//! also runs over the committed seeds in a plain `cargo test`.

#![no_main]

mod http_head_input;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| http_head_input::run(data));
