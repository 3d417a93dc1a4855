//! The retention window (SPEC §14, `[storage] retain_versions`) end to end with the real binary:
//! the window's edges on every read route (the oldest retained version and the first dropped
//! one answer 200 and 410, the newest N versions are always there), `oldest_version` in the
//! head, a stream resume from before the window gets `event: reset`, the data directory stays
//! within one segment of flat while commits go on, a SIGKILL while the checkpoint thread writes
//! and drops restarts with the same state and the same retained bytes, and an amnesiac follower
//! with a window drops its own history, restarts empty and catches up again from an authority
//! that keeps everything. A follower whose upstream's window is past its next version moves on
//! to one with the full history, or says in `/readyz` that none can serve it; a cut log without
//! a covering checkpoint, or with a gap, refuses to start.
//!
//! Segments are small (98,304 bytes, the least `max_body_bytes = 16384` allows) and records
//! large (a ~3 kB descriptor body each), so a segment rolls every few commits; checkpoints come
//! every 10 commits.

mod common;
use common::*;
use serde_json::json as j;
use std::time::Duration;
use svc_registry::http::client::open_stream;
use svc_registry::http::events::next_event;

const WAIT: Duration = Duration::from_secs(60);
const RETAIN: u64 = 30;
const CHECKPOINT_EVERY: u64 = 10;

fn storage_tables(retain: u64) -> String {
    format!(
        "[storage]\nsegment_bytes = 98304\ncheckpoint_every_commits = {CHECKPOINT_EVERY}\n\
         checkpoint_interval_secs = 1\nretain_versions = {retain}\n\
         [proposals]\nmax_descriptor_bytes = 8192\n"
    )
}

fn windowed(retain: u64) -> Setup {
    Setup {
        top: "max_body_bytes = 16384\n".into(),
        tables: storage_tables(retain),
        ..Setup::default()
    }
}

fn head_version(s: &TestServer) -> u64 {
    s.head()["version"].as_u64().unwrap()
}

fn oldest(s: &TestServer) -> u64 {
    s.head()["oldest_version"].as_u64().unwrap()
}

/// Commit `n` single-put versions with a ~3 kB body each.
fn commit_n(s: &TestServer, n: u64, tag: &str) {
    for _ in 0..n {
        let base = head_version(s);
        s.commit_ops(
            base,
            j!([put(
                "node",
                &format!("{tag}-{base}"),
                j!({"addr": format!("10.0.0.{}:9000", base % 250), "pad": "p".repeat(3000)})
            )]),
        );
    }
}

