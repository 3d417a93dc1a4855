//! The writer driven step by step (no HTTP, no threads): group commit ordering, a failed sync
//! poisoning the write plane, a full disk refusing without applying anything, commits held
//! until the staged head reaches their base, one-request submits batched and held like
//! commits, a follower's apply of a verified record (alone, and a page of them as one group
//! commit), and the writer's own sync when the pipeline is idle (when it is taken, and a failed
//! one stopping the write plane on a real log over `FaultIo`).

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use ed25519_dalek::SigningKey;
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};
use svc_registry::api::replies;
use svc_registry::domain::proposal::ProposalLimits;
use svc_registry::domain::signers::{sign_payload, SignerKey, SignerSet};
use svc_registry::http::{Replier, Response};
use svc_registry::ops::WritePlane;
use svc_registry::roles::fsync::{LogSync, SyncTarget};
use svc_registry::roles::reply::Reply;
use svc_registry::roles::verifier::{Verified, VerifyJob};
use svc_registry::roles::writer::*;
use svc_registry::snapshot::Snapshot;

thread_local! {
    /// The writer's clock (ms since the epoch), per test thread: a test that moves it moves
    /// only its own writer's time.
    static CLOCK_MS: Cell<i64> = const { Cell::new(1_000_000) };
}

/// A journal that needs syncs and can be told to fail appends with a full disk.
struct TestJournal {
    end: u64,
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl Journal for TestJournal {
    fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(JournalError::NoSpace("test disk is full".into()));
        }
        self.end += payload.len() as u64;
        Ok(self.end)
    }
    fn needs_sync(&self) -> bool {
        true
    }
}

struct Rig {
    writer: Writer,
    /// The channels' other ends, kept open as the HTTP workers and the fsync thread would.
    req_tx: Sender<WriteRequest>,
    /// The writer's request queue, seen from outside (a test drains what it queued).
    req_rx: Receiver<WriteRequest>,
    _int_tx: Sender<Internal>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    verify_rx: Receiver<VerifyJob>,
    sync_rx: Receiver<u64>,
    plane: Arc<WritePlane>,
    full: Arc<std::sync::atomic::AtomicBool>,
    keys: Vec<SigningKey>,
}

fn rig() -> Rig {
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let journal = TestJournal {
        end: 0,
        full: full.clone(),
    };
    rig_on(Box::new(journal), full)
}

/// A rig whose writer appends to `journal` (`full` is what the test journal watches).
fn rig_on(journal: Box<dyn Journal>, full: Arc<std::sync::atomic::AtomicBool>) -> Rig {
    rig_with(journal, full, None)
}

/// [`rig_on`] with the verifier queue bounded at `verify_capacity` (None: unbounded).
fn rig_with(
    journal: Box<dyn Journal>,
    full: Arc<std::sync::atomic::AtomicBool>,
    verify_capacity: Option<usize>,
) -> Rig {
    let keys: Vec<SigningKey> = (1..=3).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
    let set = SignerSet::new(
        2,
        keys.iter()
            .enumerate()
            .map(|(i, k)| SignerKey {
                keyid: format!("k{i}"),
                public: k.verifying_key().into(),
                not_before: None,
                not_after: None,
            })
            .collect(),
    )
    .unwrap();
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::genesis("r", Arc::new(set))));
    let (req_tx, req_rx) = crossbeam_channel::bounded(1);
    let (int_tx, int_rx) = crossbeam_channel::unbounded();
    let (verify_tx, verify_rx) = match verify_capacity {
        Some(n) => crossbeam_channel::bounded(n),
        None => crossbeam_channel::unbounded(),
    };
    let (sync_tx, sync_rx) = crossbeam_channel::unbounded();
    let plane = WritePlane::new();
    let writer = Writer::new(WriterParts {
        registry_id: "r".into(),
        snapshot: snapshot.clone(),
        settings: Arc::new(ArcSwap::from_pointee(WriterSettings {
            ttl: Duration::from_secs(60),
            max_pending: 16,
            // Long: a held commit's wait ends only when a test says so (`on_tick`).
            commit_wait: Duration::from_secs(60),
            limits: ProposalLimits {
                max_ops: 8,
                max_descriptor_bytes: 1024,
            },
        })),
        requests: req_rx.clone(),
        internal_rx: int_rx,
        verify_tx,
        sync_tx: Some(sync_tx),
        journal,
        publisher: Box::new(Publishers(Vec::new())),
        plane: plane.clone(),
        clock_ms: || CLOCK_MS.with(Cell::get),
    });
    Rig {
        writer,
        req_tx,
        req_rx,
        _int_tx: int_tx,
        snapshot,
        verify_rx,
        sync_rx,
        plane,
        full,
        keys,
    }
}

