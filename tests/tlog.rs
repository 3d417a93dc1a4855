//! The transparency log against the real binary (SPEC §12): the signed checkpoint's root is the
//! RFC 6962 root recomputed here from `/registry/{v}` hashes (independently of src/tlog), tiles
//! and proofs agree with the same recomputation, restarts and kill -9 keep the tree consistent,
//! and a deleted, truncated, corrupted or ahead tree file is rebuilt from the log.

mod common;
use base64::Engine;
use common::*;
use serde_json::json as j;
use sha2::{Digest, Sha256};
use std::time::Duration;
use svc_registry::tlog::note::{Checkpoint, Vkey};

type H = [u8; 32];

const WAIT: Duration = Duration::from_secs(15);

fn sha(parts: &[&[u8]]) -> H {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// RFC 6962 §2.1, written out here apart from src/tlog: MTH, PATH and PROOF over leaf hashes.
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}
fn mth(l: &[H]) -> H {
    if l.len() == 1 {
        return l[0];
    }
    let k = split(l.len());
    sha(&[&[1], &mth(&l[..k]), &mth(&l[k..])])
}
fn path(m: usize, l: &[H]) -> Vec<H> {
    if l.len() == 1 {
        return vec![];
    }
    let k = split(l.len());
    let (mut p, other) = if m < k {
        (path(m, &l[..k]), mth(&l[k..]))
    } else {
        (path(m - k, &l[k..]), mth(&l[..k]))
    };
    p.push(other);
    p
}
fn subproof(m: usize, l: &[H], whole: bool) -> Vec<H> {
    if m == l.len() {
        return if whole { vec![] } else { vec![mth(l)] };
    }
    let k = split(l.len());
    let (mut p, other) = if m <= k {
        (subproof(m, &l[..k], whole), mth(&l[k..]))
    } else {
        (subproof(m - k, &l[k..], false), mth(&l[..k]))
    };
    p.push(other);
    p
}

fn b64(h: &H) -> String {
    base64::engine::general_purpose::STANDARD.encode(h)
}

fn durable() -> Setup {
    Setup {
        tables: "[storage]\ncheckpoint_every_commits = 1000\n".into(),
        ..Setup::default()
    }
}

fn commit_n(s: &TestServer, from: u64, n: u64) {
    for v in from..from + n {
        s.commit_ops(v, j!([put("node", &format!("n{v}"), j!({"v": v}))]));
    }
}

/// The leaf hashes of versions 0..size, from the served records.
fn leaves(s: &TestServer, size: u64) -> Vec<H> {
    (0..size)
        .map(|v| {
            let r = json(&s.get(&format!("/registry/{v}")));
            let h = hex::decode(r["hash"].as_str().unwrap()).unwrap();
            sha(&[&[0], &h])
        })
        .collect()
}

fn vkey(s: &TestServer) -> Vkey {
    let r = s.get("/registry/vkey");
    assert_eq!(r.status, 200);
    Vkey::parse(std::str::from_utf8(&r.body).unwrap()).unwrap()
}

/// The checkpoint once it covers `size` versions, its signature checked.
fn checkpoint_at(s: &TestServer, size: u64) -> Checkpoint {
    let key = vkey(s);
    eventually_some(WAIT, &format!("a checkpoint of size {size}"), || {
        let r = s.get("/registry/checkpoint");
        if r.status != 200 {
            return None;
        }
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        let text = String::from_utf8(r.body).unwrap();
        let cp = Checkpoint::parse(key.open(&text).expect("signed by the vkey")).unwrap();
        (cp.size == size).then_some(cp)
    })
}

