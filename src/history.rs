//! The chain's history as a compact index into the log: what `/registry/{version}`,
//! `/registry/log`, stream replay and `GET /proposals/{id}` read past records through.
//!
//! Per version the heap holds one [`Loc`] (16 bytes: where the record's bytes end in the journal
//! and how long they are), in an append-only index of fixed blocks of [`BLOCK_LOCS`] entries
//! that a published snapshot shares with the next one (readers take no lock). Pushing writes the
//! next slot of the last block in place and allocates nothing, except a whole block every
//! [`BLOCK_LOCS`] versions (the persistent vector this replaced copied its 1 KiB tail chunk on
//! every commit, since the published snapshot shared it: one allocation, one copy and one free
//! per commit on the writer thread). The bytes themselves stay in the journal: the on-disk log
//! read with positioned reads ([`crate::log::LogReader`]), or, with `--amnesia`, an anonymous
//! in-memory file ([`MemoryStore`]). Genesis is never in a journal and stays in memory.
//!
//! Invariants: a [`History`] only ever holds locations of records that were written whole to its
//! source; a slot of a block is written once, by the one history that claimed it (a clone that
//! pushes where another already did copies the block first), before any reader can reach it; a
//! snapshot is published only once its head is durable, so a reader bounded by a published
//! snapshot never reads a torn tail. The stored bytes ARE the served JSON of the record
//! (`CommitRecord::to_json`): they are answered as they are, never re-encoded.
//!
//! Retention window (SPEC §14): a history may start after genesis. The *floor* is the oldest
//! version still readable (0 = genesis, no window); it is shared by every clone of a history
//! (one atomic), so the thread that drops old journal bytes publishes it once for every
//! snapshot. Order of a drop: raise the floor first, release the bytes second. A read checks the
//! version against the floor before it reads and again after (a read that raced the release may
//! have seen a deleted file or zeros): either way an expired version is [`Read::Expired`], never
//! garbage. The index entries below the floor are trimmed by the next push (the writer), whole
//! blocks at a time, so the index holds about the window plus one block, not the whole history.

use crate::domain::record::CommitRecord;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Where one record's bytes lie in its journal: the journal position just past them (what
/// `Journal::append` returned) and their length. 16 bytes per version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub end: u64,
    pub len: u32,
}

/// Something history can be read from. Implementations are shared by every reader thread; a
/// read never blocks on the writer (the writer only appends past every indexed location).
pub trait HistorySource: Send + Sync {
    /// The record bytes at `loc`, checked as far as the medium allows (the log checks the
    /// frame's CRC). An error says what failed and where.
    fn read(&self, loc: Loc) -> Result<Vec<u8>, String>;

    /// [`HistorySource::read`], saying whether a failure may pass when the read is tried again
    /// (the medium failed the read: [`ReadFailure::Io`]) or never will (the bytes read are not
    /// the record: [`ReadFailure::Corrupt`]). The default calls every failure corrupt, so a
    /// source that cannot tell is never retried. The message is `read`'s.
    fn read_checked(&self, loc: Loc) -> Result<Vec<u8>, ReadFailure> {
        self.read(loc).map_err(ReadFailure::Corrupt)
    }

    /// Where a retention drop may cut at or below journal position `start`: sources release
    /// whole units (a log segment, a memory page), so a drop keeps everything from the unit
    /// `start` lies in. The default releases nothing.
    fn cut_at_or_below(&self, _start: u64) -> u64 {
        0
    }

    /// Release the journal's bytes below `cut` (a value [`HistorySource::cut_at_or_below`]
    /// returned); returns how many bytes were released. Called only after the history's floor
    /// was raised past every record below `cut`.
    fn release_below(&self, _cut: u64) -> Result<u64, String> {
        Ok(0)
    }

    /// Bytes the journal occupies (on disk or in memory) when the newest record ends at
    /// `head_end`, for `registry_log_bytes`.
    fn bytes_held(&self, _head_end: u64) -> u64 {
        0
    }
}

/// Why a record could not be read back, for a reader that retries what may pass (the `tlog`
/// thread); everyone else takes the message ([`History::read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFailure {
    /// A read the medium failed (an I/O error): the same read may succeed later.
    Io(String),
    /// Bytes that are not the record (a CRC mismatch, a short frame, a location past a
    /// segment's end) or a version below the retention window: trying again cannot help.
    Corrupt(String),
}

impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFailure::Io(m) | ReadFailure::Corrupt(m) => f.write_str(m),
        }
    }
}

/// What a read of a version found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// The record's served JSON.
    Bytes(Vec<u8>),
    /// Past the head.
    Missing,
    /// Below the retention window; `oldest` is the oldest version still retained.
    Expired { oldest: u64 },
}

/// Versions per block of the history index: 4,096 × 16 B = 64 KiB, allocated whole when the
/// previous block is full (no doubling, no copy of earlier blocks; RssAnon grows in 64 KiB steps,
/// 16 B per version on average).
pub const BLOCK_LOCS: usize = 4096;

/// One slot of a block: a [`Loc`] in two atomics, so a block can be shared by every clone of a
/// history while its owner fills the slots past their lengths without `unsafe`. Relaxed is
/// enough: a slot is written before the history that holds it is handed to another thread (a
/// clone, or a snapshot published through `ArcSwap`), which orders the write before any read.
#[derive(Default)]
struct Slot {
    end: AtomicU64,
    len: AtomicU32,
}

/// A fixed block of slots. `claimed` counts the slots written, from the first: the history that
/// claims slot `s` (moving `claimed` from `s` to `s + 1`) is the only one ever to write it.
struct Block {
    slots: Box<[Slot]>,
    claimed: AtomicUsize,
}

impl Block {
    fn empty() -> Block {
        Block {
            slots: (0..BLOCK_LOCS).map(|_| Slot::default()).collect(),
            claimed: AtomicUsize::new(0),
        }
    }

    fn get(&self, slot: usize) -> Loc {
        let s = &self.slots[slot];
        Loc {
            end: s.end.load(Ordering::Relaxed),
            len: s.len.load(Ordering::Relaxed),
        }
    }

    fn set(&self, slot: usize, loc: Loc) {
        let s = &self.slots[slot];
        s.end.store(loc.end, Ordering::Relaxed);
        s.len.store(loc.len, Ordering::Relaxed);
    }

    /// A new block holding a copy of this one's first `n` slots (a clone pushing where another
    /// clone already pushed).
    fn fork(&self, n: usize) -> Block {
        let b = Block::empty();
        for i in 0..n {
            b.set(i, self.get(i));
        }
        b.claimed.store(n, Ordering::Relaxed);
        b
    }
}

/// Every record from genesis (or, with a retention window, from the floor) to a head: genesis
/// in memory, the others as locations.
#[derive(Clone)]
pub struct History {
    genesis: Arc<CommitRecord>,
    /// The index: slot `s` of `blocks[b]` is version `start + b * BLOCK_LOCS + s`. Shared with
    /// every clone; the spine changes only when a block is added, forked or trimmed.
    blocks: imbl::Vector<Arc<Block>>,
    /// The version of slot 0 of `blocks[0]`.
    start: u64,
    /// The oldest version whose location is kept (>= `start`; 1 unless entries below a window
    /// were trimmed). Whole blocks below it are dropped.
    first: u64,
    /// The next version to push (head + 1).
    end: u64,
    /// The oldest readable version (0: no window); raised only by the retention drop, shared by
    /// every clone.
    floor: Arc<AtomicU64>,
    source: Arc<dyn HistorySource>,
}

impl History {
    /// A history holding only genesis.
    pub fn new(genesis: Arc<CommitRecord>, source: Arc<dyn HistorySource>) -> History {
        History::at(genesis, source, 1, 0)
    }

    /// A history whose journal starts at version `first` (> 0): the records before it were
    /// dropped by a retention window. The next [`History::push`] is version `first`.
    pub fn starting_at(
        genesis: Arc<CommitRecord>,
        source: Arc<dyn HistorySource>,
        first: u64,
    ) -> History {
        assert!(first >= 1, "version 0 is genesis");
        History::at(genesis, source, first, if first > 1 { first } else { 0 })
    }

    fn at(
        genesis: Arc<CommitRecord>,
        source: Arc<dyn HistorySource>,
        first: u64,
        floor: u64,
    ) -> History {
        History {
            genesis,
            blocks: imbl::Vector::new(),
            start: first,
            first,
            end: first,
            floor: Arc::new(AtomicU64::new(floor)),
            source,
        }
    }