/// A writer reply answered as the registry listener would (src/api/replies.rs).
fn reply<T: 'static>(ok: fn(T) -> Response) -> (Reply<T>, Receiver<Response>) {
    let (r, rx) = Replier::detached("t");
    (replies::reply(r, ok), rx)
}

fn answer(rx: &Receiver<Response>) -> (u16, serde_json::Value) {
    let r = rx.try_recv().expect("answered");
    (r.status, serde_json::from_slice(&r.body).unwrap())
}

impl Rig {
    fn payload(&self, base: u64, id: &str) -> Vec<u8> {
        format!(r#"{{"registry_id":"r","base_version":{base},"ops":[{{"op":"put","kind":"node","id":"{id}","body":{{}}}}]}}"#).into_bytes()
    }

    /// Propose `payload`; the answer (if any yet) is on the returned channel.
    fn propose(&mut self, payload: &[u8]) -> Receiver<Response> {
        let (r, rx) = reply(replies::accepted);
        self.writer.on_request(WriteRequest::Propose {
            bytes: payload.to_vec(),
            reply: r,
        });
        rx
    }

    /// Propose and approve with two keys, verifying on this thread; returns the proposal id.
    fn approved(&mut self, payload: &[u8]) -> String {
        let rx = self.propose(payload);
        // A 202 waits for its pending frame to be durable (docs/FORMATS.md): play the fsync thread.
        self.sync_pending();
        let (status, v) = answer(&rx);
        assert_eq!(status, 202, "{v}");
        let id = v["proposal_id"].as_str().unwrap().to_string();
        let sigs = (0..2)
            .map(|i| (format!("k{i}"), sign_payload(&self.keys[i], payload).into()))
            .collect();
        let (r, rx) = reply(replies::approved);
        self.writer.on_request(WriteRequest::Approve {
            proposal_id: id.clone(),
            signatures: sigs,
            reply: r,
        });
        // Play the verifier pool.
        for job in self.verify_rx.try_iter().collect::<Vec<_>>() {
            let ok = job.key.verify(&job.sig, &job.pae);
            self.writer.on_internal(Internal::Verified(Verified {
                request: job.request,
                index: job.index,
                ok,
            }));
        }
        self.sync_pending();
        assert_eq!(answer(&rx).0, 200);
        id
    }

    /// The fsync thread's part for pending frames: sync everything asked for so far.
    fn sync_pending(&mut self) {
        if let Some(last) = self.sync_rx.try_iter().last() {
            self.writer.on_internal(Internal::Durable(last));
        }
    }

    /// Submit `payload` signed by the first two keys and play the verifier pool; the answer
    /// (if any yet) is on the returned channel.
    fn submit(&mut self, payload: &[u8]) -> Receiver<Response> {
        let sigs = (0..2)
            .map(|i| (format!("k{i}"), sign_payload(&self.keys[i], payload).into()))
            .collect();
        let (r, rx) = reply(replies::submitted);
        self.writer.on_request(WriteRequest::Submit {
            bytes: payload.to_vec(),
            signatures: sigs,
            reply: r,
        });
        let jobs: Vec<VerifyJob> = self.verify_rx.try_iter().collect();
        assert_eq!(jobs.len(), 2, "each signature verified on the pool");
        for job in jobs {
            let ok = job.key.verify(&job.sig, &job.pae);
            self.writer.on_internal(Internal::Verified(Verified {
                request: job.request,
                index: job.index,
                ok,
            }));
        }
        rx
    }

    /// What `GET /proposals/{id}` answers.
    fn proposal_status(&mut self, payload: &[u8]) -> (u16, serde_json::Value) {
        let (r, rx) = reply(replies::proposal);
        self.writer.on_request(WriteRequest::GetProposal {
            id: svc_registry::domain::sha256_hex(payload),
            reply: r,
        });
        answer(&rx)
    }

    fn commit(&mut self, id: &str) -> Receiver<Response> {
        let (r, rx) = reply(replies::committed);
        self.writer.on_request(WriteRequest::Commit {
            proposal_id: id.to_string(),
            reply: r,
        });
        rx
    }
}

#[test]
fn commits_are_answered_and_published_only_after_the_sync_that_covers_them() {
    let mut rig = rig();
    let p1 = rig.payload(0, "a");
    let id1 = rig.approved(&p1);
    // Both proposals are approved (their pending frames synced) before either commits: a sync
    // for a pending frame would cover a staged commit too (syncs cover prefixes).
    let p2 = rig.payload(1, "b");
    let id2 = rig.approved(&p2);
    let c1 = rig.commit(&id1);
    // Staged, not durable: no answer, nothing published, but the next commit builds on it.
    assert!(c1.try_recv().is_err());
    assert_eq!(rig.snapshot.load().version(), 0);
    let c2 = rig.commit(&id2);
    let positions: Vec<u64> = rig.sync_rx.try_iter().collect();
    assert_eq!(positions.len(), 2);
    // One sync covering the first only: version 1 is published and answered, 2 waits.
    rig.writer.on_internal(Internal::Durable(positions[0]));
    assert_eq!(
        answer(&c1),
        (
            200,
            serde_json::json!({"version": 1, "hash": rig.snapshot.load().head.hash})
        )
    );
    assert!(c2.try_recv().is_err());
    assert_eq!(rig.snapshot.load().version(), 1);
    // The group sync covering both.
    rig.writer.on_internal(Internal::Durable(positions[1]));
    assert_eq!(answer(&c2).0, 200);
    assert_eq!(rig.snapshot.load().version(), 2);
}

#[test]
fn a_failed_sync_answers_503_and_stops_every_later_write_but_not_reads() {
    let mut rig = rig();
    let p1 = rig.payload(0, "a");
    let id1 = rig.approved(&p1);
    let c1 = rig.commit(&id1);
    assert_eq!(rig.sync_rx.try_iter().count(), 1);
    rig.writer
        .on_internal(Internal::SyncFailed("EIO on fdatasync".into()));
    let (status, v) = answer(&c1);
    assert_eq!((status, v["error"].as_str().unwrap()), (503, "unavailable"));
    assert!(rig.plane.poisoned().as_deref().unwrap().contains("EIO"));
    assert_eq!(
        rig.snapshot.load().version(),
        0,
        "nothing unsynced was published"
    );
    // Every later write: 503, nothing retried.
    assert_eq!(answer(&rig.propose(&rig.payload(0, "z"))).0, 503);
    assert_eq!(answer(&rig.commit(&id1)).0, 503);
    assert_eq!(
        rig.sync_rx.try_iter().count(),
        0,
        "nothing was appended or synced after the failure"
    );
}

#[test]
fn a_full_disk_refuses_with_507_and_applies_nothing() {
    let mut rig = rig();
    let p1 = rig.payload(0, "a");
    let id1 = rig.approved(&p1);
    rig.full.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, v) = answer(&rig.commit(&id1));
    assert_eq!(
        (status, v["error"].as_str().unwrap()),
        (507, "storage_full")
    );
    assert!(
        rig.plane.poisoned().is_none(),
        "a full disk does not stop the write plane"
    );
    // Space comes back: the same proposal commits at version 1.
    rig.full.store(false, std::sync::atomic::Ordering::SeqCst);
    let c = rig.commit(&id1);
    let pos = rig.sync_rx.try_iter().last().unwrap();
    rig.writer.on_internal(Internal::Durable(pos));
    assert_eq!(answer(&c).1["version"], 1);
}