fn hashes(s: &TestServer, path: &str) -> Vec<String> {
    let r = s.get(path);
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    json(&r)["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect()
}

fn b64s(p: &[H]) -> Vec<String> {
    p.iter().map(b64).collect()
}

#[test]
fn checkpoint_tiles_and_proofs_agree_with_an_independent_recomputation() {
    let s = TestServer::start(durable());
    commit_n(&s, 0, 10);
    let size = 11;
    let cp = checkpoint_at(&s, size);
    assert_eq!(cp.origin, "svc-registry/test-registry");
    let l = leaves(&s, size);
    assert_eq!(cp.root, mth(&l));
    assert_eq!(vkey(&s).name, cp.origin);

    // Tiles: the level-0 partial tile is the leaf hashes; nothing past the tree.
    let t = s.get("/registry/tile/0/000.p/11");
    assert_eq!(t.status, 200);
    assert_eq!(t.body, l.concat());
    assert_eq!(t.header("content-type"), Some("application/octet-stream"));
    assert_eq!(s.get("/registry/tile/0/000.p/5").body, l[..5].concat());
    for beyond in [
        "/registry/tile/0/000.p/12",
        "/registry/tile/0/000",
        "/registry/tile/1/000.p/1",
    ] {
        assert_eq!(s.get(beyond).status, 404, "{beyond}");
    }
    for bad in [
        "/registry/tile/0/0",
        "/registry/tile/0/x000/001",
        "/registry/tile/0/000.p/0",
    ] {
        let r = s.get(bad);
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(json(&r)["error"], "bad_request");
    }

    // Inclusion and consistency proofs equal the recomputed ones, for every pair.
    for n in 1..=size {
        for i in 0..n {
            let got = hashes(
                &s,
                &format!("/registry/proof/inclusion?version={i}&size={n}"),
            );
            assert_eq!(got, b64s(&path(i as usize, &l[..n as usize])), "{i} in {n}");
        }
        for m in 1..=n {
            let got = hashes(&s, &format!("/registry/proof/consistency?old={m}&new={n}"));
            assert_eq!(
                got,
                b64s(&subproof(m as usize, &l[..n as usize], true)),
                "{m}->{n}"
            );
        }
    }
    let status = |p: &str| s.get(p).status;
    assert_eq!(status("/registry/proof/inclusion?version=0&size=12"), 404);
    assert_eq!(status("/registry/proof/consistency?old=1&new=12"), 404);
    // Well-formed, but no such leaf or proof: 404, like a version past HEAD.
    assert_eq!(status("/registry/proof/inclusion?version=3&size=3"), 404);
    assert_eq!(status("/registry/proof/consistency?old=4&new=3"), 404);
    for bad in [
        "/registry/proof/inclusion?version=1",
        "/registry/proof/inclusion?version=01&size=3",
        "/registry/proof/consistency?old=0&new=3",
        "/registry/proof/consistency?old=x&new=3",
    ] {
        assert_eq!(status(bad), 400, "{bad}");
    }
    assert_eq!(s.metric("registry_tlog_size"), size as f64);
}

#[test]
fn restart_keeps_the_root_and_a_kill_9_stays_consistent() {
    let s = TestServer::start(durable());
    commit_n(&s, 0, 6);
    let before = checkpoint_at(&s, 7);
    let s = s.stop().restart_killed();
    assert_eq!(checkpoint_at(&s, 7), before);
    commit_n(&s, 6, 5);
    // kill -9 right after the last acknowledged commit: whatever the tree held, the restarted
    // log serves a checkpoint within the durable log and consistent with the one before.
    let s = s.restart_killed();
    let head = s.head()["version"].as_u64().unwrap();
    assert_eq!(head, 11);
    let after = checkpoint_at(&s, head + 1);
    let l = leaves(&s, head + 1);
    assert_eq!(after.root, mth(&l));
    let got = hashes(&s, "/registry/proof/consistency?old=7&new=12");
    assert_eq!(got, b64s(&subproof(7, &l, true)));
    assert_eq!(mth(&l[..7]), before.root);
}

#[test]
fn a_deleted_truncated_corrupted_or_ahead_tree_file_is_rebuilt_from_the_log() {
    let s = TestServer::start(durable());
    commit_n(&s, 0, 20);
    let want = checkpoint_at(&s, 21);
    let file = s.data_dir.join("tlog.hashes");
    let mut s = s.stop();
    type Damage = fn(&std::path::Path);
    let damages: [(&str, Damage); 4] = [
        ("corrupted", |f| {
            let mut b = std::fs::read(f).unwrap();
            b[32 * 10 + 3] ^= 0x40;
            std::fs::write(f, b).unwrap();
        }),
        ("truncated", |f| {
            let b = std::fs::read(f).unwrap();
            std::fs::write(f, &b[..100]).unwrap();
        }),
        ("deleted", |f| std::fs::remove_file(f).unwrap()),
        ("ahead", |f| {
            // Hashes for versions the log does not have (a log tail lost in a crash).
            let mut b = std::fs::read(f).unwrap();
            b.extend_from_slice(&[7u8; 32 * 9]);
            std::fs::write(f, b).unwrap();
        }),
    ];
    for (what, damage) in damages {
        damage(&file);
        s = s.restart_killed();
        assert_eq!(checkpoint_at(&s, 21), want, "tree file {what}");
        let l = leaves(&s, 21);
        assert_eq!(
            hashes(&s, "/registry/proof/inclusion?version=10&size=21"),
            b64s(&path(10, &l)),
            "tree file {what}"
        );
        if what == "corrupted" {
            assert!(
                s.wait_log("rebuilding it from the log", Duration::from_secs(5)),
                "{}",
                s.logs()
            );
            assert_eq!(s.metric("registry_tlog_rebuilds_total"), 1.0);
        }
        s = s.stop();
    }
}

#[test]
fn an_amnesiac_registry_keeps_its_tree_and_key_in_memory() {
    let mut setup = Setup::default();
    setup.flags.push("--amnesia".into());
    let s = TestServer::start(setup);
    commit_n(&s, 0, 3);
    let cp = checkpoint_at(&s, 4);
    assert_eq!(cp.root, mth(&leaves(&s, 4)));
    assert!(
        s.wait_log("log key generated", Duration::from_secs(5)),
        "{}",
        s.logs()
    );
    assert!(s.wait_log(&vkey(&s).name, Duration::from_secs(5)));
    assert!(!s.data_dir.join("tlog.hashes").exists());
    assert!(!s.data_dir.join("tlog.key").exists());
}

#[test]
fn the_log_can_be_switched_off_and_a_key_file_names_its_origin() {
    let setup = Setup {
        tables: "[log]\nenabled = false\n".into(),
        ..Setup::default()
    };
    let s = TestServer::start(setup);
    for p in [
        "/registry/checkpoint",
        "/registry/vkey",
        "/registry/tile/0/000.p/1",
    ] {
        assert_eq!(s.get(p).status, 404, "{p}");
    }
    drop(s);

    // The generated key is 0600 in the data directory and survives restarts.
    let s = TestServer::start(durable());
    let key = s.data_dir.join("tlog.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let first = vkey(&s).id;
    let s = s.stop().restart_killed();
    assert_eq!(vkey(&s).id, first);
    drop(s);

    // A configured origin with a key of another name is refused at start.
    let mut setup = durable();
    setup
        .tables
        .push_str("[log]\norigin = \"example.com/other\"\n");
    let dir = tempfile::tempdir().unwrap();
    let keyfile = dir.path().join("log.key");
    let k = svc_registry::tlog::note::LogKey::from_seed("example.com/log", [5; 32]).unwrap();
    svc_registry::tlog::write_key_file(&keyfile, &k).unwrap();
    setup
        .tables
        .push_str(&format!("key_file = {:?}\n", keyfile.display().to_string()));
    let err = TestServer::try_start(setup).err().expect("refused");
    assert!(err.0.join("\n").contains("origin"), "{:?}", err.0);
}

#[test]
fn ronctl_keygen_vkey_prove_and_check_proof() {
    let dir = tempfile::tempdir().unwrap();
    let keyfile = dir.path().join("log.key");
    let keyfile_s = keyfile.display().to_string();
    let out = ronctl_ok(&[
        "log",
        "keygen",
        "--origin",
        "example.com/reg",
        "--out",
        &keyfile_s,
    ]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&keyfile).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let file_vkey = ronctl_ok(&["log", "vkey", "--key", &keyfile_s])
        .trim()
        .to_string();
    assert!(out.contains(&file_vkey), "{out}");
    assert!(file_vkey.starts_with("example.com/reg+"));

    let mut setup = durable();
    setup.tables.push_str(&format!(
        "[log]\norigin = \"example.com/reg\"\nkey_file = {keyfile_s:?}\n"
    ));
    let s = TestServer::start(setup);
    let (ok, served_vkey, err) = s.ronctl(&["log", "vkey"]);
    assert!(ok, "{err}");
    assert_eq!(served_vkey.trim(), file_vkey);
    commit_n(&s, 0, 6);
    checkpoint_at(&s, 7);

    let proof = dir.path().join("v3.tlog-proof");
    let proof_s = proof.display().to_string();
    let (ok, _, err) = s.ronctl(&["registry", "prove", "3", "--out", &proof_s]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&proof).unwrap();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "), "{text}");
    assert!(text.contains("\nindex 3\n"), "{text}");
    let hash3 = json(&s.get("/registry/3"))["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, _, err) = s.ronctl(&["registry", "prove", "3", "--size", "5", "--out", &proof_s]);
    assert!(!ok && err.contains("size 7"), "{err}");
    drop(s);

    // Offline: the pinned vkey, the file, the expected record hash.
    let checked = ronctl_ok(&[
        "registry",
        "check-proof",
        &proof_s,
        "--vkey",
        &file_vkey,
        "--record-hash",
        &hash3,
    ]);
    assert!(checked.contains("ok: version 3"), "{checked}");
    let run = |args: &[&str]| {
        std::process::Command::new(ronctl_bin())
            .args(args)
            .output()
            .unwrap()
    };
    let wrong_hash = "00".repeat(32);
    let r = run(&[
        "registry",
        "check-proof",
        &proof_s,
        "--vkey",
        &file_vkey,
        "--record-hash",
        &wrong_hash,
    ]);
    assert!(!r.status.success());
    // A proof hash changed, or another key: refused.
    let lines: Vec<&str> = text.lines().collect();
    let tampered = text.replacen(lines[3], &b64(&[9u8; 32]), 1);
    std::fs::write(&proof, tampered).unwrap();
    let r = run(&["registry", "check-proof", &proof_s, "--vkey", &file_vkey]);
    assert!(
        !r.status.success(),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    std::fs::write(&proof, &text).unwrap();
    let other_key =
        svc_registry::tlog::note::LogKey::from_seed("example.com/reg", [1; 32]).unwrap();
    let r = run(&[
        "registry",
        "check-proof",
        &proof_s,
        "--vkey",
        &other_key.vkey(),
    ]);
    assert!(!r.status.success());
}

#[test]
fn a_restored_backup_signs_with_the_same_key_and_root() {
    let s = TestServer::start(durable());
    commit_n(&s, 0, 4);
    let before = checkpoint_at(&s, 5);
    let key_before = vkey(&s);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("backup");
    let (ok, _, err) = s.ronctl(&["backup", "--to", target.to_str().unwrap()]);
    assert!(ok, "{err}");
    use std::os::unix::fs::PermissionsExt;
    let key = target.join("tlog.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(s);
    let restored = TestServer::start(Setup {
        data_dir: Some(target),
        ..durable()
    });
    assert_eq!(vkey(&restored).id, key_before.id);
    assert_eq!(checkpoint_at(&restored, 5), before);
}

/// A proxy to `upstream` that serves a checkpoint of the same size with another root (a log
/// showing this client a different tree: a split view), and passes everything else through.
fn split_view_proxy(upstream: String) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut head = Vec::new();
                loop {
                    let mut line = Vec::new();
                    if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    head.extend_from_slice(&line);
                    if line == b"\r\n" {
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                if path == "/registry/checkpoint" {
                    let target = svc_registry::http::client::Target::Tcp(upstream);
                    let r =
                        svc_registry::http::client::request(&target, "GET", &path, &[], None, WAIT)
                            .unwrap();
                    let body = String::from_utf8(r.body).unwrap();
                    let mut lines: Vec<String> = body.split('\n').map(str::to_string).collect();
                    lines[2] = b64(&[0x5a; 32]);
                    let body = lines.join("\n");
                    let _ = write!(
                        client,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    return;
                }
                let Ok(mut up) = std::net::TcpStream::connect(&upstream) else {
                    return;
                };
                let _ = up.write_all(&head);
                let (mut up_read, mut to_client) =
                    (up.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up_read, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
                let _ = std::io::copy(&mut reader, &mut up);
                let _ = up.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    format!("http://{addr}")
}

fn follower_of(upstream: &str, genesis: &str) -> TestServer {
    TestServer::start(Setup {
        tables: format!(
            "[follow]\nupstreams = [{upstream:?}]\ngenesis_hash = {genesis:?}\ntimeout_ms = 1000\n"
        ),
        flags: vec!["--amnesia".into()],
        ..Setup::default()
    })
}

#[test]
fn a_follower_checks_upstream_checkpoints_and_refuses_a_split_view() {
    let auth = TestServer::start(durable());
    commit_n(&auth, 0, 5);
    let genesis = json(&auth.get("/registry/0"))["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let root = checkpoint_at(&auth, 6).root;

    // Honest: the follower's own tree has the authority's root, and it stays ready.
    let honest = follower_of(&format!("http://{}", auth.registry), &genesis);
    assert_eq!(checkpoint_at(&honest, 6).root, root);
    commit_n(&auth, 5, 2);
    assert_eq!(checkpoint_at(&honest, 8).root, checkpoint_at(&auth, 8).root);
    assert_eq!(honest.admin("GET", "/readyz", None).status, 200);

    // Split view: the same records, a checkpoint of another tree.
    let proxy = split_view_proxy(auth.registry.clone());
    let f = follower_of(&proxy, &genesis);
    eventually(WAIT, "a split view refused in /readyz", || {
        let r = f.admin("GET", "/readyz", None);
        r.status == 503 && String::from_utf8_lossy(&r.body).contains("split view")
    });
    assert!(f.logs().contains("split view"), "{}", f.logs());
}

/// Commit from HEAD in a loop until `stop` (conflicts and a killed server just end attempts).
fn load(
    s: std::sync::Arc<TestServer>,
    worker: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut i = 0u64;
    let req = |method: &str, path: &str, body: Option<&[u8]>| {
        svc_registry::http::client::request(
            &s.target(),
            method,
            path,
            &[],
            body,
            Duration::from_secs(5),
        )
        .ok()
        .filter(|r| r.status < 300)
        .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
    };
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        i += 1;
        let Some(head) = req("GET", "/registry/head", None) else {
            return;
        };
        let payload = serde_json::to_vec(&j!({"registry_id": "test-registry",
            "base_version": head["version"], "ops": [put("node", &format!("w{worker}-{i}"), j!({}))]}))
        .unwrap();
        let Some(p) = req("POST", "/propose", Some(&payload)) else {
            continue;
        };
        let id = p["proposal_id"].as_str().unwrap().to_string();
        if req(
            "POST",
            "/approve",
            Some(&s.setup.approve_body(&id, &payload)),
        )
        .is_none()
        {
            continue;
        }
        let _ = req(
            "POST",
            "/commit",
            Some(&serde_json::to_vec(&j!({"proposal_id": id})).unwrap()),
        );
    }
}

#[test]
fn kill_9_under_load_never_serves_a_checkpoint_beyond_durable_or_inconsistent() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut s = Arc::new(TestServer::start(durable()));
    let mut seen: Vec<Checkpoint> = Vec::new();
    for round in 0..4u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let (s, stop) = (s.clone(), stop.clone());
                std::thread::spawn(move || load(s, w, stop))
            })
            .collect();
        // Checkpoints taken under load: never past the HEAD read just after.
        let key = vkey(&s);
        for _ in 0..5 {
            let r = s.get("/registry/checkpoint");
            let head = s.head()["version"].as_u64().unwrap();
            if r.status == 200 {
                let text = String::from_utf8(r.body).unwrap();
                let cp = Checkpoint::parse(key.open(&text).unwrap()).unwrap();
                assert!(
                    cp.size <= head + 1,
                    "checkpoint {} past HEAD {head}",
                    cp.size
                );
                seen.push(cp);
            }
            // Spaces the samples and moves the kill point from round to round; nothing waits
            // for a state here (each sample is checked on its own, the rest after the restart).
            std::thread::sleep(Duration::from_millis(30 + 20 * round));
        }
        s.signal(libc::SIGKILL);
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        let server = Arc::try_unwrap(s).ok().expect("workers are done");
        s = Arc::new(server.restart_killed());
        // After the restart: the tree is the log's, and every checkpoint seen before is a prefix.
        let head = s.head()["version"].as_u64().unwrap();
        let cp = checkpoint_at(&s, head + 1);
        let l = leaves(&s, head + 1);
        assert_eq!(cp.root, mth(&l), "round {round}");
        for old in &seen {
            assert_eq!(
                mth(&l[..old.size as usize]),
                old.root,
                "round {round}: size {}",
                old.size
            );
        }
    }
    assert!(seen.len() >= 10, "too few checkpoints under load");
}
