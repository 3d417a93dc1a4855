//! The transparency-log tree (issue 19, SPEC §12) maintained alongside the simulated log, through
//! the code the server runs: the writer's `TlogFeed` publisher, and `TreeBuilder` (the library
//! calls under the `tlog` thread: the start-up check, then a catch-up per wake-up), over a tree
//! store in a real temporary directory (`tlog.hashes`, never fsynced, so a power cut may keep
//! it whole, cut it anywhere, zero its tail or leave junk past the log) or in memory (as with
//! `--amnesia`: a new empty store each boot). Retention is off (the main test's seeds only).
//!
//! The invariant checked after every step and every boot: nothing the tree serves is ahead of
//! the durable log. The served size never exceeds the versions the model knows durable, the
//! store holds exactly the hashes of the served tree, and every root, signed checkpoint, proof
//! and tile agrees with what this file recomputes from the records' `hash_V` alone (RFC 6962
//! §2.1 for roots, RFC 9162 §2.1.3.2 and §2.1.4.2 for proofs, written here, not taken from the
//! code under test). Every checkpoint seen in a seed stays a prefix of every later recovered
//! chain, and any two are consistent.
//!
//! Its decisions draw from a stream of their own, so the tree does not change which steps a
//! seed takes (only the I/O call counts its reads add).

use super::*;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use svc_registry::roles::tlog::{TlogFeed, TreeBuilder};
use svc_registry::tlog::note::LogKey;
use svc_registry::tlog::store::{HashStore, TREE_FILE};
use svc_registry::tlog::tree::Tile;
use svc_registry::tlog::Tlog;

type Hash = [u8; 32];

/// The log's origin, which is also its key's name.
const ORIGIN: &str = "sim.example/registry";
const KEY_SEED: [u8; 32] = [7; 32];
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The tree's side of a seed (kept across lifetimes).
pub(crate) struct TreeSim {
    rng: Rng,
    /// The data directory's tree file lives here; None: an in-memory store (`--amnesia`).
    dir: Option<tempfile::TempDir>,
    /// Every checkpoint served in this seed: (size, root), oldest first.
    checkpoints: Vec<(u64, Hash)>,
    /// Independent RFC 6962 hashes of complete subtrees [lo, hi) of the model's chain. Valid
    /// across lifetimes: a recovered chain extends every version ever published unchanged
    /// (`check_recovered`), and only published versions reach the tree.
    memo: HashMap<(u64, u64), Hash>,
    /// Checkpoint notes whose signature verified: each lifetime signs its sizes again, and
    /// Ed25519 being deterministic, with the same bytes (verifying costs more than the rest
    /// of the tree's checks together).
    verified: BTreeSet<String>,
}

/// The writer's `TlogFeed`, unchanged, and a count of the publications it drops because the
/// feed is full (one thread: the feed is full at the send exactly when it was full just before),
/// so the tree can be woken in the order that leaves a gap in what it receives.
pub(crate) struct WatchedFeed {
    feed: TlogFeed,
    tx: crossbeam_channel::Sender<Vec<Arc<CommitRecord>>>,
    dropped: Arc<AtomicU64>,
}

impl svc_registry::snapshot::Publisher for WatchedFeed {
    fn published(&mut self, snapshot: &Arc<Snapshot>, records: &[Arc<CommitRecord>]) {
        if self.tx.is_full() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.feed.published(snapshot, records);
    }
}

/// The tree of one lifetime.
pub(crate) struct LifeTree {
    tlog: Arc<Tlog>,
    feed: Receiver<Vec<Arc<CommitRecord>>>,
    fed: VecDeque<Arc<CommitRecord>>,
    /// None until the (background, in the server) start-up check has run.
    builder: Option<TreeBuilder>,
    /// The tree stopped on an error that cannot pass: it serves what it had. (An injected read
    /// fault is an I/O error: the call is tried again at a later step, as the thread does.)
    stopped: bool,
    /// The last call failed on a read fault and is to be tried again.
    retrying: bool,
    /// Checked, but its first catch-up failed on a read fault: the next start goes on from it
    /// (the check is not run twice on one store, as in the thread).
    starting: Option<TreeBuilder>,
    /// Between the two halves of a wake-up (see `tree_step`).
    awake: bool,
    /// The chance (%) of each half of a wake-up per step: a slow tree meets a full feed.
    pace: u64,
    /// Publications the full feed dropped since the last wake-up (counted by `WatchedFeed`).
    dropped: Arc<AtomicU64>,
    stop: std::sync::atomic::AtomicBool,
}

