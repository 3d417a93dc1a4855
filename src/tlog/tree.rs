//! The RFC 6962 Merkle tree over the versions, as pure arithmetic: hashes, the "stored hashes"
//! layout of Go's `golang.org/x/mod/sumdb/tlog` (every complete aligned subtree hash, appended in
//! the order the leaves complete them), inclusion and consistency proofs and their checks, and
//! C2SP `tlog-tiles` paths.
//!
//! Invariant: no I/O and no state beyond what a caller passes in. Stored hashes are read through
//! [`HashReader`]; the writer side holds only a [`Frontier`] (O(log n) hashes). Everything here is
//! checked against small trees recomputed by the plain recursive definition (tests below) and
//! against Go's packages (tests/vectors/tlog.json).

use sha2::{Digest, Sha256};

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// Tile height of C2SP `tlog-tiles`: a tile holds 2^8 hashes of one tree level.
pub const TILE_HEIGHT: u32 = 8;
/// Hashes in a full tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

/// `SHA256(0x00 || data)`: the leaf hash of a version is that of the 32 raw bytes of `hash_V`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Where the hash of the complete subtree at `level` with index `n` (leaves `n·2^level ..
/// (n+1)·2^level`) sits in the stored-hash sequence (Go's `tlog.StoredHashIndex`): level L's
/// n-th hash is written right after level L−1's (2n+1)-th hash.
pub fn stored_hash_index(level: u32, n: u64) -> u64 {
    let mut n = n;
    for _ in 0..level {
        n = 2 * n + 1;
    }
    // Level 0's n-th hash is at n + n/2 + n/4 + … .
    let mut i = 0u64;
    while n > 0 {
        i += n;
        n >>= 1;
    }
    i + level as u64
}

/// How many stored hashes a tree of `size` leaves has (Go's `tlog.StoredHashCount`).
pub fn stored_hash_count(size: u64) -> u64 {
    if size == 0 {
        return 0;
    }
    let mut count = stored_hash_index(0, size - 1) + 1;
    let mut i = size - 1;
    while i & 1 == 1 {
        count += 1;
        i >>= 1;
    }
    count
}

