//! The transparency log (SPEC §12) checked by tools nobody here wrote: tests/tlog_verifier/, a
//! small Go program on `golang.org/x/mod/sumdb/note` and `sumdb/tlog` (Debian's `golang-go` and
//! `golang-golang-x-mod-dev`, built offline in GOPATH mode against /usr/share/gocode), verifies a
//! live registry: the checkpoint's signature with the vkey `ronctl log vkey` prints, the tree hash
//! recomputed from every `/registry/{v}` hash, every tile byte for byte, inclusion and
//! consistency proofs for random versions and sizes, consistency between checkpoints taken before
//! and after more commits (and across a restart), and a `ronctl registry prove` file. The other
//! way round, `ronctl registry check-proof` accepts a proof file Go made, and Go's note package
//! loads a `ronctl log keygen` key file, whose checkpoints it then verifies under a configured
//! origin. The same program writes tests/vectors/tlog.json, which must be what is committed.
//!
//! Invariant: nothing here recomputes a hash in Rust: every accept/refuse decision is the Go
//! program's; this file only drives the server and the program. Without the Go toolchain each
//! test prints a SKIPPED line (`.ci/run` installs it).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use svc_registry::domain::dsse;

/// Where Debian's golang-golang-x-mod-dev puts the packages the verifier imports.
const GOCODE: &str = "/usr/share/gocode";

/// Why the verifier cannot be built here, if it cannot: `go` missing, or x/mod's sumdb missing.
fn toolchain_missing() -> Option<String> {
    let go = Command::new("go").arg("version").output();
    if !go.is_ok_and(|o| o.status.success()) {
        return Some("`go` is not installed (apt-get install golang-go)".into());
    }
    for pkg in ["note", "tlog"] {
        let dir = Path::new(GOCODE)
            .join("src/golang.org/x/mod/sumdb")
            .join(pkg);
        if !dir.is_dir() {
            return Some(format!(
                "{} is missing (apt-get install golang-golang-x-mod-dev)",
                dir.display()
            ));
        }
    }
    None
}

/// `go build` of tests/tlog_verifier into cargo's temp dir, offline: GOPATH mode (no go.mod, no
/// module proxy) with /usr/share/gocode on GOPATH, and the environment pinned so that a user's
/// GOFLAGS, go.env, GOPROXY or toolchain switching cannot send it to the network.
fn build_verifier() -> Result<PathBuf, String> {
    if let Some(why) = toolchain_missing() {
        return Err(why);
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tlog_verifier");
    std::fs::create_dir_all(tmp.join("gopath")).unwrap();
    // Built under a name of this process's own, then renamed into place: test runners that
    // start a process per test (nextest) may build concurrently, and a rename never leaves a
    // half-written binary where another process executes it.
    let out = tmp.join("tlog_verifier");
    let building = tmp.join(format!("tlog_verifier.{}", std::process::id()));
    let run = Command::new("go")
        .args(["build", "-o"])
        .arg(&building)
        .arg(".")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tlog_verifier"))
        .env_remove("GOFLAGS")
        .env_remove("GOROOT")
        .env("GOENV", "off")
        .env("GO111MODULE", "off")
        .env(
            "GOPATH",
            format!("{}:{GOCODE}", tmp.join("gopath").display()),
        )
        .env("GOCACHE", tmp.join("cache"))
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("run go build");
    assert!(
        run.status.success(),
        "go build tests/tlog_verifier failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::rename(&building, &out).expect("move the built verifier into place");
    Ok(out)
}

/// The built verifier, once per test binary; `None` (after a SKIPPED line naming `test`) when the
/// toolchain is missing.
fn verifier(test: &str) -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build_verifier) {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            skip_notice(test, why);
            None
        }
    }
}