    /// Head version + 1 (genesis counted, whether or not older records are retained).
    pub fn len(&self) -> u64 {
        self.end
    }

    /// The oldest version that can still be read: 0 without a window.
    pub fn oldest_version(&self) -> u64 {
        self.floor.load(Ordering::SeqCst)
    }

    /// Raise the floor to `oldest` (never lowers it). The retention drop calls this BEFORE it
    /// releases the bytes below: from here on every read below `oldest` is expired.
    pub fn raise_floor(&self, oldest: u64) {
        self.floor.fetch_max(oldest, Ordering::SeqCst);
    }

    /// Never true: genesis is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Append the location of the next version's record, and forget the locations of
    /// versions below the floor (they can no longer be read), keeping the head's; whole blocks
    /// below them are dropped.
    pub fn push(&mut self, loc: Loc) {
        let i = usize::try_from(self.end - self.start).expect("index fits in memory");
        let (b, s) = (i / BLOCK_LOCS, i % BLOCK_LOCS);
        if b == self.blocks.len() {
            let block = Block::empty();
            block.claimed.store(1, Ordering::Relaxed);
            block.set(0, loc);
            self.blocks.push_back(Arc::new(block));
        } else {
            let block = &self.blocks[b];
            let claimed =
                block
                    .claimed
                    .compare_exchange(s, s + 1, Ordering::Relaxed, Ordering::Relaxed);
            if claimed.is_ok() {
                block.set(s, loc);
            } else {
                // Another clone already extended this block past our head: ours diverges here.
                let forked = block.fork(s);
                forked.claimed.store(s + 1, Ordering::Relaxed);
                forked.set(s, loc);
                self.blocks.set(b, Arc::new(forked));
            }
        }
        self.end += 1;
        let floor = self.oldest_version();
        if self.first < floor {
            self.first = floor.min(self.end - 1);
            while self.blocks.len() > 1 && self.start + BLOCK_LOCS as u64 <= self.first {
                self.blocks.pop_front();
                self.start += BLOCK_LOCS as u64;
            }
        }
    }

    /// The location of `version` (None for genesis, past the head, or trimmed below a window).
    pub fn loc(&self, version: u64) -> Option<Loc> {
        if version < self.first || version >= self.end {
            return None;
        }
        let i = usize::try_from(version - self.start).ok()?;
        Some(self.blocks[i / BLOCK_LOCS].get(i % BLOCK_LOCS))
    }

    /// The first version of the retained journal whose record starts at or after journal
    /// position `at` (None if none does). Locations grow with versions: a binary search.
    pub fn first_version_from(&self, at: u64) -> Option<u64> {
        let starts_before = |v: u64| {
            let loc = self.loc(v).expect("within the retained versions");
            loc.end - u64::from(loc.len) < at
        };
        let (mut lo, mut hi) = (self.first, self.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if starts_before(mid) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo < self.end).then_some(lo)
    }

    pub fn source(&self) -> &Arc<dyn HistorySource> {
        &self.source
    }

    pub fn genesis(&self) -> &Arc<CommitRecord> {
        &self.genesis
    }

    /// The served JSON of `version`, or why not: past the head, or expired below the window
    /// (checked before the read and again after it, see the module doc). `Err` if the journal
    /// could not be read back intact.
    pub fn read(&self, version: u64) -> Result<Read, String> {
        self.read_checked(version).map_err(|e| e.to_string())
    }

    /// [`History::read`], with a failed read told apart from a corrupt one
    /// ([`HistorySource::read_checked`]).
    pub fn read_checked(&self, version: u64) -> Result<Read, ReadFailure> {
        let oldest = self.oldest_version();
        if version < oldest {
            return Ok(Read::Expired { oldest });
        }
        if version == 0 {
            return Ok(Read::Bytes(self.genesis.to_json()));
        }
        let Some(loc) = self.loc(version) else {
            return Ok(Read::Missing);
        };
        let got = self.source.read_checked(loc);
        let oldest = self.oldest_version();
        if version < oldest {
            // The drop raced this read: whatever was read (an error, zeros) is not served.
            return Ok(Read::Expired { oldest });
        }
        got.map(Read::Bytes)
    }