/// The largest tree size whose stored hashes fit in `count` hashes (the inverse of
/// [`stored_hash_count`], rounding down): how many leaves a tree file of `count` hashes holds
/// whole.
pub fn size_for_stored_count(count: u64) -> u64 {
    // stored_hash_count is increasing and about 2·size: binary search in [0, count].
    let (mut lo, mut hi) = (0u64, count);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if stored_hash_count(mid) <= count {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The right edge of a tree: the hashes of its maximal complete subtrees, largest (leftmost)
/// first, each with its level. This is all the writer side keeps: O(log n).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (level, hash), levels strictly decreasing.
    edge: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier of a tree of `size` leaves read back from its stored hashes.
    pub fn read<R: HashReader + ?Sized>(size: u64, r: &R) -> Result<Frontier, String> {
        let mut edge = Vec::new();
        let mut lo = 0u64;
        while lo < size {
            let level = 63 - (size - lo).leading_zeros();
            edge.push((level, r.read_hash(stored_hash_index(level, lo >> level))?));
            lo += 1 << level;
        }
        Ok(Frontier { size, edge })
    }

    /// Add the leaf whose hash is `leaf` (index `size`); push onto `out` the stored hashes it
    /// appends, in order: the leaf hash, then each subtree it completes (Go's
    /// `tlog.StoredHashesForRecordHash`).
    pub fn push(&mut self, leaf: Hash, out: &mut Vec<Hash>) {
        out.push(leaf);
        let mut h = leaf;
        let mut level = 0u32;
        while let Some(&(l, left)) = self.edge.last() {
            if l != level {
                break;
            }
            self.edge.pop();
            h = node_hash(&left, &h);
            level += 1;
            out.push(h);
        }
        self.edge.push((level, h));
        self.size += 1;
    }

    /// The tree hash (RFC 6962 MTH); None for the empty tree, which no registry has (genesis is
    /// leaf 0).
    pub fn root(&self) -> Option<Hash> {
        let mut it = self.edge.iter().rev();
        let mut h = it.next()?.1;
        for (_, left) in it {
            h = node_hash(left, &h);
        }
        Some(h)
    }
}

/// Reads stored hashes by index (a file with pread, memory, a test's vector).
pub trait HashReader {
    fn read_hash(&self, index: u64) -> Result<Hash, String>;
}

impl HashReader for [Hash] {
    fn read_hash(&self, index: u64) -> Result<Hash, String> {
        self.get(index as usize)
            .copied()
            .ok_or_else(|| format!("stored hash {index} is beyond {}", self.len()))
    }
}

impl HashReader for Vec<Hash> {
    fn read_hash(&self, index: u64) -> Result<Hash, String> {
        self.as_slice().read_hash(index)
    }
}

/// The largest power of two strictly below `n` (n ≥ 2): RFC 6962's split point `k`.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH of leaves `lo..hi` (lo < hi) from stored hashes: the maximal complete aligned subtrees,
/// left to right, folded from the right (Go's `subTreeHash`). `lo..hi` is always a node of the
/// RFC 6962 recursion, so `lo` is aligned to every subtree it starts.
///
/// The parts are the set bits of `hi − lo`, largest first; they are visited smallest (rightmost)
/// first so the fold needs no list of them: a complete subtree is one read and no hashing, an
/// incomplete one `popcount − 1` node hashes and no allocation.
pub fn subtree_hash<R: HashReader + ?Sized>(lo: u64, hi: u64, r: &R) -> Result<Hash, String> {
    assert!(lo < hi, "subtree {lo}..{hi} is empty");
    let part = |n: u64| -> Result<Hash, String> {
        // The rightmost part of lo..lo+n: level = the lowest set bit of n.
        let level = n.trailing_zeros();
        let start = lo + n - (1 << level);
        debug_assert_eq!(start & ((1 << level) - 1), 0, "unaligned subtree");
        r.read_hash(stored_hash_index(level, start >> level))
    };
    let mut n = hi - lo;
    let mut h = part(n)?;
    n &= n - 1;
    while n > 0 {
        h = node_hash(&part(n)?, &h);
        n &= n - 1;
    }
    Ok(h)
}

/// The right edge of one tree size, folded once so that proofs against that size do no
/// hashing: for each maximal complete subtree of the tree (a "part": leaves `lo..lo+2^level`,
/// largest first), its hash and MTH of leaves `lo..size`. The first fold is the tree's root.
///
/// Why it suffices: in the RFC 6962 recursion of a proof against `size`, the only nodes that are
/// not complete subtrees (one stored hash each) are those ending at `size`, and each starts at
/// `size` with its low bits cleared, which is where one of the parts starts. The parts are kept
/// too: they are the newest large subtrees, whose stored hashes may lie past the tree file's map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RightEdge {
    size: u64,
    /// (lo, part hash, MTH(lo..size)), `lo` increasing.
    folds: Vec<(u64, Hash, Hash)>,
}

