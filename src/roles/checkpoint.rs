//! The checkpoint thread: periodic checkpoints of the published snapshot.
//!
//! Thread: `checkpoint`. Input: wake-ups after publications that reach its commit count
//! ([`CheckpointNudge`]; bounded channel of capacity 1: a full channel just means a wake-up is
//! already pending) and its own tick. Output: checkpoint files through the
//! storage seam. State: when and at which version the last checkpoint was written. It reads the
//! published snapshot (immutable), so serializing a large state never stalls the writer.
//! Shutdown: when the sender is dropped (a final checkpoint is written if commits happened since
//! the last one).
//!
//! Pending frames: each checkpoint also carries the log's pending frames up to its record,
//! compacted (docs/FORMATS.md), so start-up reads only the pending frames after it. The thread
//! keeps them gathered ([`PendingCarry`]): at each checkpoint it reads the pending frames the
//! log gained since the last one (from durable, published log: the writer only appends past
//! it), then forgets proposals that can no longer come back. Invariant: the carried frames are
//! what replaying every pending frame up to `scanned_to` gathers, minus such proposals; if a
//! read fails they are dropped, and later checkpoints go without them (start-up then reads
//! every pending frame, as before).

use crate::domain::pending::{self, PendingFrame, PendingFrames};
use crate::log::LogReader;
use crate::metrics::m;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type WriteCheckpoint = Box<dyn FnMut(u64, &[u8]) -> Result<(), String> + Send>;

pub struct CheckpointParts {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub wake: Receiver<()>,
    pub every_commits: u64,
    pub interval: Duration,
    /// The version of the checkpoint found at start (0 if none).
    pub last_version: u64,
    pub write: WriteCheckpoint,
    /// Run after each durable checkpoint (and once at start for the checkpoint found then),
    /// with the snapshot and the version that checkpoint covers: the retention drop.
    pub after_checkpoint: Option<AfterCheckpoint>,
    /// The pending frames gathered at start-up, carried on (None: checkpoints go without).
    pub pending: Option<PendingCarry>,
    /// Write a checkpoint at once even if no commit happened: the one found at start does not
    /// carry the pending frames (an older build wrote it), so until a new one is written every
    /// start would read all of them; or it is of an earlier payload version (JSON), slower to
    /// load than the one the server writes.
    pub upgrade: bool,
}

/// The pending frames gathered from the log up to `scanned_to`.
pub struct PendingCarry {
    pub reader: Arc<LogReader>,
    /// The Lsn the frames are gathered up to (at start: where the writer continues).
    pub scanned_to: u64,
    pub frames: PendingFrames,
}

impl PendingCarry {
    /// The compacted frames for a checkpoint of `snap`: the frames up to its record's end read
    /// in, then the proposals that cannot come back at its version forgotten. None when the
    /// record has no location in the log (then the checkpoint has no `log_end` either).
    ///
    /// When the record ends before `scanned_to` (only just after start-up: pending frames
    /// after the last commit), the carried frames include some past it; start-up replays
    /// those again after the checkpoint's frames, which changes nothing (a proposal frame
    /// starts its proposal afresh with the approvals after it, an approval already held is
    /// held once).
    fn frames_for(
        &mut self,
        snap: &Snapshot,
        now_unix: i64,
    ) -> Result<Option<Vec<PendingFrame>>, String> {
        let Some(end) = snap.history.loc(snap.version()).map(|l| l.end) else {
            return Ok(None);
        };
        if end > self.scanned_to {
            let frames = &mut self.frames;
            let mut bad = None;
            self.reader
                .scan(
                    self.scanned_to,
                    end,
                    pending::PENDING_PREFIX,
                    &mut |_, payload| {
                        let added = PendingFrame::from_bytes(&payload).and_then(|f| frames.add(f));
                        if let Err(e) = added {
                            bad.get_or_insert(e);
                        }
                    },
                )
                .map_err(|e| e.to_string())?;
            if let Some(e) = bad {
                return Err(e);
            }
            self.scanned_to = end;
        }
        self.frames.retain_live(snap.version(), now_unix);
        Ok(Some(self.frames.to_frames()))
    }
}

pub type AfterCheckpoint = Box<dyn FnMut(&Snapshot, u64) + Send>;

/// The writer's publisher: nudge the checkpoint thread when `every_commits` versions were
/// published since the last nudge (or since the checkpoint found at start).
///
/// Only the commit-count trigger needs a nudge: the time trigger, a retry after a failed write
/// and the upgrade of an old checkpoint are the thread's own tick (at most one second). A
/// nudge per publication woke the thread once per group commit to find nothing due (measured:
/// ≈ 0.2 syscalls per write at 64 clients, docs/PERFORMANCE.md). Never late: the thread's last
/// checkpoint is at or after the version of the last nudge (it checkpoints at least that
/// version when woken, and time checkpoints only move it on), so its count trigger cannot come
/// before the nudge's; an early nudge finds nothing due, as every nudge did before.
pub struct CheckpointNudge {
    tx: Sender<()>,
    every_commits: u64,
    /// The version at (or after) the last nudge, or of the checkpoint found at start.
    nudged_at: u64,
}

