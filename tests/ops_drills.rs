//! docs/OPERATIONS.md's procedures run end to end against real processes: restore from a backup
//! after start-up refuses a corrupted log, and a blue/green upgrade with two instances on
//! different data directories and ports.

#![allow(clippy::field_reassign_with_default)]

mod common;
use common::*;
use serde_json::json as j;
use std::time::Duration;

fn durable_setup() -> Setup {
    let mut s = Setup::default();
    s.top = "max_body_bytes = 65536\n".into();
    s.tables = "[storage]\nsegment_bytes = 1048576\ncheckpoint_every_commits = 1000\n".into();
    s
}

#[test]
fn start_up_refuses_a_corrupted_log_and_a_backup_restores_the_registry() {
    let s = TestServer::start(durable_setup());
    for v in 0..4 {
        s.commit_ops(v, j!([put("node", &format!("n{v}"), j!({"v": v}))]));
    }
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("2026-01-01_0300");
    let (ok, _, err) = s.ronctl(&["backup", "--to", backup.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v4 = s.head();
    // A commit after the backup: the backup's RPO.
    s.commit_ops(4, j!([put("node", "late", j!({}))]));
    let s = s.stop();

    // Damage the middle of the log (checkpoints removed so start-up must read it).
    for e in std::fs::read_dir(s.data_dir.join("checkpoints")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let seg = s.data_dir.join("log").join("segment-0000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[end / 3] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let s = s.restart_unready();
    assert!(s.wait_log("state restore failed", Duration::from_secs(10)));
    let line = s
        .logs()
        .lines()
        .find(|l| l.contains("state restore failed"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("level=error")
            && line.contains("segment-0000000000.log")
            && line.contains("at offset"),
        "{line}"
    );
    let r = s.admin("GET", "/readyz", None);
    assert_eq!(r.status, 503);
    assert_eq!(s.metric("registry_ready"), 0.0);
    drop(s);

    // Restore: start on the backup (docs: point data_dir at it, or copy it into place).
    let mut setup = durable_setup();
    setup.data_dir = Some(backup.clone());
    let restored = TestServer::start(setup);
    assert_eq!(
        restored.head(),
        v4,
        "everything up to the backup, nothing after"
    );
    assert_eq!(
        restored.get("/registry/descriptors/node/late").status,
        404,
        "the commit after the backup is lost: that is the RPO"
    );
    let (ok, out, err) = restored.ronctl(&["registry", "verify"]);
    assert!(ok, "{out}{err}");
    assert_eq!(restored.admin("GET", "/readyz", None).status, 200);
}

#[test]
fn blue_green_upgrade_with_two_instances_on_different_data_dirs_and_ports() {
    let blue = TestServer::start(durable_setup());
    for v in 0..3 {
        blue.commit_ops(v, j!([put("service", &format!("s{v}"), j!({"v": v}))]));
    }
    // 1. Freeze writes on blue, 2. copy its state for green.
    let (ok, _, err) = blue.ronctl(&["maintenance", "on", "--reason", "blue/green cutover"]);
    assert!(ok, "{err}");
    let green_dir = tempfile::tempdir().unwrap();
    let green_data = green_dir.path().join("data");
    let (ok, _, err) = blue.ronctl(&["backup", "--to", green_data.to_str().unwrap()]);
    assert!(ok, "{err}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(green_data.join("BACKUP.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["min_version"],
        blue.head()["version"],
        "no write slipped in after maintenance began"
    );

    // 3. Green: the new build, alongside, other ports and data dir, still read-only.
    let mut setup = durable_setup();
    setup.data_dir = Some(green_data);
    setup.flags.push("--read-only".into());
    let green = TestServer::start(setup);
    assert_ne!(green.registry, blue.registry);
    assert_ne!(green.metrics, blue.metrics);
    assert_eq!(green.admin("GET", "/readyz", None).status, 200);
    assert_eq!(green.head(), blue.head());
    // Both serve reads during the overlap.
    assert_eq!(blue.get("/registry/descriptors/service/s2").status, 200);
    assert_eq!(green.get("/registry/descriptors/service/s2").status, 200);

    // 4. Flip: writes on green; 5. retire blue.
    let (ok, _, err) = green.ronctl(&["maintenance", "off"]);
    assert!(ok, "{err}");
    green.commit_ops(3, j!([put("service", "after-flip", j!({}))]));
    let blue = blue.stop();
    assert!(blue.logs().contains("shutdown_complete=1"));
    let (ok, out, err) = green.ronctl(&["registry", "verify"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok: 5 records"), "{out}");
}