    /// The served JSON of `version`: `Ok(None)` past the head, `Err` if the journal could not be
    /// read back intact or the version is below the retention window.
    pub fn bytes(&self, version: u64) -> Result<Option<Vec<u8>>, String> {
        self.bytes_checked(version).map_err(|e| e.to_string())
    }

    /// [`History::bytes`], with a failed read told apart from a corrupt one (an expired version
    /// is [`ReadFailure::Corrupt`]: it will not come back).
    pub fn bytes_checked(&self, version: u64) -> Result<Option<Vec<u8>>, ReadFailure> {
        match self.read_checked(version)? {
            Read::Bytes(b) => Ok(Some(b)),
            Read::Missing => Ok(None),
            Read::Expired { oldest } => Err(ReadFailure::Corrupt(expired_message(version, oldest))),
        }
    }

    /// The parsed record of `version` (stream replay, committed proposals, checks).
    pub fn record(&self, version: u64) -> Result<Option<CommitRecord>, String> {
        if version == 0 {
            return Ok(Some((*self.genesis).clone()));
        }
        let Some(bytes) = self.bytes(version)? else {
            return Ok(None);
        };
        let rec = CommitRecord::from_json(&bytes).map_err(|e| {
            format!(
                "version {version}: stored record is not valid: {}",
                e.message
            )
        })?;
        if rec.version != version {
            return Err(format!(
                "version {version}: the log holds version {} at its place",
                rec.version
            ));
        }
        Ok(Some(rec))
    }
}

/// The message of a read below the window (the 410's message names the oldest version).
pub fn expired_message(version: u64, oldest: u64) -> String {
    format!(
        "version {version} is older than this node's retention window: the oldest retained \
         version is {oldest} (read it from a node that keeps the full history)"
    )
}

/// The `--amnesia` journal's bytes: an anonymous in-memory file (memfd), appended by the writer
/// and read with positioned reads by everyone else, exactly like a log segment. What an amnesiac
/// node's memory grows with is these bytes (the records themselves); they are kernel shmem pages,
/// not part of the process heap.
///
/// Retention: a drop punches the released range out of the file (`fallocate(PUNCH_HOLE)`), which
/// frees its pages at once; reads there return zeros, which history never serves (the floor is
/// raised first and checked again after the read). Chosen over one memfd per segment: one file,
/// one descriptor, and the cut need not follow segment boundaries. The cut is rounded down to
/// [`MEMORY_CUT_BYTES`] so a drop is one syscall per 256 KiB released, not per record.
pub struct MemoryStore {
    file: std::fs::File,
    /// The end of the bytes written so far (the writer's appends).
    written: AtomicU64,
    /// Everything below this was punched out (raised only by the retention drop).
    released: AtomicU64,
}

/// The unit in which an amnesiac node releases its journal's memory.
pub const MEMORY_CUT_BYTES: u64 = 256 * 1024;