impl RightEdge {
    /// The right edge of a tree of `size` ≥ 1 leaves from its stored hashes: `popcount(size)`
    /// reads and `popcount(size) − 1` node hashes.
    pub fn read<R: HashReader + ?Sized>(size: u64, r: &R) -> Result<RightEdge, String> {
        assert!(size >= 1, "the empty tree has no right edge");
        let mut folds = Vec::with_capacity(size.count_ones() as usize);
        // Rightmost part first, as in `subtree_hash`, then reversed so `lo` increases.
        let mut n = size;
        let mut h: Option<Hash> = None;
        while n > 0 {
            let level = n.trailing_zeros();
            let lo = n - (1 << level);
            let part = r.read_hash(stored_hash_index(level, lo >> level))?;
            let folded = match h {
                None => part,
                Some(right) => node_hash(&part, &right),
            };
            folds.push((lo, part, folded));
            h = Some(folded);
            n &= n - 1;
        }
        folds.reverse();
        Ok(RightEdge { size, folds })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// MTH of the whole tree.
    pub fn root(&self) -> Hash {
        self.folds[0].2
    }

    /// MTH of leaves `lo..hi`, if that is a part or a fold kept here.
    fn get(&self, lo: u64, hi: u64) -> Option<Hash> {
        let i = self
            .folds
            .binary_search_by_key(&lo, |&(at, _, _)| at)
            .ok()?;
        let (_, part, fold) = self.folds[i];
        let part_end = self
            .folds
            .get(i + 1)
            .map_or(self.size, |&(next, _, _)| next);
        if hi == self.size {
            Some(fold)
        } else if hi == part_end {
            Some(part)
        } else {
            None
        }
    }
}

/// MTH of leaves `lo..hi` from `edge` when it has it, else from stored hashes.
fn node<R: HashReader + ?Sized>(
    lo: u64,
    hi: u64,
    r: &R,
    edge: Option<&RightEdge>,
) -> Result<Hash, String> {
    match edge.and_then(|e| e.get(lo, hi)) {
        Some(h) => Ok(h),
        None => subtree_hash(lo, hi, r),
    }
}

/// The root of a tree of `size` ≥ 1 leaves from stored hashes.
pub fn tree_hash<R: HashReader + ?Sized>(size: u64, r: &R) -> Result<Hash, String> {
    subtree_hash(0, size, r)
}

/// RFC 6962 PATH(index, D[0:size]): the inclusion proof of leaf `index`, leaf to root.
/// Precondition: index < size.
pub fn inclusion_proof<R: HashReader + ?Sized>(
    index: u64,
    size: u64,
    r: &R,
) -> Result<Vec<Hash>, String> {
    inclusion_proof_with(index, size, r, None)
}

/// [`inclusion_proof`], taking the incomplete subtree it needs from `edge` when `edge` is the
/// right edge of `size` (else it is folded from stored hashes: the same hash either way).
pub fn inclusion_proof_with<R: HashReader + ?Sized>(
    index: u64,
    size: u64,
    r: &R,
    edge: Option<&RightEdge>,
) -> Result<Vec<Hash>, String> {
    assert!(index < size, "leaf {index} is not in a tree of {size}");
    let mut proof = Vec::with_capacity(64 - size.leading_zeros() as usize);
    path(0, size, index, r, edge, &mut proof)?;
    Ok(proof)
}

fn path<R: HashReader + ?Sized>(
    lo: u64,
    hi: u64,
    index: u64,
    r: &R,
    edge: Option<&RightEdge>,
    out: &mut Vec<Hash>,
) -> Result<(), String> {
    if hi - lo == 1 {
        return Ok(());
    }
    let k = split(hi - lo);
    if index < lo + k {
        path(lo, lo + k, index, r, edge, out)?;
        out.push(node(lo + k, hi, r, edge)?);
    } else {
        path(lo + k, hi, index, r, edge, out)?;
        out.push(node(lo, lo + k, r, edge)?);
    }
    Ok(())
}

/// RFC 6962 PROOF(old, D[0:new]): the consistency proof between tree sizes `old` and `new`.
/// Precondition: 1 ≤ old ≤ new; old == new gives the empty proof.
pub fn consistency_proof<R: HashReader + ?Sized>(
    old: u64,
    new: u64,
    r: &R,
) -> Result<Vec<Hash>, String> {
    consistency_proof_with(old, new, r, None)
}

/// [`consistency_proof`], taking the incomplete subtree it needs from `edge` when `edge` is the
/// right edge of `new`.
pub fn consistency_proof_with<R: HashReader + ?Sized>(
    old: u64,
    new: u64,
    r: &R,
    edge: Option<&RightEdge>,
) -> Result<Vec<Hash>, String> {
    assert!(
        1 <= old && old <= new,
        "no consistency proof from {old} to {new}"
    );
    let mut proof = Vec::with_capacity(2 * (64 - new.leading_zeros() as usize));
    subproof(old, 0, new, true, r, edge, &mut proof)?;
    Ok(proof)
}

/// SUBPROOF(m, D[lo:hi], b) of RFC 6962 §2.1.2, with m counted from `lo`.
fn subproof<R: HashReader + ?Sized>(
    m: u64,
    lo: u64,
    hi: u64,
    whole: bool,
    r: &R,
    edge: Option<&RightEdge>,
    out: &mut Vec<Hash>,
) -> Result<(), String> {
    let n = hi - lo;
    if m == n {
        if !whole {
            out.push(node(lo, hi, r, edge)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(m, lo, lo + k, whole, r, edge, out)?;
        out.push(node(lo + k, hi, r, edge)?);
    } else {
        subproof(m - k, lo + k, hi, false, r, edge, out)?;
        out.push(node(lo, lo + k, r, edge)?);
    }
    Ok(())
}

/// Check an inclusion proof (RFC 9162 §2.1.3.2): does `leaf` at `index` lead to `root` of a tree
/// of `size`?
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// Check a consistency proof (RFC 9162 §2.1.4.2) from (`old`, `old_root`) to (`new`,
/// `new_root`).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old == 0 || old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    // When old is a power of two, the old root is the first node of the path.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *old_root && sr == *new_root && snode == 0
}

/// A C2SP `tlog-tiles` hash tile: level `level` (tree level 8·level), index `index`, `width`
/// hashes (256 for a full tile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub level: u32,
    pub index: u64,
    pub width: u64,
}

/// Tile levels above this would cover more than 2^64 leaves.
const TILE_LEVEL_MAX: u32 = 7;

impl Tile {
    /// Parse the part of a tile path after `tile/`: `<L>/<N>[.p/<W>]`, N in 3-digit groups with
    /// `x` prefixes on all but the last. Only the canonical spelling of each tile is accepted
    /// (so a cache never holds two names for one tile).
    pub fn parse(path: &str) -> Result<Tile, String> {
        let mut parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 2 {
            return Err("a tile path is <L>/<N>[.p/<W>]".into());
        }
        let level = parts.remove(0);
        let level = decimal(level).ok_or("tile level is not a decimal number")?;
        if level > TILE_LEVEL_MAX as u64 {
            return Err(format!("tile level must be 0..={TILE_LEVEL_MAX}"));
        }
        let level = level as u32;
        let mut width = TILE_WIDTH;
        if parts.len() >= 2 && parts[parts.len() - 2].ends_with(".p") {
            let w = parts.pop().expect("two or more");
            let w = decimal(w).ok_or("partial tile width is not a decimal number")?;
            if !(1..TILE_WIDTH).contains(&w) {
                return Err(format!("partial tile width must be 1..{TILE_WIDTH}"));
            }
            width = w;
            let last = parts.pop().expect("one or more");
            parts.push(last.strip_suffix(".p").expect("checked"));
        }
        let mut index = 0u64;
        for (i, group) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let digits = if last {
                *group
            } else {
                group
                    .strip_prefix('x')
                    .ok_or("tile index groups but the last start with x")?
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err("tile index groups are three digits".into());
            }
            index = index
                .checked_mul(1000)
                .and_then(|n| n.checked_add(digits.parse::<u64>().expect("digits")))
                .ok_or("tile index overflows")?;
        }
        let tile = Tile {
            level,
            index,
            width,
        };
        if tile.path() != path {
            return Err("not the canonical path of a tile".into());
        }
        Ok(tile)
    }