/// The pipelining case: the commit for base 1 reaches the writer before the one for base 0
/// (they came through different HTTP workers). It is held, not refused, and stages right
/// behind its predecessor: one group sync answers both.
#[test]
fn a_commit_ahead_of_the_staged_head_is_held_and_stages_behind_its_predecessor() {
    let mut rig = rig();
    let (p1, p2) = (rig.payload(0, "a"), rig.payload(1, "b"));
    let (id1, id2) = (rig.approved(&p1), rig.approved(&p2));
    let c2 = rig.commit(&id2);
    assert!(c2.try_recv().is_err(), "held, not answered");
    assert_eq!(rig.sync_rx.try_iter().count(), 0, "nothing staged yet");
    rig.writer.on_tick(Instant::now());
    assert!(c2.try_recv().is_err(), "still held before its deadline");
    let c1 = rig.commit(&id1);
    let positions: Vec<u64> = rig.sync_rx.try_iter().collect();
    assert_eq!(positions.len(), 2, "both staged, in order");
    rig.writer.on_internal(Internal::Durable(positions[1]));
    assert_eq!(answer(&c1).1["version"], 1);
    assert_eq!(answer(&c2).1["version"], 2);
    assert_eq!(rig.snapshot.load().version(), 2);
}

#[test]
fn a_held_commit_whose_predecessor_never_comes_gets_its_409_at_the_deadline() {
    let mut rig = rig();
    let p2 = rig.payload(1, "b");
    let id2 = rig.approved(&p2);
    let c2 = rig.commit(&id2);
    assert!(c2.try_recv().is_err());
    rig.writer.on_tick(Instant::now() + Duration::from_secs(61));
    let (status, v) = answer(&c2);
    assert_eq!((status, v["error"].as_str().unwrap()), (409, "conflict"));
    assert!(
        v["message"].as_str().unwrap().contains("is not HEAD 0"),
        "{v}"
    );
    assert_eq!(rig.sync_rx.try_iter().count(), 0);
    // Refused, not consumed: once HEAD is at its base the same proposal commits.
    let p1 = rig.payload(0, "a");
    let id1 = rig.approved(&p1);
    let c1 = rig.commit(&id1);
    let c2 = rig.commit(&id2);
    let last = rig.sync_rx.try_iter().last().unwrap();
    rig.writer.on_internal(Internal::Durable(last));
    assert_eq!(answer(&c1).1["version"], 1);
    assert_eq!(answer(&c2).1["version"], 2);
}

