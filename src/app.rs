//! Wiring: load config, restore state, start every role, wait on signals, drain.
//!
//! [`run`] is a sequence of named steps: [`Shared::new`] (the state every part shares),
//! `start_metrics`, `open_storage`, `start_write_plane`, `start_registry`, `signal_loop`
//! (SIGHUP reloads, SIGTERM/SIGINT start the `drain` thread), then `Roles::join`.
//!
//! Thread map (see docs/ARCHITECTURE.md): `signals` (this module's loop, on the main thread),
//! `registry-accept` + `registry-worker-{i}`, `metrics-accept` + `metrics-worker-0`, `writer`,
//! `verify-{i}`, `fsync`, and the storage roles.

use crate::api::{AdminApi, RegistryApi};
use crate::config::{Config, Flags, FsyncMode};
use crate::domain::signers::SignerSet;
use crate::http::{Listener, Server, ServerHandle, ServerTls};
use crate::metrics::m;
use crate::ops::{
    BackupSource, Backups, Chaos, CommitBudget, Maintenance, Readiness, SyncHealth, WritePlane,
};
use crate::roles::fsync::{FsyncParts, LogSync, SyncTarget};
use crate::roles::sse::SseHub;
use crate::roles::verifier;
use crate::roles::writer::{
    Internal, Journal, MemoryJournal, WriteRequest, Writer, WriterParts, WriterSettings,
};
use crate::snapshot::{Publisher, Publishers, Snapshot};
use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_CONFIG: i32 = 2;
pub const EXIT_START: i32 = 1;

/// Bounded capacity of the writer's request channel; a full channel answers `429 busy`.
const WRITER_QUEUE: usize = 4096;
/// Bounded capacity of the verifier job channel.
const VERIFY_QUEUE: usize = 8192;
/// Bounded capacity of the writer → fsync channel (journal positions awaiting a sync). Full
/// means the disk is more than this many commits behind: the writer's `send` then waits for the
/// fsync thread to drain it (it takes every queued position per sync), which stalls the writer,
/// fills its request queue and sheds new writes with `429 busy` at the HTTP workers. Waiting is
/// safe: the fsync thread never waits on the writer (its notices go to the unbounded internal
/// channel below), and a gone fsync thread makes the send fail at once (the writer poisons).
const SYNC_QUEUE: usize = 4096;

pub struct Options {
    pub config_path: PathBuf,
    pub flags: Flags,
}

fn settings(config: &Config) -> WriterSettings {
    WriterSettings {
        ttl: Duration::from_secs(config.raw.proposals.ttl_secs),
        max_pending: config.raw.proposals.max_pending,
        commit_wait: Duration::from_millis(config.raw.proposals.commit_wait_ms),
        limits: config.proposal_limits(),
    }
}

fn sse_settings(config: &Config) -> crate::roles::sse::SseSettings {
    crate::roles::sse::SseSettings {
        max_subscribers: config.raw.sse.max_subscribers,
        buffer_events: config.raw.sse.buffer_events as u64,
        heartbeat: Duration::from_secs(config.raw.sse.heartbeat_secs),
        write_timeout: Duration::from_millis(config.raw.http.write_timeout_ms),
    }
}

/// Run the server until SIGTERM/SIGINT. Returns the process exit code.
pub fn run(opts: Options) -> i32 {
    // Signals first, before any thread exists, so every thread inherits the mask handling.
    let mut signals = match signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot register signal handlers: {e}");
            return EXIT_START;
        }
    };
    let config = match Config::load(&opts.config_path, opts.flags.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    crate::logging::init(config.raw.log_level.as_deref());
    let tls = match tls_config(&config) {
        Ok(tls) => tls.map(ServerTls::new),
        Err(e) => {
            log::error!("msg=\"cannot load the TLS certificate\" error={e:?}");
            eprintln!("error: {}: {e}", config.path.display());
            return EXIT_CONFIG;
        }
    };
    let started = Instant::now();
    log::info!(
        "msg=starting service=svc-registry version={} config={:?} registry_id={} workers={} amnesia={} read_only={} uds_only={}",
        env!("CARGO_PKG_VERSION"),
        config.path.display().to_string(),
        config.raw.registry_id,
        config.workers,
        config.flags.amnesia,
        config.flags.read_only,
        config.flags.uds_only
    );
    let gate = match start_gate(&config) {
        Some(g) => g,
        None => return EXIT_START,
    };
    let shared = Shared::new(&config, tls, gate);

    // The metrics listener comes up first so /healthz and /readyz answer during restore.
    let Some(metrics_server) = start_metrics(&config, &shared) else {
        return EXIT_START;
    };
    // A follower's genesis may have to come from an upstream: SIGTERM/SIGINT while it waits
    // for one ends the start-up cleanly.
    let mut stop_requested = false;
    let opened = open_storage(&config, &shared, &mut || {
        stop_requested |= signals.pending().any(|s| s != SIGHUP);
        stop_requested
    });
    if stop_requested {
        metrics_server.shutdown(Instant::now() + Duration::from_secs(1));
        log::info!("shutdown_complete=1 service=svc-registry");
        return EXIT_OK;
    }
    let restored = match opened {
        Ok(r) => r,
        Err(OpenFailure::Locked | OpenFailure::Io) => {
            metrics_server.shutdown(Instant::now() + Duration::from_secs(1));
            return EXIT_START;
        }
        Err(OpenFailure::Refused) => {
            // Never skip corruption: stay up, not ready, with the reason, until told to stop.
            // An operator restores from a backup (docs/OPERATIONS.md).
            for signal in signals.forever() {
                if signal != SIGHUP {
                    break;
                }
            }
            metrics_server.shutdown(Instant::now() + Duration::from_secs(1));
            log::info!("shutdown_complete=1 service=svc-registry");
            return EXIT_START;
        }
    };
    let Some(roles) = start_write_plane(&config, &shared, restored) else {
        return EXIT_START;
    };
    let Some(registry_server) = start_registry(&config, &shared, &roles) else {
        return EXIT_START;
    };
    let readiness = &shared.plane.readiness;
    Readiness::set(&readiness.registry_bound, true);
    log::info!(
        "ready=1 service=svc-registry role=read-plane registry_addr={} metrics_addr={} startup_ms={}",
        registry_server.local_addr(),
        metrics_server.local_addr(),
        started.elapsed().as_millis()
    );
    if let Some(tls) = &config.raw.tls {
        log::info!(
            "msg=\"TLS on the registry and metrics listeners\" cert_file={:?} client_ca_file={:?} uds=plaintext",
            tls.cert_file.display().to_string(),
            tls.client_ca_file.as_ref().map(|p| p.display().to_string())
        );
    }
    if let Some(follow) = &config.follow {
        m().registry_follower.set(1);
        log::info!(
            "ready=1 service=svc-registry role=follower upstreams={:?} genesis_hash={} max_lag_versions={} amnesia={}",
            follow.upstreams.join(","),
            follow.genesis_hash,
            follow.max_lag_versions,
            config.flags.amnesia
        );
    } else if !shared.maintenance.is_on() {
        m().registry_write_plane_ready.set(1);
        log::info!(
            "ready=1 service=svc-registry role=write-plane fsync={:?} amnesia={}",
            config.raw.storage.fsync,
            config.flags.amnesia
        );
    }
    // After readiness, so the re-hash never competes with start-up for the CPU.
    if roles.storage.is_some() {
        start_history_check(
            config.raw.registry_id.clone(),
            roles.snapshot.load_full(),
            shared.plane.clone(),
        );
    }
    let drain_thread = signal_loop(
        signals,
        config,
        &shared,
        &roles,
        (registry_server, metrics_server),
    );
    if let Some(t) = drain_thread {
        let _ = t.join();
    }
    roles.join();
    log::info!("shutdown_complete=1 service=svc-registry");
    EXIT_OK
}