fn segments(s: &TestServer) -> Vec<u64> {
    let mut out: Vec<u64> = std::fs::read_dir(s.data_dir.join("log"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("segment-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    out.sort_unstable();
    out
}

/// Wait until the checkpoint of HEAD is written, and with it the drop it allows (the checkpoint
/// thread drops before it logs the checkpoint): with no commit after it, the window stays put.
/// Returns the oldest retained version.
fn wait_window_caught_up(s: &TestServer) -> u64 {
    let head = head_version(s);
    let line = format!("msg=\"checkpoint written\" version={head} ");
    assert!(
        s.wait_log(&line, WAIT),
        "no checkpoint of {head}:\n{}",
        s.logs()
    );
    oldest(s)
}

fn status(s: &TestServer, path: &str) -> (u16, serde_json::Value) {
    let r = s.get(path);
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or_default(),
    )
}

/// The first event but heartbeats of a stream resumed after `last`.
fn first_event(s: &TestServer, last: u64) -> svc_registry::http::events::Event {
    let id = last.to_string();
    let (head, mut reader) = open_stream(
        &s.target(),
        "/registry/stream",
        &[("Last-Event-ID", id.as_str())],
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(head.status, 200);
    loop {
        let e = next_event(&mut *reader).unwrap().expect("an event");
        if e.event != "heartbeat" {
            return e;
        }
    }
}

#[test]
fn window_edges_on_every_read_route_and_the_data_dir_stays_flat() {
    let s = TestServer::start(windowed(RETAIN));
    assert_eq!(oldest(&s), 0, "nothing dropped yet: oldest_version 0");
    assert_eq!(status(&s, "/registry/0").0, 200);
    commit_n(&s, 120, "a");
    let o = wait_window_caught_up(&s);
    let head = head_version(&s);
    assert!(
        o <= head - RETAIN + 1,
        "the newest {RETAIN} versions are kept: oldest {o}, head {head}"
    );
    // The newest N versions, and the oldest retained one, are served.
    for v in (head - RETAIN + 1..=head).chain([o]) {
        let (code, rec) = status(&s, &format!("/registry/{v}"));
        assert_eq!(
            (code, rec["version"].as_u64()),
            (200, Some(v)),
            "version {v}"
        );
    }
    // The first dropped version and genesis: 410 expired, naming the oldest retained version.
    for v in [o - 1, 0] {
        let (code, err) = status(&s, &format!("/registry/{v}"));
        assert_eq!(code, 410, "version {v}: {err}");
        assert_eq!(err["error"], "expired");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains(&format!("oldest retained version is {o}")),
            "{err}"
        );
    }
    // /registry/log: from the oldest retained version a page, from the first dropped one 410.
    let (code, page) = status(&s, &format!("/registry/log?from={o}&limit=5"));
    assert_eq!(code, 200);
    assert_eq!(page["records"][0]["version"].as_u64(), Some(o));
    let (code, err) = status(&s, &format!("/registry/log?from={}", o - 1));
    assert_eq!((code, err["error"].as_str()), (410, Some("expired")));
    assert_eq!(status(&s, "/registry/log?from=0").0, 410);
    // Metrics say the same.
    assert_eq!(s.metric("registry_oldest_version") as u64, oldest(&s));
    assert!(s.metric("registry_log_bytes") > 0.0);

    // The data directory stays within one segment of flat while the registry grows.
    let first = segments(&s);
    assert!(first[0] > 0, "old segments were deleted: {first:?}");
    assert!(s.data_dir.join("genesis.json").exists());
    commit_n(&s, 120, "b");
    wait_window_caught_up(&s);
    let later = segments(&s);
    assert!(
        later.len() <= first.len() + 1,
        "segments {} then {}: not flat",
        first.len(),
        later.len()
    );
    assert!(later[0] > first[0], "{first:?} then {later:?}");
    // Gap-free: indices are consecutive.
    assert!(later.windows(2).all(|w| w[1] == w[0] + 1), "{later:?}");

    // ronctl verify checks the window and says it could not check from genesis.
    let (ok, out, err) = s.ronctl(&["registry", "verify"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("NOT verified from genesis"), "{out}");
    assert!(err.contains("authority"), "{err}");
}

#[test]
fn a_stream_resume_from_before_the_window_gets_a_reset_with_the_head() {
    let s = TestServer::start(windowed(RETAIN));
    commit_n(&s, 100, "s");
    let o = wait_window_caught_up(&s);
    let head = head_version(&s);
    // After o - 2 the next version (o - 1) is gone: reset with the current head.
    let e = first_event(&s, o - 2);
    assert_eq!(e.event, "reset", "{e:?}");
    assert_eq!(e.id, Some(head));
    let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(data["version"].as_u64(), Some(head));
    // After o - 1 every later version is retained: the replay starts at o, no reset.
    let e = first_event(&s, o - 1);
    assert_eq!((e.event.as_str(), e.id), ("commit", Some(o)), "{e:?}");

    // `ronctl tail` from before the window: it shows the reset, says which versions it could
    // not show, and goes on live (its one commit is the next version, not a replay loop).
    let tail = std::process::Command::new(ronctl_bin())
        .args(["--url", &format!("http://{}", s.registry), "tail"])
        .args(["--from", &(o - 2).to_string(), "--limit", "1"])
        .env_remove("RON_REGISTRY_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reset names HEAD; once the tail is connected (a subscriber), commit one version.
    eventually(WAIT, "the tail to subscribe", || {
        s.metric("sse_subscribers") >= 1.0
    });
    commit_n(&s, 1, "t");
    let out = tail.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("cannot replay after version {}", o - 2)),
        "{stderr}"
    );
    assert!(
        stdout.lines().count() >= 2,
        "the reset and the commit: {stdout}"
    );
    assert!(stdout.contains(&(head + 1).to_string()), "{stdout}");
}

#[test]
fn sigkill_while_checkpoints_drop_segments_restarts_with_the_same_state_and_bytes() {
    let mut s = TestServer::start(windowed(RETAIN));
    for round in 0..3 {
        commit_n(&s, 40, &format!("k{round}"));
        // Capture what is served, then kill at once: the checkpoint thread is writing or
        // dropping for the last commits (or has just finished) at an arbitrary point.
        let head = s.head();
        let from = head["oldest_version"].as_u64().unwrap();
        let version = head["version"].as_u64().unwrap();
        let bytes: Vec<(u64, Vec<u8>)> = (from.max(1)..=version)
            .map(|v| (v, s.get(&format!("/registry/{v}")).body))
            .collect();
        let descriptors = s.get("/registry/descriptors?limit=1000").body;
        s = s.restart_killed();
        let after = s.head();
        assert_eq!(after["version"], head["version"], "round {round}");
        assert_eq!(after["hash"], head["hash"], "round {round}");
        assert_eq!(s.get("/registry/descriptors?limit=1000").body, descriptors);
        let now_oldest = after["oldest_version"].as_u64().unwrap();
        assert!(now_oldest >= from, "the window never moves back");
        for (v, b) in &bytes {
            let r = s.get(&format!("/registry/{v}"));
            if *v >= now_oldest {
                assert_eq!((r.status, &r.body), (200, b), "round {round} version {v}");
            } else {
                assert_eq!(r.status, 410, "round {round} version {v}");
            }
        }
        let segs = segments(&s);
        assert!(segs.windows(2).all(|w| w[1] == w[0] + 1), "gap: {segs:?}");
        if round > 0 {
            assert!(
                segs[0] > 0,
                "round {round}: restarted on a log cut by the window"
            );
        }
    }
    // And it goes on committing and dropping after the restarts.
    commit_n(&s, 20, "after");
    wait_window_caught_up(&s);
    assert!(oldest(&s) > 0);
}

#[test]
fn an_amnesiac_follower_with_a_window_drops_restarts_and_catches_up_from_a_full_authority() {
    let auth = TestServer::start(windowed(0));
    commit_n(&auth, 120, "f");
    let genesis = json(&auth.get("/registry/0"))["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let setup = || Setup {
        top: "max_body_bytes = 16384\n".into(),
        tables: format!(
            "{}[follow]\nupstreams = [\"http://{}\"]\ngenesis_hash = {genesis:?}\n\
             max_lag_versions = 16\ntimeout_ms = 1000\n",
            storage_tables(RETAIN),
            auth.registry
        ),
        flags: vec!["--amnesia".into()],
        ..Setup::default()
    };
    let f = TestServer::start(setup());
    let head = head_version(&auth);
    eventually(WAIT, "the follower to catch up", || {
        head_version(&f) == head
    });
    // Its memory journal is released in 256 KiB units: ~120 records of ~4.5 kB leave at least
    // one whole unit below the window.
    let o = eventually_some(WAIT, "the follower to drop old records", || {
        Some(oldest(&f)).filter(|&o| o > 0)
    });
    assert!(o <= head - RETAIN + 1);
    assert_eq!(status(&f, &format!("/registry/{}", o - 1)).0, 410);
    assert_eq!(
        status(&f, "/registry/0").0,
        410,
        "it cannot serve a full catch-up"
    );
    assert!(f.metric("registry_log_bytes") > 0.0);
    // The authority keeps everything.
    assert_eq!(oldest(&auth), 0);
    assert_eq!(status(&auth, "/registry/0").0, 200);

    // Restart: an amnesiac node starts empty, verifies from genesis again and catches up.
    let f = f.restart_killed();
    commit_n(&auth, 5, "g");
    let head = head_version(&auth);
    eventually(WAIT, "the restarted follower to catch up", || {
        head_version(&f) == head
    });
    let (fh, ah) = (f.head(), auth.head());
    assert_eq!((&fh["version"], &fh["hash"]), (&ah["version"], &ah["hash"]));
    let o = oldest(&f);
    for v in o.max(1)..=head {
        assert_eq!(
            f.get(&format!("/registry/{v}")).body,
            auth.get(&format!("/registry/{v}")).body,
            "version {v}"
        );
    }
    assert_eq!(
        f.get("/registry/descriptors?limit=1000").body,
        auth.get("/registry/descriptors?limit=1000").body
    );
}

/// The topology rule (docs/OPERATIONS.md §11.2): a windowed node cannot serve a catch-up from
/// genesis. A follower listing it first moves on to an upstream with the full history; one with
/// no such upstream says so in `/readyz` and a metric, and never skips the gap.
#[test]
fn a_windowed_upstream_answers_410_and_the_follower_moves_on_or_says_none_can_serve() {
    let auth = TestServer::start(windowed(0));
    commit_n(&auth, 5, "w");
    let genesis = json(&auth.get("/registry/0"))["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let follow = |upstreams: &[&TestServer], retain: u64, flags: &[&str], data: Option<_>| Setup {
        top: "max_body_bytes = 16384\n".into(),
        tables: format!(
            "{}[follow]\nupstreams = [{}]\ngenesis_hash = {genesis:?}\n\
             max_lag_versions = 16\ntimeout_ms = 1000\n",
            storage_tables(retain),
            upstreams
                .iter()
                .map(|s| format!("\"http://{}\"", s.registry))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        flags: flags.iter().map(|f| f.to_string()).collect(),
        data_dir: data,
        ..Setup::default()
    };
    // A durable follower that will stay at version 5 while the others move on.
    let behind = TestServer::start(follow(&[&auth], 0, &[], None));
    eventually(WAIT, "the lagging follower at 5", || {
        head_version(&behind) == 5
    });
    let behind_dir = behind.data_dir.clone();
    let behind_root = behind.dir.clone();
    drop(behind);

    // A windowed durable follower of the authority.
    let windowed_f = TestServer::start(follow(&[&auth], RETAIN, &[], None));
    commit_n(&auth, 100, "x");
    let head = head_version(&auth);
    eventually(WAIT, "the windowed follower to catch up", || {
        head_version(&windowed_f) == head
    });
    let o = wait_window_caught_up(&windowed_f);
    assert!(
        o > 6,
        "its window starts after the lagging follower's next version: {o}"
    );

    // An amnesiac follower listing the windowed one first: 410, then the authority serves it.
    let f = TestServer::start(follow(&[&windowed_f, &auth], RETAIN, &["--amnesia"], None));
    eventually(WAIT, "the amnesiac follower to catch up", || {
        head_version(&f) == head
    });
    assert!(
        f.logs()
            .contains("upstream no longer holds our next version"),
        "{}",
        f.logs()
    );

    // The lagging follower restarted with only the windowed upstream: nobody holds version 6.
    let _keep = behind_root;
    let stuck = TestServer::start(follow(&[&windowed_f], 0, &[], Some(behind_dir)));
    let reasons = eventually_some(WAIT, "a /readyz reason", || {
        let r = stuck.admin("GET", "/readyz", None);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let reasons = body["reasons"].to_string();
        (r.status == 503 && reasons.contains("no upstream holds version 6")).then_some(reasons)
    });
    assert!(
        reasons.contains(&format!("oldest retained version is {o}")),
        "{reasons}"
    );
    assert_eq!(stuck.metric("registry_follow_upstreams_expired"), 1.0);
    assert_eq!(head_version(&stuck), 5, "no gap skipped");
}

/// A log cut by the window starts after segment 0: normal with a covering checkpoint, refused
/// without one, and refused with a gap between segments: never silently skipped.
#[test]
fn a_cut_log_without_a_covering_checkpoint_or_with_a_gap_refuses_to_start() {
    let s = TestServer::start(windowed(RETAIN));
    commit_n(&s, 80, "r");
    wait_window_caught_up(&s);
    let s = s.stop();
    let segs = segments(&s);
    assert!(segs[0] > 0 && segs.len() >= 3, "{segs:?}");
    let reason = |s: &TestServer| {
        eventually_some(WAIT, "a refusal in /readyz", || {
            let r = s.admin("GET", "/readyz", None);
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            (r.status == 503 && body["reasons"].to_string().contains("state not restored:"))
                .then(|| body["reasons"].to_string())
        })
    };
    // A gap inside the log: segment segs[1] removed.
    let log = s.data_dir.join("log");
    let middle = log.join(format!("segment-{:010}.log", segs[1]));
    let saved = std::fs::read(&middle).unwrap();
    std::fs::remove_file(&middle).unwrap();
    let s = s.restart_unready();
    let why = reason(&s);
    assert!(why.contains("is missing"), "{why}");
    let mut s = s;
    s.signal(libc::SIGKILL);
    s.wait_exit(Duration::from_secs(10));
    std::fs::write(&middle, saved).unwrap();
    // No checkpoint covering the cut.
    for e in std::fs::read_dir(s.data_dir.join("checkpoints")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let s = s.restart_unready();
    let why = reason(&s);
    assert!(
        why.contains("dropped by the retention window") && why.contains("no usable checkpoint"),
        "{why}"
    );
}