/// Two held commits on the same base: the first stages when HEAD reaches it, the second lost the
/// race and gets its 409 at once (no wait for a base that is already gone).
#[test]
fn held_commits_racing_for_one_base_get_one_success_and_one_409() {
    let mut rig = rig();
    let (p1, p2, p2b) = (
        rig.payload(0, "a"),
        rig.payload(1, "b"),
        rig.payload(1, "c"),
    );
    let (id1, id2, id2b) = (rig.approved(&p1), rig.approved(&p2), rig.approved(&p2b));
    let c2 = rig.commit(&id2);
    let c2b = rig.commit(&id2b);
    let c1 = rig.commit(&id1);
    let (status, v) = answer(&c2b);
    assert_eq!(status, 409, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("is not HEAD 2"),
        "{v}"
    );
    let positions: Vec<u64> = rig.sync_rx.try_iter().collect();
    assert_eq!(positions.len(), 2);
    rig.writer.on_internal(Internal::Durable(positions[1]));
    assert_eq!(answer(&c1).1["version"], 1);
    assert_eq!(answer(&c2).1["version"], 2);
}

#[test]
fn held_commits_get_409_at_shutdown_and_503_when_the_write_plane_stops() {
    let (mut rig, held) = rig_with_a_held_commit();
    rig.writer.on_request(WriteRequest::Shutdown);
    assert_eq!(
        answer(&held).0,
        409,
        "shutdown answers held commits at once"
    );

    let (mut rig, held) = rig_with_a_held_commit();
    rig.writer
        .on_internal(Internal::SyncFailed("EIO on fdatasync".into()));
    assert_eq!(answer(&held).0, 503);
}

fn rig_with_a_held_commit() -> (Rig, Receiver<Response>) {
    let mut rig = rig();
    let p2 = rig.payload(1, "b");
    let id2 = rig.approved(&p2);
    let held = rig.commit(&id2);
    assert!(held.try_recv().is_err());
    (rig, held)
}

/// Regression: the thread body hands `Shutdown` to `on_request`, whose stopped-write-plane branch
/// answered every request 503 and returned early, so a writer whose storage had failed never
/// saw the shutdown and SIGTERM's drain waited for it forever.
#[test]
fn regression_a_stopped_write_plane_still_shuts_down() {
    let mut rig = rig();
    rig.writer
        .on_internal(Internal::SyncFailed("EIO on fdatasync".into()));
    assert!(rig.plane.poisoned().is_some());
    let Rig { writer, req_tx, .. } = rig;
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        writer.run();
        let _ = done_tx.send(());
    });
    req_tx.send(WriteRequest::Shutdown).unwrap();
    assert!(
        done_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "the writer did not exit after Shutdown"
    );
}

