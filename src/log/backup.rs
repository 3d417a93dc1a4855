//! Hot backup: a consistent copy of a live data directory that restores by pointing `data_dir`
//! at it.
//!
//! Order matters. Checkpoints are copied FIRST and the durable Lsn is read AFTER: a checkpoint
//! only ever holds published state, which was durable in the log before it was published, so
//! every copied checkpoint is covered by the log bytes copied next. (Reading the Lsn first would
//! let a checkpoint written during the copy get ahead of the copied log.)
//!
//! Log bytes below the durable Lsn never change again (the writer only writes past
//! `appended`, the syncer only asks the kernel to write back), so they are read with plain
//! positioned reads while the writer keeps appending. In the copy each segment keeps its full
//! preallocated length, zero past the copied bytes: recovery sees a clean end there.

use std::io::ErrorKind;
use std::path::Path;

use super::checkpoint::{self, checkpoints_dir};
use super::error::LogError;
use super::io::{read_full, Io};
use super::segment::{segment_path, Syncer};
use super::{log_dir, Lsn};

const COPY_CHUNK_BYTES: usize = 1 << 20;

impl Syncer {
    /// Copy the data directory into `target` (which must not exist or be empty): every checkpoint
    /// that verifies, and the log up to what is durable now. Returns the Lsn copied to; every
    /// record whose sync returned before this call began is in the copy.
    pub fn backup(&self, target: &Path) -> Result<Lsn, LogError> {
        let shared = &self.shared;
        let io = &*shared.io;
        let target_log = log_dir(target);
        let target_checkpoints = checkpoints_dir(target);
        for dir in [target, &target_log, &target_checkpoints] {
            match io.list_dir(dir) {
                Ok(names) if !names.is_empty() => {
                    return Err(LogError::io(
                        "backup",
                        dir,
                        std::io::Error::new(
                            ErrorKind::AlreadyExists,
                            "backup target is not empty; choose a new directory",
                        ),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("list dir", dir, e)),
            }
        }
        for dir in [&target_log, &target_checkpoints] {
            io.create_dir_all(dir)
                .map_err(|e| LogError::io_or_no_space("create dir", dir, e))?;
        }
        sync_dir(io, target)?;
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(io, parent)?;
        }

        // No retention drop while the copy runs: the checkpoints copied first must find their
        // records in the log copied next.
        let _no_drop_meanwhile = shared.retention_lock.lock();

        // 1. Checkpoints.
        let source_checkpoints = checkpoints_dir(&shared.data_dir);
        for (seq, path) in checkpoint::list(io, &source_checkpoints)? {
            let bytes = match checkpoint::read_whole(io, &path) {
                Ok(bytes) => bytes,
                // Pruned by the checkpoint thread while we listed: a newer one exists.
                Err(LogError::Io { err, .. }) if err.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if let Err(reason) = checkpoint::decode(seq, &bytes) {
                log::warn!(
                    "msg=\"backup skips an unusable checkpoint\" path={} reason=\"{reason}\"",
                    path.display()
                );
                continue;
            }
            let copy = target_checkpoints.join(checkpoint::checkpoint_name(seq));
            let file = io
                .create(&copy)
                .map_err(|e| LogError::io_or_no_space("create", &copy, e))?;
            file.write_at(0, &bytes)
                .map_err(|e| LogError::io_or_no_space("write", &copy, e))?;
            file.sync()
                .map_err(|e| LogError::io_or_no_space("fsync", &copy, e))?;
        }
        sync_dir(io, &target_checkpoints)?;

        // 2. The log, up to what is durable now (read after the checkpoints: see module doc).
        let upto = self.durable();
        let sb = shared.segment_bytes;
        let mut chunk = vec![0u8; COPY_CHUNK_BYTES.min(sb as usize)];
        // A log a retention window cut starts after segment 0; its genesis is in genesis.json.
        let first = io
            .list_dir(&shared.log_dir)
            .map_err(|e| LogError::io("list dir", &shared.log_dir, e))?
            .iter()
            .filter_map(|name| super::segment::parse_segment_name(name))
            .min()
            .unwrap_or(0);
        if first > 0 {
            let name = "genesis.json";
            let bytes = checkpoint::read_whole(io, &shared.data_dir.join(name))?;
            super::io::write_atomic(io, &target.join(name), &bytes)?;
        }
        for index in first..upto.div_ceil(sb) {
            let source = segment_path(&shared.log_dir, index);
            let copy = segment_path(&target_log, index);
            let bytes = (upto - index * sb).min(sb);
            let from = io
                .open(&source)
                .map_err(|e| LogError::io("open", &source, e))?;
            io.create_preallocated(&copy, sb)
                .map_err(|e| LogError::io_or_no_space("fallocate", &copy, e))?;
            let to = io.open(&copy).map_err(|e| LogError::io("open", &copy, e))?;
            let mut at = 0u64;
            while at < bytes {
                let len = (bytes - at).min(chunk.len() as u64) as usize;
                let got = read_full(&*from, at, &mut chunk[..len])
                    .map_err(|e| LogError::io("read", &source, e))?;
                if got < len {
                    return Err(LogError::corrupt(
                        &source,
                        at + got as u64,
                        "segment is shorter than the durable log position",
                    ));
                }
                to.write_at(at, &chunk[..len])
                    .map_err(|e| LogError::io("write", &copy, e))?;
                at += len as u64;
            }
            to.sync().map_err(|e| LogError::io("fsync", &copy, e))?;
        }
        // IMPORTANT: the new segment files are durable only once their directory is.
        sync_dir(io, &target_log)?;
        log::info!(
            "msg=\"backup complete\" target={} lsn={upto}",
            target.display()
        );
        Ok(upto)
    }
}

fn sync_dir(io: &dyn Io, dir: &Path) -> Result<(), LogError> {
    io.sync_dir(dir)
        .map_err(|e| LogError::io("fsync dir", dir, e))
}
