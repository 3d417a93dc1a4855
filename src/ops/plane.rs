//! The write plane's state: is it ready, and why not.
//!
//! One [`WritePlane`] per process, shared by the roles that change it (start-up sets the
//! [`Readiness`] flags, the writer poisons it on a storage failure, the operator switches
//! maintenance) and by those that ask (`/readyz`, every write route, the maintenance audit).
//!
//! Invariant: the rule "writes are accepted" exists only here ([`WritePlane::write_ready`],
//! [`WritePlane::refuse_write`], [`WritePlane::report`]); poisoning is one-way for the life of
//! the process.

use super::CommitBudget;
use crate::error::ApiError;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// What `/readyz` reports, set by the roles as they come up (and down).
#[derive(Default)]
pub struct Readiness {
    pub registry_bound: AtomicBool,
    pub state_restored: AtomicBool,
    pub metrics_served: AtomicBool,
    pub writer_ready: AtomicBool,
    pub storage_ready: AtomicBool,
    pub draining: AtomicBool,
    /// Why state could not be restored (corruption), if so.
    pub restore_error: Mutex<Option<String>>,
    /// What the background re-hash of the whole chain found wrong, if anything (reported, but
    /// it never takes readiness away: the served head was checked at start-up).
    pub history_problem: Mutex<Option<String>>,
    /// Why the transparency log's thread stopped, if it did (its routes keep serving the last
    /// tree it built, which no longer grows; reported, never taking readiness away).
    pub tlog_problem: Mutex<Option<String>>,
    /// Why the transparency log's tree is behind while its thread retries a failed read (the
    /// tree serves what it has; cleared once it has caught up; never taking readiness away).
    pub tlog_behind: Mutex<Option<String>>,
}

impl Readiness {
    /// The reported problems that do not take readiness away.
    fn push_problems(&self, reasons: &mut Vec<String>) {
        if let Some(p) = self.history_problem.lock().clone() {
            reasons.push(format!("background history check failed: {p}"));
        }
        if let Some(p) = self.tlog_problem.lock().clone() {
            reasons.push(format!("transparency log stopped: {p}"));
        }
        if let Some(p) = self.tlog_behind.lock().clone() {
            reasons.push(format!("transparency log behind: {p}"));
        }
    }

    pub fn set(flag: &AtomicBool, on: bool) {
        flag.store(on, Ordering::SeqCst);
    }
}

/// Readiness, poison, maintenance and the commit budget, in one place.
#[derive(Default)]
pub struct WritePlane {
    pub readiness: Readiness,
    /// Set when storage failed, with the reason.
    poisoned: Mutex<Option<String>>,
    /// Maintenance (read-only) mode; read by the registry workers on every write.
    read_only: AtomicBool,
    /// Why maintenance is on (None while off).
    maintenance_reason: Mutex<Option<String>>,
    /// `storage.commit_budget_ms`, once storage syncs.
    budget: OnceLock<Arc<CommitBudget>>,
    /// Set once at start-up on a follower: then every write is refused and readiness is the
    /// follower's (docs/OPERATIONS.md).
    follow: OnceLock<Arc<FollowState>>,
}

/// A follower's standing, written by the follower thread and read by `/readyz` and the write
/// routes.
pub struct FollowState {
    /// The upstreams, as configured (for messages).
    pub upstreams: Vec<String>,
    pub max_lag_versions: u64,
    inner: Mutex<FollowInner>,
}

#[derive(Default)]
struct FollowInner {
    /// The newest version verified and published.
    verified: u64,
    /// The latest head each upstream reported (a refused one's no longer counts).
    heads: Vec<(String, u64)>,
    /// Upstreams refused for good, with why (`verification failed at version V: …`, `fork at
    /// version V: …`).
    refused: Vec<(String, String)>,
    /// Why the follower is waiting before it has a verified genesis, if it is.
    waiting: Option<String>,
    /// Upstreams that answered `410 expired` for the follower's next version (their retention
    /// window starts after it), with their answer; cleared when one serves it again.
    expired: Vec<(String, String)>,
}

impl FollowInner {
    fn newest_head(&self) -> Option<u64> {
        self.heads.iter().map(|(_, h)| *h).max()
    }
}

impl FollowState {
    pub fn new(upstreams: Vec<String>, max_lag_versions: u64) -> Arc<FollowState> {
        Arc::new(FollowState {
            upstreams,
            max_lag_versions,
            inner: Mutex::new(FollowInner::default()),
        })
    }

    /// The follower verified and published up to `version`.
    pub fn set_verified(&self, version: u64) {
        self.inner.lock().verified = version;
    }

