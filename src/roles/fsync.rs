//! The fsync thread: group commit; and [`LogSync`], the one sync it and the writer both run.
//!
//! Thread: `fsync`. Input: journal positions from the writer (bounded, `SYNC_QUEUE` in app.rs:
//! when full the writer waits, which is safe because this thread never waits on the writer).
//! Output: [`Internal::Durable`] or [`Internal::SyncFailed`] to the writer, on its unbounded
//! internal channel (a durability notice is never dropped and never blocks this thread).
//! State: none of its own; the highest durable position lives in the shared [`LogSync`].
//! Shutdown: when the writer drops its sender.
//!
//! In `batch` mode one sync covers every position waiting when it starts (plus those arriving
//! within `fsync_batch_max_delay_ms`), so throughput grows with concurrency while each commit
//! still waits for the sync that covers it. In `always` mode every commit gets its own sync.
//! After the first failure the thread reports it and stops: a failed fsync is never retried on
//! the same data (the page cache may have dropped the dirty pages and reported success later).
//!
//! The writer may run the same [`LogSync::sync`] itself when the pipeline is idle
//! (src/roles/writer/commit.rs, `Writer::sync_due`): never at the same time as this thread
//! (it does so only when every position it sent here has come back durable), so both paths see
//! one durable position, one failure flag, and the same metrics, health and chaos delay.

use crate::roles::writer::Internal;
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The durability half of a journal, usable from the fsync thread and the writer.
pub trait SyncTarget: Send + Sync {
    /// Make everything up to `position` durable; returns the position covered.
    fn sync_to(&self, position: u64) -> Result<u64, String>;
}

/// One log sync as the service runs it, shared by the fsync thread and the writer's inline
/// path so there is exactly one copy of: the chaos `storage-latency` delay, the commit budget's
/// [`SyncHealth`](crate::ops::SyncHealth) begin/end, the `fsync_seconds` and `fsync_batch_size`
/// metrics, the durable position, and the rule that a failed sync is never retried.
///
/// Invariant: once a sync failed, every later call fails with the same reason without touching
/// the target, whichever thread calls.
pub struct LogSync {
    target: Box<dyn SyncTarget>,
    /// Injected latency before each sync (chaos `storage-latency`), in milliseconds.
    chaos_delay_ms: Arc<AtomicU64>,
    /// How long syncs take (injected latency included), for the commit budget.
    health: Arc<crate::ops::SyncHealth>,
    /// The highest position known durable (by either caller's syncs).
    durable: AtomicU64,
    /// Set by the first failure; no sync runs after it.
    failed: AtomicBool,
}

