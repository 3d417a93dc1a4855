//! [`FaultIo`]: an in-memory file system behind the [`Io`] seam that models durability and
//! injects faults. Always compiled, so integration tests and fuzzers can use it.
//!
//! # The model
//!
//! Every file has a *current* image (what reads see: the page cache) and a *durable* image (what
//! a power cut leaves). A write changes the current image and records a pending extent; a sync
//! that covers the extent copies it to the durable image. Directory operations (create, rename,
//! remove, mkdir) are pending too, per directory, until that directory is synced.
//!
//! [`FaultIo::crash`] is a power cut: each pending write is resolved sector by sector (512 bytes)
//! by a seeded RNG — landed, dropped, or garbage (SQLite-style) — and a random prefix of the
//! pending directory operations lands (journaled metadata lands in order). Afterwards only the
//! durable images exist, locks are released and old handles fail.
//! [`FaultIo::kill`] is a process crash without a power cut: the page cache survives.
//!
//! Faults: [`FaultIo::inject`] makes the n-th call (0-based) of an [`Op`] fail with EIO or ENOSPC,
//! or, for the sync ops, "fail but persist" / "fail and lose the data" (the page cache marks the
//! pages clean: a later sync reports success without writing them, as Linux did).
//! [`FaultIo::crash_at_mutation`] cuts the power just before the n-th mutating call: that call and
//! everything after it fail with EIO until `crash`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::io::{FileHandle, Io, LockHandle, MapSyncer, MapWriter};

/// The calls of the seam, for counting and fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    CreateDir,
    ListDir,
    Open,
    Create,
    Preallocate,
    Map,
    Read,
    Write,
    SyncFile,
    MapWrite,
    MapSync,
    Rename,
    Remove,
    SyncDir,
    Lock,
}

impl Op {
    pub const ALL: [Op; 15] = [
        Op::CreateDir,
        Op::ListDir,
        Op::Open,
        Op::Create,
        Op::Preallocate,
        Op::Map,
        Op::Read,
        Op::Write,
        Op::SyncFile,
        Op::MapWrite,
        Op::MapSync,
        Op::Rename,
        Op::Remove,
        Op::SyncDir,
        Op::Lock,
    ];

    /// Does this call change what is (or may become) on disk? Crash points are counted on these.
    pub fn mutates(self) -> bool {
        matches!(
            self,
            Op::CreateDir
                | Op::Create
                | Op::Preallocate
                | Op::Write
                | Op::SyncFile
                | Op::MapWrite
                | Op::MapSync
                | Op::Rename
                | Op::Remove
                | Op::SyncDir
        )
    }

    pub fn is_sync(self) -> bool {
        matches!(self, Op::SyncFile | Op::MapSync | Op::SyncDir)
    }
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Fail with EIO; nothing happens (a sync leaves its data pending: it may or may not land).
    Eio,
    /// Fail with ENOSPC; nothing happens.
    Enospc,
    /// Sync ops: the data becomes durable, yet EIO is returned.
    SyncFailedPersisted,
    /// Sync ops: EIO, and the pending writes covered will never become durable (their pages are
    /// marked clean; reads still see the new bytes).
    SyncFailedLost,
}

const SECTOR_BYTES: u64 = 512;

type Ino = u64;