fn run(tv: &Path, args: &[&str]) -> Output {
    Command::new(tv)
        .args(args)
        .output()
        .expect("run tlog_verifier")
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_go_verifier_refuses_tampered_logs() {
    // Its own log (Go's ProveRecord / ProveTree / ReadTileData over the vector inputs) passes,
    // and each lie (signature, root, a record's hash, a tile byte, an inclusion or consistency
    // hash, a history forked below a saved checkpoint, two roots for its size, a proof file's
    // index / hash / magic) is refused by name.
    let Some(tv) = verifier("the_go_verifier_refuses_tampered_logs") else {
        return;
    };
    let o = run(&tv, &["selftest"]);
    assert!(o.status.success(), "{}", describe(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for tamper in [
        "sig",
        "root",
        "record",
        "tile",
        "inclusion",
        "consistency",
        "fork",
        "split",
    ] {
        assert!(
            out.contains(&format!("ok refused tampered {tamper}:")),
            "{tamper} not refused:\n{out}"
        );
    }
    assert!(out.contains("selftest: PASS"), "{out}");
}

/// The committed vectors are what Go's packages make today from the fixed inputs.
#[test]
fn the_go_generator_reproduces_the_committed_vectors() {
    let Some(tv) = verifier("the_go_generator_reproduces_the_committed_vectors") else {
        return;
    };
    let o = run(&tv, &["vectors"]);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        o.stdout == include_bytes!("vectors/tlog.json"),
        "tests/vectors/tlog.json differs from what `tlog_verifier vectors` writes now"
    );
}

/// A registry with one signer (1-of-1) so that hundreds of commits stay cheap.
fn one_of_one() -> Setup {
    Setup {
        threshold: 1,
        signers: vec![Signer::new("a", 1)],
        ..Setup::default()
    }
}

/// Commit one put per version until HEAD is `to`, each in one `POST /submit` (SPEC §13): a
/// third of the requests of propose → approve → commit, for hundreds of versions.
fn commit_until(srv: &TestServer, to: u64) {
    let mut head = srv.head()["version"].as_u64().unwrap();
    while head < to {
        let payload = serde_json::to_vec(&serde_json::json!({
            "registry_id": srv.setup.registry_id,
            "base_version": head,
            "ops": [put("node", &format!("n{head}"), serde_json::json!({"i": head}))],
        }))
        .unwrap();
        let signer = &srv.setup.signers[0];
        let envelope = serde_json::json!({
            "payloadType": dsse::PAYLOAD_TYPE,
            "payload": dsse::b64(&payload),
            "signatures": [{"keyid": signer.keyid, "sig": signer.sign(&payload)}],
        });
        let r = srv.post("/submit", &serde_json::to_vec(&envelope).unwrap());
        assert_eq!(r.status, 200, "submit on {head}: {}", r.text());
        head = json(&r)["version"].as_u64().unwrap();
    }
}

/// Wait until the published checkpoint covers HEAD (tree size HEAD + 1): checkpoints follow
/// durability and may be signed lazily, so the test polls rather than assuming.
fn await_checkpoint(srv: &TestServer, size: u64) {
    eventually(
        std::time::Duration::from_secs(20),
        &format!("GET /registry/checkpoint shows tree size {size}"),
        || {
            let r = srv.get("/registry/checkpoint");
            r.status == 200 && r.text().lines().nth(1) == Some(size.to_string().as_str())
        },
    );
}

/// A seed for the verifier's random versions and sizes: new each run (more ground covered over
/// time), printed in every failure so a run can be replayed with `-seed`.
fn seed() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (nanos % 1_000_000).to_string()
}

fn check(tv: &Path, srv: &TestServer, vkey: &str, extra: &[&str]) -> Output {
    let url = format!("http://{}", srv.registry);
    let seed = seed();
    let mut args = vec!["check", url.as_str(), vkey, "-seed", seed.as_str()];
    args.extend_from_slice(extra);
    let o = run(tv, &args);
    // What was checked, for `--nocapture` runs (libtest keeps it out of passing output).
    println!(
        "tlog_verifier {args:?}:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn hash_of(srv: &TestServer, version: u64) -> String {
    json(&srv.get(&format!("/registry/{version}")))["hash"]
        .as_str()
        .unwrap()
        .to_string()
}

fn go_proofs_pass_ronctl_check_proof(tv: &Path, srv: &TestServer, vkey: &str, dir: &Path) {
    let file = dir.join("go77.tlog-proof");
    let url = format!("http://{}", srv.registry);
    let o = run(tv, &["prove", &url, vkey, "77", path_str(&file)]);
    assert!(o.status.success(), "tlog_verifier prove: {}", describe(&o));
    let check_proof = |file: &Path, record_hash: &str| {
        srv.ronctl(&[
            "registry",
            "check-proof",
            path_str(file),
            "--vkey",
            vkey,
            "--record-hash",
            record_hash,
        ])
    };
    let (ok, out, err) = check_proof(&file, &hash_of(srv, 77));
    assert!(ok, "ronctl check-proof of Go's proof: {out}{err}");
    let (ok, out, err) = check_proof(&file, &hash_of(srv, 78));
    assert!(!ok, "Go's proof of 77 accepted for 78: {out}{err}");
    // One proof hash changed (the line after `index`): the root no longer follows.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.split('\n').map(String::from).collect();
    let at = lines.iter().position(|l| l.starts_with("index ")).unwrap() + 1;
    lines[at] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    let bad = dir.join("go77-bad.tlog-proof");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let (ok, out, err) = check_proof(&bad, &hash_of(srv, 77));
    assert!(!ok, "a Go proof with a changed hash accepted: {out}{err}");
}

#[test]
fn a_live_registry_passes_the_go_verifier() {
    let Some(tv) = verifier("a_live_registry_passes_the_go_verifier") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cp1, cp2, proof) = (
        dir.path().join("cp1"),
        dir.path().join("cp2"),
        dir.path().join("v123.tlog-proof"),
    );
    let srv = TestServer::start(one_of_one());

    // 300 versions: tree size 300 = one full level-0 tile, a partial one of width 44 and a
    // partial level-1 tile.
    commit_until(&srv, 299);
    await_checkpoint(&srv, 300);
    let (ok, out, err) = srv.ronctl(&["log", "vkey"]);
    assert!(ok, "ronctl log vkey: {out}{err}");
    let vkey = out.trim().to_string();
    assert!(
        vkey.starts_with("svc-registry/test-registry+"),
        "the key name is the default origin: {vkey}"
    );
    let o = check(&tv, &srv, &vkey, &["-save", path_str(&cp1)]);
    assert!(o.status.success(), "size 300: {}", describe(&o));

    // More commits: the partial tile widens, the next checkpoint must extend the saved one; a
    // `ronctl registry prove` file for an old version verifies against the new checkpoint.
    commit_until(&srv, 339);
    await_checkpoint(&srv, 340);
    let (ok, out, err) = srv.ronctl(&["registry", "prove", "123", "--out", path_str(&proof)]);
    assert!(ok, "ronctl registry prove: {out}{err}");
    let o = check(
        &tv,
        &srv,
        &vkey,
        &[
            "-old",
            path_str(&cp1),
            "-proof",
            path_str(&proof),
            "-save",
            path_str(&cp2),
        ],
    );
    assert!(o.status.success(), "size 340: {}", describe(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("ok checkpoint 340 extends the old checkpoint 300"),
        "{said}"
    );
    assert!(said.contains("ok tlog-proof file"), "{said}");

    // The other way round: a proof file made by Go (tlog.ProveRecord over the served records)
    // passes `ronctl registry check-proof`, for its record only, and not once a hash is changed.
    go_proofs_pass_ronctl_check_proof(&tv, &srv, &vkey, dir.path());

    // After a kill and a restart: the same key, and a log that extends what was signed before.
    let srv = srv.restart_killed();
    commit_until(&srv, 340);
    await_checkpoint(&srv, 341);
    let (ok, out, err) = srv.ronctl(&["log", "vkey"]);
    assert!(ok, "ronctl log vkey after restart: {out}{err}");
    assert_eq!(out.trim(), vkey, "the log key survives a restart");
    let o = check(&tv, &srv, &vkey, &["-old", path_str(&cp2)]);
    assert!(o.status.success(), "after restart: {}", describe(&o));

    // A different pinned key of the same name: the real checkpoint's signature does not verify
    // with it (note.Open refuses), so the check is not vacuous against the real server.
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("vectors/tlog.json")).unwrap();
    let other = vectors["note"]["vkey"].as_str().unwrap();
    assert_ne!(other, vkey);
    let o = check(&tv, &srv, other, &[]);
    assert!(
        !o.status.success(),
        "a foreign vkey accepted: {}",
        describe(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("signed note does not verify with the vkey"),
        "{}",
        describe(&o)
    );
}

/// A key from `ronctl log keygen` under a non-default `[log] origin`: Go's note package loads the
/// key file (`note.NewSigner`) as the key of the vkey ronctl prints, and a server configured with
/// it signs checkpoints Go verifies under that origin.
#[test]
fn a_ronctl_log_key_is_a_go_note_key_and_signs_the_checkpoints() {
    let Some(tv) = verifier("a_ronctl_log_key_is_a_go_note_key_and_signs_the_checkpoints") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("log.key");
    let origin = "registry.example/interop";
    let said = ronctl_ok(&["log", "keygen", "--origin", origin, "--out", path_str(&key)]);
    let vkey = ronctl_ok(&["log", "vkey", "--key", path_str(&key)])
        .trim()
        .to_string();
    assert!(vkey.starts_with(&format!("{origin}+")), "{vkey}");
    assert_eq!(
        said.lines().last().map(str::trim),
        Some(vkey.as_str()),
        "{said}"
    );
    let o = run(&tv, &["keyfile", path_str(&key), &vkey]);
    assert!(o.status.success(), "{}", describe(&o));

    let srv = TestServer::start(Setup {
        tables: format!(
            "[log]\norigin = {origin:?}\nkey_file = {:?}\n",
            path_str(&key)
        ),
        ..one_of_one()
    });
    commit_until(&srv, 9);
    await_checkpoint(&srv, 10);
    let o = check(&tv, &srv, &vkey, &[]);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("origin={origin} size=10")),
        "{}",
        describe(&o)
    );
}