/// The state shared by the listeners, the roles and the signal loop.
struct Shared {
    /// Is the write plane ready, and why not.
    plane: Arc<WritePlane>,
    /// The bus (lossy, typed events); its optional local socket starts with the writer.
    bus: Arc<crate::bus::Bus>,
    maintenance: Arc<Maintenance>,
    writer_settings: Arc<ArcSwap<WriterSettings>>,
    chaos: Arc<Chaos>,
    sync_health: Arc<SyncHealth>,
    commit_budget: Arc<CommitBudget>,
    backups: Arc<Backups>,
    effective_config: Arc<ArcSwap<String>>,
    /// TLS of both TCP listeners (None: plaintext); a SIGHUP swaps its certificate.
    tls: Option<Arc<ServerTls>>,
    /// The capability check of both listeners; a SIGHUP re-reads its keys file.
    gate: Arc<crate::auth::Gate>,
    /// `[ops] backup_root`, replaced by each reload.
    backup_root: Arc<ArcSwap<Option<PathBuf>>>,
}

/// The capability gate of `[auth]`: its keys file is read now, and a file that is unreadable,
/// malformed or readable by others stops the start (exit 1) with one clear line. Without
/// `[auth]`: one warning line, and the server runs open.
fn start_gate(config: &Config) -> Option<Arc<crate::auth::Gate>> {
    let registry_id = &config.raw.registry_id;
    let Some(auth) = &config.raw.auth else {
        log::warn!(
            "msg=\"no [auth] in the config: anyone who reaches the registry listener can propose, approve and commit, and anyone who reaches the metrics listener can use the admin routes; see docs/OPERATIONS.md (Securing a registry)\" auth=off"
        );
        return Some(Arc::new(crate::auth::Gate::open(registry_id)));
    };
    match crate::auth::Gate::from_config(registry_id, Some(auth)) {
        Ok(gate) => {
            if auth.dev_insecure_permissions {
                log::warn!(
                    "msg=\"DEV ONLY: [auth] dev_insecure_permissions = true accepts a keys file others can read; never in production\" keys_file={:?}",
                    auth.keys_file.display().to_string()
                );
            }
            log::info!(
                "msg=\"capabilities on\" auth=on keys_file={:?} require={:?}",
                auth.keys_file.display().to_string(),
                auth.require.join(",")
            );
            Some(Arc::new(gate))
        }
        Err(e) => {
            log::error!(
                "msg=\"cannot load the auth keys file\" error={:?}",
                e.to_string()
            );
            eprintln!("error: {}: [auth] {e}", config.path.display());
            None
        }
    }
}

/// The listeners' TLS configuration from `[tls]` (None without it): the files are read and
/// checked here, at start-up and on every SIGHUP.
pub fn tls_config(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    let Some(tls) = &config.raw.tls else {
        return Ok(None);
    };
    crate::http::tls::server_config(&tls.cert_file, &tls.key_file, tls.client_ca_file.as_deref())
        .map(Some)
}

impl Shared {
    fn new(config: &Config, tls: Option<Arc<ServerTls>>, gate: Arc<crate::auth::Gate>) -> Shared {
        let plane = WritePlane::new();
        let bus = crate::bus::Bus::new();
        let maintenance = {
            let file = &config.raw.maintenance;
            let on = config.flags.read_only || file.read_only;
            let reason = if config.flags.read_only {
                "started with --read-only".to_string()
            } else {
                file.reason
                    .clone()
                    .unwrap_or_else(|| "[maintenance] read_only = true in the config".to_string())
            };
            Arc::new(Maintenance::new(
                on,
                Some(reason),
                plane.clone(),
                bus.clone(),
            ))
        };
        let syncs_storage = !config.flags.amnesia && config.raw.storage.fsync != FsyncMode::Never;
        let chaos = Chaos::new(
            config.raw.chaos.enabled,
            config.raw.chaos.max_latency_ms,
            syncs_storage,
        );
        let sync_health = Arc::new(SyncHealth::default());
        let commit_budget = Arc::new(CommitBudget {
            budget_ms: AtomicU64::new(config.raw.storage.commit_budget_ms),
            health: sync_health.clone(),
            chaos: chaos.clone(),
        });
        plane.set_budget(commit_budget.clone());
        if let Some(follow) = &config.follow {
            plane.set_follow(crate::ops::FollowState::new(
                follow.upstreams.clone(),
                follow.max_lag_versions,
            ));
        }
        Shared {
            plane,
            bus,
            maintenance,
            writer_settings: Arc::new(ArcSwap::from_pointee(settings(config))),
            chaos,
            sync_health,
            commit_budget,
            backups: Backups::new(config.flags.amnesia),
            effective_config: Arc::new(ArcSwap::from_pointee(effective_toml(config))),
            tls,
            gate,
            backup_root: Arc::new(ArcSwap::from_pointee(config.raw.ops.backup_root.clone())),
        }
    }
}