#[derive(Debug, Clone)]
enum NsOp {
    Mkdir(PathBuf),
    Link(PathBuf, Ino),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl NsOp {
    fn touches(&self, dir: &Path) -> bool {
        let parent = |p: &PathBuf| p.parent() == Some(dir);
        match self {
            NsOp::Mkdir(p) | NsOp::Link(p, _) | NsOp::Unlink(p) => parent(p),
            NsOp::Rename(from, to) => parent(from) || parent(to),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Written but not yet synced: (offset, len), in write order.
    pending: Vec<(u64, u64)>,
}

impl Inode {
    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset as usize + bytes.len();
        if self.current.len() < end {
            self.current.resize(end, 0);
        }
        self.current[offset as usize..end].copy_from_slice(bytes);
        if !bytes.is_empty() {
            self.pending.push((offset, bytes.len() as u64));
        }
    }

    fn land(&mut self, offset: u64, len: u64, bytes: Option<&[u8]>) {
        let (start, end) = (offset as usize, (offset + len) as usize);
        if self.durable.len() < end {
            self.durable.resize(end, 0);
        }
        match bytes {
            Some(b) => self.durable[start..end].copy_from_slice(b),
            None => {
                let src = self.current[start..end].to_vec();
                self.durable[start..end].copy_from_slice(&src);
            }
        }
    }

    /// Make the pending writes inside `[offset, offset + len)` durable (`lose`: drop them instead).
    fn sync_range(&mut self, offset: u64, len: u64, lose: bool) {
        let (lo, hi) = (offset, offset.saturating_add(len));
        let mut keep = Vec::new();
        for (o, l) in std::mem::take(&mut self.pending) {
            let (s, e) = (o.max(lo), (o + l).min(hi));
            if s >= e {
                keep.push((o, l));
                continue;
            }
            if !lose {
                self.land(s, e - s, None);
            }
            if o < s {
                keep.push((o, s - o));
            }
            if e < o + l {
                keep.push((e, o + l - e));
            }
        }
        self.pending = keep;
    }

    /// fsync: every pending write lands (`lose`: is dropped). Bytes dropped by an earlier failed
    /// sync stay non-durable: their pages were marked clean.
    fn sync_all(&mut self, lose: bool) {
        for (offset, len) in std::mem::take(&mut self.pending) {
            if !lose {
                self.land(offset, len, None);
            }
        }
    }
}

struct State {
    generation: u64,
    powered_off: bool,
    dirs: BTreeSet<PathBuf>,
    durable_dirs: BTreeSet<PathBuf>,
    names: BTreeMap<PathBuf, Ino>,
    durable_names: BTreeMap<PathBuf, Ino>,
    ns_pending: Vec<NsOp>,
    inodes: HashMap<Ino, Inode>,
    next_ino: Ino,
    locks: BTreeSet<PathBuf>,
    calls: HashMap<Op, u64>,
    mutations: u64,
    faults: Vec<(Op, u64, FaultKind)>,
    crash_at_mutation: Option<u64>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("{what} (injected EIO)"))
}

fn err_code(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl State {
    /// Count the call; apply a power cut or an injected fault. `Ok(Some(kind))` only for the
    /// "sync failed" kinds on sync ops, which the op itself carries out.
    fn enter(&mut self, op: Op, generation: Option<u64>) -> io::Result<Option<FaultKind>> {
        if self.powered_off {
            return Err(err_code(libc::EIO));
        }
        if generation.is_some_and(|g| g != self.generation) {
            return Err(io::Error::other("stale handle from before a crash"));
        }
        let n = {
            let count = self.calls.entry(op).or_insert(0);
            *count += 1;
            *count - 1
        };
        if op.mutates() {
            let m = self.mutations;
            self.mutations += 1;
            if self.crash_at_mutation == Some(m) {
                self.powered_off = true;
                return Err(err_code(libc::EIO));
            }
        }
        let fault = self
            .faults
            .iter()
            .find(|(o, nth, _)| *o == op && *nth == n)
            .map(|f| f.2);
        match fault {
            None => Ok(None),
            Some(FaultKind::Enospc) => Err(err_code(libc::ENOSPC)),
            Some(FaultKind::Eio) => Err(err_code(libc::EIO)),
            Some(kind) if op.is_sync() => Ok(Some(kind)),
            Some(_) => Err(err_code(libc::EIO)),
        }
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        dir.parent().is_none() || self.dirs.contains(dir)
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if self.dir_exists(parent) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory for {}", path.display()),
            )),
        }
    }

    fn inode(&mut self, ino: Ino) -> &mut Inode {
        self.inodes.get_mut(&ino).expect("inode of an open handle")
    }

    fn new_inode(&mut self, inode: Inode) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        ino
    }

    fn apply_durable(&mut self, op: NsOp) {
        match op {
            NsOp::Mkdir(p) => {
                self.durable_dirs.insert(p);
            }
            NsOp::Link(p, ino) => {
                self.durable_names.insert(p, ino);
            }
            NsOp::Unlink(p) => {
                self.durable_names.remove(&p);
            }
            NsOp::Rename(from, to) => {
                if let Some(ino) = self.durable_names.remove(&from) {
                    self.durable_names.insert(to, ino);
                }
            }
        }
    }

    fn sync_dir(&mut self, dir: &Path) {
        let (now, later): (Vec<NsOp>, Vec<NsOp>) = std::mem::take(&mut self.ns_pending)
            .into_iter()
            .partition(|op| op.touches(dir));
        self.ns_pending = later;
        for op in now {
            self.apply_durable(op);
        }
    }

    /// After a crash or kill: forget locks and handles, clear faults and counters.
    fn reboot(&mut self) {
        self.generation += 1;
        self.powered_off = false;
        self.locks.clear();
        self.faults.clear();
        self.calls.clear();
        self.mutations = 0;
        self.crash_at_mutation = None;
    }
}

