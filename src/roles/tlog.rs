//! The `tlog` thread: extends the transparency log's tree (src/tlog) with every version the
//! writer publishes, and checks the tree file against the log at start-up.
//!
//! Thread: `tlog`. Input: the records of each publication (bounded channel; the writer's
//! [`TlogFeed`] only `try_send`s, so a full channel costs the writer nothing and the thread reads
//! what it missed from the published snapshot's history instead). Output: stored hashes appended
//! to the tree file, then the new [`crate::tlog::TreeHead`] published to HTTP workers. State it
//! owns alone: the [`Frontier`] (O(log n) hashes). Shutdown: when the feed is dropped (the writer
//! ended), after catching up with the last published snapshot.
//!
//! Start-up decision table (the tree file is derived data, never fsynced):
//!
//! | tree file                        | action                                                  |
//! |----------------------------------|---------------------------------------------------------|
//! | absent or empty                  | build from the log                                      |
//! | torn last hash / half a record   | ignore the partial record's hashes, rewrite them         |
//! | more versions than the durable log | truncate to the durable size (a crash lost log records that the file had) |
//! | a hash differs from the log's    | log an error, count it, truncate there and rebuild      |
//!
//! The check recomputes every stored hash from the log's `hash_V` and compares: the same code
//! appends new versions, so recovery and the normal path cannot drift apart. Until it is done
//! the served size is the part already checked (published in steps), never more.
//!
//! Errors ([`TreeError`]): a read of the log (or of the tree file) or a write of the tree file
//! that the system failed may pass, so the thread tries the same step again after a backoff
//! (100 ms doubling to 5 s), reporting the tree as behind (`/readyz` reason, log line,
//! `registry_tlog_retrying`) until it has caught up. A record that does not check or parse is
//! never retried: the thread stops there, serving the tree it has (nothing unverified is served).

use crate::domain::record::CommitRecord;
use crate::history::ReadFailure;
use crate::metrics::m;
use crate::snapshot::Snapshot;
use crate::tlog::tree::{leaf_hash, stored_hash_count, Frontier, Hash};
use crate::tlog::{Tlog, TreeHead};
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Publications queued from the writer at most; past it their records are read back from
/// history.
pub const FEED_QUEUE: usize = 4096;
/// Versions appended (or checked) between two publications of the served head, so a long
/// rebuild serves a growing tree instead of none.
const STEP_VERSIONS: u64 = 16 * 1024;
/// The wait before the first retry of a failed read; doubled after each failure in a row.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two retries.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Why the tree could not go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeError {
    /// A read (of the log or of the tree file) or a write of the tree file failed in the
    /// system: the same call may succeed later. The tree is left where it resumes from (its
    /// frontier and the hashes not yet written are kept; nothing past them was published).
    Io(String),
    /// A record the tree cannot take (it does not check or parse, names another version, holds
    /// no 32-byte hash), or the start-up check was stopped by a shutdown: never retried.
    Stop(String),
}

impl TreeError {
    /// Whether the same call may succeed if tried again.
    pub fn may_pass(&self) -> bool {
        matches!(self, TreeError::Io(_))
    }
}

impl std::fmt::Display for TreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TreeError::Io(m) | TreeError::Stop(m) => f.write_str(m),
        }
    }
}

impl From<ReadFailure> for TreeError {
    fn from(e: ReadFailure) -> TreeError {
        match e {
            ReadFailure::Io(m) => TreeError::Io(m),
            ReadFailure::Corrupt(m) => TreeError::Stop(m),
        }
    }
}

/// A failed system call on the tree file: it may pass.
fn tree_file(what: &str, e: std::io::Error) -> TreeError {
    TreeError::Io(format!("{what} the tree file: {e}"))
}

/// The writer's publisher: hand the newly visible records to the `tlog` thread, one message
/// per publication (a group commit's records together: one send and one wake-up, not one per
/// record — the send is the tree's whole cost on the writer thread).
pub struct TlogFeed(pub Sender<Vec<Arc<CommitRecord>>>);