/// Bind the metrics listener (health, readiness, metrics, admin routes).
fn start_metrics(config: &Config, shared: &Shared) -> Option<ServerHandle> {
    let admin = Arc::new(AdminApi {
        plane: shared.plane.clone(),
        maintenance: shared.maintenance.clone(),
        chaos: shared.chaos.clone(),
        backups: shared.backups.clone(),
        effective_config: shared.effective_config.clone(),
        gate: shared.gate.clone(),
        backup_root: shared.backup_root.clone(),
    });
    let mut admin_limits = config.http_limits();
    admin_limits.workers = 1;
    match Listener::bind_tcp(&config.raw.metrics_addr)
        .and_then(|l| Server::start_with_tls("metrics", l, admin_limits, admin, shared.tls.clone()))
    {
        Ok(s) => {
            Readiness::set(&shared.plane.readiness.metrics_served, true);
            log::info!(
                "msg=\"metrics listener bound\" metrics_addr={}",
                s.local_addr()
            );
            Some(s)
        }
        Err(e) => {
            let msg = bind_error(&config.raw.metrics_addr, &e);
            log::error!("msg=\"cannot bind metrics listener\" error={msg:?}");
            eprintln!("error: metrics listener: {msg}");
            None
        }
    }
}

/// What restore hands to the write plane.
struct Restored {
    snapshot: Arc<ArcSwap<Snapshot>>,
    journal: Box<dyn Journal>,
    sync_target: Option<Box<dyn SyncTarget>>,
    recent_commits: Vec<(String, u64)>,
    /// Pending proposals and approvals from the log's pending frames (none with --amnesia).
    pending: Vec<crate::domain::pending::RestoredPending>,
    checkpoint_version: u64,
    /// (syncer, data directory lock, data directory); `None` with `--amnesia`.
    storage: Option<(crate::log::Syncer, crate::log::DirLock, PathBuf)>,
    /// The log's pending frames gathered at start, for the checkpoint thread to carry on.
    pending_carry: Option<crate::roles::checkpoint::PendingCarry>,
    /// Whether the checkpoint restored from carried them (else it is rewritten at once).
    carried_pending: bool,
    /// Whether the checkpoint restored from is of an earlier payload version (rewritten at once).
    outdated_checkpoint: bool,
}

/// Why storage did not open (already logged).
enum OpenFailure {
    /// Another process holds the data directory.
    Locked,
    /// The data directory or its log cannot be created, opened or read.
    Io,
    /// Restore refused (corruption): stay up, not ready, with the reason.
    Refused,
}

/// State: genesis (amnesia) or what storage restores; marks state and storage ready.
fn open_storage(
    config: &Config,
    shared: &Shared,
    stop: &mut dyn FnMut() -> bool,
) -> Result<Restored, OpenFailure> {
    // The genesis signer set of a new registry: the config's `[signers]` on an authority; on a
    // follower, the set of the genesis record an upstream serves, once it hashes to the pinned
    // `genesis_hash` (docs/OPERATIONS.md).
    let mut bootstrap = || -> Result<Arc<SignerSet>, String> {
        match (&config.follow, &config.signers) {
            (Some(follow), _) => {
                let state = shared.plane.follow().expect("set with [follow]");
                state.set_waiting(Some(
                    "waiting for a verified genesis record from an upstream".to_string(),
                ));
                let got = crate::roles::follower::fetch_genesis(
                    &config.raw.registry_id,
                    follow,
                    state,
                    &mut *stop,
                );
                state.set_waiting(None);
                got
            }
            (None, Some(set)) => Ok(Arc::new(set.clone())),
            (None, None) => Err("no [signers] to create the registry with".to_string()),
        }
    };
    let restored = if config.flags.amnesia {
        log::info!("msg=\"amnesia: state lives in memory only; nothing is written to disk\"");
        let store = match crate::history::MemoryStore::new() {
            Ok(store) => Arc::new(store),
            Err(e) => {
                let msg = format!("cannot create the in-memory journal: {e}");
                log::error!("msg=\"state restore failed; not ready\" error={msg:?}");
                *shared.plane.readiness.restore_error.lock() = Some(msg);
                return Err(OpenFailure::Refused);
            }
        };
        let genesis_set = match bootstrap() {
            Ok(set) => set,
            Err(msg) => {
                log::error!("msg=\"no genesis; not ready\" error={msg:?}");
                *shared.plane.readiness.restore_error.lock() = Some(msg);
                return Err(OpenFailure::Refused);
            }
        };
        Restored {
            // A new genesis v2 each start, from the config's [signers] (docs/FORMATS.md), or a
            // follower's verified upstream genesis; later records are read back from the
            // in-memory journal.
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::genesis_over(
                &config.raw.registry_id,
                genesis_set,
                store.clone(),
            ))),
            journal: Box::new(MemoryJournal::new(store)),
            sync_target: None,
            recent_commits: Vec::new(),
            pending: Vec::new(),
            checkpoint_version: 0,
            storage: None,
            pending_carry: None,
            carried_pending: false,
            outdated_checkpoint: false,
        }
    } else {
        let opts = crate::log::StorageOptions {
            segment_bytes: config.raw.storage.segment_bytes,
            checkpoints_kept: config.raw.storage.checkpoints_kept,
        };
        let restore_started = Instant::now();
        // Absent (or empty) before open means open creates a new registry: say so, loudly, so
        // a mistyped or mis-resolved data_dir is not silently a fresh empty registry.
        let creating = std::fs::read_dir(&config.raw.data_dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
        // Used only if the data directory is new: its genesis fixes this set (docs/FORMATS.md).
        match crate::storage::open_with(
            &config.raw.data_dir,
            &config.raw.registry_id,
            &opts,
            &mut bootstrap,
        ) {
            Ok(opened) => {
                if config.follow.is_none() {
                    if let Some(set) = &config.signers {
                        warn_if_config_signers_differ(set, &opened.restored.snapshot);
                    }
                }
                let sync = config.raw.storage.fsync != FsyncMode::Never;
                if !sync {
                    log::warn!("msg=\"fsync = never: acknowledged commits can be lost on a crash; for benchmarks only\"");
                }
                log::info!(
                    "msg=\"state restored\" data_dir={:?} version={} descriptors={} from_checkpoint={} elapsed_ms={}",
                    config.raw.data_dir.display().to_string(),
                    opened.restored.snapshot.version(),
                    opened.restored.snapshot.descriptors.len(),
                    opened.restored.from_checkpoint,
                    restore_started.elapsed().as_millis()
                );
                if creating {
                    log::info!(
                        "msg=\"created new data directory\" path={:?} registry_id={} genesis_hash={}",
                        config.raw.data_dir.display().to_string(),
                        config.raw.registry_id,
                        opened.restored.snapshot.history.genesis().hash
                    );
                }
                let journal = Box::new(crate::storage::DiskJournal {
                    writer: opened.writer,
                    sync,
                });
                Restored {
                    snapshot: Arc::new(ArcSwap::from_pointee(opened.restored.snapshot)),
                    journal,
                    sync_target: sync
                        .then(|| Box::new(opened.syncer.clone()) as Box<dyn SyncTarget>),
                    recent_commits: opened.restored.recent_commits,
                    pending: opened.restored.pending,
                    checkpoint_version: opened.restored.from_checkpoint,
                    carried_pending: opened.restored.carried_pending,
                    outdated_checkpoint: opened.restored.outdated_checkpoint,
                    pending_carry: Some(crate::roles::checkpoint::PendingCarry {
                        reader: opened.reader,
                        scanned_to: opened.log_end,
                        frames: opened.restored.pending_frames,
                        feed: None,
                    }),
                    storage: Some((opened.syncer, opened.lock, opened.data_dir)),
                }
            }
            Err(crate::storage::OpenError::Locked(msg)) => {
                log::error!("msg=\"data directory is in use by another process\" error={msg:?}");
                eprintln!("error: {msg}");
                return Err(OpenFailure::Locked);
            }
            Err(crate::storage::OpenError::Io(msg)) => {
                log::error!("msg=\"cannot open the data directory\" error={msg:?}");
                eprintln!("error: {msg}");
                return Err(OpenFailure::Io);
            }
            Err(crate::storage::OpenError::Refused(msg)) => {
                log::error!("msg=\"state restore failed; not ready\" error={msg:?}");
                *shared.plane.readiness.restore_error.lock() = Some(msg);
                return Err(OpenFailure::Refused);
            }
        }
    };
    if let Some(follow) = &config.follow {
        // A data directory of another registry (or another genesis) is never followed on.
        let have = restored.snapshot.load().history.genesis().hash.clone();
        if have != follow.genesis_hash {
            let msg = format!(
                "the data directory's genesis hash {have} is not the pinned follow.genesis_hash {}",
                follow.genesis_hash
            );
            log::error!("msg=\"state restore failed; not ready\" error={msg:?}");
            *shared.plane.readiness.restore_error.lock() = Some(msg);
            return Err(OpenFailure::Refused);
        }
    }
    if let Some((syncer, _, data_dir)) = &restored.storage {
        shared.backups.set_source(BackupSource {
            syncer: syncer.clone(),
            data_dir: data_dir.clone(),
            snapshot: restored.snapshot.clone(),
            registry_id: config.raw.registry_id.clone(),
        });
    }
    let readiness = &shared.plane.readiness;
    Readiness::set(&readiness.state_restored, true);
    Readiness::set(&readiness.storage_ready, true);
    m().registry_head_version
        .set(restored.snapshot.load().version() as i64);
    Ok(restored)
}