/// A deterministic generator (SplitMix64): `FaultIo`'s crash resolution, and the seeded
/// schedules of the tests (the simulation, the fuzz corpus's mutants), so a seed replays.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// An index into a slice of `len` (0 when it is empty).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The fault-injecting in-memory file system. Paths are absolute; `/` always exists.
#[derive(Clone)]
pub struct FaultIo {
    state: Arc<Mutex<State>>,
}

impl Default for FaultIo {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultIo {
    pub fn new() -> FaultIo {
        FaultIo {
            state: Arc::new(Mutex::new(State {
                generation: 0,
                powered_off: false,
                dirs: BTreeSet::new(),
                durable_dirs: BTreeSet::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                ns_pending: Vec::new(),
                inodes: HashMap::new(),
                next_ino: 1,
                locks: BTreeSet::new(),
                calls: HashMap::new(),
                mutations: 0,
                faults: Vec::new(),
                crash_at_mutation: None,
            })),
        }
    }

    /// Make the `nth` (0-based, counted from now on) call of `op` fail with `kind`.
    pub fn inject(&self, op: Op, nth: u64, kind: FaultKind) {
        let mut s = self.state.lock();
        let at = s.calls.get(&op).copied().unwrap_or(0) + nth;
        s.faults.push((op, at, kind));
    }

    /// Cut the power just before the `n`-th (0-based, counted from now on) mutating call.
    pub fn crash_at_mutation(&self, n: u64) {
        let mut s = self.state.lock();
        s.crash_at_mutation = Some(s.mutations + n);
    }

    /// Mutating calls made so far (since the last crash or kill).
    pub fn mutations(&self) -> u64 {
        self.state.lock().mutations
    }

