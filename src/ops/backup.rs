//! Hot backups: a consistent copy of `log/` and `checkpoints/` while the server runs, finished
//! by a manifest whose presence marks a complete backup.
//!
//! At most one backup runs at a time, on its own short-lived `backup` thread.

use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

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

/// Where an absolute target without `..` really lands: its nearest existing ancestor with
/// symbolic links resolved, then the rest of the path.
fn resolve_target(to: &Path) -> PathBuf {
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
    resolved
}

/// `[ops] backup_root`: whether the absolute target `to` lands strictly inside `root` once
/// symbolic links are resolved (a link inside the root pointing out of it does not count as
/// inside). Err: the refusal's message. Relative targets and `..` are left to
/// [`Backups::begin`], which refuses them.
pub fn check_backup_root(to: &Path, root: &Path) -> Result<(), String> {
    if !to.is_absolute()
        || to
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Ok(());
    }
    let root_resolved = std::fs::canonicalize(root).map_err(|e| {
        format!(
            "[ops] backup_root {:?} cannot be used: {e}",
            root.display().to_string()
        )
    })?;
    let resolved = resolve_target(to);
    if resolved != root_resolved && resolved.starts_with(&root_resolved) {
        Ok(())
    } else {
        Err(format!(
            "{:?} is outside [ops] backup_root {:?}: backups are written only into directories under it",
            to.display().to_string(),
            root.display().to_string()
        ))
    }
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
                "backup is unavailable: this server runs with --amnesia and keeps nothing on disk (there is nothing to back up; its state is lost at exit, and there is no replication to re-sync it from)",
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
        let resolved = resolve_target(to);
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
        // The generated transparency-log key: a restore without it would sign with a new key
        // that clients who pinned the vkey refuse. (The tree file is rebuilt from the log.)
        let key = source.data_dir.join(crate::tlog::KEY_FILE);
        if key.exists() {
            copy_key(&key, &to.join(crate::tlog::KEY_FILE)).map_err(|e| {
                BackupError::Failed(format!("{}: cannot copy the log key: {e}", key.display()))
            })?;
        }
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

/// Copy a key file into a backup: mode 0600, fsynced (the manifest's directory fsync follows).
fn copy_key(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = std::fs::read(from)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    f.write_all(&bytes)?;
    f.sync_all()
}

fn write_manifest(dir: &Path, done: &BackupDone) -> Result<(), crate::log::LogError> {
    let mut bytes = serde_json::to_vec_pretty(done).expect("serializes");
    bytes.push(b'\n');
    // Through the storage seam's one atomic-write sequence (temp, fsync, rename, dir fsync).
    crate::log::write_atomic(&crate::log::OsIo, &dir.join(BACKUP_MANIFEST), &bytes)
}