impl LogSync {
    pub fn new(
        target: Box<dyn SyncTarget>,
        chaos_delay_ms: Arc<AtomicU64>,
        health: Arc<crate::ops::SyncHealth>,
    ) -> LogSync {
        LogSync {
            target,
            chaos_delay_ms,
            health,
            durable: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// Make every position of `group` (journal positions asked for, at least one) durable with
    /// one sync; returns the durable position, at or past each of them. An `Err` is final: the
    /// caller must poison the write plane, and no later call syncs again.
    pub fn sync(&self, group: &[u64]) -> Result<u64, String> {
        if self.failed.load(Ordering::Acquire) {
            return Err("an earlier log sync failed; syncs are never retried".to_string());
        }
        let began = Instant::now();
        self.health.begin();
        let delay = self.chaos_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let upto = group.iter().copied().max().unwrap_or(0);
        let durable = self.durable.load(Ordering::Acquire);
        if upto > durable {
            let started = Instant::now();
            match self.target.sync_to(upto) {
                Ok(covered) => {
                    crate::metrics::m()
                        .fsync_seconds
                        .observe(started.elapsed().as_secs_f64());
                    crate::metrics::m()
                        .fsync_batch_size
                        .observe(group.len() as f64);
                    self.durable.fetch_max(covered.max(upto), Ordering::AcqRel);
                }
                Err(reason) => {
                    self.failed.store(true, Ordering::Release);
                    log::error!("msg=\"log sync failed; write plane stops\" error={reason:?}");
                    return Err(reason);
                }
            }
        }
        self.health.end(began.elapsed());
        Ok(self.durable.load(Ordering::Acquire))
    }
}

pub struct FsyncParts {
    pub sync: Arc<LogSync>,
    pub requests: Receiver<u64>,
    pub done: Sender<Internal>,
    /// One sync per commit (`fsync = "always"`) rather than one per batch.
    pub always: bool,
    pub batch_max_delay: Duration,
}

pub fn run(p: FsyncParts) {
    // Woken once per sync request: park at once rather than spin-yield (`recv_parked`).
    while let Ok(first) = super::recv_parked(&p.requests) {
        let mut batch = vec![first];
        // `always`: the batch is this one position, so each commit gets its own sync.
        if !p.always {
            if !p.batch_max_delay.is_zero() {
                let deadline = Instant::now() + p.batch_max_delay;
                while let Ok(pos) = p.requests.recv_deadline(deadline) {
                    batch.push(pos);
                }
            }
            batch.extend(p.requests.try_iter());
        }
        match p.sync.sync(&batch) {
            Ok(durable) => {
                if p.done.send(Internal::Durable(durable)).is_err() {
                    return;
                }
            }
            Err(reason) => {
                let _ = p.done.send(Internal::SyncFailed(reason));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records every position synced; fails the sync whose index is `fail_at`.
    struct Target {
        calls: Mutex<Vec<u64>>,
        fail_at: usize,
    }

    impl SyncTarget for Arc<Target> {
        fn sync_to(&self, position: u64) -> Result<u64, String> {
            let mut calls = self.calls.lock().unwrap();
            calls.push(position);
            if calls.len() - 1 == self.fail_at {
                return Err("EIO".into());
            }
            Ok(position)
        }
    }

    fn log_sync(fail_at: usize) -> (Arc<Target>, LogSync) {
        let target = Arc::new(Target {
            calls: Mutex::new(Vec::new()),
            fail_at,
        });
        let sync = LogSync::new(
            Box::new(target.clone()),
            Arc::new(AtomicU64::new(0)),
            Arc::new(crate::ops::SyncHealth::default()),
        );
        (target, sync)
    }

    #[test]
    fn one_sync_covers_a_group_and_a_covered_group_does_not_sync_again() {
        let (target, sync) = log_sync(usize::MAX);
        assert_eq!(sync.sync(&[10, 30, 20]), Ok(30));
        assert_eq!(sync.sync(&[25]), Ok(30), "already durable");
        assert_eq!(sync.sync(&[40]), Ok(40));
        assert_eq!(*target.calls.lock().unwrap(), [30, 40]);
    }

    #[test]
    fn after_a_failure_no_caller_ever_syncs_again() {
        let (target, sync) = log_sync(1);
        assert_eq!(sync.sync(&[10]), Ok(10));
        assert_eq!(sync.sync(&[20]), Err("EIO".to_string()));
        // Neither a retry of the same data nor a later position reaches the target.
        assert!(sync.sync(&[20]).is_err());
        assert!(sync.sync(&[30]).is_err());
        assert_eq!(*target.calls.lock().unwrap(), [10, 20]);
    }

    #[test]
    fn the_thread_reports_a_failure_once_and_stops() {
        let (target, sync) = log_sync(0);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        for pos in [5, 6] {
            tx.send(pos).unwrap();
        }
        // `always`: one position per sync, so the second would be a sync of its own.
        run(FsyncParts {
            sync: Arc::new(sync),
            requests: rx,
            done: done_tx,
            always: true,
            batch_max_delay: Duration::ZERO,
        });
        let notices: Vec<Internal> = done_rx.try_iter().collect();
        assert!(matches!(notices[..], [Internal::SyncFailed(_)]));
        assert_eq!(*target.calls.lock().unwrap(), [5]);
    }
}