impl MemoryStore {
    pub fn new() -> std::io::Result<MemoryStore> {
        // SAFETY: the name is a NUL-terminated C string literal; no other memory is passed.
        let fd = unsafe { libc::memfd_create(c"svc-registry-amnesia".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(MemoryStore {
            file,
            written: AtomicU64::new(0),
            released: AtomicU64::new(0),
        })
    }

    /// Write `bytes` at `at` (the journal's end: only the writer calls this).
    pub fn write_at(&self, at: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(bytes, at)?;
        self.written
            .fetch_max(at + bytes.len() as u64, Ordering::Release);
        Ok(())
    }
}

impl HistorySource for MemoryStore {
    fn read(&self, loc: Loc) -> Result<Vec<u8>, String> {
        let start = loc.end - u64::from(loc.len);
        let mut buf = vec![0u8; loc.len as usize];
        self.file
            .read_exact_at(&mut buf, start)
            .map_err(|e| format!("reading the in-memory journal at {start}: {e}"))?;
        Ok(buf)
    }

    fn cut_at_or_below(&self, start: u64) -> u64 {
        start / MEMORY_CUT_BYTES * MEMORY_CUT_BYTES
    }

    fn release_below(&self, cut: u64) -> Result<u64, String> {
        use std::os::fd::AsRawFd;
        let from = self.released.load(Ordering::Acquire);
        if cut <= from {
            return Ok(0);
        }
        let len = cut - from;
        // SAFETY: plain syscall on a descriptor this store owns; no memory is passed.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                from as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc != 0 {
            return Err(format!(
                "releasing the in-memory journal's bytes {from}..{cut}: {}",
                std::io::Error::last_os_error()
            ));
        }
        self.released.store(cut, Ordering::Release);
        Ok(len)
    }

    fn bytes_held(&self, _head_end: u64) -> u64 {
        self.written
            .load(Ordering::Acquire)
            .saturating_sub(self.released.load(Ordering::Acquire))
    }
}

/// A source for histories that hold only genesis and never grow (tests, `Snapshot::genesis`
/// before a journal exists).
pub struct NoSource;

impl HistorySource for NoSource {
    fn read(&self, loc: Loc) -> Result<Vec<u8>, String> {
        Err(format!("no journal holds the record ending at {}", loc.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loc_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Loc>(), 16);
        assert_eq!(std::mem::size_of::<Slot>(), 16);
    }

    fn loc_of(v: u64) -> Loc {
        Loc {
            end: v * 100,
            len: 10 + (v % 7) as u32,
        }
    }

    fn genesis() -> Arc<CommitRecord> {
        Arc::new(CommitRecord::genesis(
            "r",
            crate::domain::signers::test_set(1, 1),
        ))
    }

    #[test]
    fn the_index_crosses_blocks_and_a_clone_keeps_what_it_saw() {
        let mut h = History::new(genesis(), Arc::new(NoSource));
        let n = 2 * BLOCK_LOCS as u64 + 5;
        let mut kept = Vec::new();
        for v in 1..=n {
            h.push(loc_of(v));
            if v % 1000 == 0 {
                kept.push(h.clone());
            }
        }
        assert_eq!(h.len(), n + 1);
        assert_eq!(h.blocks.len(), 3, "blocks of {BLOCK_LOCS}, no more");
        for v in 1..=n {
            assert_eq!(h.loc(v), Some(loc_of(v)), "version {v}");
        }
        assert_eq!(h.loc(0), None);
        assert_eq!(h.loc(n + 1), None);
        // Clones share the blocks and see exactly the versions they were taken at.
        for k in &kept {
            let head = k.len() - 1;
            assert_eq!(k.loc(head), Some(loc_of(head)));
            assert_eq!(k.loc(head + 1), None);
            assert!(
                Arc::ptr_eq(&k.blocks[0], &h.blocks[0]),
                "shared, not copied"
            );
        }
        // first_version_from: the first version whose record starts at or after a position.
        let v = BLOCK_LOCS as u64 + 3;
        let start = loc_of(v).end - u64::from(loc_of(v).len);
        assert_eq!(h.first_version_from(start), Some(v));
        assert_eq!(h.first_version_from(start + 1), Some(v + 1));
        assert_eq!(h.first_version_from(0), Some(1));
        assert_eq!(h.first_version_from(u64::MAX), None);
    }

    #[test]
    fn clones_that_push_past_the_same_head_diverge_without_touching_each_other() {
        let mut a = History::new(genesis(), Arc::new(NoSource));
        for v in 1..=10 {
            a.push(loc_of(v));
        }
        let mut b = a.clone();
        a.push(loc_of(11));
        // `b` pushes a different version 11 where `a` already wrote: it must copy, not overwrite.
        let other = Loc { end: 7, len: 7 };
        b.push(other);
        b.push(loc_of(12));
        assert_eq!(a.loc(11), Some(loc_of(11)));
        assert_eq!(a.loc(12), None);
        assert_eq!(b.loc(11), Some(other));
        assert_eq!(b.loc(12), Some(loc_of(12)));
        for v in 1..=10 {
            assert_eq!(a.loc(v), b.loc(v));
        }
        assert!(
            !Arc::ptr_eq(&a.blocks[0], &b.blocks[0]),
            "b forked its block"
        );
        // `a` still owns its tip: it keeps appending in place.
        a.push(loc_of(12));
        assert_eq!(a.loc(12), Some(loc_of(12)));
        assert_eq!(b.loc(11), Some(other));
    }

    #[test]
    fn a_window_trims_whole_blocks_below_the_floor_and_keeps_the_head() {
        let mut h = History::new(genesis(), Arc::new(NoSource));
        let n = 3 * BLOCK_LOCS as u64;
        for v in 1..=n {
            h.push(loc_of(v));
        }
        let floor = 2 * BLOCK_LOCS as u64 + 10;
        h.raise_floor(floor);
        h.push(loc_of(n + 1));
        assert_eq!(
            h.blocks.len(),
            2,
            "the first two blocks lie wholly below the floor"
        );
        assert_eq!(h.loc(floor - 1), None, "trimmed below the floor");
        assert_eq!(h.loc(floor), Some(loc_of(floor)));
        assert_eq!(h.loc(n + 1), Some(loc_of(n + 1)));
        assert_eq!(h.first_version_from(0), Some(floor));
        assert_eq!(h.len(), n + 2);
        // A floor past the head keeps the head's location.
        h.raise_floor(n + 100);
        h.push(loc_of(n + 2));
        assert_eq!(h.loc(n + 2), Some(loc_of(n + 2)));
        assert_eq!(h.blocks.len(), 1);
        let mut w = History::starting_at(genesis(), Arc::new(NoSource), 500);
        w.push(loc_of(500));
        assert_eq!(
            (w.len(), w.loc(499), w.loc(500)),
            (501, None, Some(loc_of(500)))
        );
    }

    #[test]
    fn memory_store_round_trips_and_history_serves_what_was_written() {
        let store = Arc::new(MemoryStore::new().unwrap());
        let genesis = Arc::new(CommitRecord::genesis(
            "r",
            crate::domain::signers::test_set(1, 1),
        ));
        let mut h = History::new(genesis.clone(), store.clone());
        let mut end = 0u64;
        for word in [&b"alpha"[..], b"beta", b"gamma"] {
            store.write_at(end, word).unwrap();
            end += word.len() as u64;
            h.push(Loc {
                end,
                len: word.len() as u32,
            });
        }
        assert_eq!(h.len(), 4);
        assert_eq!(h.bytes(0).unwrap().unwrap(), genesis.to_json());
        assert_eq!(h.bytes(2).unwrap().unwrap(), b"beta");
        assert_eq!(h.bytes(3).unwrap().unwrap(), b"gamma");
        assert_eq!(h.bytes(4).unwrap(), None);
        // "beta" is not a record: parsing says so instead of panicking.
        assert!(h.record(2).is_err());
    }

    #[test]
    fn a_released_range_of_the_memory_store_frees_its_pages_and_reads_expired() {
        let store = Arc::new(MemoryStore::new().unwrap());
        let genesis = Arc::new(CommitRecord::genesis(
            "r",
            crate::domain::signers::test_set(1, 1),
        ));
        let mut h = History::new(genesis, store.clone());
        let record = vec![b'x'; 4096];
        let mut end = 0u64;
        for _ in 0..600 {
            store.write_at(end, &record).unwrap();
            end += record.len() as u64;
            h.push(Loc { end, len: 4096 });
        }
        assert_eq!(store.bytes_held(end), end);
        // Versions up to 256 lie below the first MiB.
        let cut = store.cut_at_or_below(300 * 4096);
        assert_eq!(cut, 1 << 20, "rounded down to whole units");
        assert_eq!(h.first_version_from(cut), Some(257));
        h.raise_floor(257);
        assert_eq!(store.release_below(cut).unwrap(), 1 << 20);
        assert_eq!(store.bytes_held(end), end - (1 << 20));
        assert_eq!(h.read(256).unwrap(), Read::Expired { oldest: 257 });
        assert_eq!(h.read(257).unwrap(), Read::Bytes(record.clone()));
        // The punched range reads zeros: what history's floor check keeps from being served.
        assert_eq!(
            store
                .read(Loc {
                    end: 4096,
                    len: 4096
                })
                .unwrap(),
            vec![0u8; 4096]
        );
        let mut blocks = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat fills the struct for a descriptor the store owns.
        let st = unsafe {
            use std::os::fd::AsRawFd;
            assert_eq!(libc::fstat(store.file.as_raw_fd(), blocks.as_mut_ptr()), 0);
            blocks.assume_init()
        };
        assert!(
            (st.st_blocks as u64) * 512 <= end - (1 << 20) + 4096,
            "the punched pages are freed: {} bytes held",
            st.st_blocks * 512
        );
    }
}
