//! Injected faults (`[chaos]`, never in production): storage latency before each log sync.
//!
//! Touched by `metrics-worker-0` (admin routes), the main thread (SIGHUP) and the `fsync`
//! thread. One helper thread, `chaos-timer`, is started by the first timed injection and ends
//! within a second of its [`Chaos`] being dropped. Invariant: a disabled `Chaos` injects nothing.

use crate::metrics::m;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The only fault this product injects.
pub const FAULT_STORAGE_LATENCY: &str = "storage-latency";
/// Timed injections last this long at most.
pub const CHAOS_FOR_SECS_MAX: u64 = 86_400;

/// Why an injection or a clear was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ChaosError {
    /// `[chaos] enabled` is false.
    Disabled,
    /// This process never syncs storage (`--amnesia` or `fsync = "never"`): the fault would do
    /// nothing.
    NoStorage,
    /// Bad arguments (unknown fault, out-of-range values).
    Invalid(String),
}

/// Injected faults, enabled by `[chaos] enabled = true` only.
pub struct Chaos {
    enabled: AtomicBool,
    max_latency_ms: AtomicU64,
    /// Injected latency before each log sync, read by the fsync thread.
    pub storage_latency_ms: Arc<AtomicU64>,
    /// The process syncs storage at all (not `--amnesia`, not `fsync = "never"`).
    syncs: bool,
    /// When a timed injection ends (monotonic, and as Unix ms for display).
    expiry: Mutex<Option<(Instant, i64)>>,
    wake: Condvar,
    timer_started: AtomicBool,
}