impl crate::snapshot::Publisher for TlogFeed {
    fn published(&mut self, _: &Arc<Snapshot>, records: &[Arc<CommitRecord>]) {
        // Full: the thread is behind and will read these versions from the snapshot.
        let _ = self.0.try_send(records.to_vec());
    }
}

pub struct TlogParts {
    pub tlog: Arc<Tlog>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub feed: Receiver<Vec<Arc<CommitRecord>>>,
    /// Raised at shutdown: a long start-up check stops between steps.
    pub stop: Arc<AtomicBool>,
    /// Told why the thread stopped, if it stops on an error (`/readyz` reasons).
    pub plane: Arc<crate::ops::WritePlane>,
}

/// The thread ends on `e`: logged, and named in `/readyz` reasons (instead of "behind").
fn stopped(p: &TlogParts, e: String) {
    log::error!("msg=\"transparency log stopped\" error={e:?}");
    *p.plane.readiness.tlog_behind.lock() = None;
    m().registry_tlog_retrying.set(0);
    *p.plane.readiness.tlog_problem.lock() = Some(e);
}

/// Failed reads in a row, while the thread waits to try again.
struct Behind {
    failures: u64,
    /// The wait before the next retry.
    delay: Duration,
}

/// A read failed (it may pass): say the tree is behind (`/readyz`, the log, the metrics) and
/// return how long to wait before trying again.
fn behind(p: &TlogParts, retry: &mut Option<Behind>, size: u64, e: &str) -> Duration {
    let b = retry.get_or_insert(Behind {
        failures: 0,
        delay: RETRY_FIRST,
    });
    let delay = b.delay;
    b.failures += 1;
    b.delay = (b.delay * 2).min(RETRY_MAX);
    m().registry_tlog_read_errors_total.inc();
    m().registry_tlog_retrying.set(1);
    log::warn!(
        "msg=\"transparency log behind: a read failed; retrying\" size={size} failures={} retry_in_ms={} error={e:?}",
        b.failures,
        delay.as_millis()
    );
    *p.plane.readiness.tlog_behind.lock() = Some(format!(
        "a read failed {} time(s) in a row, retrying in {} ms: {e}",
        b.failures,
        delay.as_millis()
    ));
    delay
}

/// The step that failed went through: the tree is no longer behind.
fn caught_up(p: &TlogParts, retry: &mut Option<Behind>, size: u64) {
    if let Some(b) = retry.take() {
        *p.plane.readiness.tlog_behind.lock() = None;
        m().registry_tlog_retrying.set(0);
        log::info!(
            "msg=\"transparency log caught up after failed reads\" size={size} failures={}",
            b.failures
        );
    }
}

/// Wait `delay` before a retry, keeping the records the feed delivers meanwhile, up to
/// [`FEED_QUEUE`] of them (past that they are dropped, as a full feed drops them, and read from
/// history: an outage of hours holds no more than that). False when the thread must end
/// instead: the writer ended (the feed closed) or shutdown began.
fn wait_retry(p: &TlogParts, delay: Duration, fed: &mut VecDeque<Arc<CommitRecord>>) -> bool {
    let until = Instant::now() + delay;
    loop {
        if p.stop.load(Ordering::Relaxed) {
            return false;
        }
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            return true;
        };
        match p.feed.recv_timeout(left) {
            // Later batches only are dropped, so what is kept stays in version order.
            Ok(batch) if fed.len() < FEED_QUEUE => fed.extend(batch),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// The raw bytes of `hash_V` of `record`.
fn record_hash(record: &CommitRecord) -> Result<Hash, TreeError> {
    let bytes = hex::decode(&record.hash)
        .map_err(|e| TreeError::Stop(format!("version {}: {e}", record.version)))?;
    bytes
        .try_into()
        .map_err(|_| TreeError::Stop(format!("version {}: hash is not 32 bytes", record.version)))
}

/// Only the fields of a stored record the tree needs (parsing the whole record would build its
/// envelope for nothing).
#[derive(serde::Deserialize)]
struct HashOnly {
    version: u64,
    hash: String,
}

/// `hash_V` read back from the published snapshot's history.
fn history_hash(snap: &Snapshot, version: u64) -> Result<Hash, TreeError> {
    if version == snap.version() {
        return record_hash(&snap.head);
    }
    if version == 0 {
        return record_hash(snap.history.genesis());
    }
    let corrupt = |m: String| TreeError::Stop(format!("version {version}: {m}"));
    let bytes = snap.history.bytes_checked(version)?.ok_or_else(|| {
        TreeError::Stop(format!("version {version} is not in the published history"))
    })?;
    let r: HashOnly =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("stored record: {e}")))?;
    if r.version != version {
        return Err(corrupt(format!("the log holds {}", r.version)));
    }
    let h = hex::decode(&r.hash).map_err(|e| corrupt(e.to_string()))?;
    h.try_into()
        .map_err(|_| corrupt("hash is not 32 bytes".to_string()))
}

