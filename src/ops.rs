//! Operator controls shared by the admin routes (metrics listener), the signal loop (SIGHUP) and
//! the write path: maintenance mode, chaos faults, the commit budget and hot backups.
//!
//! Plain shared state — atomics and short mutexes — touched by `metrics-worker-0` (admin
//! routes), the main thread (SIGHUP), the `fsync` thread (sync timings) and the registry workers
//! (the budget check before a commit). Two helper threads exist: `chaos-timer`, started by the
//! first timed injection (it ends within a second of its [`Chaos`] being dropped), and one
//! short-lived `backup` thread per backup, at most one at a time.
//!
//! Every switch is logged with `audit=1`.

use crate::bus::{Bus, Event};
use crate::metrics::m;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Maintenance

/// Maintenance (read-only) mode: write routes answer 503, reads work, `/readyz` stays ready and
/// lists the reason. Switched by `--read-only`, `[maintenance]` (SIGHUP) and
/// `POST /admin/maintenance`.
pub struct Maintenance {
    /// Read by the registry workers on every write.
    pub read_only: Arc<AtomicBool>,
    reason: Mutex<Option<String>>,
    poisoned: Arc<Mutex<Option<String>>>,
    readiness: Arc<crate::api::Readiness>,
    bus: Arc<Bus>,
}

impl Maintenance {
    pub fn new(
        read_only: bool,
        reason: Option<String>,
        poisoned: Arc<Mutex<Option<String>>>,
        readiness: Arc<crate::api::Readiness>,
        bus: Arc<Bus>,
    ) -> Maintenance {
        m().registry_read_only.set(read_only as i64);
        Maintenance {
            read_only: Arc::new(AtomicBool::new(read_only)),
            reason: Mutex::new(reason.filter(|_| read_only)),
            poisoned,
            readiness,
            bus,
        }
    }

    pub fn is_on(&self) -> bool {
        self.read_only.load(Ordering::SeqCst)
    }

    pub fn reason(&self) -> Option<String> {
        self.reason.lock().clone()
    }

    /// Switch maintenance on or off (`source`: "admin", "sighup"). Always logs an audit line;
    /// returns whether the mode changed.
    pub fn set(&self, on: bool, reason: Option<String>, source: &str, corr_id: &str) -> bool {
        let mut held = self.reason.lock();
        let was = self.read_only.swap(on, Ordering::SeqCst);
        *held = if on {
            Some(reason.unwrap_or_else(|| "no reason given".to_string()))
        } else {
            None
        };
        let shown = held.clone();
        drop(held);
        m().registry_read_only.set(on as i64);
        let poisoned = self.poisoned.lock().clone();
        let r = &self.readiness;
        let up = [&r.state_restored, &r.writer_ready, &r.storage_ready]
            .iter()
            .all(|f| f.load(Ordering::SeqCst));
        let write_ready = !on && up && poisoned.is_none();
        m().registry_write_plane_ready.set(write_ready as i64);
        log::warn!(
            "msg=\"maintenance switched\" audit=1 source={source} corr_id={corr_id} read_only={on} was={was} reason={:?}",
            shown.as_deref().unwrap_or("")
        );
        if was != on {
            self.bus.publish(Event::WritePlane {
                ready: write_ready,
                reason: shown.clone().or(poisoned),
            });
            if write_ready {
                log::info!(
                    "ready=1 service=svc-registry role=write-plane source={source} msg=\"maintenance ended\""
                );
            }
        }
        was != on
    }
}

// ---------------------------------------------------------------------------------------------
// Chaos

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
        m().registry_chaos_storage_latency_ms.set(0);
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
        m().registry_chaos_storage_latency_ms.set(ms as i64);
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
        m().registry_chaos_storage_latency_ms.set(0);
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
                            m().registry_chaos_storage_latency_ms.set(0);
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

// ---------------------------------------------------------------------------------------------
// Commit budget

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

// ---------------------------------------------------------------------------------------------
// Backups

/// The file a completed backup holds beside `log/` and `checkpoints/`: what it contains. Its
/// presence is the sign that the backup finished (an interrupted one has none).
pub const BACKUP_MANIFEST: &str = "BACKUP.json";

/// What a backup copies from, set once storage is open.
#[derive(Clone)]
pub struct BackupSource {
    pub syncer: crate::log::Syncer,
    pub data_dir: PathBuf,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub registry_id: String,
}