impl Chaos {
    pub fn new(enabled: bool, max_latency_ms: u64, syncs: bool) -> Arc<Chaos> {
        m().registry_chaos_storage_latency_seconds.set(0.0);
        Arc::new(Chaos {
            enabled: AtomicBool::new(enabled),
            max_latency_ms: AtomicU64::new(max_latency_ms),
            storage_latency_ms: Arc::new(AtomicU64::new(0)),
            syncs,
            expiry: Mutex::new(None),
            wake: Condvar::new(),
            timer_started: AtomicBool::new(false),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Apply `[chaos]` from a reload. Switching chaos off clears an injected fault at once.
    pub fn configure(&self, enabled: bool, max_latency_ms: u64) {
        self.max_latency_ms.store(max_latency_ms, Ordering::SeqCst);
        let was = self.enabled.swap(enabled, Ordering::SeqCst);
        if was && !enabled {
            let cleared = self.clear_now();
            if cleared > 0 {
                log::warn!(
                    "msg=\"chaos cleared\" audit=1 source=sighup fault={FAULT_STORAGE_LATENCY} was_ms={cleared} why=\"chaos disabled\""
                );
            }
        }
    }

    /// Add `ms` of latency before every log sync, for `for_secs` seconds or until cleared.
    /// Returns the Unix ms at which it expires, if timed.
    pub fn inject(
        self: &Arc<Self>,
        fault: &str,
        ms: u64,
        for_secs: Option<u64>,
    ) -> Result<Option<i64>, ChaosError> {
        if !self.enabled() {
            return Err(ChaosError::Disabled);
        }
        if fault != FAULT_STORAGE_LATENCY {
            return Err(ChaosError::Invalid(format!(
                "unknown fault {fault:?}; supported: {FAULT_STORAGE_LATENCY:?}"
            )));
        }
        if !self.syncs {
            return Err(ChaosError::NoStorage);
        }
        let max = self.max_latency_ms.load(Ordering::SeqCst);
        if ms == 0 || ms > max {
            return Err(ChaosError::Invalid(format!(
                "ms = {ms} must be between 1 and chaos.max_latency_ms = {max} (use clear to remove a fault)"
            )));
        }
        if let Some(s) = for_secs {
            if s == 0 || s > CHAOS_FOR_SECS_MAX {
                return Err(ChaosError::Invalid(format!(
                    "for_secs = {s} must be between 1 and {CHAOS_FOR_SECS_MAX}"
                )));
            }
        }
        let mut expiry = self.expiry.lock();
        self.storage_latency_ms.store(ms, Ordering::SeqCst);
        m().registry_chaos_storage_latency_seconds
            .set(ms as f64 / 1000.0);
        *expiry = for_secs.map(|s| {
            (
                Instant::now() + Duration::from_secs(s),
                crate::clock::now_unix_ms() + s as i64 * 1000,
            )
        });
        let expires = expiry.map(|(_, unix_ms)| unix_ms);
        drop(expiry);
        if for_secs.is_some() {
            self.start_timer();
        }
        self.wake.notify_all();
        Ok(expires)
    }

    /// Remove any injected fault; returns the latency that was injected (0 if none).
    pub fn clear(&self) -> Result<u64, ChaosError> {
        if !self.enabled() {
            return Err(ChaosError::Disabled);
        }
        Ok(self.clear_now())
    }

    fn clear_now(&self) -> u64 {
        let mut expiry = self.expiry.lock();
        *expiry = None;
        let was = self.storage_latency_ms.swap(0, Ordering::SeqCst);
        m().registry_chaos_storage_latency_seconds.set(0.0);
        drop(expiry);
        self.wake.notify_all();
        was
    }

    /// `GET /admin/chaos`.
    pub fn state_json(&self) -> serde_json::Value {
        let expiry = *self.expiry.lock();
        let ms = self.storage_latency_ms.load(Ordering::SeqCst);
        let faults: Vec<serde_json::Value> = if ms > 0 {
            vec![serde_json::json!({
                "fault": FAULT_STORAGE_LATENCY,
                "ms": ms,
                "expires_at": expiry.map(|(_, unix_ms)| crate::clock::rfc3339_ms(unix_ms)),
            })]
        } else {
            vec![]
        };
        serde_json::json!({
            "enabled": self.enabled(),
            "max_latency_ms": self.max_latency_ms.load(Ordering::SeqCst),
            "faults": faults,
        })
    }

    /// Injected storage latency now, in ms.
    pub fn storage_latency_ms(&self) -> u64 {
        self.storage_latency_ms.load(Ordering::SeqCst)
    }

    /// The `chaos-timer` thread: clears a timed injection when it expires. Started once.
    fn start_timer(self: &Arc<Self>) {
        if self.timer_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak: Weak<Chaos> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("chaos-timer".into())
            .spawn(move || {
                while let Some(chaos) = weak.upgrade() {
                    let mut expiry = chaos.expiry.lock();
                    match *expiry {
                        Some((at, _)) if Instant::now() >= at => {
                            *expiry = None;
                            let was = chaos.storage_latency_ms.swap(0, Ordering::SeqCst);
                            m().registry_chaos_storage_latency_seconds.set(0.0);
                            log::warn!(
                                "msg=\"chaos expired\" audit=1 fault={FAULT_STORAGE_LATENCY} was_ms={was}"
                            );
                        }
                        Some((at, _)) => {
                            let wait = at.saturating_duration_since(Instant::now());
                            chaos
                                .wake
                                .wait_for(&mut expiry, wait.min(Duration::from_secs(1)));
                        }
                        None => {
                            chaos.wake.wait_for(&mut expiry, Duration::from_secs(1));
                        }
                    }
                }
            });
        if spawned.is_err() {
            // Without a timer a timed fault would stay: refuse to keep it.
            self.timer_started.store(false, Ordering::SeqCst);
            self.clear_now();
            log::error!("msg=\"cannot start the chaos timer; fault cleared\"");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaos_refuses_when_disabled_and_validates_its_arguments() {
        let c = Chaos::new(false, 100, true);
        assert_eq!(
            c.inject(FAULT_STORAGE_LATENCY, 50, None),
            Err(ChaosError::Disabled)
        );
        assert_eq!(c.clear(), Err(ChaosError::Disabled));
        assert_eq!(c.storage_latency_ms(), 0);
        c.configure(true, 100);
        assert!(matches!(
            c.inject("disk-full", 50, None),
            Err(ChaosError::Invalid(_))
        ));
        assert!(matches!(
            c.inject(FAULT_STORAGE_LATENCY, 101, None),
            Err(ChaosError::Invalid(_))
        ));
        assert!(matches!(
            c.inject(FAULT_STORAGE_LATENCY, 0, None),
            Err(ChaosError::Invalid(_))
        ));
        assert!(matches!(
            c.inject(FAULT_STORAGE_LATENCY, 5, Some(0)),
            Err(ChaosError::Invalid(_))
        ));
        assert_eq!(c.storage_latency_ms(), 0);
        assert_eq!(c.inject(FAULT_STORAGE_LATENCY, 50, None), Ok(None));
        assert_eq!(c.storage_latency_ms(), 50);
        assert_eq!(c.clear(), Ok(50));
        assert_eq!(c.storage_latency_ms(), 0);
        let amnesic = Chaos::new(true, 100, false);
        assert_eq!(
            amnesic.inject(FAULT_STORAGE_LATENCY, 5, None),
            Err(ChaosError::NoStorage)
        );
    }

    #[test]
    fn disabling_chaos_clears_an_injected_fault() {
        let c = Chaos::new(true, 100, true);
        c.inject(FAULT_STORAGE_LATENCY, 40, None).unwrap();
        c.configure(false, 100);
        assert_eq!(c.storage_latency_ms(), 0);
    }

    #[test]
    fn a_timed_injection_expires_and_a_newer_one_replaces_its_deadline() {
        let c = Chaos::new(true, 100, true);
        assert!(c
            .inject(FAULT_STORAGE_LATENCY, 30, Some(1))
            .unwrap()
            .is_some());
        // Replaced by an untimed injection: the old deadline must not clear it.
        c.inject(FAULT_STORAGE_LATENCY, 20, None).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(c.storage_latency_ms(), 20);
        c.inject(FAULT_STORAGE_LATENCY, 10, Some(1)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.storage_latency_ms() != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(c.storage_latency_ms(), 0);
        assert_eq!(c.state_json()["faults"], serde_json::json!([]));
    }
}
