//! Start-up as an operator meets it, against the real binary: I/O failures exit 1 with one
//! `error:` line (so a supervisor restarts), a bind failure is named in words, the LOCK message
//! names the holder's PID, relative config paths resolve from the config file's directory, and a
//! reload never claims a log level it did not apply.

mod common;
use common::*;
use serde_json::json as j;
use std::time::Duration;

/// The `error:` lines of a failed start.
fn error_lines(logs: &[String]) -> Vec<&String> {
    logs.iter().filter(|l| l.starts_with("error: ")).collect()
}

#[test]
fn a_data_dir_that_cannot_be_created_exits_1_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    // A path under a regular file cannot be created, even by root.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let setup = Setup {
        data_dir: Some(file.join("sub")),
        ..Setup::default()
    };
    let (logs, status) = TestServer::try_start(setup).err().expect("must not start");
    let status = status.expect("exited");
    assert_eq!(status.code(), Some(1), "{}", logs.join("\n"));
    let errors = error_lines(&logs);
    assert_eq!(errors.len(), 1, "{}", logs.join("\n"));
    assert!(errors[0].contains("not-a-dir/sub"), "{}", errors[0]);
    assert!(!logs.iter().any(|l| l.contains("role=read-plane")));
}

#[test]
fn a_port_in_use_is_named_without_debug_text() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let setup = Setup {
        env: vec![("REGISTRY_ADDR".into(), addr.clone())],
        ..Setup::default()
    };
    let (logs, status) = TestServer::try_start(setup).err().expect("must not start");
    assert_eq!(
        status.expect("exited").code(),
        Some(1),
        "{}",
        logs.join("\n")
    );
    let errors = error_lines(&logs);
    assert_eq!(errors.len(), 1, "{}", logs.join("\n"));
    assert_eq!(
        errors[0],
        &format!("error: registry listener: address {addr} is in use")
    );
    assert!(!logs.join("\n").contains("Os {"), "{}", logs.join("\n"));
}

#[test]
fn a_locked_data_dir_names_the_holders_pid() {
    let first = TestServer::start(Setup::default());
    let lock = std::fs::read_to_string(first.data_dir.join("LOCK")).unwrap();
    assert_eq!(lock.trim(), first.pid().to_string());
    let second = Setup {
        data_dir: Some(first.data_dir.clone()),
        ..Setup::default()
    };
    let (logs, status) = TestServer::try_start(second).err().expect("must not start");
    assert_eq!(
        status.expect("exited").code(),
        Some(1),
        "{}",
        logs.join("\n")
    );
    let errors = error_lines(&logs);
    assert_eq!(errors.len(), 1, "{}", logs.join("\n"));
    assert!(
        errors[0].contains(&format!("PID {}", first.pid())),
        "{}",
        errors[0]
    );
}

// Corruption found by recovery keeps the documented behaviour (stay up, /readyz 503 naming the
// file): tests/recovery.rs and tests/ops_drills.rs cover it, unchanged.

#[test]
fn a_relative_data_dir_is_resolved_from_the_config_files_directory() {
    // The test's working directory (the crate root) is not the config's directory (a temp dir):
    // the data must land beside the config, and the same registry opens again.
    let name = format!("rel-data-{}", std::process::id());
    let setup = Setup {
        data_dir: Some(std::path::PathBuf::from(&name)),
        ..Setup::default()
    };
    let s = TestServer::start(setup);
    let beside = s.dir.path().join(&name);
    assert!(beside.join("LOCK").exists(), "data not beside the config");
    assert!(!std::path::Path::new(&name).exists(), "data in the cwd");
    let created = s
        .logs()
        .lines()
        .find(|l| l.contains("msg=\"created new data directory\""))
        .map(str::to_string)
        .expect("the creation is logged");
    assert!(
        created.contains(&format!("path={:?}", beside.display().to_string()))
            && created.contains("genesis_hash="),
        "{created}"
    );
    s.commit_ops(0, j!([put("node", "n1", j!({}))]));
    let s = s.stop().restart_killed();
    assert_eq!(s.head()["version"], 1, "the same registry opened again");
    assert!(!s.logs().contains("created new data directory"));
}

/// Rewrite the config's log_level and SIGHUP; the reload line.
fn reload_log_level(s: &TestServer, level: &str) -> String {
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    let text = format!("log_level = {level:?}\n{text}");
    std::fs::write(&s.config_path, text).unwrap();
    s.signal(libc::SIGHUP);
    assert!(
        s.wait_log("msg=reloaded", Duration::from_secs(10)),
        "{}",
        s.logs()
    );
    s.logs()
        .lines()
        .find(|l| l.contains("msg=reloaded"))
        .unwrap()
        .to_string()
}

#[test]
fn a_reload_under_rust_log_says_log_level_was_not_applied() {
    let s = TestServer::start(Setup {
        env: vec![("RUST_LOG".into(), "info".into())],
        ..Setup::default()
    });
    let line = reload_log_level(&s, "debug");
    assert!(
        line.contains("applied=\"\"") && line.contains("not_applied=\"log_level\""),
        "{line}"
    );
    assert!(
        s.logs().contains("log_level not applied: RUST_LOG is set"),
        "{}",
        s.logs()
    );
    // And indeed nothing logs at debug.
    s.get("/registry/head");
    assert!(!s.logs().contains("level=debug"), "{}", s.logs());
}

#[test]
fn a_reload_without_rust_log_applies_log_level() {
    let s = TestServer::start(Setup::default());
    let line = reload_log_level(&s, "debug");
    assert!(
        line.contains("applied=\"log_level\"") && line.contains("not_applied=\"\""),
        "{line}"
    );
    s.get("/registry/head");
    eventually(Duration::from_secs(5), "a debug line", || {
        s.logs().contains("level=debug")
    });
}