struct Appender {
    tlog: Arc<Tlog>,
    frontier: Frontier,
    /// Stored hashes computed but not yet written.
    buf: Vec<Hash>,
}

impl Appender {
    /// Append leaves until the tree holds `target` versions of `snap`, taking hashes from `fed`
    /// where it has them.
    fn extend(
        &mut self,
        snap: &Snapshot,
        target: u64,
        fed: &mut VecDeque<Arc<CommitRecord>>,
    ) -> Result<(), TreeError> {
        while self.frontier.size() < target {
            let v = self.frontier.size();
            while fed.front().is_some_and(|r| r.version < v) {
                fed.pop_front();
            }
            let h = match fed.front() {
                Some(r) if r.version == v => record_hash(r)?,
                _ => history_hash(snap, v)?,
            };
            self.frontier.push(leaf_hash(&h), &mut self.buf);
            if self.frontier.size() % STEP_VERSIONS == 0 {
                self.flush()?;
            }
        }
        self.flush()
    }

    /// Write the buffered hashes, then publish the head they complete. A failed write keeps
    /// them buffered (the frontier past them), so the next call writes them again.
    fn flush(&mut self) -> Result<(), TreeError> {
        let size = self.frontier.size();
        if !self.buf.is_empty() {
            let at = stored_hash_count(size) - self.buf.len() as u64;
            self.tlog
                .store()
                .write_at(at, &self.buf)
                .map_err(|e| tree_file("writing", e))?;
            self.buf.clear();
        }
        if let Some(root) = self.frontier.root() {
            if self.tlog.head().is_none_or(|h| h.size < size) {
                self.tlog.publish(TreeHead { size, root });
            }
        }
        Ok(())
    }
}

/// Check the tree file against the log's first `durable` versions: the checked prefix's frontier
/// (the file is truncated after it).
fn check(
    tlog: &Tlog,
    snap: &Snapshot,
    durable: u64,
    stop: &AtomicBool,
) -> Result<Frontier, TreeError> {
    let store = tlog.store();
    let count = store.count().map_err(|e| tree_file("reading", e))?;
    let held = crate::tlog::tree::size_for_stored_count(count).min(durable);
    if held < crate::tlog::tree::size_for_stored_count(count) {
        log::warn!(
            "msg=\"tree file is ahead of the durable log; truncating\" file_versions={} durable_versions={durable}",
            crate::tlog::tree::size_for_stored_count(count)
        );
    }
    let mut frontier = Frontier::new();
    let mut out = Vec::with_capacity(64);
    let mut checked = 0u64;
    let mut mismatch = None;
    'check: while checked < held {
        if stop.load(Ordering::Relaxed) {
            // Shutting down mid-check: keep the file as it is; the next start checks it again.
            return Err(TreeError::Stop("stopped during the start-up check".into()));
        }
        // Compare a step at a time: one read of the file per step.
        let end = (checked + STEP_VERSIONS).min(held);
        let from = stored_hash_count(checked);
        let stored = store
            .read_range(from, stored_hash_count(end) - from)
            .map_err(|e| tree_file("reading", e))?;
        let mut at = 0usize;
        while checked < end {
            out.clear();
            let mut next = frontier.clone();
            next.push(leaf_hash(&history_hash(snap, checked)?), &mut out);
            if stored[at..at + out.len()] != out[..] {
                mismatch = Some(checked);
                break 'check;
            }
            at += out.len();
            frontier = next;
            checked += 1;
        }
        if let Some(root) = frontier.root() {
            // A check tried again after a failed read passes sizes it served before: the
            // served head never moves back.
            if tlog.head().is_none_or(|h| h.size < checked) {
                tlog.publish(TreeHead {
                    size: checked,
                    root,
                });
            }
        }
    }
    if let Some(v) = mismatch {
        log::error!(
            "msg=\"tree file disagrees with the log; rebuilding it from the log\" version={v}"
        );
        m().registry_tlog_rebuilds_total.inc();
    }
    store
        .truncate(stored_hash_count(checked))
        .map_err(|e| tree_file("truncating", e))?;
    Ok(frontier)
}