/// The background check of start-up: re-hash the whole restored chain from genesis (start-up
/// itself only verified what follows the checkpoint) and report a problem through
/// `registry_background_verify_failures_total` and a `/readyz` reason. It never holds
/// readiness, and it is not joined: it only reads, and ends by itself (a shutdown does not wait
/// for it).
fn start_history_check(registry_id: String, snapshot: Arc<Snapshot>, plane: Arc<WritePlane>) {
    let spawned = std::thread::Builder::new()
        .name("history-check".into())
        .spawn(move || {
            let started = Instant::now();
            match crate::restore::verify_history(
                &registry_id,
                &snapshot.history,
                &snapshot.head.hash,
            ) {
                Ok(versions) => log::info!(
                    "msg=\"background history check passed\" versions={versions} elapsed_ms={}",
                    started.elapsed().as_millis()
                ),
                Err(e) => {
                    log::error!("msg=\"background history check failed\" error={e:?}");
                    m().registry_background_verify_failures_total.inc();
                    *plane.readiness.history_problem.lock() = Some(e);
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("msg=\"cannot start the background history check\" error={e:?}");
    }
}

/// The running roles of the write plane and the stream, joined in order at exit.
struct Roles {
    snapshot: Arc<ArcSwap<Snapshot>>,
    requests_tx: Sender<WriteRequest>,
    writer_thread: JoinHandle<()>,
    verifier_threads: Vec<JoinHandle<()>>,
    fsync_thread: Option<JoinHandle<()>>,
    sse_hub: Arc<SseHub>,
    sse_thread: JoinHandle<()>,
    checkpoint_thread: Option<JoinHandle<()>>,
    /// The transparency log (`[log] enabled`), its thread and that thread's stop flag.
    tlog: Option<Arc<crate::tlog::Tlog>>,
    tlog_thread: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
    bus_socket: Option<crate::bus::SocketServer>,
    /// The follower (with `[follow]`) and its stop flag.
    follower: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
    /// A follower's hold on the writer's internal channel (see `start_write_plane`).
    internal_hold: Option<Sender<Internal>>,
    /// Held until every role is joined: the data directory lock and the syncer.
    storage: Option<(crate::log::Syncer, crate::log::DirLock, PathBuf)>,
    /// The writer's pending proposals' ops, for the capability gate.
    pending_ops: Arc<crate::auth::PendingOps>,
}

/// Start the writer, the verifier pool, the fsync thread, the stream fan-out, the checkpoint
/// thread and the bus socket; marks the writer ready.
fn start_write_plane(config: &Config, shared: &Shared, restored: Restored) -> Option<Roles> {
    let Restored {
        snapshot,
        journal,
        sync_target,
        recent_commits,
        pending,
        checkpoint_version,
        storage,
        pending_carry,
        carried_pending,
        outdated_checkpoint,
    } = restored;
    let (requests_tx, requests_rx) = crossbeam_channel::bounded::<WriteRequest>(WRITER_QUEUE);
    // Unbounded on purpose: this channel carries durability notices and
    // verifier results to the writer. Bounding it would either drop a notice (`try_send`: a
    // durable commit never answered) or deadlock (a blocking send from the fsync thread while the
    // writer waits to hand it a position). Its length is bounded by construction: one verifier
    // result per queued job (at most VERIFY_QUEUE + `workers`, queued with `try_send`) and at
    // most one notice per sync (at most SYNC_QUEUE positions wait for one).
    let (internal_tx, internal_rx) = crossbeam_channel::unbounded::<Internal>();
    let (verify_tx, verify_rx) = crossbeam_channel::bounded(VERIFY_QUEUE);
    // On a follower no approval ever reaches the writer (every write route answers 503), so
    // the pool's results go to the follower, which verifies upstream records on it.
    let mut follow_results = None;
    let verifier_threads = if config.follow.is_some() {
        // Unbounded, bounded by construction: one result per job the follower queued.
        let (tx, rx) = crossbeam_channel::unbounded();
        follow_results = Some(rx);
        verifier::start(config.workers, verify_rx, tx, |v| v)
    } else {
        verifier::start(
            config.workers,
            verify_rx,
            internal_tx.clone(),
            Internal::Verified,
        )
    };
    let always = config.raw.storage.fsync == crate::config::FsyncMode::Always;
    let batch_max_delay = Duration::from_millis(config.raw.storage.fsync_batch_max_delay_ms);
    // One `LogSync` for the fsync thread and the writer's inline path (`Writer::sync_due`).
    let (sync_tx, fsync_thread, log_sync) = match sync_target {
        Some(target) => {
            let (tx, rx) = crossbeam_channel::bounded(SYNC_QUEUE);
            let log_sync = Arc::new(LogSync::new(
                target,
                shared.chaos.storage_latency_ms.clone(),
                shared.sync_health.clone(),
            ));
            let parts = FsyncParts {
                sync: log_sync.clone(),
                requests: rx,
                done: internal_tx.clone(),
                always,
                batch_max_delay,
            };
            let handle = std::thread::Builder::new()
                .name("fsync".into())
                .spawn(move || crate::roles::fsync::run(parts))
                .expect("spawning the fsync thread");
            (Some(tx), Some(handle), Some(log_sync))
        }
        None => (None, None, None),
    };
    // On a follower the pool does not hold the writer's internal channel; this clone keeps it
    // open (the writer ends on a closed one) until the writer is joined, as the pool's would.
    let internal_hold = config.follow.is_some().then(|| internal_tx.clone());
    drop(internal_tx);
    let (sse_hub, sse_thread) = match SseHub::start(snapshot.clone(), sse_settings(config)) {
        Ok(x) => x,
        Err(e) => {
            log::error!("msg=\"cannot start the stream fan-out\" error={e:?}");
            return None;
        }
    };
    let retain_versions = config.raw.storage.retain_versions;
    // The retention window with --amnesia: its own thread (no checkpoints to wait for).
    let retention_tx = match (&storage, retain_versions) {
        (None, n) if n > 0 => {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let snapshot = snapshot.clone();
            std::thread::Builder::new()
                .name("retention".into())
                .spawn(move || crate::roles::retention::run(snapshot, rx, n))
                .expect("spawning the retention thread");
            Some(tx)
        }
        _ => None,
    };
    crate::roles::retention::set_gauges(&snapshot.load());
    // Checkpoints (not with --amnesia).
    // The writer hands its pending frames to the checkpoint thread rather than it reading
    // them back (roles/checkpoint.rs).
    let mut pending_carry = pending_carry;
    let pending_feed = pending_carry
        .as_mut()
        .map(|c| c.feed(crate::roles::checkpoint::PENDING_FEED));
    let (checkpoint_tx, checkpoint_thread) = match &storage {
        Some((_, _, data_dir)) => {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let data_dir = data_dir.clone();
            let keep = config.raw.storage.checkpoints_kept;
            let parts = crate::roles::checkpoint::CheckpointParts {
                snapshot: snapshot.clone(),
                wake: rx,
                every_commits: config.raw.storage.checkpoint_every_commits.max(1),
                interval: Duration::from_secs(config.raw.storage.checkpoint_interval_secs.max(1)),
                last_version: checkpoint_version,
                upgrade: checkpoint_version > 0 && (!carried_pending || outdated_checkpoint),
                pending: pending_carry,
                write: Box::new(move |seq, bytes| {
                    crate::log::write_checkpoint(&data_dir, &crate::log::OsIo, seq, bytes, keep)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }),
                after_checkpoint: (retain_versions > 0).then(|| {
                    Box::new(move |snap: &Snapshot, covered: u64| {
                        crate::roles::retention::drop_and_log(snap, covered, retain_versions)
                    }) as crate::roles::checkpoint::AfterCheckpoint
                }),
            };
            let handle = std::thread::Builder::new()
                .name("checkpoint".into())
                .spawn(move || crate::roles::checkpoint::run(parts))
                .expect("spawning the checkpoint thread");
            (Some(tx), Some(handle))
        }
        None => (None, None),
    };
    let mut publishers: Vec<Box<dyn Publisher>> = vec![Box::new(
        crate::roles::sse::StreamPublisher(sse_hub.clone()),
    )];
    if let Some(tx) = checkpoint_tx {
        publishers.push(Box::new(crate::roles::checkpoint::CheckpointNudge::new(
            tx,
            config.raw.storage.checkpoint_every_commits.max(1),
            checkpoint_version,
        )));
    }
    publishers.push(Box::new(crate::roles::retention::RetentionPublisher(
        retention_tx,
    )));
    // The transparency log: its tree is built by its own thread from published records.
    let (tlog, tlog_thread) = if config.raw.log.is_enabled() {
        match start_tlog(
            config,
            &snapshot,
            storage.as_ref().map(|s| s.2.as_path()),
            &shared.plane,
        ) {
            Ok((tlog, tx, handle)) => {
                publishers.push(Box::new(crate::roles::tlog::TlogFeed(tx)));
                (Some(tlog), Some(handle))
            }
            Err(e) => {
                log::error!("msg=\"cannot start the transparency log\" error={e:?}");
                eprintln!("error: transparency log: {e}");
                return None;
            }
        }
    } else {
        (None, None)
    };
    // The bus's optional local socket.
    publishers.push(Box::new(crate::bus::BusPublisher(shared.bus.clone())));
    let bus_socket = match &config.raw.bus.socket {
        Some(path) => match crate::bus::SocketServer::start(shared.bus.clone(), path) {
            Ok(server) => {
                log::info!(
                    "msg=\"bus socket listening\" path={:?}",
                    path.display().to_string()
                );
                Some(server)
            }
            Err(e) => {
                let msg = bind_error(&path.display().to_string(), &e);
                log::error!("msg=\"cannot bind the bus socket\" error={msg:?}");
                eprintln!("error: bus socket: {msg}");
                return None;
            }
        },
        None => None,
    };
    let follower = match (&config.follow, follow_results) {
        (Some(follow), Some(verified_rx)) => {
            let stop = Arc::new(AtomicBool::new(false));
            let parts = crate::roles::follower::FollowerParts {
                registry_id: config.raw.registry_id.clone(),
                follow: follow.clone(),
                state: shared.plane.follow().expect("set with [follow]").clone(),
                snapshot: snapshot.clone(),
                writer: requests_tx.clone(),
                verify_tx: verify_tx.clone(),
                verified_rx,
                stop: stop.clone(),
                tlog: tlog.clone(),
            };
            let handle = std::thread::Builder::new()
                .name("follower".into())
                .spawn(move || crate::roles::follower::run(parts))
                .expect("spawning the follower thread");
            Some((handle, stop))
        }
        _ => None,
    };
    let mut writer = Writer::new(WriterParts {
        registry_id: config.raw.registry_id.clone(),
        snapshot: snapshot.clone(),
        settings: shared.writer_settings.clone(),
        requests: requests_rx,
        internal_rx,
        verify_tx,
        sync_tx,
        journal,
        publisher: Box::new(Publishers(publishers)),
        plane: shared.plane.clone(),
        clock_ms: crate::clock::now_unix_ms,
    });
    writer.verify_inline_when_idle();
    if let Some(log_sync) = log_sync {
        writer.sync_inline_when_idle(log_sync, always, batch_max_delay);
    }
    writer.feed_pending(pending_feed);
    for (proposal_id, version) in recent_commits {
        writer.remember_committed(proposal_id, version);
    }
    let pending_ops = writer.pending_ops();
    let restored_pending = writer.restore_pending(pending);
    if restored_pending > 0 {
        log::info!("msg=\"pending proposals restored\" count={restored_pending}");
    }
    let writer_thread = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || writer.run())
        .expect("spawning the writer thread");
    Readiness::set(&shared.plane.readiness.writer_ready, true);
    Some(Roles {
        snapshot,
        requests_tx,
        writer_thread,
        verifier_threads,
        fsync_thread,
        sse_hub,
        sse_thread,
        checkpoint_thread,
        tlog,
        tlog_thread,
        bus_socket,
        follower,
        internal_hold,
        storage,
        pending_ops,
    })
}

impl Roles {
    /// After the drain: the writer (its request channel closes with the last sender), then the
    /// roles it fed, then the storage lock.
    fn join(self) {
        // The follower first: it feeds the writer and the verifier pool, and ends within one
        // upstream timeout of its flag (the drain raised it already).
        if let Some((handle, stop)) = self.follower {
            stop.store(true, Ordering::SeqCst);
            let _ = handle.join();
        }
        drop(self.requests_tx);
        let _ = self.writer_thread.join();
        drop(self.internal_hold);
        for t in self.verifier_threads {
            let _ = t.join();
        }
        if let Some(t) = self.fsync_thread {
            let _ = t.join();
        }
        let _ = self.sse_thread.join();
        if let Some(server) = self.bus_socket {
            server.stop();
        }
        // The writer is gone, so the checkpoint thread's wake channel is closed: it writes a
        // final checkpoint if commits happened since the last one, then exits.
        if let Some(t) = self.checkpoint_thread {
            let _ = t.join();
        }
        // Its feed closed with the writer; a start-up check still running stops at its next step.
        if let Some((t, stop)) = self.tlog_thread {
            stop.store(true, Ordering::SeqCst);
            let _ = t.join();
        }
        drop(self.storage);
    }
}

/// The log key, the tree store and the `tlog` thread (src/roles/tlog.rs).
type TlogStarted = (
    Arc<crate::tlog::Tlog>,
    Sender<Vec<Arc<crate::domain::record::CommitRecord>>>,
    (JoinHandle<()>, Arc<AtomicBool>),
);

fn start_tlog(
    config: &Config,
    snapshot: &Arc<ArcSwap<Snapshot>>,
    data_dir: Option<&std::path::Path>,
    plane: &Arc<crate::ops::WritePlane>,
) -> Result<TlogStarted, String> {
    let origin = config.raw.log.origin_for(&config.raw.registry_id);
    let (key, generated) =
        crate::tlog::load_key(&origin, config.raw.log.key_file.as_deref(), data_dir)?;
    if generated {
        // The verifier key is public: clients pin it (docs/OPERATIONS.md).
        log::info!(
            "msg=\"log key generated\" in_memory={} vkey={}",
            data_dir.is_none(),
            key.vkey()
        );
    }
    let store = match data_dir {
        Some(dir) => crate::tlog::store::HashStore::open(dir)
            .map_err(|e| format!("{}: {e}", dir.join(crate::tlog::store::TREE_FILE).display()))?,
        None => crate::tlog::store::HashStore::memory(),
    };
    let tlog = Arc::new(crate::tlog::Tlog::new(origin, key, store)?);
    let (tx, rx) = crossbeam_channel::bounded(crate::roles::tlog::FEED_QUEUE);
    let stop = Arc::new(AtomicBool::new(false));
    let parts = crate::roles::tlog::TlogParts {
        tlog: tlog.clone(),
        snapshot: snapshot.clone(),
        feed: rx,
        stop: stop.clone(),
        plane: plane.clone(),
    };
    let handle = std::thread::Builder::new()
        .name("tlog".into())
        .spawn(move || crate::roles::tlog::run(parts))
        .map_err(|e| format!("spawning the tlog thread: {e}"))?;
    Ok((tlog, tx, (handle, stop)))
}

/// Bind the registry listener (TCP, or the Unix socket with `--uds-only`).
fn start_registry(config: &Config, shared: &Shared, roles: &Roles) -> Option<ServerHandle> {
    let registry_api = Arc::new(RegistryApi {
        snapshot: roles.snapshot.clone(),
        writer: roles.requests_tx.clone(),
        plane: shared.plane.clone(),
        stream: Some(roles.sse_hub.clone()),
        cors: crate::api::cors::Cors::new(&config.raw.http.cors_allow_origins),
        gate: shared.gate.clone(),
        pending_ops: roles.pending_ops.clone(),
        tlog: roles.tlog.clone(),
    });
    let (listener, addr) = if config.flags.uds_only {
        let path = config
            .raw
            .uds_path
            .clone()
            .expect("validated: uds_only needs uds_path");
        (Listener::bind_unix(&path), path.display().to_string())
    } else {
        (
            Listener::bind_tcp(&config.raw.registry_addr),
            config.raw.registry_addr.clone(),
        )
    };
    let tls = shared.tls.clone();
    match listener.and_then(|l| {
        Server::start_with_tls("registry", l, config.http_limits(), registry_api, tls)
    }) {
        Ok(s) => Some(s),
        Err(e) => {
            let msg = bind_error(&addr, &e);
            log::error!("msg=\"cannot bind registry listener\" error={msg:?}");
            eprintln!("error: registry listener: {msg}");
            None
        }
    }
}

/// A bind failure in operator words ("address 127.0.0.1:9444 is in use"), not Rust debug text.
fn bind_error(addr: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!("address {addr} is in use"),
        std::io::ErrorKind::PermissionDenied => format!("permission denied binding {addr}"),
        std::io::ErrorKind::AddrNotAvailable => {
            format!("address {addr} is not available on this host")
        }
        _ => format!("cannot bind {addr}: {e}"),
    }
}

/// The signal loop: SIGHUP reloads; SIGTERM/SIGINT drain on another thread so that a second
/// signal can still end the process at once. The drain thread closes the signal iterator when
/// done; returns it for joining.
fn signal_loop(
    mut signals: signal_hook::iterator::Signals,
    mut config: Config,
    shared: &Shared,
    roles: &Roles,
    servers: (ServerHandle, ServerHandle),
) -> Option<JoinHandle<()>> {
    let drain_timeout = Duration::from_secs(config.raw.http.drain_timeout_secs);
    let mut servers = Some(servers);
    let mut drain_thread = None;
    let signals_handle = signals.handle();
    let live = Live {
        snapshot: roles.snapshot.clone(),
        writer_settings: shared.writer_settings.clone(),
        sse_hub: roles.sse_hub.clone(),
        chaos: shared.chaos.clone(),
        maintenance: shared.maintenance.clone(),
        commit_budget: shared.commit_budget.clone(),
        effective_config: shared.effective_config.clone(),
        bus: shared.bus.clone(),
        tls: shared.tls.clone(),
        gate: shared.gate.clone(),
        backup_root: shared.backup_root.clone(),
    };
    for signal in signals.forever() {
        match signal {
            SIGHUP => reload(&mut config, &live),
            _ => {
                let Some((registry_server, metrics_server)) = servers.take() else {
                    log::warn!("msg=\"second signal: exiting now\" signal={signal}");
                    std::process::exit(130);
                };
                log::info!(
                    "msg=draining signal={signal} deadline_secs={}",
                    drain_timeout.as_secs()
                );
                Readiness::set(&shared.plane.readiness.draining, true);
                if let Some((_, stop)) = &roles.follower {
                    stop.store(true, Ordering::SeqCst);
                }
                let drain = Drain {
                    deadline: Instant::now() + drain_timeout,
                    requests_tx: roles.requests_tx.clone(),
                    signals_handle: signals_handle.clone(),
                    sse_hub: roles.sse_hub.clone(),
                    bus: shared.bus.clone(),
                    registry_server,
                    metrics_server,
                };
                drain_thread = Some(
                    std::thread::Builder::new()
                        .name("drain".into())
                        .spawn(move || drain.run())
                        .expect("spawning the drain thread"),
                );
            }
        }
    }
    drain_thread
}

/// What the drain thread stops, in order.
struct Drain {
    deadline: Instant,
    requests_tx: Sender<WriteRequest>,
    signals_handle: signal_hook::iterator::Handle,
    sse_hub: Arc<SseHub>,
    bus: Arc<crate::bus::Bus>,
    registry_server: ServerHandle,
    metrics_server: ServerHandle,
}

impl Drain {
    fn run(self) {
        // Streams end first: they never finish by themselves.
        self.sse_hub.shutdown();
        self.bus.publish(crate::bus::Event::Shutdown);
        // In-flight requests finish first (commits included: the writer still runs), then the
        // writer makes everything staged durable.
        let clean = self.registry_server.shutdown(self.deadline);
        if !clean {
            log::warn!("msg=\"drain deadline passed with requests in flight\"");
        }
        let _ = self.requests_tx.send(WriteRequest::Shutdown);
        self.metrics_server.shutdown(self.deadline);
        self.signals_handle.close();
    }
}

/// The running config as `GET /admin/config` shows it: the flags (as a comment), then the
/// effective TOML with secrets redacted ([`Config::to_toml`]).
fn effective_toml(config: &Config) -> String {
    let f = &config.flags;
    let flags: Vec<&str> = [
        (f.amnesia, "--amnesia"),
        (f.uds_only, "--uds-only"),
        (f.read_only, "--read-only"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let follow: Vec<String> = f.follow.iter().map(|u| format!("--follow {u}")).collect();
    let flags: Vec<&str> = flags
        .into_iter()
        .chain(follow.iter().map(String::as_str))
        .collect();
    let mut text = format!(
        "# svc-registry effective config: {} + environment{}\n",
        config.path.display(),
        if flags.is_empty() {
            String::new()
        } else {
            format!(" + flags {}", flags.join(" "))
        }
    );
    text.push_str(&config.to_toml());
    text
}

/// What a SIGHUP can change in the running process.
struct Live {
    /// The published snapshot: its signer set is the one a reloaded config is compared with.
    snapshot: Arc<ArcSwap<Snapshot>>,
    writer_settings: Arc<ArcSwap<WriterSettings>>,
    sse_hub: Arc<SseHub>,
    chaos: Arc<Chaos>,
    maintenance: Arc<Maintenance>,
    commit_budget: Arc<CommitBudget>,
    effective_config: Arc<ArcSwap<String>>,
    bus: Arc<crate::bus::Bus>,
    tls: Option<Arc<ServerTls>>,
    gate: Arc<crate::auth::Gate>,
    backup_root: Arc<ArcSwap<Option<PathBuf>>>,
}

/// SIGHUP: re-read the config file; apply the keys that can change live
/// ([`crate::config::LIVE_KEYS`]), report the ones that need a restart and keep their running
/// values; refuse an invalid file (or one of another registry) and keep the old config whole.
fn reload(config: &mut Config, live: &Live) {
    let path = config.path.display().to_string();
    let planned =
        Config::load(&config.path, config.flags.clone()).and_then(|new| config.plan_reload(new));
    let plan = match planned {
        Ok(plan) => plan,
        Err(e) => {
            m().registry_reload_fail_total.inc();
            log::error!(
                "msg=\"reload refused; keeping the old config\" audit=1 config={path:?} error={:?}",
                e.to_string()
            );
            live.bus.publish(crate::bus::Event::Reload { ok: false });
            return;
        }
    };
    let new = plan.effective;
    // Certificates first: a file that does not load refuses the whole reload, so nothing is
    // half-applied. Read on every SIGHUP, changed paths or not (certificates renew in place).
    let tls = match (&live.tls, tls_config(&new)) {
        (Some(_), Ok(Some(config))) => Some(config),
        (_, Ok(_)) => None,
        (_, Err(e)) => {
            log::error!(
                "msg=\"reload refused; keeping the old config and certificate\" audit=1 config={path:?} error={e:?}"
            );
            m().registry_reload_fail_total.inc();
            live.bus.publish(crate::bus::Event::Reload { ok: false });
            return;
        }
    };
    if let (Some(server_tls), Some(config)) = (&live.tls, tls) {
        server_tls.store(config);
    }
    let mut applied = plan.applied;
    let mut not_applied = Vec::new();
    // The config owns the level only when RUST_LOG is unset (logging::init): otherwise the
    // changed log_level is NOT in effect, and the reload line must say so rather than claim it.
    if !crate::logging::set_level(new.raw.log_level.as_deref())
        && applied.iter().any(|k| k == "log_level")
    {
        applied.retain(|k| k != "log_level");
        not_applied.push("log_level");
        log::warn!(
            "msg=\"log_level not applied: RUST_LOG is set in the environment and wins over the config; unset it (e.g. remove Environment=RUST_LOG from the unit) and restart to let the config own the level\" log_level={:?}",
            new.raw.log_level.as_deref().unwrap_or("info")
        );
    }
    // The signer set is on the log now (docs/FORMATS.md): a config that differs is reported, not used.
    if applied.iter().any(|k| k.starts_with("signers")) {
        applied.retain(|k| !k.starts_with("signers"));
        not_applied.push("signers");
    }
    if new.follow.is_none() {
        if let Some(set) = &new.signers {
            warn_if_config_signers_differ(set, &live.snapshot.load());
        }
    }
    live.writer_settings.store(Arc::new(settings(&new)));
    live.sse_hub.set_settings(sse_settings(&new));
    live.chaos
        .configure(new.raw.chaos.enabled, new.raw.chaos.max_latency_ms);
    live.commit_budget
        .budget_ms
        .store(new.raw.storage.commit_budget_ms, Ordering::SeqCst);
    if new.raw.maintenance != config.raw.maintenance {
        let file = &new.raw.maintenance;
        let reason = file.reason.clone().or_else(|| {
            file.read_only
                .then(|| "[maintenance] read_only = true in the config".to_string())
        });
        live.maintenance.set(file.read_only, reason, "sighup", "-");
    }
    live.backup_root
        .store(Arc::new(new.raw.ops.backup_root.clone()));
    // The keys file is re-read on every SIGHUP (rotation edits it in place). A file that does
    // not load keeps the running keys — refusing tokens of a half-written rotation would lock
    // every client out — and says so loudly; the rest of the reload applies.
    let mut auth_keys = "off".to_string();
    if let Some(auth) = &new.raw.auth {
        match live.gate.reload(auth) {
            Ok(n) => auth_keys = n.to_string(),
            Err(e) => {
                auth_keys = "kept".to_string();
                m().registry_reload_fail_total.inc();
                log::error!(
                    "msg=\"auth keys file not reloaded; keeping the previous keys\" audit=1 keys_file={:?} error={:?}",
                    auth.keys_file.display().to_string(),
                    e.to_string()
                );
            }
        }
    }
    live.effective_config.store(Arc::new(effective_toml(&new)));
    let line = format!(
        "msg=reloaded audit=1 config={path:?} applied={:?} not_applied={:?} restart_needed_for={:?} chaos_enabled={} commit_budget_ms={} tls_reloaded={} auth_keys={auth_keys}",
        applied.join(","),
        not_applied.join(","),
        plan.restart_needed.join(","),
        new.raw.chaos.enabled,
        new.raw.storage.commit_budget_ms,
        live.tls.is_some()
    );
    if plan.restart_needed.is_empty() && not_applied.is_empty() {
        log::info!("{line}");
    } else {
        // Loud: the file says something the process is not doing until it restarts.
        log::warn!(
            "{line} note=\"changes to restart_needed_for keys take effect at the next restart\""
        );
    }
    // Counted after the line is logged: whoever sees the counter move can find the line.
    m().registry_reload_success_total.inc();
    live.bus.publish(crate::bus::Event::Reload { ok: true });
    *config = new;
}

/// docs/FORMATS.md: `[signers]` is the bootstrap trust root only. After the data directory exists, the
/// log's current set governs; a config set that differs is logged (once per start or reload)
/// and not used.
fn warn_if_config_signers_differ(config_set: &SignerSet, snapshot: &Snapshot) {
    let (since, current) = snapshot.signers.current();
    if **current != *config_set {
        log::warn!(
            "msg=\"config signer set differs from the log; the log is authoritative\" log_signers_digest={} log_signers_since_version={since} config_signers_digest={} note=\"change the signer set with a set_signers proposal (docs/OPERATIONS.md)\"",
            current.digest(),
            config_set.digest()
        );
    }
}