    /// The path after `tile/`.
    pub fn path(&self) -> String {
        let n = self.index.to_string();
        let mut groups: Vec<String> = Vec::new();
        let mut rest = n.as_str();
        // Pad to a multiple of three digits, then split into groups.
        let padded = format!("{}{}", "0".repeat((3 - rest.len() % 3) % 3), rest);
        rest = padded.as_str();
        while !rest.is_empty() {
            groups.push(rest[..3].to_string());
            rest = &rest[3..];
        }
        let last = groups.len() - 1;
        let mut out = format!("{}/", self.level);
        for (i, g) in groups.iter().enumerate() {
            if i < last {
                out.push('x');
            }
            out.push_str(g);
            if i < last {
                out.push('/');
            }
        }
        if self.width < TILE_WIDTH {
            out.push_str(&format!(".p/{}", self.width));
        }
        out
    }

    /// The stored-hash indices of the tile's hashes, in tile order.
    pub fn hash_indices(&self) -> impl Iterator<Item = u64> + '_ {
        let level = self.level * TILE_HEIGHT;
        (0..self.width).map(move |i| stored_hash_index(level, self.index * TILE_WIDTH + i))
    }

    /// Whether a tree of `size` leaves has every hash of this tile.
    pub fn within(&self, size: u64) -> bool {
        let level = self.level * TILE_HEIGHT;
        let needed = (self.index * TILE_WIDTH + self.width) as u128;
        needed << level <= size as u128
    }
}

