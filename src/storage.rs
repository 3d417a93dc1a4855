//! Glue between the writer's roles and the on-disk log: the journal and sync target the writer
//! and fsync thread use, history's read path over the log, and start-up restore from
//! `data_dir`.
//!
//! Start-up keeps no record bytes: recovery's scan yields each record's location, and restore
//! reads back only what it needs (the genesis record, the checkpoint's record, what follows it,
//! recent proposal ids, and the pending frames after the checkpoint's `log_end`: the checkpoint
//! carries those before it, compacted). The checkpoint itself is streamed (parsed as it is
//! read, kept only if its CRC matches). Recovery also hands over each frame's first
//! payload bytes, so pending frames (`domain::pending`) are told from commit records even below
//! a checkpoint's `log_end`, where payloads are not read: the history indexes commit records
//! only, its genesis is the log's first frame.

use crate::domain::pending::{self, PendingFrame, PendingFrames};
use crate::domain::record::CommitRecord;
use crate::domain::signers::SignerSet;
use crate::history::{History, HistorySource, Loc, ReadFailure};
use crate::log::{self as rlog, LogError, LogReader, LogWriter, OsIo, StorageOptions, Syncer};
use crate::restore::{self, Located, Restored};
use crate::roles::fsync::SyncTarget;
use crate::roles::writer::{Journal, JournalError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl Located for rlog::Record {
    fn location(&self) -> String {
        format!("{}:{}", self.path.display(), self.offset)
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

impl HistorySource for LogReader {
    fn read(&self, loc: Loc) -> Result<Vec<u8>, String> {
        LogReader::read(self, loc.end, loc.len).map_err(|e| e.to_string())
    }

    /// A system call that failed may pass; bytes that do not check will not.
    fn read_checked(&self, loc: Loc) -> Result<Vec<u8>, ReadFailure> {
        LogReader::read(self, loc.end, loc.len).map_err(|e| match e {
            LogError::Io { .. } => ReadFailure::Io(e.to_string()),
            other => ReadFailure::Corrupt(other.to_string()),
        })
    }
}

/// `data_dir/genesis.json`: the genesis record's served JSON, written (atomically, fsynced)
/// before a retention drop first deletes segment 0, which holds the log's own copy. A data
/// directory whose log starts after segment 0 takes its genesis from here.
pub fn genesis_path(data_dir: &Path) -> PathBuf {
    data_dir.join("genesis.json")
}

/// A whole small file, through the storage seam.
fn read_file(io: &dyn rlog::Io, path: &Path) -> std::io::Result<Vec<u8>> {
    let file = io.open(path)?;
    let mut bytes = vec![0u8; file.size()? as usize];
    let mut at = 0;
    while at < bytes.len() {
        let n = file.read_at(at as u64, &mut bytes[at..])?;
        if n == 0 {
            bytes.truncate(at);
            break;
        }
        at += n;
    }
    Ok(bytes)
}

/// History's source on disk: the log read through [`LogReader`], whose oldest sealed segments
/// a retention drop deletes (after saving the genesis record beside the log).
pub struct DiskSource {
    reader: Arc<LogReader>,
    data_dir: PathBuf,
    genesis_json: Vec<u8>,
}

impl DiskSource {
    pub fn new(reader: Arc<LogReader>, data_dir: &Path, genesis: &CommitRecord) -> DiskSource {
        DiskSource {
            reader,
            data_dir: data_dir.to_path_buf(),
            genesis_json: genesis.to_json(),
        }
    }
}

impl HistorySource for DiskSource {
    fn read(&self, loc: Loc) -> Result<Vec<u8>, String> {
        HistorySource::read(&*self.reader, loc)
    }

    fn read_checked(&self, loc: Loc) -> Result<Vec<u8>, ReadFailure> {
        HistorySource::read_checked(&*self.reader, loc)
    }

    fn cut_at_or_below(&self, start: u64) -> u64 {
        let sb = self.reader.segment_bytes();
        start / sb * sb
    }

    fn release_below(&self, cut: u64) -> Result<u64, String> {
        let index = cut / self.reader.segment_bytes();
        if index <= self.reader.first_segment() {
            return Ok(0);
        }
        let path = genesis_path(&self.data_dir);
        let io = self.reader.io();
        if self.reader.first_segment() == 0 {
            // Segment 0 holds the log's only copy of genesis: save it first (a crash after
            // this leaves a harmless extra copy of what the log still holds). Written even when
            // the file is there: an earlier drop may have renamed it into place and then failed
            // to fsync the directory, and a power cut after these removes would then lose the
            // name and leave a log without genesis (found by the simulation, seed 129 of
            // `simulation_with_a_retention_window`). This happens once per node, at its first drop.
            rlog::write_atomic(&**io, &path, &self.genesis_json).map_err(|e| e.to_string())?;
        }
        self.reader
            .drop_segments_below(index)
            .map_err(|e| e.to_string())
    }

    fn bytes_held(&self, head_end: u64) -> u64 {
        let sb = self.reader.segment_bytes();
        let last = head_end.saturating_sub(1) / sb;
        (last + 1).saturating_sub(self.reader.first_segment()) * sb
    }
}

/// The frames recovery's scan found, by location (no bytes kept): the first frame (the genesis
/// record), then commit records and pending frames, told apart by their first payload bytes.
#[derive(Clone, Default)]
pub struct FrameIndex {
    pub first: Option<Loc>,
    /// Whether the first frame is a pending frame (only possible in a log a retention window
    /// cut: then the first frame is not genesis, see [`FrameIndex::without_genesis`]).
    pub first_pending: bool,
    pub commits: Vec<Loc>,
    pub pending: Vec<Loc>,
}

impl FrameIndex {
    /// Index the frame ending at `end` with a `len`-byte payload starting with `head`.
    pub fn add(&mut self, end: u64, len: u32, head: &[u8]) {
        let loc = Loc { end, len };
        if self.first.is_none() {
            self.first = Some(loc);
            self.first_pending = pending::is_pending_frame(head);
        } else if pending::is_pending_frame(head) {
            self.pending.push(loc);
        } else {
            self.commits.push(loc);
        }
    }

    /// For a log whose oldest segments were dropped: its first frame is an ordinary one, not
    /// genesis.
    pub fn without_genesis(mut self) -> FrameIndex {
        if let Some(first) = self.first.take() {
            if self.first_pending {
                self.pending.insert(0, first);
            } else {
                self.commits.insert(0, first);
            }
        }
        self
    }
}

/// A frame read back, for restore's error messages.
struct ReadBack {
    location: String,
    payload: Vec<u8>,
}

impl Located for ReadBack {
    fn location(&self) -> String {
        self.location.clone()
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

fn read_back(
    reader: &LogReader,
    log_dir: &Path,
    loc: Loc,
) -> Result<ReadBack, restore::RestoreError> {
    let location = describe(reader, log_dir, loc);
    match reader.read(loc.end, loc.len) {
        Ok(payload) => Ok(ReadBack { location, payload }),
        Err(e) => Err(restore::RestoreError(format!("{location}: {e}"))),
    }
}

/// The history of an opened log (genesis from its first frame, then every commit record
/// recovery found, read through `reader`) and its pending frames, read back in full.
///
/// A log whose oldest segments a retention window dropped (`first_segment > 0`) takes genesis
/// from `data_dir/genesis.json` and starts its history at the version of its first commit
/// record.
pub fn history_of(
    registry_id: &str,
    reader: Arc<LogReader>,
    data_dir: &Path,
    first_segment: u64,
    index: FrameIndex,
) -> Result<(History, PendingFrames), restore::RestoreError> {
    let (history, pending) =
        history_index(registry_id, reader.clone(), data_dir, first_segment, index)?;
    let frames = pending_frames(&reader, &rlog::log_dir(data_dir), &history, &pending, None)?;
    Ok((history, frames))
}

/// The history of an opened log (see [`history_of`]) and the locations of its pending frames,
/// not read yet (a checkpoint may carry most of them).
fn history_index(
    registry_id: &str,
    reader: Arc<LogReader>,
    data_dir: &Path,
    first_segment: u64,
    index: FrameIndex,
) -> Result<(History, Vec<Loc>), restore::RestoreError> {
    let log_dir = &rlog::log_dir(data_dir);
    let read = |loc: Loc| read_back(&reader, log_dir, loc);
    let (genesis, index) = if first_segment == 0 {
        let Some(first) = index.first else {
            return Err(restore::RestoreError(
                "the log holds no genesis record".to_string(),
            ));
        };
        (
            restore::genesis_from_frame(registry_id, &read(first)?)?,
            index,
        )
    } else {
        let path = genesis_path(data_dir);
        let payload = read_file(&**reader.io(), &path).map_err(|e| {
            restore::RestoreError(format!(
                "{}: the log starts at segment {first_segment} (older segments were dropped by \
                 the retention window) but its saved genesis record cannot be read: {e}",
                path.display()
            ))
        })?;
        let genesis = restore::genesis_from_frame(
            registry_id,
            &ReadBack {
                location: path.display().to_string(),
                payload,
            },
        )?;
        (genesis, index.without_genesis())
    };
    let genesis = Arc::new(genesis);
    let source: Arc<dyn HistorySource> =
        Arc::new(DiskSource::new(reader.clone(), data_dir, &genesis));
    let mut history = match (first_segment, index.commits.first()) {
        (0, _) | (_, None) => {
            if first_segment > 0 {
                return Err(restore::RestoreError(format!(
                    "the log starts at segment {first_segment} (older segments were dropped by \
                     the retention window) but holds no commit record"
                )));
            }
            History::new(genesis, source)
        }
        (_, Some(&loc)) => {
            let first = read(loc)?;
            let rec = CommitRecord::from_json(&first.payload).map_err(|e| {
                restore::RestoreError(format!(
                    "{}: not a commit record: {}",
                    first.location, e.message
                ))
            })?;
            if rec.version == 0 {
                return Err(restore::RestoreError(format!(
                    "{}: a second genesis record",
                    first.location
                )));
            }
            History::starting_at(genesis, source, rec.version)
        }
    };
    for loc in index.commits {
        history.push(loc);
    }
    Ok((history, index.pending))
}

/// The pending frames at the log's end: `carried` (a checkpoint's compacted frames and the
/// `log_end` they were gathered up to) replayed, then the frames of `locs` past that `log_end`
/// read back; with no `carried`, every frame of `locs`.
fn pending_frames(
    reader: &LogReader,
    log_dir: &Path,
    history: &History,
    locs: &[Loc],
    carried: Option<(u64, Vec<PendingFrame>)>,
) -> Result<PendingFrames, restore::RestoreError> {
    let (from, mut frames) = match carried {
        Some((end, carried)) => {
            let n = carried.len();
            let frames = restore::replay_carried(end, carried)?;
            log::info!(
                "msg=\"pending frames carried by the checkpoint\" frames={n} proposals={} log_end={end}",
                frames.len()
            );
            (end, frames)
        }
        None => (0, PendingFrames::default()),
    };
    let locs = &locs[locs.partition_point(|l| l.end <= from)..];
    // Every commit leaves its proposal's frames in the log, so a long history holds as many
    // pending frames as versions (a 1,000-op proposal is ~150 KB of base64). A proposal that
    // its base_version + 1 record commits is dropped as soon as its frame is read, not held
    // until restore filters it: gathering them all first held the whole history's proposals at
    // once (216 MB at 1M descriptors) and left the heap that large after they were freed.
    // Restore still makes the decision (`restore_history`); this only forgets early what it
    // would discard.
    for loc in locs {
        let frame = read_back(reader, log_dir, *loc)?;
        let f = PendingFrame::from_bytes(&frame.payload)
            .map_err(|e| restore::RestoreError(format!("{}: {e}", frame.location)))?;
        let proposal_id = match &f {
            PendingFrame::Proposal { proposal_id, .. } => Some(proposal_id.clone()),
            PendingFrame::Approvals { .. } => None,
        };
        frames
            .add(f)
            .map_err(|e| restore::RestoreError(format!("{}: {e}", frame.location)))?;
        if let Some(id) = proposal_id {
            frames.forget_if(&id, |p| restore::committed_at_its_base(history, p));
        }
    }
    log::info!(
        "msg=\"pending frames read from the log\" frames={} after_lsn={from}",
        locs.len()
    );
    Ok(frames)
}

/// `segment path:offset` of the record at `loc`, for error messages.
fn describe(reader: &LogReader, log_dir: &Path, loc: Loc) -> String {
    let sb = reader.segment_bytes();
    let start = loc.end - u64::from(loc.len) - rlog::FRAME_HEADER_BYTES;
    format!(
        "{}:{}",
        rlog::segment_path(log_dir, start / sb).display(),
        start % sb
    )
}

/// Restore over an opened log's history, falling back to a replay of the whole log when the
/// checkpoint disagrees with it (the log is the source of truth), and saying so.
pub fn restore_opened(
    registry_id: &str,
    checkpoint: Option<(restore::LoadedCheckpoint, PathBuf)>,
    history: History,
    pending: &[Loc],
    reader: &LogReader,
    log_dir: &Path,
) -> Result<Restored, restore::RestoreError> {
    let location = |v: u64| match history.loc(v) {
        Some(loc) => describe(reader, log_dir, loc),
        None => format!("version {v}"),
    };
    let mut frames = |carried| pending_frames(reader, log_dir, &history, pending, carried);
    let Some((cp, cp_path)) = checkpoint else {
        return restore::restore_history(
            registry_id,
            None,
            history.clone(),
            &mut frames,
            &location,
        );
    };
    match restore::restore_history(
        registry_id,
        Some(cp),
        history.clone(),
        &mut frames,
        &location,
    ) {
        Ok(r) => Ok(r),
        Err(e) => {
            log::warn!(
                "msg=\"checkpoint unusable; replaying the whole log\" checkpoint={:?} error={:?}",
                cp_path.display().to_string(),
                e.0
            );
            restore::restore_history(registry_id, None, history.clone(), &mut frames, &location)
        }
    }
}

/// The writer's journal on disk.
pub struct DiskJournal {
    pub writer: LogWriter,
    /// false with `fsync = "never"`: commits are acknowledged without a sync (benchmarks only).
    pub sync: bool,
}

impl Journal for DiskJournal {
    fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        self.writer.append(payload).map_err(|e| match e {
            LogError::NoSpace { .. } => JournalError::NoSpace(e.to_string()),
            LogError::TooLarge { .. } => JournalError::TooLarge(e.to_string()),
            other => JournalError::Failed(other.to_string()),
        })
    }
    fn needs_sync(&self) -> bool {
        self.sync
    }
}

impl SyncTarget for Syncer {
    fn sync_to(&self, position: u64) -> Result<u64, String> {
        Syncer::sync_to(self, position).map_err(|e| e.to_string())
    }
}

/// Why start-up could not restore state.
pub enum OpenError {
    /// Another process holds the data directory: exit at once.
    Locked(String),
    /// The data directory or its log cannot be created, opened or read (permissions, a path
    /// under a file, a full disk): exit at once with this reason, so a supervisor restarts the
    /// process (and the operator sees why) instead of it staying up and never ready.
    Io(String),
    /// Corruption found by recovery: stay up, not ready, with this reason (an operator must
    /// look; restarting cannot help).
    Refused(String),
}

pub struct OpenedStorage {
    pub restored: Restored,
    /// Reads the log back (what the history reads through).
    pub reader: Arc<LogReader>,
    /// Where the writer continues: every frame of the log ends at or below it.
    pub log_end: u64,
    pub writer: LogWriter,
    pub syncer: Syncer,
    pub lock: rlog::DirLock,
    pub data_dir: PathBuf,
}

/// Open `data_dir`, recover the log and rebuild the snapshot. A new (empty) log gets its
/// genesis record first (docs/FORMATS.md, genesis v2): `bootstrap` (the config's `[signers]`) is fixed
/// into it and made durable before anything else; for an existing log `bootstrap` is not used.
pub fn open(
    data_dir: &Path,
    registry_id: &str,
    opts: &StorageOptions,
    bootstrap: &Arc<SignerSet>,
) -> Result<OpenedStorage, OpenError> {
    open_with(data_dir, registry_id, opts, &mut || Ok(bootstrap.clone()))
}

/// Like [`open`], with the genesis signer set of a new log asked for only when the log turns
/// out to be new (a follower fetches and verifies it from an upstream then, holding the data
/// directory's lock). An `Err` from `bootstrap` refuses the open with its message.
pub fn open_with(
    data_dir: &Path,
    registry_id: &str,
    opts: &StorageOptions,
    bootstrap: &mut dyn FnMut() -> Result<Arc<SignerSet>, String>,
) -> Result<OpenedStorage, OpenError> {
    let mut index = FrameIndex::default();
    // The checkpoint is parsed as it is read (the state built element by element), and kept
    // only if its CRC then matches (`Opened::streamed_checkpoint`); its `log_end` is what
    // recovery may check by header only.
    let mut loaded: Option<restore::LoadedCheckpoint> = None;
    let mut load = |seq: u64, r: &mut dyn std::io::Read| -> Result<u64, String> {
        // A candidate that failed its CRC is dropped before the next is parsed.
        loaded = None;
        let cp = restore::read_checkpoint(seq, r).map_err(|e| e.0)?;
        let trusted = cp.log_end().unwrap_or(0);
        loaded = Some(cp);
        Ok(trusted)
    };
    let mut opened = rlog::open_index(
        data_dir,
        opts,
        Arc::new(OsIo),
        &mut load,
        &mut |end, len, head| index.add(end, len, head),
    )
    .map_err(|e| match e {
        LogError::Locked { .. } => OpenError::Locked(e.to_string()),
        LogError::Io { .. } | LogError::NoSpace { .. } => OpenError::Io(e.to_string()),
        other => OpenError::Refused(other.to_string()),
    })?;
    if let Some(t) = &opened.truncated_tail {
        log::warn!(
            "msg=\"torn log tail truncated\" path={:?} offset={} bytes={} reason={:?}",
            t.path.display().to_string(),
            t.offset,
            t.zeroed_bytes,
            t.reason
        );
    }
    if index.first.is_none() && opened.first_segment == 0 {
        let bootstrap = bootstrap().map_err(OpenError::Refused)?;
        let loc = write_genesis(&mut opened, data_dir, registry_id, &bootstrap)
            .map_err(|e| OpenError::Refused(format!("writing the genesis record: {e}")))?;
        index.first = Some(loc);
    }
    let log_dir = rlog::log_dir(data_dir);
    let (history, pending) = history_index(
        registry_id,
        opened.reader.clone(),
        data_dir,
        opened.first_segment,
        index,
    )
    .map_err(|e| OpenError::Refused(e.0))?;
    let checkpoint = match (opened.streamed_checkpoint.take(), loaded) {
        (Some((seq, path)), Some(cp)) if cp.seq() == seq => Some((cp, path)),
        _ => None,
    };
    let restored = restore_opened(
        registry_id,
        checkpoint,
        history,
        &pending,
        &opened.reader,
        &log_dir,
    )
    .map_err(|e| OpenError::Refused(e.0))?;
    Ok(OpenedStorage {
        restored,
        reader: opened.reader,
        log_end: opened.writer.end(),
        writer: opened.writer,
        syncer: opened.syncer,
        lock: opened.lock,
        data_dir: data_dir.to_path_buf(),
    })
}

/// Append the genesis record of a new log and sync it: the data directory's signer set is fixed
/// from here on. Returns where it is, as recovery would have indexed it.
pub fn write_genesis(
    opened: &mut rlog::Opened,
    data_dir: &Path,
    registry_id: &str,
    bootstrap: &Arc<SignerSet>,
) -> Result<Loc, LogError> {
    let genesis = CommitRecord::genesis(registry_id, bootstrap.clone());
    let payload = genesis.to_json();
    let lsn = opened.writer.append(&payload)?;
    opened.syncer.sync_to(lsn)?;
    log::info!(
        "msg=\"new data directory: genesis v2 written\" data_dir={:?} hash={} signers_digest={} threshold={} keys={}",
        data_dir.display().to_string(),
        genesis.hash,
        bootstrap.digest(),
        bootstrap.threshold,
        bootstrap.keys.len()
    );
    // The journal refuses payloads past a segment (< 4 GiB), so the length fits.
    Ok(Loc {
        end: lsn,
        len: payload.len() as u32,
    })
}