/// Why a backup was refused or failed.
#[derive(Debug)]
pub enum BackupError {
    /// `--amnesia`: nothing is on disk.
    Amnesia,
    /// State is not restored (start-up in progress or refused).
    NotReady,
    /// Another backup is running.
    Busy,
    /// The target is unusable (relative, inside data_dir, …).
    BadTarget(String),
    /// The target exists and is not empty.
    NotEmpty(String),
    NoSpace(String),
    Failed(String),
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::Amnesia => f.write_str(
                "backup is unavailable: this server runs with --amnesia and keeps nothing on disk (re-sync from an authoritative node instead)",
            ),
            BackupError::NotReady => f.write_str("backup is unavailable: state is not restored"),
            BackupError::Busy => f.write_str("a backup is already running; retry when it is done"),
            BackupError::BadTarget(m)
            | BackupError::NotEmpty(m)
            | BackupError::NoSpace(m)
            | BackupError::Failed(m) => f.write_str(m),
        }
    }
}

/// A finished backup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupDone {
    pub to: String,
    /// Log position copied to.
    pub lsn: u64,
    /// Every version up to this one is in the copy (HEAD when the backup began).
    pub min_version: u64,
    pub registry_id: String,
    pub completed_at: String,
    pub elapsed_ms: u64,
}

/// Hot backups: one at a time, never with `--amnesia`.
pub struct Backups {
    amnesia: bool,
    running: AtomicBool,
    source: OnceLock<BackupSource>,
}

/// Held while a backup runs; dropping it lets the next one start.
pub struct BackupSlot(Arc<Backups>);

impl Drop for BackupSlot {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::SeqCst);
    }
}

impl Backups {
    pub fn new(amnesia: bool) -> Arc<Backups> {
        Arc::new(Backups {
            amnesia,
            running: AtomicBool::new(false),
            source: OnceLock::new(),
        })
    }

    /// Storage is open: backups can start.
    pub fn set_source(&self, source: BackupSource) {
        let _ = self.source.set(source);
    }

    /// Check `to` and take the one backup slot.
    pub fn begin(self: &Arc<Self>, to: &Path) -> Result<(BackupSource, BackupSlot), BackupError> {
        if self.amnesia {
            return Err(BackupError::Amnesia);
        }
        let source = self.source.get().ok_or(BackupError::NotReady)?.clone();
        if !to.is_absolute() {
            return Err(BackupError::BadTarget(format!(
                "{:?} is not an absolute path (it is resolved on the server's host)",
                to.display().to_string()
            )));
        }
        if to
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(BackupError::BadTarget(format!(
                "{:?} must not contain ..",
                to.display().to_string()
            )));
        }
        let data_dir = std::fs::canonicalize(&source.data_dir).unwrap_or(source.data_dir.clone());
        // The nearest existing ancestor, resolved, tells where the target really lands.
        let mut probe = to.to_path_buf();
        let mut rest = Vec::new();
        while !probe.exists() {
            match (probe.file_name().map(|n| n.to_owned()), probe.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    probe = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let mut resolved = std::fs::canonicalize(&probe).unwrap_or(probe);
        resolved.extend(rest.iter().rev());
        if resolved.starts_with(&data_dir) || data_dir.starts_with(&resolved) {
            return Err(BackupError::BadTarget(format!(
                "{:?} overlaps the data directory {:?}; back up to another directory",
                to.display().to_string(),
                source.data_dir.display().to_string()
            )));
        }
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(BackupError::Busy);
        }
        Ok((source, BackupSlot(self.clone())))
    }

    /// Copy, then write the manifest. Runs on the `backup` thread.
    pub fn run(source: &BackupSource, to: &Path) -> Result<BackupDone, BackupError> {
        let started = Instant::now();
        // Published versions were durable before they were published, so the copy (which reads
        // the durable position after this) holds at least this version.
        let min_version = source.snapshot.load().version();
        let lsn = source.syncer.backup(to).map_err(|e| match e {
            crate::log::LogError::NoSpace { .. } => BackupError::NoSpace(e.to_string()),
            crate::log::LogError::Io { ref err, .. }
                if err.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                BackupError::NotEmpty(e.to_string())
            }
            other => BackupError::Failed(other.to_string()),
        })?;
        let done = BackupDone {
            to: to.display().to_string(),
            lsn,
            min_version,
            registry_id: source.registry_id.clone(),
            completed_at: crate::clock::rfc3339_ms(crate::clock::now_unix_ms()),
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        write_manifest(to, &done).map_err(|e| {
            BackupError::Failed(format!(
                "{}: cannot write the manifest: {e}",
                to.join(BACKUP_MANIFEST).display()
            ))
        })?;
        Ok(done)
    }
}

fn write_manifest(dir: &Path, done: &BackupDone) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{BACKUP_MANIFEST}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(done).expect("serializes"))?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(BACKUP_MANIFEST))?;
    // IMPORTANT: the rename is durable only once the directory is.
    std::fs::File::open(dir)?.sync_all()
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
