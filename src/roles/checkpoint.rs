//! The checkpoint thread: periodic checkpoints of the published snapshot.
//!
//! Thread: `checkpoint`. Input: wake-ups after publications (bounded channel of capacity 1;
//! a full channel just means a wake-up is already pending). Output: checkpoint files through the
//! storage seam. State: when and at which version the last checkpoint was written. It reads the
//! published snapshot (immutable), so serializing a large state never stalls the writer.
//! Shutdown: when the sender is dropped (a final checkpoint is written if commits happened since
//! the last one).

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
}

pub type AfterCheckpoint = Box<dyn FnMut(&Snapshot, u64) + Send>;

/// The writer's publisher: nudge the checkpoint thread.
pub struct CheckpointNudge(pub Sender<()>);

impl crate::snapshot::Publisher for CheckpointNudge {
    fn published(&mut self, _: &Arc<Snapshot>, _: &[Arc<crate::domain::record::CommitRecord>]) {
        let _ = self.0.try_send(());
    }
}

pub fn run(mut p: CheckpointParts) {
    let mut last_at = Instant::now();
    let mut last_version = p.last_version;
    let tick = Duration::from_secs(1).min(p.interval);
    if let (Some(after), true) = (&mut p.after_checkpoint, last_version > 0) {
        // A crash between a checkpoint and its drop left the drop undone: it is done now.
        after(&p.snapshot.load_full(), last_version);
    }
    loop {
        let closed = match p.wake.recv_timeout(tick) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        m().registry_checkpoint_age_seconds
            .set(last_at.elapsed().as_secs() as i64);
        let snap = p.snapshot.load_full();
        let behind = snap.version().saturating_sub(last_version);
        let due =
            behind > 0 && (closed || behind >= p.every_commits || last_at.elapsed() >= p.interval);
        if due {
            let started = Instant::now();
            let bytes = crate::restore::checkpoint_bytes(&snap);
            match (p.write)(snap.version(), &bytes) {
                Ok(()) => {
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
