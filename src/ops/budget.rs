//! The commit budget (`storage.commit_budget_ms`): how long log syncs take, and whether a
//! commit now would wait longer than the budget.
//!
//! Written by the `fsync` thread, read by the registry workers before a commit. Times are
//! monotonic, so a wall-clock step cannot shed commits.

use super::Chaos;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long log syncs take, reported by the fsync thread. Times are monotonic milliseconds
/// since the first use ([`monotonic_ms`]), so a wall-clock step cannot shed commits.
#[derive(Default)]
pub struct SyncHealth {
    /// When the running sync (injected latency included) started; 0 when idle.
    started_ms: AtomicI64,
    /// Duration of the last finished sync, ms.
    last_ms: AtomicU64,
    /// When the last sync finished.
    last_end_ms: AtomicI64,
}

/// Milliseconds on a process-wide monotonic clock, starting at 1.
pub fn monotonic_ms() -> i64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as i64 + 1
}

/// After a sync over the budget, commits are shed for this long; then one is let through to
/// measure again.
pub const BUDGET_COOL_DOWN_MS: i64 = 1_000;

impl SyncHealth {
    /// A sync (with its injected latency) starts now.
    pub fn begin(&self) {
        self.started_ms.store(monotonic_ms(), Ordering::SeqCst);
    }

    /// The sync started by [`SyncHealth::begin`] took `took`.
    pub fn end(&self, took: Duration) {
        self.last_ms
            .store(took.as_millis() as u64, Ordering::SeqCst);
        self.last_end_ms.store(monotonic_ms(), Ordering::SeqCst);
        self.started_ms.store(0, Ordering::SeqCst);
    }

    /// Why a commit arriving at `now_ms` would exceed `budget_ms`, if it would.
    pub fn over_budget(&self, budget_ms: u64, injected_ms: u64, now_ms: i64) -> Option<String> {
        if budget_ms == 0 {
            return None;
        }
        if injected_ms > budget_ms {
            return Some(format!(
                "injected storage latency {injected_ms} ms exceeds storage.commit_budget_ms = {budget_ms}"
            ));
        }
        let started = self.started_ms.load(Ordering::SeqCst);
        if started != 0 && now_ms.saturating_sub(started) > budget_ms as i64 {
            return Some(format!(
                "a log sync has been running for {} ms; storage.commit_budget_ms = {budget_ms}",
                now_ms - started
            ));
        }
        let last = self.last_ms.load(Ordering::SeqCst);
        let ended = self.last_end_ms.load(Ordering::SeqCst);
        if last > budget_ms && now_ms.saturating_sub(ended) < BUDGET_COOL_DOWN_MS {
            return Some(format!(
                "the last log sync took {last} ms; storage.commit_budget_ms = {budget_ms}"
            ));
        }
        None
    }
}

/// `storage.commit_budget_ms`: checked by the registry workers before a commit is handed to the
/// writer, so a slow disk sheds commits (503, `Retry-After`) instead of queueing them.
pub struct CommitBudget {
    pub budget_ms: AtomicU64,
    pub health: Arc<SyncHealth>,
    pub chaos: Arc<Chaos>,
}

impl CommitBudget {
    /// Why a commit now would exceed the budget, if it would.
    pub fn exceeded(&self) -> Option<String> {
        self.health.over_budget(
            self.budget_ms.load(Ordering::Relaxed),
            self.chaos.storage_latency_ms(),
            monotonic_ms(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_sheds_on_injected_running_and_recent_slow_syncs_only() {
        let h = SyncHealth::default();
        let now = 1_000_000;
        assert_eq!(h.over_budget(0, 10_000, now), None, "no budget");
        assert!(h.over_budget(100, 150, now).is_some(), "injected above");
        assert_eq!(h.over_budget(100, 50, now), None);
        h.started_ms.store(now - 150, Ordering::SeqCst);
        assert!(h.over_budget(100, 0, now).unwrap().contains("running"));
        h.started_ms.store(now - 50, Ordering::SeqCst);
        assert_eq!(h.over_budget(100, 0, now), None);
        h.started_ms.store(0, Ordering::SeqCst);
        h.last_ms.store(150, Ordering::SeqCst);
        h.last_end_ms.store(now - 10, Ordering::SeqCst);
        assert!(h.over_budget(100, 0, now).unwrap().contains("last"));
        // After the cool-down one commit is let through to measure again.
        assert_eq!(h.over_budget(100, 0, now + BUDGET_COOL_DOWN_MS), None);
    }
}