    /// `upstream` reported its head at `version` (its latest word replaces its earlier one: an
    /// upstream restored from an older backup is behind now).
    pub fn saw_upstream_head(&self, upstream: &str, version: u64) {
        let mut inner = self.inner.lock();
        match inner.heads.iter_mut().find(|(u, _)| u == upstream) {
            Some((_, h)) => *h = version,
            None => inner.heads.push((upstream.to_string(), version)),
        }
    }

    /// `upstream` is refused for good: `reason` starts with `verification failed at version V`
    /// or `fork at version V`. Its head no longer counts.
    pub fn refuse(&self, upstream: &str, reason: String) {
        let mut inner = self.inner.lock();
        inner.heads.retain(|(u, _)| u != upstream);
        inner.refused.push((upstream.to_string(), reason));
    }

    pub fn is_refused(&self, upstream: &str) -> bool {
        self.inner.lock().refused.iter().any(|(u, _)| u == upstream)
    }

    /// `upstream` no longer holds our next version (`Some(why)`), or holds it again (`None`).
    /// Returns whether anything changed.
    pub fn set_expired(&self, upstream: &str, why: Option<String>) -> bool {
        let mut inner = self.inner.lock();
        let before = inner.expired.len();
        inner.expired.retain(|(u, _)| u != upstream);
        let removed = inner.expired.len() != before;
        match why {
            Some(why) => {
                inner.expired.push((upstream.to_string(), why));
                true
            }
            None => removed,
        }
    }

    /// How many upstreams no longer hold our next version.
    pub fn expired_count(&self) -> usize {
        self.inner.lock().expired.len()
    }

    /// Start-up is waiting for something before it can serve (the genesis from an upstream).
    pub fn set_waiting(&self, why: Option<String>) {
        self.inner.lock().waiting = why;
    }

    /// (verified, newest upstream head seen, lag).
    pub fn lag(&self) -> (u64, Option<u64>, u64) {
        let inner = self.inner.lock();
        let newest = inner.newest_head();
        let lag = newest.map_or(0, |h| h.saturating_sub(inner.verified));
        (inner.verified, newest, lag)
    }

