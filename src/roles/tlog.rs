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

use crate::domain::record::CommitRecord;
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

/// The thread ends on `e`: logged, and named in `/readyz` reasons.
fn stopped(p: &TlogParts, e: String) {
    log::error!("msg=\"transparency log stopped\" error={e:?}");
    *p.plane.readiness.tlog_problem.lock() = Some(e);
}

/// The raw bytes of `hash_V` of `record`.
fn record_hash(record: &CommitRecord) -> Result<Hash, String> {
    let bytes =
        hex::decode(&record.hash).map_err(|e| format!("version {}: {e}", record.version))?;
    bytes
        .try_into()
        .map_err(|_| format!("version {}: hash is not 32 bytes", record.version))
}

/// Only the fields of a stored record the tree needs (parsing the whole record would build its
/// envelope for nothing).
#[derive(serde::Deserialize)]
struct HashOnly {
    version: u64,
    hash: String,
}

/// `hash_V` read back from the published snapshot's history.
fn history_hash(snap: &Snapshot, version: u64) -> Result<Hash, String> {
    if version == snap.version() {
        return record_hash(&snap.head);
    }
    if version == 0 {
        return record_hash(snap.history.genesis());
    }
    let bytes = snap
        .history
        .bytes(version)?
        .ok_or_else(|| format!("version {version} is not in the published history"))?;
    let r: HashOnly = serde_json::from_slice(&bytes)
        .map_err(|e| format!("version {version}: stored record: {e}"))?;
    if r.version != version {
        return Err(format!("version {version}: the log holds {}", r.version));
    }
    let h = hex::decode(&r.hash).map_err(|e| format!("version {version}: {e}"))?;
    h.try_into()
        .map_err(|_| format!("version {version}: hash is not 32 bytes"))
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
    ) -> Result<(), String> {
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

    /// Write the buffered hashes, then publish the head they complete.
    fn flush(&mut self) -> Result<(), String> {
        let size = self.frontier.size();
        if !self.buf.is_empty() {
            let at = stored_hash_count(size) - self.buf.len() as u64;
            self.tlog
                .store()
                .write_at(at, &self.buf)
                .map_err(|e| format!("writing the tree file: {e}"))?;
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
) -> Result<Frontier, String> {
    let store = tlog.store();
    let count = store
        .count()
        .map_err(|e| format!("reading the tree file: {e}"))?;
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
            return Err("stopped during the start-up check".into());
        }
        // Compare a step at a time: one read of the file per step.
        let end = (checked + STEP_VERSIONS).min(held);
        let from = stored_hash_count(checked);
        let stored = store
            .read_range(from, stored_hash_count(end) - from)
            .map_err(|e| format!("reading the tree file: {e}"))?;
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
            tlog.publish(TreeHead {
                size: checked,
                root,
            });
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
        .map_err(|e| format!("truncating the tree file: {e}"))?;
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
    /// past its checked prefix), then the tree extended to all of them. An error means the log
    /// could not be read back: the tree stays where the check stopped.
    pub fn start(
        tlog: Arc<Tlog>,
        snap: &Snapshot,
        stop: &AtomicBool,
    ) -> Result<TreeBuilder, String> {
        let durable = snap.version() + 1;
        let frontier = check(&tlog, snap, durable, stop)?;
        let checked = frontier.size();
        // The check is over (it truncated what it had to): from here the file only grows, and a
        // map of it spares each proof its reads' system calls.
        map_tree(&tlog, checked);
        let mut appender = Appender {
            tlog,
            frontier,
            buf: Vec::with_capacity(1024),
        };
        appender.extend(snap, durable, &mut VecDeque::new())?;
        Ok(TreeBuilder { appender, checked })
    }

    /// Extend the tree to every version of `snap`, taking hashes from `fed` (the records
    /// received from the feed, all of them received before `snap` was loaded) where it has them
    /// and from `snap`'s history otherwise. `fed` is emptied.
    pub fn catch_up(
        &mut self,
        snap: &Snapshot,
        fed: &mut VecDeque<Arc<CommitRecord>>,
    ) -> Result<(), String> {
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
    let snap = p.snapshot.load_full();
    let mut tree = match TreeBuilder::start(p.tlog.clone(), &snap, &p.stop) {
        Ok(t) => t,
        Err(e) => {
            // The log itself could not be read back: the tree stays where the check stopped
            // (nothing unverified is served) and the thread ends.
            stopped(&p, e);
            return;
        }
    };
    log::info!(
        "msg=\"transparency log ready\" size={} checked={} elapsed_ms={} vkey={}",
        tree.size(),
        tree.checked(),
        started.elapsed().as_millis(),
        p.tlog.vkey()
    );
    let mut fed = VecDeque::new();
    loop {
        // Fed once per publication: park at once rather than spin-yield (`recv_parked`).
        let closed = match super::recv_parked_timeout(&p.feed, Duration::from_secs(1)) {
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
        // The snapshot is loaded after the records: every record received is in it.
        let snap = p.snapshot.load_full();
        if let Err(e) = tree.catch_up(&snap, &mut fed) {
            stopped(&p, e);
            return;
        }
        if closed {
            return;
        }
    }
}