    /// Calls of `op` made so far (since the last crash or kill).
    pub fn calls(&self, op: Op) -> u64 {
        self.state.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// Has `crash_at_mutation` cut the power (and `crash` not yet been called)?
    pub fn powered_off(&self) -> bool {
        self.state.lock().powered_off
    }

    /// Power cut and reboot: resolve every pending write and directory operation with an RNG
    /// seeded by `seed` (see the module doc). Old handles and locks are gone afterwards.
    pub fn crash(&self, seed: u64) {
        let mut s = self.state.lock();
        let mut rng = SplitMix(seed ^ 0x05EE_D0FC_4A54_u64);
        let pending = std::mem::take(&mut s.ns_pending);
        let landed = rng.below(pending.len() as u64 + 1) as usize;
        for op in pending.into_iter().take(landed) {
            s.apply_durable(op);
        }
        let mut inos: Vec<Ino> = s.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let inode = s.inodes.get_mut(&ino).expect("listed inode");
            for (offset, len) in std::mem::take(&mut inode.pending) {
                let mut at = offset;
                let end = offset + len;
                while at < end {
                    let sector_end = ((at / SECTOR_BYTES) + 1) * SECTOR_BYTES;
                    let piece = sector_end.min(end) - at;
                    match rng.below(3) {
                        0 => inode.land(at, piece, None),
                        1 => {}
                        _ => {
                            let garbage: Vec<u8> =
                                (0..piece).map(|_| rng.next_u64() as u8).collect();
                            inode.land(at, piece, Some(&garbage));
                        }
                    }
                    at += piece;
                }
            }
            inode.current = inode.durable.clone();
        }
        // A directory, or a file, survives only if every directory above it does.
        let reachable = |dirs: &BTreeSet<PathBuf>, path: &Path| {
            path.ancestors()
                .skip(1)
                .all(|d| d.parent().is_none() || dirs.contains(d))
        };
        let dirs = s.durable_dirs.clone();
        s.dirs = dirs
            .iter()
            .filter(|d| reachable(&dirs, d))
            .cloned()
            .collect();
        s.durable_dirs = s.dirs.clone();
        let names = s.durable_names.clone();
        s.names = names
            .into_iter()
            .filter(|(p, _)| reachable(&s.dirs, p))
            .collect();
        s.durable_names = s.names.clone();
        let live: BTreeSet<Ino> = s.names.values().copied().collect();
        s.inodes.retain(|ino, _| live.contains(ino));
        s.reboot();
    }

    /// Process crash without a power cut: locks and handles are gone, the page cache (pending
    /// writes and directory operations) survives.
    pub fn kill(&self) {
        self.state.lock().reboot();
    }

    /// What a read of `path` sees now.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let ino = s.names.get(path)?;
        Some(s.inodes[ino].current.clone())
    }

    /// Names of the files now in `dir`.
    pub fn files_in(&self, dir: &Path) -> Vec<String> {
        let s = self.state.lock();
        s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect()
    }

    /// Damage the disk: overwrite bytes of `path` in both the current and the durable image.
    pub fn corrupt(&self, path: &Path, offset: u64, bytes: &[u8]) {
        let mut s = self.state.lock();
        let ino = *s.names.get(path).expect("corrupt: no such file");
        let inode = s.inode(ino);
        let end = offset as usize + bytes.len();
        for image in [&mut inode.current, &mut inode.durable] {
            if image.len() < end {
                image.resize(end, 0);
            }
            image[offset as usize..end].copy_from_slice(bytes);
        }
    }

    /// Flip one bit of `path` (current and durable image).
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) {
        let byte = self.read_file(path).expect("flip_bit: no such file")[offset as usize];
        self.corrupt(path, offset, &[byte ^ (1 << bit)]);
    }

    fn handle(&self, ino: Ino, generation: u64) -> FaultHandle {
        FaultHandle {
            state: self.state.clone(),
            ino,
            generation,
        }
    }
}

struct FaultHandle {
    state: Arc<Mutex<State>>,
    ino: Ino,
    generation: u64,
}

impl FileHandle for FaultHandle {
    fn size(&self) -> io::Result<u64> {
        let mut s = self.state.lock();
        if s.powered_off || s.generation != self.generation {
            return Err(eio("stale handle"));
        }
        Ok(s.inode(self.ino).current.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.state.lock();
        s.enter(Op::Read, Some(self.generation))?;
        let data = &s.inode(self.ino).current;
        let start = (offset as usize).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock();
        s.enter(Op::Write, Some(self.generation))?;
        s.inode(self.ino).write(offset, bytes);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        let fault = s.enter(Op::SyncFile, Some(self.generation))?;
        let lose = fault == Some(FaultKind::SyncFailedLost);
        s.inode(self.ino).sync_all(lose);
        match fault {
            None => Ok(()),
            Some(_) => Err(err_code(libc::EIO)),
        }
    }
}

impl MapWriter for FaultHandle {
    fn size(&self) -> u64 {
        FileHandle::size(self).unwrap_or(0)
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock();
        s.enter(Op::MapWrite, Some(self.generation))?;
        let inode = s.inode(self.ino);
        assert!(
            offset + bytes.len() as u64 <= inode.current.len() as u64,
            "write past the end of a map"
        );
        inode.write(offset, bytes);
        Ok(())
    }
}

impl MapSyncer for FaultHandle {
    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        let fault = s.enter(Op::MapSync, Some(self.generation))?;
        let lose = fault == Some(FaultKind::SyncFailedLost);
        s.inode(self.ino).sync_range(offset, len, lose);
        match fault {
            None => Ok(()),
            Some(_) => Err(err_code(libc::EIO)),
        }
    }
}