#[test]
fn a_submit_and_a_commit_are_covered_by_one_group_sync_and_a_submit_leaves_no_pending_frame() {
    let mut rig = rig();
    let (p1, p2) = (rig.payload(0, "a"), rig.payload(1, "b"));
    let id1 = rig.approved(&p1);
    let c1 = rig.commit(&id1);
    let s2 = rig.submit(&p2);
    assert!(
        c1.try_recv().is_err() && s2.try_recv().is_err(),
        "staged, not durable"
    );
    // One position per staged record and nothing else: a submit appends no pending frame.
    let positions: Vec<u64> = rig.sync_rx.try_iter().collect();
    assert_eq!(positions.len(), 2);
    assert_eq!(
        rig.snapshot.load().version(),
        0,
        "nothing published before the sync"
    );
    rig.writer.on_internal(Internal::Durable(positions[1]));
    assert_eq!(answer(&c1).1["version"], 1);
    let (status, v) = answer(&s2);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["version"], 2);
    assert_eq!(v["hash"], rig.snapshot.load().head.hash.as_str());
    assert_eq!(
        v["proposal_id"],
        svc_registry::domain::sha256_hex(&p2).as_str()
    );
    assert_eq!(rig.proposal_status(&p2).1["state"], "committed");
}

#[test]
fn a_submit_ahead_of_the_staged_head_is_held_and_stages_behind_its_predecessor() {
    let mut rig = rig();
    let (p1, p2) = (rig.payload(0, "a"), rig.payload(1, "b"));
    let s2 = rig.submit(&p2);
    assert!(s2.try_recv().is_err(), "held, not answered");
    assert_eq!(rig.sync_rx.try_iter().count(), 0, "nothing staged yet");
    assert_eq!(
        rig.proposal_status(&p2).0,
        404,
        "a held submit is not pending"
    );
    let s1 = rig.submit(&p1);
    let positions: Vec<u64> = rig.sync_rx.try_iter().collect();
    assert_eq!(positions.len(), 2, "both staged, in order");
    rig.writer.on_internal(Internal::Durable(positions[1]));
    assert_eq!(answer(&s1).1["version"], 1);
    assert_eq!(answer(&s2).1["version"], 2);
}

#[test]
fn a_held_submit_whose_ttl_runs_out_is_410_and_leaves_nothing_pending() {
    let mut rig = rig();
    let p2 = rig.payload(1, "b");
    let s2 = rig.submit(&p2);
    assert!(s2.try_recv().is_err(), "held");
    // Past the 60 s TTL a proposal made at the submit's arrival would have had.
    CLOCK_MS.with(|c| c.set(c.get() + 61_000));
    rig.writer
        .on_tick(Instant::now() + Duration::from_secs(3600));
    let (status, v) = answer(&s2);
    assert_eq!((status, v["error"].as_str().unwrap()), (410, "expired"));
    assert_eq!(rig.proposal_status(&p2).0, 404);
    assert_eq!(rig.sync_rx.try_iter().count(), 0, "nothing appended");
}

/// A follower's apply (`WriteRequest::Apply`): the verified record is staged as it is, answered
/// and published only after its sync, and refused when it does not extend the staged head or
/// its descriptor count is not what its ops give.
#[test]
fn a_followers_apply_stores_the_record_as_it_is_and_only_on_the_staged_head() {
    let mut authority = rig();
    let p1 = authority.payload(0, "a");
    let id1 = authority.approved(&p1);
    let c1 = authority.commit(&id1);
    let position = authority.sync_rx.try_iter().last().unwrap();
    authority.writer.on_internal(Internal::Durable(position));
    assert_eq!(answer(&c1).0, 200);
    let record = authority.snapshot.load().head.clone();
    assert_eq!(record.version, 1);
    let proposal = Arc::new(
        svc_registry::domain::proposal::parse(
            &record.payload,
            "r",
            &ProposalLimits {
                max_ops: 8,
                max_descriptor_bytes: 1024,
            },
        )
        .unwrap(),
    );
    let apply = |rig: &mut Rig, record: svc_registry::domain::record::CommitRecord| {
        let (r, rx) = reply(replies::committed);
        rig.writer.on_request(WriteRequest::Apply {
            record: Arc::new(record),
            proposal: proposal.clone(),
            reply: r,
        });
        rx
    };
    let mut follower = rig();
    // A descriptor count that is not the ops' (it is not covered by the hash): refused.
    let mut miscounted = (*record).clone();
    miscounted.descriptors += 1;
    let (status, v) = answer(&apply(&mut follower, miscounted));
    assert_eq!(status, 409, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("descriptors"),
        "{v}"
    );
    // The record as it is: staged, answered and published only after its sync.
    let a = apply(&mut follower, (*record).clone());
    assert!(a.try_recv().is_err());
    assert_eq!(follower.snapshot.load().version(), 0);
    let position = follower.sync_rx.try_iter().last().unwrap();
    follower.writer.on_internal(Internal::Durable(position));
    assert_eq!(answer(&a).0, 200);
    let published = follower.snapshot.load();
    assert_eq!(published.version(), 1);
    assert_eq!(published.head.to_json(), record.to_json());
    // The same record again does not extend the staged head: refused, nothing changes.
    let (status, v) = answer(&apply(&mut follower, (*record).clone()));
    assert_eq!(status, 409, "{v}");
    assert_eq!(follower.snapshot.load().version(), 1);
    assert!(follower.sync_rx.try_iter().next().is_none());
}