impl TreeSim {
    pub(crate) fn new(seed: u64, windowed: bool) -> Option<TreeSim> {
        if windowed {
            return None;
        }
        let mut rng = Rng(seed ^ 0x7713_5EED_0000_0019);
        let dir = if rng.chance(75) {
            Some(tempfile::tempdir().expect("a temporary directory"))
        } else {
            None
        };
        Some(TreeSim {
            rng,
            dir,
            checkpoints: Vec::new(),
            memo: HashMap::new(),
            verified: BTreeSet::new(),
        })
    }
}

fn leaf_data(hex_hash: &str) -> Hash {
    hex::decode(hex_hash)
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

/// RFC 6962 §2.1: MTH({d(0)}) = SHA-256(0x00 || d(0)).
fn rfc_leaf(data: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// RFC 6962 §2.1: SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])).
fn rfc_node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// RFC 9162 §2.1.3.2: verify an inclusion proof of `leaf` at `index` in a tree of `size`.
fn verify_inclusion(index: u64, size: u64, leaf: &Hash, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn, mut r) = (index, size - 1, *leaf);
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = rfc_node(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = rfc_node(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: verify a consistency proof from (`first`, `first_hash`) to (`second`,
/// `second_hash`), 0 < first < second.
fn verify_consistency(
    first: u64,
    second: u64,
    first_hash: &Hash,
    second_hash: &Hash,
    proof: &[Hash],
) -> bool {
    if first == 0 || first >= second || proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, *first_hash);
    }
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = rfc_node(c, &fr);
            sr = rfc_node(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = rfc_node(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == *first_hash && sr == *second_hash && sn == 0
}

/// Hashes a tree of `n` leaves stores in Go tlog's layout: every complete subtree once, i.e.
/// n leaves + n/2 + n/4 + … = 2n − popcount(n).
fn stored_count(n: u64) -> u64 {
    2 * n - u64::from(n.count_ones())
}

impl Sim {
    fn tree_sim(&mut self) -> &mut TreeSim {
        self.tree.as_mut().expect("a seed with a tree")
    }

    /// The running life's tree (a seed with a tree, between a boot and a crash).
    fn life_tree(&mut self) -> &mut LifeTree {
        self.life
            .as_mut()
            .expect("a running life")
            .tree
            .as_mut()
            .expect("a tree")
    }

    /// MTH(D[lo:hi]) over the model's chain (RFC 6962 §2.1), complete subtrees memoized.
    fn mth(&mut self, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        assert!(n >= 1, "an empty range");
        if let Some(h) = self.tree_sim().memo.get(&(lo, hi)) {
            return *h;
        }
        let h = if n == 1 {
            rfc_leaf(&leaf_data(&self.known[lo as usize].0))
        } else {
            // k: the largest power of two smaller than n.
            let k = 1u64 << (63 - (n - 1).leading_zeros());
            let (l, r) = (self.mth(lo, lo + k), self.mth(lo + k, hi));
            rfc_node(&l, &r)
        };
        if n.is_power_of_two() {
            self.tree_sim().memo.insert((lo, hi), h);
        }
        h
    }

    /// The lifetime's tree: a store (reopened from the data directory, or new in memory), the
    /// log key, and the feed the writer publishes to. The feed is small at times, so that a
    /// full one makes the tree read versions back from the published history.
    pub(crate) fn new_life_tree(&mut self) -> Option<(LifeTree, WatchedFeed)> {
        let t = self.tree.as_mut()?;
        let store = match &t.dir {
            Some(d) => HashStore::open(d.path()).expect("opening the tree file"),
            None => HashStore::memory(),
        };
        let key = LogKey::from_seed(ORIGIN, KEY_SEED).expect("a key");
        let tlog = Arc::new(Tlog::new(ORIGIN.into(), key, store).expect("a tlog"));
        let capacity = if t.rng.chance(50) {
            1 + t.rng.index(3)
        } else {
            svc_registry::roles::tlog::FEED_QUEUE
        };
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let pace = [4, 30, 70][t.rng.index(3)];
        let dropped = Arc::new(AtomicU64::new(0));
        let watched = WatchedFeed {
            feed: TlogFeed(tx.clone()),
            tx,
            dropped: dropped.clone(),
        };
        let life = LifeTree {
            tlog,
            feed: rx,
            fed: VecDeque::new(),
            builder: None,
            stopped: false,
            retrying: false,
            starting: None,
            awake: false,
            pace,
            dropped,
            stop: std::sync::atomic::AtomicBool::new(false),
        };
        Some((life, watched))
    }

    /// A boot: every checkpoint served before is a prefix of the recovered chain (nothing was
    /// served ahead of the durable log); then the start-up check runs now, or (as the server
    /// runs it in the background) a few steps later.
    pub(crate) fn tree_booted(&mut self) {
        if self.tree.is_none() {
            return;
        }
        let durable = self.known.len() as u64;
        let seen = self.tree_sim().checkpoints.clone();
        for (size, root) in seen {
            check!(
                self,
                size <= durable,
                "a checkpoint of size {size} was served; the recovered log holds {durable} versions"
            );
            let want = self.mth(0, size);
            check!(
                self,
                root == want,
                "the checkpoint of size {size} is not a prefix of the recovered log"
            );
        }
        if self.tree_sim().rng.chance(75) {
            self.tree_start();
        }
    }

    /// `TreeBuilder::start` on the snapshot of now, as the `tlog` thread begins.
    fn tree_start(&mut self) {
        let snap = self.life().snapshot.load_full();
        let due = self
            .life()
            .tree
            .as_ref()
            .is_some_and(|lt| lt.builder.is_none() && !lt.stopped);
        if !due {
            return;
        }
        // Now and then the start's first read of the log fails (EIO), as a passing disk error
        // would: the start is tried again at a later step (the thread retries after a backoff).
        // Only when the start certainly reads the log (version 1 is below HEAD), so the fault
        // fires in it; one that did not is left armed for the rest of the life to meet.
        let reads_before = self.io.calls(Op::Read);
        let inject = snap.version() >= 2 && self.tree_sim().rng.chance(10);
        if inject {
            self.io.inject(Op::Read, 0, FaultKind::Eio);
        }
        let lt = self.life_tree();
        let stored_before = lt.tlog.store().count().expect("count");
        // The thread's start: the check (once), then a catch-up to the snapshot of now.
        let mut builder = match lt.starting.take() {
            Some(b) => Ok(b),
            None => TreeBuilder::start(lt.tlog.clone(), &snap, &lt.stop),
        };
        let started = match &mut builder {
            Ok(b) => b.catch_up(&snap, &mut VecDeque::new()),
            Err(e) => Err(e.clone()),
        };
        let fired = inject && self.io.calls(Op::Read) > reads_before;
        if inject && !fired {
            self.armed.push((Op::Read, reads_before, FaultKind::Eio));
        }
        let lt = self.life_tree();
        match started {
            Ok(()) => {
                let b = builder.expect("caught up");
                let (size, checked) = (b.size(), b.checked());
                lt.builder = Some(b);
                if std::mem::take(&mut lt.retrying) {
                    self.stats.tree_recovered += 1;
                }
                let line = format!(
                    "  tree started: {size} versions, {checked} checked of {stored_before} \
                     stored hashes"
                );
                self.log(line);
                check!(
                    self,
                    size == snap.version() + 1,
                    "the started tree holds {size} versions, the log {}",
                    snap.version() + 1
                );
                if stored_before > stored_count(checked) {
                    self.stats.tree_rebuilt += 1;
                }
            }
            Err(e) => {
                // A failed read is tried again (by a later step here, after a backoff in the
                // thread); anything else stops the tree.
                lt.stopped = !e.may_pass();
                lt.retrying = e.may_pass();
                if lt.retrying {
                    lt.starting = builder.ok();
                }
                if lt.retrying {
                    self.stats.tree_retries += 1;
                    self.log(format!("  tree start failed on a read, to retry: {e}"));
                } else {
                    self.log(format!("  tree stopped at its start: {e}"));
                }
                check!(
                    self,
                    fired || self.read_fault_armed(),
                    "the tree's start-up check failed with no read fault armed: {e}"
                );
            }
        }
    }

    /// After a step: maybe start the deferred check, maybe wake the tree (it drains the feed and
    /// catches up with the published snapshot), then check what it serves.
    pub(crate) fn tree_step(&mut self) {
        if self.tree.is_none() || self.io.powered_off() {
            // The power is off: nothing runs until the restart.
            return;
        }
        let start = self.tree_sim().rng.chance(40);
        let (pace, dropped, queued) = self.life().tree.as_ref().map_or((0, false, false), |lt| {
            (
                lt.pace,
                lt.dropped.load(Ordering::Relaxed) > 0,
                !lt.feed.is_empty(),
            )
        });
        // After a drop, the tree is likely to receive now and to drain only once something
        // more is queued: the interleaving that feeds it records with a gap between them.
        let wake = self.tree_sim().rng.chance(if dropped { 80 } else { pace });
        let finish = self
            .tree_sim()
            .rng
            .chance(if dropped && !queued { 10 } else { pace });
        if start {
            self.tree_start();
        }
        let life = self.life.as_mut().expect("a running life");
        let snapshot = life.snapshot.clone();
        let lt = life.tree.as_mut().expect("a tree");
        if lt.builder.is_none() || lt.stopped {
            return self.check_tree();
        }
        // `run`'s loop in its two halves, which the writer's publications may come between:
        // the blocking receive of one batch (or its timeout), then the batches queued since
        // and the snapshot loaded after them. A batch the full feed dropped before one received
        // leaves a gap in what is fed, which the tree fills from the snapshot's history.
        if wake && !lt.awake {
            if let Ok(batch) = lt.feed.try_recv() {
                lt.fed.extend(batch);
            }
            lt.awake = true;
        }
        if lt.awake && finish {
            lt.awake = false;
            lt.dropped.store(0, Ordering::Relaxed);
            let b = lt.builder.as_mut().expect("started");
            lt.fed.extend(lt.feed.try_iter().flatten());
            let gap = lt
                .fed
                .iter()
                .zip(lt.fed.iter().skip(1))
                .any(|(a, b)| b.version != a.version + 1);
            let snap = snapshot.load_full();
            let result = b.catch_up(&snap, &mut lt.fed);
            lt.stopped = result.as_ref().is_err_and(|e| !e.may_pass());
            let was_retrying = std::mem::replace(&mut lt.retrying, result.is_err() && !lt.stopped);
            if lt.retrying {
                self.stats.tree_retries += 1;
            } else if was_retrying && result.is_ok() {
                self.stats.tree_recovered += 1;
            }
            let (size, head) = (b.size(), snap.version());
            if gap {
                self.stats.tree_feed_gaps += 1;
            }
            match result {
                Err(e) => {
                    let what = if e.may_pass() {
                        "behind, to retry"
                    } else {
                        "stopped"
                    };
                    self.log(format!("  tree {what}: {e}"));
                    check!(
                        self,
                        self.read_fault_armed(),
                        "the tree stopped with no read fault armed: {e}"
                    );
                }
                Ok(()) => check!(
                    self,
                    size == head + 1,
                    "the tree caught up to {size} versions; the published log holds {}",
                    head + 1
                ),
            }
        }
        self.check_tree();
    }

    /// What the tree serves, against the model: size within the durable log, store exactly
    /// the served tree's hashes, root, and now and then a signed checkpoint (consistent with
    /// every earlier one), inclusion proofs and the newest level-0 tile.
    pub(crate) fn check_tree(&mut self) {
        if self.tree.is_none() || self.io.powered_off() {
            return;
        }
        let lt = self.life().tree.as_ref().expect("a tree");
        let tlog = lt.tlog.clone();
        let started = lt.builder.is_some();
        let snap_version = self.life().snapshot.load().version();
        let Some(head) = tlog.head() else {
            check!(self, !started, "the tree started but serves no head");
            return;
        };
        let durable = self.known.len() as u64;
        check!(
            self,
            head.size <= durable && head.size <= snap_version + 1,
            "the tree serves {} versions; the durable log holds {durable} (published HEAD {snap_version})",
            head.size
        );
        let stored = tlog.store().count().expect("count");
        check!(
            self,
            stored == stored_count(head.size),
            "the tree store holds {stored} hashes; a tree of {} versions has {}",
            head.size,
            stored_count(head.size)
        );
        let want = self.mth(0, head.size);
        check!(
            self,
            head.root == want,
            "the served root of {} versions is not the RFC 6962 root of the log",
            head.size
        );
        self.stats.tree_checks += 1;
        // A worker's requests: a checkpoint, proofs, a tile (not every step: signing costs).
        if self.tree_sim().rng.chance(6) {
            self.check_checkpoint(&tlog);
        }
        if self.tree_sim().rng.chance(10) {
            self.check_proofs(&tlog, head.size);
        }
    }

    /// `GET /registry/checkpoint`: a note signed by the log key (verified here with ed25519
    /// directly), for a durable size, whose root is the log's; consistent with every checkpoint
    /// served earlier in the seed, before or after a restart.
    fn check_checkpoint(&mut self, tlog: &Tlog) {
        let signed = tlog.checkpoint().expect("a head is served");
        let (body, sig_line) = signed
            .text
            .split_once("\n\n")
            .expect("a note: text, blank line, signatures");
        let body = format!("{body}\n");
        let lines: Vec<&str> = body.lines().collect();
        check!(self, lines.len() == 3, "checkpoint body {body:?}");
        check!(self, lines[0] == ORIGIN, "checkpoint origin {:?}", lines[0]);
        let size: u64 = lines[1].parse().expect("a decimal size");
        let root: Hash = B64
            .decode(lines[2])
            .expect("base64")
            .try_into()
            .expect("32 bytes");
        check!(
            self,
            size == signed.size,
            "the note's size is not the signed size"
        );
        if !self.tree_sim().verified.contains(&signed.text) {
            self.check_signature(&body, sig_line);
            self.tree_sim().verified.insert(signed.text.clone());
        }
        let durable = self.known.len() as u64;
        check!(
            self,
            size >= 1 && size <= durable,
            "a checkpoint of size {size} signed; the durable log holds {durable} versions"
        );
        let want = self.mth(0, size);
        check!(
            self,
            root == want,
            "the checkpoint of size {size} does not sign the log's RFC 6962 root"
        );
        // Consistent with every earlier checkpoint: a proof from the older to the newer.
        let earlier = self.tree_sim().checkpoints.clone();
        for &(old, old_root) in earlier.iter().rev().take(4) {
            let (first, second, first_root, second_root) = if old <= size {
                (old, size, old_root, root)
            } else {
                (size, old, root, old_root)
            };
            if first == second {
                check!(
                    self,
                    first_root == second_root,
                    "two checkpoints of size {first} with different roots"
                );
                continue;
            }
            if second > tlog.head().map_or(0, |h| h.size) {
                // The older, larger one is beyond what is served now: its root is checked
                // against the chain at the next boot; here the served one is its prefix.
                let prefix = self.mth(0, first);
                check!(
                    self,
                    prefix == first_root,
                    "checkpoint {first} is not a prefix"
                );
                continue;
            }
            let proof = tlog
                .consistency(first, second)
                .expect("a consistency proof");
            check!(
                self,
                verify_consistency(first, second, &first_root, &second_root, &proof),
                "no consistency from checkpoint {first} to checkpoint {second}"
            );
            self.stats.tree_proofs += 1;
        }
        self.stats.tree_checkpoints += 1;
        self.tree_sim().checkpoints.push((size, root));
    }

    /// The note's one signature line, "— <origin> base64(key id (4 bytes) || signature)", by
    /// the log key over `body`, verified with ed25519 directly.
    fn check_signature(&self, body: &str, sig_line: &str) {
        let sig = sig_line
            .strip_prefix(&format!("\u{2014} {ORIGIN} "))
            .and_then(|s| s.strip_suffix('\n'))
            .expect("one signature line by the origin");
        let raw = B64.decode(sig).expect("base64 signature");
        let public = SigningKey::from_bytes(&KEY_SEED).verifying_key();
        let mut id = Sha256::new();
        id.update(ORIGIN.as_bytes());
        id.update(b"\n\x01");
        id.update(public.as_bytes());
        let id: [u8; 32] = id.finalize().into();
        check!(
            self,
            raw.len() == 68 && raw[..4] == id[..4],
            "signature key id"
        );
        let signature = ed25519_dalek::Signature::from_slice(&raw[4..]).expect("64 bytes");
        check!(
            self,
            public.verify_strict(body.as_bytes(), &signature).is_ok(),
            "the checkpoint's signature does not verify"
        );
    }

    /// Inclusion proofs of a few random versions, the newest level-0 tile, and a tile one hash
    /// past the served tree (refused).
    fn check_proofs(&mut self, tlog: &Tlog, size: u64) {
        let root = self.mth(0, size);
        for _ in 0..2 {
            let index = self.tree_sim().rng.below(size);
            let proof = tlog.inclusion(index, size).expect("an inclusion proof");
            let leaf = rfc_leaf(&leaf_data(&self.known[index as usize].0));
            check!(
                self,
                verify_inclusion(index, size, &leaf, &proof, &root),
                "the inclusion proof of version {index} in {size} does not verify"
            );
            self.stats.tree_proofs += 1;
        }
        let (index, width) = (size / 256, size % 256);
        if width > 0 {
            let tile = Tile {
                level: 0,
                index,
                width,
            };
            let bytes = tlog.tile(&tile).expect("the newest partial tile");
            let want: Vec<u8> = (index * 256..size)
                .flat_map(|v| rfc_leaf(&leaf_data(&self.known[v as usize].0)))
                .collect();
            check!(
                self,
                bytes == want,
                "tile {} differs from the log",
                tile.path()
            );
        }
        let ahead = Tile {
            level: 0,
            index,
            width: width + 1,
        };
        check!(
            self,
            tlog.tile(&ahead).is_err(),
            "tile {} (past the served tree) was served",
            ahead.path()
        );
    }

    /// A power cut: the tree file was never fsynced. It may come back whole, cut anywhere (a
    /// torn last hash), with its tail zeroed (its size but not its data reached the disk), or
    /// with junk past the log (a file longer than the log, as from a longer log's tree file).
    pub(crate) fn tree_power_cut(&mut self) {
        let Some(t) = self.tree.as_mut() else {
            return;
        };
        let Some(dir) = &t.dir else {
            return;
        };
        let path = dir.path().join(TREE_FILE);
        let mut bytes = std::fs::read(&path).unwrap_or_default();
        let len = bytes.len() as u64;
        let what = match t.rng.below(10) {
            0..=3 => "kept whole".to_string(),
            4..=6 => {
                let keep = t.rng.below(len + 1);
                bytes.truncate(keep as usize);
                format!("cut at byte {keep} of {len}")
            }
            7..=8 => {
                let from = t.rng.below(len + 1);
                bytes[from as usize..].fill(0);
                format!("zeroed from byte {from} of {len}")
            }
            _ => {
                let extra = 1 + t.rng.below(32 * 8);
                for _ in 0..extra {
                    bytes.push(t.rng.next_u64() as u8);
                }
                format!("{extra} junk bytes past its {len}")
            }
        };
        std::fs::write(&path, &bytes).expect("rewriting the tree file");
        self.stats.tree_power_cuts += 1;
        self.log(format!("  tree file {what}"));
    }
}