/// Map the tree file's hashes of a tree of `size` leaves, all written. A failure is logged and
/// costs only speed: reads past the map use `pread`.
fn map_tree(tlog: &Tlog, size: u64) {
    if let Err(e) = tlog.store().map_to(stored_hash_count(size)) {
        log::warn!("msg=\"cannot map the tree file; proofs read it with pread\" error={e:?}");
    }
}

/// The tree under the `tlog` thread, driven one call at a time: [`run`] is a loop around it, and
/// the deterministic simulation (tests/simulation/) drives the same calls without the thread.
///
/// Invariant: the served head never exceeds the versions of the snapshots it was given (each
/// from the published, hence durable, state), and the stored hashes are exactly those of the
/// served tree once a call returns Ok.
pub struct TreeBuilder {
    appender: Appender,
    checked: u64,
}

impl TreeBuilder {
    /// The start-up check of the tree store against `snap`'s versions (truncating whatever lies
    /// past its checked prefix): a builder of the checked prefix, which [`TreeBuilder::catch_up`]
    /// then extends to every version. An error means the log (or the tree file) could not be
    /// read back: the tree stays where the check stopped, nothing was truncated or mapped, and
    /// (an I/O error) a later `start` checks again from the beginning. Once it returned a
    /// builder it is not called again on the same store: the check truncates, and the store
    /// is mapped from then on.
    pub fn start(
        tlog: Arc<Tlog>,
        snap: &Snapshot,
        stop: &AtomicBool,
    ) -> Result<TreeBuilder, TreeError> {
        let durable = snap.version() + 1;
        let frontier = check(&tlog, snap, durable, stop)?;
        let checked = frontier.size();
        // The check is over (it truncated what it had to): from here the file only grows, and a
        // map of it spares each proof its reads' system calls.
        map_tree(&tlog, checked);
        let appender = Appender {
            tlog,
            frontier,
            buf: Vec::with_capacity(1024),
        };
        Ok(TreeBuilder { appender, checked })
    }

    /// Extend the tree to every version of `snap`, taking hashes from `fed` (the records
    /// received from the feed, all of them received before `snap` was loaded) where it has them
    /// and from `snap`'s history otherwise. `fed` is emptied. After an error the builder is
    /// where it can go on from: a later call (with the same or a newer snapshot) resumes.
    pub fn catch_up(
        &mut self,
        snap: &Snapshot,
        fed: &mut VecDeque<Arc<CommitRecord>>,
    ) -> Result<(), TreeError> {
        self.appender.extend(snap, snap.version() + 1, fed)?;
        fed.clear();
        Ok(())
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.appender.frontier.size()
    }

    /// Leaves the start-up check found correct in the store (the rest were rebuilt).
    pub fn checked(&self) -> u64 {
        self.checked
    }
}