struct FaultLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    generation: u64,
}

impl LockHandle for FaultLock {}

impl Drop for FaultLock {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        if s.generation == self.generation {
            s.locks.remove(&self.path);
        }
    }
}

impl Io for FaultIo {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.enter(Op::CreateDir, None)?;
        let mut missing: Vec<PathBuf> = dir
            .ancestors()
            .filter(|d| d.parent().is_some() && !s.dirs.contains(*d))
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        for d in missing {
            if s.names.contains_key(&d) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file is in the way",
                ));
            }
            s.dirs.insert(d.clone());
            s.ns_pending.push(NsOp::Mkdir(d));
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut s = self.state.lock();
        s.enter(Op::ListDir, None)?;
        if !s.dir_exists(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn FileHandle>> {
        let mut s = self.state.lock();
        s.enter(Op::Open, None)?;
        let Some(&ino) = s.names.get(path) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
        };
        let generation = s.generation;
        drop(s);
        Ok(Box::new(self.handle(ino, generation)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FileHandle>> {
        let mut s = self.state.lock();
        s.enter(Op::Create, None)?;
        s.parent_exists(path)?;
        let ino = s.new_inode(Inode::default());
        s.names.insert(path.to_path_buf(), ino);
        s.ns_pending.push(NsOp::Link(path.to_path_buf(), ino));
        let generation = s.generation;
        drop(s);
        Ok(Box::new(self.handle(ino, generation)))
    }

    fn create_preallocated(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.enter(Op::Preallocate, None)?;
        s.parent_exists(path)?;
        if s.names.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        // fallocate + fsync: the zero-filled length is durable, the name is not yet.
        let zeros = vec![0u8; len as usize];
        let ino = s.new_inode(Inode {
            current: zeros.clone(),
            durable: zeros,
            pending: Vec::new(),
        });
        s.names.insert(path.to_path_buf(), ino);
        s.ns_pending.push(NsOp::Link(path.to_path_buf(), ino));
        Ok(())
    }

    fn map(&self, path: &Path) -> io::Result<(Box<dyn MapWriter>, Arc<dyn MapSyncer>)> {
        let mut s = self.state.lock();
        s.enter(Op::Map, None)?;
        let Some(&ino) = s.names.get(path) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
        };
        let generation = s.generation;
        drop(s);
        Ok((
            Box::new(self.handle(ino, generation)),
            Arc::new(self.handle(ino, generation)),
        ))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.enter(Op::Rename, None)?;
        s.parent_exists(to)?;
        let Some(ino) = s.names.remove(from) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
        };
        s.names.insert(to.to_path_buf(), ino);
        s.ns_pending
            .push(NsOp::Rename(from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.enter(Op::Remove, None)?;
        if s.names.remove(path).is_none() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
        }
        s.ns_pending.push(NsOp::Unlink(path.to_path_buf()));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let fault = s.enter(Op::SyncDir, None)?;
        if !s.dir_exists(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        match fault {
            None => {
                s.sync_dir(dir);
                Ok(())
            }
            Some(FaultKind::SyncFailedPersisted) => {
                s.sync_dir(dir);
                Err(err_code(libc::EIO))
            }
            Some(_) => Err(err_code(libc::EIO)),
        }
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockHandle>> {
        let mut s = self.state.lock();
        s.enter(Op::Lock, None)?;
        s.parent_exists(path)?;
        if !s.locks.insert(path.to_path_buf()) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        Ok(Box::new(FaultLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
            generation: s.generation,
        }))
    }
}
