//! The fsync thread: group commit.
//!
//! Thread: `fsync`. Input: journal positions from the writer (bounded, `SYNC_QUEUE` in app.rs:
//! when full the writer waits, which is safe because this thread never waits on the writer).
//! Output: [`Internal::Durable`] or [`Internal::SyncFailed`] to the writer, on its unbounded
//! internal channel (a durability notice is never dropped and never blocks this thread).
//! State: the highest durable position. Shutdown: when the writer drops its sender.
//!
//! In `batch` mode one sync covers every position waiting when it starts (plus those arriving
//! within `fsync_batch_max_delay_ms`), so throughput grows with concurrency while each commit
//! still waits for the sync that covers it. In `always` mode every commit gets its own sync.
//! After the first failure the thread reports it and stops: a failed fsync is never retried on
//! the same data (the page cache may have dropped the dirty pages and reported success later).

use crate::roles::writer::Internal;
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The durability half of a journal, usable from the fsync thread.
pub trait SyncTarget: Send {
    /// Make everything up to `position` durable; returns the position covered.
    fn sync_to(&self, position: u64) -> Result<u64, String>;
}

pub struct FsyncParts {
    pub target: Box<dyn SyncTarget>,
    pub requests: Receiver<u64>,
    pub done: Sender<Internal>,
    /// One sync per commit (`fsync = "always"`) rather than one per batch.
    pub always: bool,
    pub batch_max_delay: Duration,
    /// Injected latency before each sync (chaos `storage-latency`), in milliseconds.
    pub chaos_delay_ms: Arc<AtomicU64>,
    /// How long syncs take (injected latency included), for the commit budget.
    pub health: Arc<crate::ops::SyncHealth>,
}

pub fn run(p: FsyncParts) {
    let mut durable = 0u64;
    // Woken once per sync request: park at once rather than spin-yield (`recv_parked`).
    while let Ok(first) = super::recv_parked(&p.requests) {
        let mut batch = vec![first];
        if !p.always {
            if !p.batch_max_delay.is_zero() {
                let deadline = Instant::now() + p.batch_max_delay;
                while let Ok(pos) = p.requests.recv_deadline(deadline) {
                    batch.push(pos);
                }
            }
            batch.extend(p.requests.try_iter());
        }
        let began = Instant::now();
        p.health.begin();
        let delay = p.chaos_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        for group in if p.always {
            batch.chunks(1).collect::<Vec<_>>()
        } else {
            vec![&batch[..]]
        } {
            let upto = group.iter().copied().max().unwrap_or(0);
            if upto <= durable {
                let _ = p.done.send(Internal::Durable(durable));
                continue;
            }
            let started = Instant::now();
            match p.target.sync_to(upto) {
                Ok(covered) => {
                    crate::metrics::m()
                        .fsync_seconds
                        .observe(started.elapsed().as_secs_f64());
                    crate::metrics::m()
                        .fsync_batch_size
                        .observe(group.len() as f64);
                    durable = durable.max(covered.max(upto));
                    if p.done.send(Internal::Durable(durable)).is_err() {
                        return;
                    }
                }
                Err(reason) => {
                    log::error!("msg=\"log sync failed; write plane stops\" error={reason:?}");
                    let _ = p.done.send(Internal::SyncFailed(reason));
                    return;
                }
            }
        }
        p.health.end(began.elapsed());
    }
}