    /// Whether the follower is ready, and every reason worth reporting (also while ready: a
    /// refused upstream stays named).
    fn report(&self) -> (bool, Vec<String>) {
        let inner = self.inner.lock();
        let mut reasons: Vec<String> = inner
            .refused
            .iter()
            .map(|(u, why)| format!("upstream {u} refused: {why}"))
            .collect();
        let live = self
            .upstreams
            .iter()
            .filter(|u| !inner.refused.iter().any(|(r, _)| r == *u))
            .count();
        let mut ready = live > 0;
        if live == 0 {
            reasons.push("no upstream left to follow (every one was refused)".to_string());
        }
        if let Some(why) = &inner.waiting {
            reasons.push(why.clone());
            ready = false;
        }
        // Every upstream still followed has windowed our next version away: no one can serve
        // the rest of the chain, so the follower stays where it is and says so.
        let serving = self
            .upstreams
            .iter()
            .filter(|u| !inner.refused.iter().any(|(r, _)| r == *u))
            .filter(|u| !inner.expired.iter().any(|(e, _)| e == *u))
            .count();
        if live > 0 && serving == 0 {
            reasons.push(format!(
                "no upstream holds version {} any more (their retention windows start after it: \
                 {}); follow an upstream that keeps the full history",
                inner.verified + 1,
                inner
                    .expired
                    .iter()
                    .map(|(u, why)| format!("{u}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            ready = false;
        }
        match inner.newest_head() {
            None => {
                reasons.push("follower has not heard an upstream head yet".to_string());
                ready = false;
            }
            Some(head) => {
                let lag = head.saturating_sub(inner.verified);
                if lag > self.max_lag_versions {
                    reasons.push(format!(
                        "follower is {lag} versions behind the upstream head {head} (max_lag_versions {})",
                        self.max_lag_versions
                    ));
                    ready = false;
                }
            }
        }
        (ready, reasons)
    }
}

impl WritePlane {
    pub fn new() -> Arc<WritePlane> {
        Arc::new(WritePlane::default())
    }

    /// Stop the write plane for good (a journal or sync failure).
    pub fn poison(&self, reason: String) {
        *self.poisoned.lock() = Some(reason);
    }

    /// Why the write plane stopped, if it did.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().clone()
    }

    pub fn read_only(&self) -> bool {
        self.read_only.load(Ordering::SeqCst)
    }

    pub fn maintenance_reason(&self) -> Option<String> {
        self.maintenance_reason.lock().clone()
    }

    /// Switch maintenance; returns whether it was on, and the reason now shown.
    pub fn set_read_only(&self, on: bool, reason: Option<String>) -> (bool, Option<String>) {
        let mut held = self.maintenance_reason.lock();
        let was = self.read_only.swap(on, Ordering::SeqCst);
        *held = if on { reason } else { None };
        (was, held.clone())
    }

    /// Shed commits while storage is slower than the budget (set once, at start-up).
    pub fn set_budget(&self, budget: Arc<CommitBudget>) {
        let _ = self.budget.set(budget);
    }

    /// Make this process a follower (once, at start-up).
    pub fn set_follow(&self, state: Arc<FollowState>) {
        let _ = self.follow.set(state);
    }

    pub fn follow(&self) -> Option<&Arc<FollowState>> {
        self.follow.get()
    }

    /// Would a write be accepted now: up, restored, not in maintenance, not poisoned.
    pub fn write_ready(&self) -> bool {
        let r = &self.readiness;
        let up = [&r.state_restored, &r.writer_ready, &r.storage_ready]
            .iter()
            .all(|f| f.load(Ordering::SeqCst));
        !self.read_only() && up && self.poisoned().is_none() && self.follow.get().is_none()
    }

    /// The refusal a write (`commit`: a `/commit`, also subject to the budget) gets now, if any.
    pub fn refuse_write(&self, commit: bool) -> Option<ApiError> {
        if let Some(follow) = self.follow.get() {
            return Some(ApiError::unavailable(format!(
                "this node is a read-only follower of {}; send writes to the upstream",
                follow.upstreams.join(", ")
            )));
        }
        if self.read_only.load(Ordering::Relaxed) {
            return Some(ApiError::unavailable(
                "the registry is in read-only (maintenance) mode",
            ));
        }
        if let Some(reason) = self.poisoned() {
            return Some(ApiError::unavailable(format!(
                "write plane stopped: {reason}"
            )));
        }
        if !self.readiness.writer_ready.load(Ordering::Relaxed) {
            return Some(ApiError::unavailable("the write plane is not ready"));
        }
        if commit {
            if let Some(why) = self.budget.get().and_then(|b| b.exceeded()) {
                return Some(ApiError::unavailable(format!("commit shed: {why}")).retry_after(1));
            }
        }
        None
    }

    /// (ready, read, write, reasons) for `/readyz`. `reasons` lists everything not fully
    /// available, also while ready: in maintenance the instance is ready (reads) and says why
    /// writes are off.
    pub fn report(&self) -> (bool, bool, bool, Vec<String>) {
        let r = &self.readiness;
        let on = |f: &AtomicBool| f.load(Ordering::SeqCst);
        let mut reasons = Vec::new();
        if !on(&r.registry_bound) {
            reasons.push("registry listener not bound".to_string());
        }
        if !on(&r.state_restored) {
            match r.restore_error.lock().clone() {
                Some(e) => reasons.push(format!("state not restored: {e}")),
                None => reasons.push("state not restored yet".to_string()),
            }
        }
        if !on(&r.metrics_served) {
            reasons.push("metrics not served".to_string());
        }
        if on(&r.draining) {
            reasons.push("shutting down".to_string());
        }
        let read = reasons.is_empty();
        let maintenance = self.read_only();
        if maintenance {
            reasons.push(format!(
                "read-only (maintenance) mode: {}",
                self.maintenance_reason().unwrap_or_default()
            ));
        }
        if let Some(p) = self.poisoned() {
            reasons.push(format!("write plane stopped: {p}"));
        }
        if !on(&r.writer_ready) {
            reasons.push("writer not ready".to_string());
        }
        if !on(&r.storage_ready) {
            reasons.push("storage not ready".to_string());
        }
        if let Some(follow) = self.follow.get() {
            // A follower's write plane is its upstream's; it is ready when it keeps up.
            let (follow_ready, follow_reasons) = follow.report();
            reasons.push(format!(
                "follower of {}: writes go to the upstream",
                follow.upstreams.join(", ")
            ));
            reasons.extend(follow_reasons);
            r.push_problems(&mut reasons);
            return (read && follow_ready, read, false, reasons);
        }
        // Every reason past the read ones concerns the write plane.
        let write = read && reasons.is_empty();
        let ready = read && (write || maintenance);
        r.push_problems(&mut reasons);
        (ready, read, write, reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_transparency_log_is_reported_without_taking_readiness_away() {
        let plane = WritePlane::new();
        let r = &plane.readiness;
        for flag in [
            &r.registry_bound,
            &r.state_restored,
            &r.metrics_served,
            &r.writer_ready,
            &r.storage_ready,
        ] {
            Readiness::set(flag, true);
        }
        let (ready, _, _, reasons) = plane.report();
        assert!(ready, "{reasons:?}");
        assert!(reasons.is_empty(), "{reasons:?}");
        *r.tlog_problem.lock() = Some("version 7: the frame's CRC does not match".into());
        let (ready, read, write, reasons) = plane.report();
        assert!(ready && read && write);
        assert_eq!(
            reasons,
            vec!["transparency log stopped: version 7: the frame's CRC does not match"]
        );
    }
}