impl CheckpointNudge {
    /// A nudge for the thread fed by `tx`, whose checkpoint at start covers `last_version`.
    pub fn new(tx: Sender<()>, every_commits: u64, last_version: u64) -> CheckpointNudge {
        CheckpointNudge {
            tx,
            every_commits,
            nudged_at: last_version,
        }
    }

    /// Whether publishing `version` calls for a nudge (remembered if so).
    fn due(&mut self, version: u64) -> bool {
        let due = version.saturating_sub(self.nudged_at) >= self.every_commits;
        if due {
            self.nudged_at = version;
        }
        due
    }
}

impl crate::snapshot::Publisher for CheckpointNudge {
    fn published(
        &mut self,
        snapshot: &Arc<Snapshot>,
        _: &[Arc<crate::domain::record::CommitRecord>],
    ) {
        if self.due(snapshot.version()) {
            let _ = self.tx.try_send(());
        }
    }
}

pub fn run(mut p: CheckpointParts) {
    super::background_priority("checkpoint");
    let mut last_at = Instant::now();
    let mut last_version = p.last_version;
    let tick = Duration::from_secs(1).min(p.interval);
    if let (Some(after), true) = (&mut p.after_checkpoint, last_version > 0) {
        // A crash between a checkpoint and its drop left the drop undone: it is done now.
        after(&p.snapshot.load_full(), last_version);
    }
    loop {
        // Woken by a due commit count or the tick: park at once rather than spin-yield.
        let closed = match super::recv_parked_timeout(&p.wake, tick) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        m().registry_checkpoint_age_seconds
            .set(last_at.elapsed().as_secs() as i64);
        let snap = p.snapshot.load_full();
        let behind = snap.version().saturating_sub(last_version);
        let due = (behind > 0
            && (closed || behind >= p.every_commits || last_at.elapsed() >= p.interval))
            || (p.upgrade && p.pending.is_some() && snap.version() > 0);
        if due {
            let started = Instant::now();
            let now_unix = crate::clock::now_unix_ms().div_euclid(1000);
            let carried = match p.pending.as_mut().map(|c| c.frames_for(&snap, now_unix)) {
                Some(Ok(frames)) => frames,
                Some(Err(e)) => {
                    log::error!(
                        "msg=\"cannot gather the log's pending frames; checkpoints go without them\" error={e:?}"
                    );
                    p.pending = None;
                    None
                }
                None => None,
            };
            let bytes = crate::restore::checkpoint_payload(&snap, carried.as_deref());
            match (p.write)(snap.version(), &bytes) {
                Ok(()) => {
                    p.upgrade = false;
                    // The drop first, so "checkpoint written" says the window is settled too.
                    if let Some(after) = &mut p.after_checkpoint {
                        after(&snap, snap.version());
                    }
                    last_version = snap.version();
                    last_at = Instant::now();
                    m().registry_checkpoint_age_seconds.set(0);
                    log::info!(
                        "msg=\"checkpoint written\" version={} descriptors={} bytes={} elapsed_ms={}",
                        snap.version(),
                        snap.descriptors.len(),
                        bytes.len(),
                        started.elapsed().as_millis()
                    );
                }
                Err(e) => {
                    // A failed checkpoint loses nothing (the log has every record); it is
                    // retried at the next trigger and shows as a growing checkpoint age.
                    log::error!(
                        "msg=\"checkpoint failed\" version={} error={e:?}",
                        snap.version()
                    );
                }
            }
        } else if behind == 0 {
            // Nothing new to save: the state on disk is current.
            last_at = Instant::now();
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nudge_comes_once_per_commit_count_from_the_checkpoint_found_at_start() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let mut nudge = CheckpointNudge::new(tx, 3, 10);
        let due: Vec<u64> = (11..=20).filter(|&v| nudge.due(v)).collect();
        assert_eq!(due, vec![13, 16, 19]);
        // A group commit that jumps past the count nudges once, and counts on from there.
        assert!(nudge.due(30));
        assert!(!nudge.due(32));
        assert!(nudge.due(33));
    }

    #[test]
    fn a_count_of_one_nudges_at_every_publication() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let mut nudge = CheckpointNudge::new(tx, 1, 0);
        assert!((1..=5).all(|v| nudge.due(v)));
        assert!(!nudge.due(5), "no new version, nothing due");
    }
}
