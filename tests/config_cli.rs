//! The binary's command line and config handling: bad configs exit non-zero naming the problem,
//! --check-config, --help, --version, RON_CONFIG and environment overrides.

#![allow(clippy::field_reassign_with_default)]

mod common;
use common::*;
use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("RON_CONFIG")
        .env_remove("REGISTRY_ADDR")
        .env_remove("METRICS_ADDR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("c.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn bad_configs_exit_non_zero_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = Setup::default().config_text(&dir.path().join("data"));
    let a = Signer::new("a", 1).public_hex();
    let b = Signer::new("b", 2).public_hex();
    let weak = "0100000000000000000000000000000000000000000000000000000000000000";
    let cases: Vec<(String, &str)> = vec![
        (format!("colour = \"blue\"\n{good}"), "colour"),
        (good.replace(&a, "xyz"), "hex"),
        (good.replace(&a, weak), "weak"),
        (good.replace("threshold = 2", "threshold = 0"), "threshold"),
        (good.replace("threshold = 2", "threshold = 4"), "threshold"),
        (good.replace(&b, &a), "same public_key"),
        (good.replace("keyid = \"b\"", "keyid = \"a\""), "twice"),
        (
            good.replace("workers = 2", "workers = 2\nmax_inflight = 0"),
            "max_inflight",
        ),
        (
            good.replace(
                "registry_addr = \"127.0.0.1:0\"",
                "registry_addr = \"nowhere\"",
            ),
            "registry_addr",
        ),
    ];
    for (text, needle) in cases {
        let path = write_config(&dir, &text);
        for args in [
            vec!["--config", &path, "--check-config"],
            vec!["--config", &path],
        ] {
            let (code, _, stderr) = run(&args, &[]);
            assert_eq!(code, 2, "{args:?} {needle}: {stderr}");
            assert!(stderr.contains(needle), "{needle}: {stderr}");
            assert!(
                stderr.contains("c.toml"),
                "the message names the file: {stderr}"
            );
        }
    }
    let (code, _, stderr) = run(&["--config", "/nonexistent/x.toml"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/x.toml"));
}

#[test]
fn check_config_prints_the_effective_config_and_honours_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &Setup::default().config_text(&dir.path().join("data")),
    );
    let (code, stdout, _) = run(
        &["--config", &path, "--check-config"],
        &[("REGISTRY_ADDR", "127.0.0.1:7777")],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("registry_addr = \"127.0.0.1:7777\""),
        "{stdout}"
    );
    assert!(stdout.contains("[signers]"));
    // RON_CONFIG stands in for --config.
    let (code, stdout, _) = run(&["--check-config"], &[("RON_CONFIG", &path)]);
    assert_eq!(code, 0);
    assert!(stdout.contains("registry_id = \"test-registry\""));
    // The shipped examples are valid.
    for shipped in ["configs/dev.toml", "configs/svc-registry.toml"] {
        let p = format!("{}/{shipped}", env!("CARGO_MANIFEST_DIR"));
        let (code, _, stderr) = run(&["--config", &p, "--check-config"], &[]);
        assert_eq!(code, 0, "{shipped}: {stderr}");
    }
}

#[test]
fn help_and_version_describe_the_binary() {
    let (code, stdout, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for flag in [
        "--config",
        "--amnesia",
        "--uds-only",
        "--read-only",
        "--check-config",
        "RON_CONFIG",
    ] {
        assert!(stdout.contains(flag), "--help lacks {flag}: {stdout}");
    }
    let (code, stdout, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")));
    let (code, _, stderr) = run(&["--no-such-flag"], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--no-such-flag"));
}

#[test]
fn environment_addresses_override_the_file_and_port_zero_is_reported() {
    let mut setup = Setup::default();
    setup
        .env
        .push(("METRICS_ADDR".into(), "127.0.0.1:0".into()));
    let s = TestServer::start(setup);
    assert!(s.registry.starts_with("127.0.0.1:") && !s.registry.ends_with(":0"));
    assert!(s.metrics.starts_with("127.0.0.1:") && !s.metrics.ends_with(":0"));
    assert_eq!(s.admin("GET", "/healthz", None).status, 200);
}