pub fn run(p: TlogParts) {
    let started = Instant::now();
    let mut fed = VecDeque::new();
    let mut retry: Option<Behind> = None;
    let mut tree = loop {
        let snap = p.snapshot.load_full();
        match TreeBuilder::start(p.tlog.clone(), &snap, &p.stop) {
            Ok(t) => break t,
            Err(TreeError::Io(e)) => {
                // The log (or the tree file) could not be read: the tree serves the prefix it
                // checked, and the check runs again after the wait (nothing was truncated or
                // mapped yet).
                let size = p.tlog.head().map_or(0, |h| h.size);
                let delay = behind(&p, &mut retry, size, &e);
                if !wait_retry(&p, delay, &mut fed) {
                    return;
                }
            }
            Err(TreeError::Stop(e)) => {
                // A record that does not check (or a shutdown): the tree stays where the check
                // stopped (nothing unverified is served) and the thread ends.
                stopped(&p, e);
                return;
            }
        }
    };
    let mut ready = false;
    let mut closed = false;
    loop {
        // The first pass extends the checked prefix to the snapshot of now; each later one
        // follows a wake-up.
        loop {
            // The snapshot is loaded after the records: every record received is in it.
            let snap = p.snapshot.load_full();
            match tree.catch_up(&snap, &mut fed) {
                Ok(()) => {
                    caught_up(&p, &mut retry, tree.size());
                    break;
                }
                Err(TreeError::Io(e)) => {
                    let delay = behind(&p, &mut retry, tree.size(), &e);
                    if closed || !wait_retry(&p, delay, &mut fed) {
                        return;
                    }
                }
                Err(TreeError::Stop(e)) => {
                    stopped(&p, e);
                    return;
                }
            }
        }
        if !ready {
            ready = true;
            log::info!(
                "msg=\"transparency log ready\" size={} checked={} elapsed_ms={} vkey={}",
                tree.size(),
                tree.checked(),
                started.elapsed().as_millis(),
                p.tlog.vkey()
            );
        }
        if closed {
            return;
        }
        // Fed once per publication: park at once rather than spin-yield (`recv_parked`).
        closed = match super::recv_parked_timeout(&p.feed, Duration::from_secs(1)) {
            Ok(batch) => {
                fed.extend(batch);
                false
            }
            Err(RecvTimeoutError::Timeout) => {
                // Idle: map the newest hashes too (appends remap only every REMAP_BYTES).
                map_tree(&p.tlog, tree.size());
                false
            }
            Err(RecvTimeoutError::Disconnected) => true,
        };
        fed.extend(p.feed.try_iter().flatten());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::signers::{SignerKey, SignerSet};
    use crate::domain::state::Descriptors;
    use crate::history::{HistorySource, Loc};
    use crate::log::{self as rlog, FaultIo, FaultKind, LogWriter, Op, StorageOptions};
    use crate::tlog::note::LogKey;
    use crate::tlog::store::HashStore;
    use std::path::Path;

    const DEADLINE: Duration = Duration::from_secs(20);

    fn poll_until(what: &str, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + DEADLINE;
        while !f() {
            assert!(Instant::now() < until, "not within {DEADLINE:?}: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A commit record the tree can take (it reads only `version` and `hash`).
    fn record(v: u64) -> Arc<CommitRecord> {
        Arc::new(CommitRecord {
            version: v,
            hash: crate::domain::sha256_hex(format!("record {v}").as_bytes()),
            prev_hash: "0".repeat(64),
            committed_at_ms: 1_767_225_600_000,
            proposal_id: crate::domain::sha256_hex(b"p"),
            payload: Arc::from(&b"{}"[..]),
            signatures: Vec::new(),
            descriptors: 0,
            genesis_signers: None,
        })
    }

    /// Append `payload` as version `v`'s record and publish the snapshot it heads.
    fn commit(writer: &mut LogWriter, snapshot: &ArcSwap<Snapshot>, v: u64, payload: &[u8]) {
        let end = writer.append(payload).expect("append");
        let loc = Loc {
            end,
            len: payload.len() as u32,
        };
        let next = snapshot.load().next(record(v), Descriptors::new(), loc);
        snapshot.store(Arc::new(next));
    }

    /// A read of the log that fails (EIO, injected in the storage seam) is retried with
    /// backoff, the tree reported behind (`/readyz` reason, gauge, counter) until the retry
    /// goes through, then caught up and the report cleared, without a restart: both in the
    /// start-up check and in a later catch-up. A record that reads back but does not parse
    /// stops the thread instead (never retried, never served).
    #[test]
    fn a_failed_read_is_retried_until_the_tree_catches_up_and_a_corrupt_record_stops_it() {
        let io = FaultIo::new();
        let opts = StorageOptions {
            segment_bytes: 1 << 16,
            checkpoints_kept: 1,
        };
        let mut opened = rlog::open(Path::new("/data"), &opts, Arc::new(io.clone())).unwrap();
        let key = SignerKey {
            keyid: "a".into(),
            public: ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .into(),
            not_before: None,
            not_after: None,
        };
        let set = Arc::new(SignerSet::new(1, vec![key]).unwrap());
        let source: Arc<dyn HistorySource> = opened.reader.clone();
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::genesis_over(
            "r", set, source,
        )));
        for v in 1..=5 {
            commit(&mut opened.writer, &snapshot, v, &record(v).to_json());
        }
        let tlog = Arc::new(
            Tlog::new(
                "test/log".into(),
                LogKey::from_seed("test/log", [3; 32]).unwrap(),
                HashStore::memory(),
            )
            .unwrap(),
        );
        let plane = Arc::new(crate::ops::WritePlane::default());
        let (tx, rx) = crossbeam_channel::bounded(FEED_QUEUE);
        let parts = TlogParts {
            tlog: tlog.clone(),
            snapshot: snapshot.clone(),
            feed: rx,
            stop: Arc::new(AtomicBool::new(false)),
            plane: plane.clone(),
        };
        let behind = || plane.readiness.tlog_behind.lock().clone();
        let size = || tlog.head().map_or(0, |h| h.size);
        let errors = || m().registry_tlog_read_errors_total.get();

        // The start-up check: the first four reads of the log fail (waits 0.1 + 0.2 + 0.4 +
        // 0.8 s), so the thread is seen behind before it catches up.
        let before = errors();
        for nth in 0..4 {
            io.inject(Op::Read, nth, FaultKind::Eio);
        }
        let thread = std::thread::spawn(move || run(parts));
        poll_until("reported behind at start, in /readyz", || {
            plane.report().3.iter().any(|r| {
                r.starts_with("transparency log behind: a read failed") && r.contains("retrying in")
            })
        });
        poll_until("caught up at start", || size() == 6 && behind().is_none());
        assert_eq!(errors() - before, 4, "one failure counted per failed read");
        assert_eq!(m().registry_tlog_retrying.get(), 0);
        assert!(plane.readiness.tlog_problem.lock().is_none());

        // A catch-up: versions 6 and 7 are not fed (a full feed dropped them) and their
        // reads fail three times before they go through.
        for v in 6..=8 {
            commit(&mut opened.writer, &snapshot, v, &record(v).to_json());
        }
        let before = errors();
        for nth in 0..3 {
            io.inject(Op::Read, nth, FaultKind::Eio);
        }
        tx.send(vec![record(8)]).unwrap();
        poll_until("reported behind in a catch-up", || behind().is_some());
        poll_until("caught up after the failed reads", || {
            size() == 9 && behind().is_none()
        });
        assert_eq!(errors() - before, 3);
        assert!(!thread.is_finished(), "the thread goes on");

        // A record that reads back but is no record: the thread stops there.
        commit(&mut opened.writer, &snapshot, 9, b"not a record");
        commit(&mut opened.writer, &snapshot, 10, &record(10).to_json());
        tx.send(Vec::new()).unwrap();
        poll_until("stopped on the corrupt record", || thread.is_finished());
        thread.join().unwrap();
        let problem = plane.readiness.tlog_problem.lock().clone();
        assert!(
            problem.as_deref().is_some_and(|p| p.contains("version 9")),
            "{problem:?}"
        );
        assert!(behind().is_none());
        assert_eq!(size(), 9, "nothing past the corrupt record is served");
    }

    /// Only a failed system call may pass; a record that does not check never does.
    #[test]
    fn only_io_failures_are_retried() {
        assert!(TreeError::from(ReadFailure::Io("EIO".into())).may_pass());
        assert!(!TreeError::from(ReadFailure::Corrupt("CRC".into())).may_pass());
        assert!(tree_file("reading", std::io::Error::other("EIO")).may_pass());
        assert!(!record_hash(&CommitRecord {
            hash: "zz".into(),
            ..(*record(1)).clone()
        })
        .unwrap_err()
        .may_pass());
    }
}