/// A follower hands over a page of applies at once: while more requests are queued the writer
/// stages each without asking for a sync, and asks once, for the last, when its queue drains
/// (`sync_deferred`, which its loop calls before blocking); that one sync answers and publishes
/// them all. A lone apply (nothing queued) asks at once.
#[test]
fn a_burst_of_applies_asks_for_one_sync_when_the_queue_drains() {
    let mut authority = rig();
    let mut records = Vec::new();
    for (base, id) in [(0, "a"), (1, "b"), (2, "c")] {
        let p = authority.payload(base, id);
        let pid = authority.approved(&p);
        let c = authority.commit(&pid);
        let position = authority.sync_rx.try_iter().last().unwrap();
        authority.writer.on_internal(Internal::Durable(position));
        assert_eq!(answer(&c).0, 200);
        records.push(authority.snapshot.load().head.clone());
    }
    let limits = ProposalLimits {
        max_ops: 8,
        max_descriptor_bytes: 1024,
    };
    let mut follower = rig();
    let apply = |rig: &mut Rig, record: &svc_registry::domain::record::CommitRecord| {
        let proposal =
            svc_registry::domain::proposal::parse(&record.payload, "r", &limits).unwrap();
        let (r, rx) = reply(replies::committed);
        rig.writer.on_request(WriteRequest::Apply {
            record: Arc::new(record.clone()),
            proposal: Arc::new(proposal),
            reply: r,
        });
        rx
    };
    // Something is queued behind the first two applies (the rest of a page).
    follower.req_tx.send(WriteRequest::Shutdown).unwrap();
    let a1 = apply(&mut follower, &records[0]);
    let a2 = apply(&mut follower, &records[1]);
    assert!(
        follower.sync_rx.try_iter().next().is_none(),
        "no sync asked for while requests are queued"
    );
    // The queue drains: one sync, for the second record's position.
    assert!(follower.req_rx.try_recv().is_ok());
    follower.writer.sync_deferred();
    let asked: Vec<u64> = follower.sync_rx.try_iter().collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(a1.try_recv().is_err() && a2.try_recv().is_err());
    assert_eq!(follower.snapshot.load().version(), 0);
    follower.writer.on_internal(Internal::Durable(asked[0]));
    assert_eq!(answer(&a1).0, 200);
    assert_eq!(answer(&a2).0, 200);
    assert_eq!(follower.snapshot.load().version(), 2);
    // Nothing queued: a lone apply asks for its own sync at once.
    let a3 = apply(&mut follower, &records[2]);
    let asked: Vec<u64> = follower.sync_rx.try_iter().collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    follower.writer.on_internal(Internal::Durable(asked[0]));
    assert_eq!(answer(&a3).0, 200);
    assert_eq!(
        follower.snapshot.load().head.to_json(),
        records[2].to_json()
    );
}

/// A sync target that records what it was asked and always succeeds.
#[derive(Clone, Default)]
struct CountingTarget(Arc<std::sync::Mutex<Vec<u64>>>);

impl SyncTarget for CountingTarget {
    fn sync_to(&self, position: u64) -> Result<u64, String> {
        self.0.lock().unwrap().push(position);
        Ok(position)
    }
}