/// A canonical non-negative decimal (no sign, no leading zero).
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain recursive definition of RFC 6962 MTH, independent of the stored layout.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => panic!("empty"),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&[i as u8; 32])).collect()
    }

    /// Stored hashes of a tree of `n` leaves, built by the frontier.
    fn stored(n: u64) -> (Vec<Hash>, Frontier) {
        let mut f = Frontier::new();
        let mut out = Vec::new();
        for l in leaves(n) {
            f.push(l, &mut out);
        }
        (out, f)
    }

    const SIZES: [u64; 9] = [1, 2, 3, 5, 7, 8, 255, 256, 257];

    #[test]
    fn stored_layout_matches_go_indices() {
        // Go: StoredHashIndex(0,0)=0, (0,1)=1, (1,0)=2, (0,2)=3, (0,3)=4, (1,1)=5, (2,0)=6.
        let want = [
            (0, 0, 0),
            (0, 1, 1),
            (1, 0, 2),
            (0, 2, 3),
            (0, 3, 4),
            (1, 1, 5),
            (2, 0, 6),
        ];
        for (level, n, i) in want {
            assert_eq!(stored_hash_index(level, n), i, "level {level} n {n}");
        }
        for size in 0..600u64 {
            let (s, _) = stored(size);
            assert_eq!(stored_hash_count(size), s.len() as u64, "size {size}");
            assert_eq!(size_for_stored_count(s.len() as u64), size);
        }
        // A half-written record's hashes do not count as a leaf.
        assert_eq!(size_for_stored_count(stored_hash_count(4) - 1), 3);
    }

    #[test]
    fn roots_match_the_recursive_definition() {
        for size in SIZES {
            let (s, f) = stored(size);
            let want = mth(&leaves(size));
            assert_eq!(f.root(), Some(want), "frontier root, size {size}");
            assert_eq!(
                tree_hash(size, &s).unwrap(),
                want,
                "stored root, size {size}"
            );
            assert_eq!(
                Frontier::read(size, &s).unwrap(),
                f,
                "frontier read, size {size}"
            );
            // Every complete aligned subtree is stored where the index says.
            for level in 0..10u32 {
                for n in 0..(size >> level) {
                    let lo = (n << level) as usize;
                    let want = mth(&leaves(size)[lo..lo + (1 << level)]);
                    assert_eq!(s[stored_hash_index(level, n) as usize], want);
                }
            }
        }
    }

    #[test]
    fn hand_checked_small_trees() {
        let l = leaves(3);
        let (s, f) = stored(1);
        assert_eq!(s, vec![l[0]]);
        assert_eq!(f.root(), Some(l[0]));
        let (s, _) = stored(2);
        assert_eq!(s, vec![l[0], l[1], node_hash(&l[0], &l[1])]);
        let (_, f) = stored(3);
        assert_eq!(f.root(), Some(node_hash(&node_hash(&l[0], &l[1]), &l[2])));
    }

    #[test]
    fn inclusion_proofs_verify_and_fail_when_tampered() {
        for size in SIZES {
            let (s, f) = stored(size);
            let root = f.root().unwrap();
            let ls = leaves(size);
            for index in (0..size).filter(|i| size < 10 || i % 17 == 0 || *i == size - 1) {
                let p = inclusion_proof(index, size, &s).unwrap();
                assert!(verify_inclusion(
                    index,
                    size,
                    &ls[index as usize],
                    &p,
                    &root
                ));
                if let Some(first) = p.first() {
                    let mut bad = p.clone();
                    bad[0] = leaf_hash(first);
                    assert!(!verify_inclusion(
                        index,
                        size,
                        &ls[index as usize],
                        &bad,
                        &root
                    ));
                }
                let other = leaf_hash(b"not a leaf");
                assert!(!verify_inclusion(index, size, &other, &p, &root));
            }
        }
        // Hand-checked: leaf 2 of a tree of 3 is proved by the hash of leaves 0..2.
        let (s, _) = stored(3);
        let l = leaves(3);
        assert_eq!(
            inclusion_proof(2, 3, &s).unwrap(),
            vec![node_hash(&l[0], &l[1])]
        );
        assert_eq!(inclusion_proof(0, 3, &s).unwrap(), vec![l[1], l[2]]);
    }

    #[test]
    fn consistency_proofs_verify_and_fail_when_tampered() {
        let (s, _) = stored(300);
        let root = |n: u64| mth(&leaves(n));
        for new in SIZES {
            for old in (1..=new).filter(|o| new < 10 || o % 31 == 0 || *o == new || *o == 1) {
                let p = consistency_proof(old, new, &s).unwrap();
                assert!(
                    verify_consistency(old, new, &root(old), &root(new), &p),
                    "{old} -> {new}"
                );
                if old < new {
                    assert!(!verify_consistency(old, new, &root(new), &root(new), &p));
                }
            }
        }
        // Hand-checked: 1 -> 2 is proved by leaf 1; 2 -> 3 by leaf 2 (old is a power of two).
        let l = leaves(3);
        assert_eq!(consistency_proof(1, 2, &s).unwrap(), vec![l[1]]);
        assert_eq!(consistency_proof(2, 3, &s).unwrap(), vec![l[2]]);
        assert!(consistency_proof(3, 3, &s).unwrap().is_empty());
    }

    /// Proofs taking their incomplete subtree from a folded right edge are the proofs folded
    /// from stored hashes; an edge of another size is not used.
    #[test]
    fn right_edges_give_the_same_proofs() {
        let (s, _) = stored(300);
        for size in (1..=300u64).filter(|n| *n < 40 || n % 23 == 0 || SIZES.contains(n)) {
            let edge = RightEdge::read(size, &s).unwrap();
            assert_eq!(edge.size(), size);
            assert_eq!(edge.root(), mth(&leaves(size)), "root of {size}");
            assert_eq!(edge.folds.len(), size.count_ones() as usize);
            let ls = leaves(size);
            assert_eq!(edge.folds[0].0, 0);
            for (i, &(lo, part, fold)) in edge.folds.iter().enumerate() {
                let end = edge.folds.get(i + 1).map_or(size, |f| f.0);
                // Parts are complete aligned subtrees, largest first.
                assert!(
                    (end - lo).is_power_of_two() && lo % (end - lo) == 0,
                    "{lo}..{end}"
                );
                assert_eq!(
                    part,
                    mth(&ls[lo as usize..end as usize]),
                    "part {lo}..{end}"
                );
                assert_eq!(fold, mth(&ls[lo as usize..]), "fold {lo}..{size}");
            }
            let other = RightEdge::read(size.max(2) - 1, &s).unwrap();
            for index in 0..size {
                let want = inclusion_proof(index, size, &s).unwrap();
                let with = inclusion_proof_with(index, size, &s, Some(&edge)).unwrap();
                assert_eq!(with, want, "inclusion {index} in {size}");
                let wrong = inclusion_proof_with(index, size, &s, Some(&other)).unwrap();
                assert_eq!(wrong, want, "inclusion {index} in {size}, another edge");
            }
            for old in 1..=size {
                let want = consistency_proof(old, size, &s).unwrap();
                let with = consistency_proof_with(old, size, &s, Some(&edge)).unwrap();
                assert_eq!(with, want, "consistency {old} -> {size}");
            }
        }
    }

    /// With its edge, a proof reads one stored hash per proof hash except the folded one and the
    /// parts; without, it reads every part of the incomplete subtree and folds them.
    #[test]
    fn a_proof_with_its_edge_folds_nothing() {
        struct Counting<'a>(&'a [Hash], std::cell::Cell<u64>);
        impl HashReader for Counting<'_> {
            fn read_hash(&self, index: u64) -> Result<Hash, String> {
                self.1.set(self.1.get() + 1);
                self.0.read_hash(index)
            }
        }
        // Leaf 0's sibling at the top is leaves 128..183: parts of 32, 16, 4, 2 and 1 leaves.
        let size = 0b1011_0111u64;
        let (s, _) = stored(size);
        let edge = RightEdge::read(size, &s).unwrap();
        let r = Counting(&s, std::cell::Cell::new(0));
        let p = inclusion_proof_with(0, size, &r, Some(&edge)).unwrap();
        assert_eq!(r.1.get(), p.len() as u64 - 1);
        r.1.set(0);
        assert_eq!(inclusion_proof(0, size, &r).unwrap(), p);
        assert_eq!(r.1.get(), p.len() as u64 - 1 + 5);
        // The last leaf's siblings are the parts themselves: kept in the edge, so no read at all
        // (without it, one read each).
        r.1.set(0);
        let p = inclusion_proof_with(size - 1, size, &r, Some(&edge)).unwrap();
        assert_eq!((p.len(), r.1.get()), (5, 0));
        r.1.set(0);
        assert_eq!(inclusion_proof(size - 1, size, &r).unwrap(), p);
        assert_eq!(r.1.get(), 5);
    }

    #[test]
    fn tile_paths_are_canonical() {
        let check = |path: &str, level: u32, index: u64, width: u64| {
            let t = Tile::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!((t.level, t.index, t.width), (level, index, width), "{path}");
            assert_eq!(t.path(), path);
        };
        check("0/000", 0, 0, 256);
        check("0/000.p/5", 0, 0, 5);
        check("0/x001/234", 0, 1234, 256);
        check("1/x001/x234/067.p/255", 1, 1_234_067, 255);
        for bad in [
            "0",
            "00/000",
            "0/0",
            "0/x000/001",
            "0/001/234",
            "0/000.p/0",
            "0/000.p/256",
            "0/000.p/05",
            "8/000",
            "0/00a",
            "entries/000",
            "0/000/",
            "-1/000",
        ] {
            assert!(Tile::parse(bad).is_err(), "{bad} parsed");
        }
        let t = Tile::parse("0/001").unwrap();
        assert!(!t.within(511) && t.within(512));
        let t = Tile::parse("1/000.p/2").unwrap();
        assert!(!t.within(511) && t.within(512));
        let t = Tile::parse("0/000.p/3").unwrap();
        let (s, _) = stored(3);
        let got: Vec<Hash> = t.hash_indices().map(|i| s[i as usize]).collect();
        assert_eq!(got, leaves(3));
    }
}
