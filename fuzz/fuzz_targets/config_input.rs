//! The `config` fuzz target's input, run once: shared by the libFuzzer target
//! (`fuzz_targets/config.rs`) and by `tests/fuzz_corpus.rs`, which replays every committed
//! seed through it in a plain `cargo test` (so the seeds are checked without cargo-fuzz).
//!
//! Config parsing and validation (`Config::from_toml`, docs/OPERATIONS.md), plus what an operator does with
//! a loaded config: print it (`Config::to_toml`, `ronctl config print`) and reload it (SIGHUP,
//! `Config::plan_reload`).
//!
//! Checked: no panic; a config that validates prints as TOML that loads back to the same config
//! (so a printed config is a usable config), and reloading an unchanged file applies nothing and
//! needs no restart.

use std::path::Path;
use svc_registry::config::{Config, Flags};

/// One input, as libFuzzer gives it (see the module doc for what is checked).
pub fn run(data: &[u8]) {
    let (flags_byte, text) = match data.split_first() {
        Some((f, rest)) => (*f, rest),
        None => return,
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let flags = Flags {
        amnesia: flags_byte & 1 != 0,
        uds_only: flags_byte & 2 != 0,
        read_only: flags_byte & 4 != 0,
        follow: Vec::new(),
    };
    let env = |name: &str| match (flags_byte & 8 != 0, name) {
        (true, "REGISTRY_ADDR") => Some("127.0.0.1:0".to_string()),
        (true, "METRICS_ADDR") => Some("[::1]:9909".to_string()),
        _ => None,
    };
    let path = Path::new("fuzz.toml");
    let Ok(config) = Config::from_toml(text, path, flags.clone(), &env) else {
        return;
    };
    let printed = config.to_toml();
    let again = Config::from_toml(&printed, path, flags, &|_| None)
        .unwrap_or_else(|e| panic!("the printed config does not load: {e}\n{printed}"));
    assert_eq!(again.to_toml(), printed, "printing is not stable");
    let _ = config.http_limits();
    let _ = config.proposal_limits();
    let plan = config
        .plan_reload(config.clone())
        .unwrap_or_else(|e| panic!("reloading the same config was refused: {e}"));
    assert!(plan.applied.is_empty(), "{:?}", plan.applied);
    assert!(plan.restart_needed.is_empty(), "{:?}", plan.restart_needed);
}