/// The shared sync over `target`, as app.rs builds it.
fn log_sync(target: Box<dyn SyncTarget>) -> Arc<LogSync> {
    Arc::new(LogSync::new(
        target,
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
        Arc::new(svc_registry::ops::SyncHealth::default()),
    ))
}

/// The inline path's rule (`Writer::may_sync_inline`): a lone write is synced by the writer
/// itself; a position goes to the fsync thread instead while anything is queued for the
/// writer, while a sync is in flight there, or when a batch delay is configured.
#[test]
fn the_writer_syncs_inline_only_when_nothing_is_queued_and_no_sync_is_in_flight() {
    let mut rig = rig();
    let target = CountingTarget::default();
    rig.writer
        .sync_inline_when_idle(log_sync(Box::new(target.clone())), false, Duration::ZERO);
    let synced = || target.0.lock().unwrap().len();

    // Something queued for the writer: the position goes to the fsync thread.
    let s1 = rig.submit(&rig.payload(0, "a"));
    rig.req_tx.send(WriteRequest::Shutdown).unwrap();
    rig.writer.sync_due();
    let sent1: Vec<u64> = rig.sync_rx.try_iter().collect();
    assert_eq!((sent1.len(), synced()), (1, 0), "asked of the fsync thread");
    assert!(s1.try_recv().is_err(), "not durable yet");
    assert!(rig.req_rx.try_recv().is_ok());

    // Nothing queued, but the first sync is still in flight: the fsync thread again.
    let s2 = rig.submit(&rig.payload(1, "b"));
    rig.writer.sync_due();
    let sent2: Vec<u64> = rig.sync_rx.try_iter().collect();
    assert_eq!((sent2.len(), synced()), (1, 0), "a sync is in flight");
    assert_eq!(rig.snapshot.load().version(), 0);
    // The fsync thread's notice covers both.
    rig.writer.on_internal(Internal::Durable(sent2[0]));
    assert_eq!(answer(&s1).1["version"], 1);
    assert_eq!(answer(&s2).1["version"], 2);

    // Idle: the writer syncs itself, nothing goes to the fsync thread, and the answer and the
    // publication follow the sync at once.
    let s3 = rig.submit(&rig.payload(2, "c"));
    assert!(s3.try_recv().is_err(), "nothing answered before the sync");
    assert_eq!(rig.snapshot.load().version(), 2);
    rig.writer.sync_due();
    assert_eq!(rig.sync_rx.try_iter().count(), 0);
    assert_eq!(synced(), 1);
    assert_eq!(answer(&s3).1["version"], 3);
    assert_eq!(rig.snapshot.load().version(), 3);

    // A configured batch delay: the operator wants batching, so never inline.
    let mut rig = self::rig();
    let target = CountingTarget::default();
    rig.writer.sync_inline_when_idle(
        log_sync(Box::new(target.clone())),
        false,
        Duration::from_millis(2),
    );
    let s = rig.submit(&rig.payload(0, "a"));
    rig.writer.sync_due();
    let sent: Vec<u64> = rig.sync_rx.try_iter().collect();
    assert_eq!((sent.len(), target.0.lock().unwrap().len()), (1, 0));
    rig.writer.on_internal(Internal::Durable(sent[0]));
    assert_eq!(answer(&s).0, 200);
}

/// A failed inline sync stops the write plane exactly like the fsync thread's `SyncFailed`: the
/// write it covered answers 503 and is neither published nor on disk after a power cut, every
/// later write answers 503, nothing is asked of the fsync thread, and the shared sync never
/// syncs again. Runs on a real log over `FaultIo` (its "failed and lost" sync fault).
#[test]
fn a_failed_inline_sync_answers_503_and_nothing_unsynced_is_published_or_acknowledged() {
    use svc_registry::log::{FaultIo, FaultKind, Op, StorageOptions};
    let io = FaultIo::new();
    let opts = StorageOptions {
        segment_bytes: 1 << 20,
        checkpoints_kept: 3,
    };
    let data = std::path::Path::new("/data");
    let opened = svc_registry::log::open(data, &opts, Arc::new(io.clone())).unwrap();
    let _lock = opened.lock;
    let journal = svc_registry::storage::DiskJournal {
        writer: opened.writer,
        sync: true,
    };
    let mut rig = rig_on(Box::new(journal), Arc::default());
    let sync = log_sync(Box::new(opened.syncer.clone()));
    rig.writer
        .sync_inline_when_idle(sync.clone(), false, Duration::ZERO);

    // A lone submit: synced inline, answered, published.
    let s1 = rig.submit(&rig.payload(0, "a"));
    let syncs = io.calls(Op::MapSync);
    rig.writer.sync_due();
    assert!(io.calls(Op::MapSync) > syncs, "the writer synced the log");
    let (status, v) = answer(&s1);
    assert_eq!((status, v["version"].as_u64()), (200, Some(1)), "{v}");

    // The next one's sync fails, and its pages are lost.
    io.inject(Op::MapSync, 0, FaultKind::SyncFailedLost);
    let s2 = rig.submit(&rig.payload(1, "b"));
    assert!(s2.try_recv().is_err());
    rig.writer.sync_due();
    let (status, v) = answer(&s2);
    assert_eq!(
        (status, v["error"].as_str()),
        (503, Some("unavailable")),
        "{v}"
    );
    assert!(
        rig.plane.poisoned().unwrap().contains("log sync failed"),
        "{:?}",
        rig.plane.poisoned()
    );
    assert_eq!(
        rig.snapshot.load().version(),
        1,
        "nothing unsynced published"
    );

    // Every later write: 503, nothing appended, nothing asked of the fsync thread.
    assert_eq!(answer(&rig.propose(&rig.payload(1, "z"))).0, 503);
    rig.writer.sync_due();
    assert_eq!(
        rig.sync_rx.try_iter().count(),
        0,
        "the fsync thread got nothing"
    );
    // The shared sync (the fsync thread's too) refuses without touching the log again.
    let syncs = io.calls(Op::MapSync);
    assert!(sync.sync(&[u64::MAX]).is_err());
    assert_eq!(io.calls(Op::MapSync), syncs);

    // A power cut: the acknowledged version is on disk, the refused one is not.
    io.crash(7);
    let reopened = svc_registry::log::open(data, &opts, Arc::new(io.clone())).unwrap();
    let versions: Vec<u64> = reopened
        .records
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()["version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(versions, [1]);
}

/// A verifier queue that cannot take every signature of a request refuses it 429 busy (a
/// `/submit` with a retry time) and records nothing: the jobs it did queue come back to no
/// request in flight, and neither the approval nor the write happens.
#[test]
fn a_full_verifier_queue_refuses_an_approval_and_a_submit_busy_and_records_nothing() {
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let journal = TestJournal {
        end: 0,
        full: full.clone(),
    };
    // Room for one job: a request's second signature does not fit.
    let mut rig = rig_with(Box::new(journal), full, Some(1));
    let payload = rig.payload(0, "a");
    let rx = rig.propose(&payload);
    rig.sync_pending();
    assert_eq!(answer(&rx).0, 202);
    let id = svc_registry::domain::sha256_hex(&payload);
    let two_sigs = |rig: &Rig, payload: &[u8]| -> Vec<(String, _)> {
        (0..2)
            .map(|i| (format!("k{i}"), sign_payload(&rig.keys[i], payload).into()))
            .collect()
    };
    let (r, rx) = reply(replies::approved);
    rig.writer.on_request(WriteRequest::Approve {
        proposal_id: id.clone(),
        signatures: two_sigs(&rig, &payload),
        reply: r,
    });
    let refused = rx.try_recv().expect("answered at once");
    assert_eq!(refused.status, 429);
    assert!(!refused
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("retry-after")));

    let other = rig.payload(0, "b");
    let (r, rx) = reply(replies::submitted);
    rig.writer.on_request(WriteRequest::Submit {
        bytes: other.clone(),
        signatures: two_sigs(&rig, &other),
        reply: r,
    });
    let refused = rx.try_recv().expect("answered at once");
    assert_eq!(refused.status, 429);
    assert!(refused
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("retry-after")));

    // The one job each request queued comes back verified: nothing is waiting for it.
    for job in rig.verify_rx.try_iter().collect::<Vec<_>>() {
        rig.writer.on_internal(Internal::Verified(Verified {
            request: job.request,
            index: job.index,
            ok: true,
        }));
    }
    rig.sync_pending();
    let (status, v) = rig.proposal_status(&payload);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["approvals"], serde_json::json!([]), "{v}");
    assert_eq!(
        rig.proposal_status(&other).0,
        404,
        "the refused submit left a proposal"
    );
    assert_eq!(rig.snapshot.load().version(), 0);
}
