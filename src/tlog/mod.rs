//! The transparency log (SPEC §12, docs/FORMATS.md "Transparency log"): an RFC 6962 tree over the
//! versions, signed C2SP checkpoints, hash tiles and proofs.
//!
//! [`Tlog`] is what HTTP workers read: the served tree head (size and root), the stored hashes
//! ([`store::HashStore`]) and the log key. Only the `tlog` thread (src/roles/tlog.rs) appends
//! hashes and advances the head. With each head it publishes the folded right edges
//! ([`tree::RightEdge`]) of that size and the few sizes served before it, so a proof against a
//! recent checkpoint only reads stored hashes and hashes nothing.
//!
//! Architecture invariant: the served size never exceeds a durable version count — the `tlog`
//! thread builds the tree only from published snapshots, and the writer publishes only durable
//! versions — and every stored hash below the served size is written before the size is
//! published. Since the tree is derived from the append-only log, two checkpoints this log signs
//! are always consistent.

pub mod note;
pub mod store;
pub mod tool;
pub mod tree;

use arc_swap::{ArcSwap, ArcSwapOption};
use note::{Checkpoint, LogKey};
use std::sync::Arc;
use store::HashStore;
use tree::{Hash, RightEdge, Tile};

/// Right edges kept: the served size's and those of the sizes served just before it (a client
/// that fetched a checkpoint a moment ago asks for proofs against its size while the tree moves
/// on). Each is at most 64 folds.
pub const RECENT_EDGES: usize = 8;

/// The served tree: every hash of a tree of `size` leaves is in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeHead {
    pub size: u64,
    pub root: Hash,
}

/// What the `tlog` thread publishes at once: the head, and the right edges of it and of the
/// sizes served before it, newest first (an edge that could not be read is left out: proofs
/// against its size fold the hashes themselves).
struct Served {
    head: TreeHead,
    edges: Vec<Arc<RightEdge>>,
}

impl Served {
    fn edge(&self, size: u64) -> Option<&RightEdge> {
        self.edges.iter().find(|e| e.size() == size).map(|e| &**e)
    }
}

/// A signed checkpoint of one tree size.
pub struct Signed {
    pub size: u64,
    pub text: String,
}

/// Why a proof or tile cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub enum TlogError {
    /// The request names a size beyond the served tree.
    Beyond { size: u64, served: u64 },
    /// The tree file could not be read (logged by the caller).
    Unreadable(String),
}

pub struct Tlog {
    origin: String,
    key: LogKey,
    store: HashStore,
    /// Written by the `tlog` thread after the hashes it covers are in the store.
    served: ArcSwapOption<Served>,
    /// The last checkpoint a worker signed (signed lazily, on request, once per size).
    signed: ArcSwap<Option<Arc<Signed>>>,
}

impl Tlog {
    /// `key`'s name must be `origin` (SPEC §12: the key name is the origin).
    pub fn new(origin: String, key: LogKey, store: HashStore) -> Result<Tlog, String> {
        if key.name() != origin {
            return Err(format!(
                "the log key is named {:?}, the log's origin is {origin:?}: a checkpoint's \
                 signature names its origin",
                key.name()
            ));
        }
        Ok(Tlog {
            origin,
            key,
            store,
            served: ArcSwapOption::empty(),
            signed: ArcSwap::from_pointee(None),
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn vkey(&self) -> String {
        self.key.vkey()
    }

    pub fn store(&self) -> &HashStore {
        &self.store
    }

    /// The served tree head; None until the start-up check has served a first size.
    pub fn head(&self) -> Option<TreeHead> {
        self.served.load().as_ref().map(|s| s.head)
    }

    /// Called by the `tlog` thread only, after the hashes of `head` are written. Folds the
    /// head's right edge here, once (`popcount(size)` reads of the map, one hash less), so that
    /// no request does.
    pub(crate) fn publish(&self, head: TreeHead) {
        let before = self.served.load_full();
        debug_assert!(before.as_ref().is_none_or(|s| s.head.size <= head.size));
        let mut edges = Vec::with_capacity(RECENT_EDGES);
        match RightEdge::read(head.size, &self.store) {
            Ok(edge) if edge.root() == head.root => edges.push(Arc::new(edge)),
            // Never expected (the hashes were written first); proofs against this size then
            // fold the edge themselves, from the same stored hashes.
            Ok(_) => log::error!(
                "msg=\"the tree file's right edge does not fold to the published root\" size={}",
                head.size
            ),
            Err(e) => log::error!(
                "msg=\"cannot read the tree file's right edge\" size={} error={e:?}",
                head.size
            ),
        }
        if let Some(before) = &before {
            let keep = before.edges.iter().filter(|e| e.size() != head.size);
            edges.extend(keep.take(RECENT_EDGES - edges.len()).cloned());
        }
        self.served.store(Some(Arc::new(Served { head, edges })));
        crate::metrics::m().registry_tlog_size.set(head.size as i64);
    }

    /// The signed checkpoint of the served head. Signing happens here, lazily, and is cached:
    /// two workers that race sign the same size with the same root (Ed25519 is deterministic,
    /// so even the bytes agree).
    pub fn checkpoint(&self) -> Option<Arc<Signed>> {
        let head = self.head()?;
        if let Some(s) = &**self.signed.load() {
            if s.size == head.size {
                return Some(s.clone());
            }
        }
        let body = Checkpoint {
            origin: self.origin.clone(),
            size: head.size,
            root: head.root,
        }
        .body();
        let signed = Arc::new(Signed {
            size: head.size,
            text: self.key.sign(&body),
        });
        self.signed.store(Arc::new(Some(signed.clone())));
        Some(signed)
    }

    fn served(&self) -> u64 {
        self.head().map_or(0, |h| h.size)
    }

    /// The published state, if it covers a tree of `size` leaves.
    fn within(&self, size: u64) -> Result<arc_swap::Guard<Option<Arc<Served>>>, TlogError> {
        // A guard, not a clone of the Arc: no reference count written per request.
        let served = self.served.load();
        let have = served.as_ref().map_or(0, |s| s.head.size);
        if size > have {
            return Err(TlogError::Beyond { size, served: have });
        }
        Ok(served)
    }

    /// The bytes of `tile` (concatenated hashes), if the served tree holds it whole.
    pub fn tile(&self, tile: &Tile) -> Result<Vec<u8>, TlogError> {
        let served = self.served();
        if !tile.within(served) {
            return Err(TlogError::Beyond {
                size: served,
                served,
            });
        }
        let indices: Vec<u64> = tile.hash_indices().collect();
        let (first, last) = (indices[0], *indices.last().expect("width ≥ 1"));
        // A level-0 tile's hashes lie within ~2·width stored hashes: one read. Higher tiles are
        // spread over 2^8 times more; they are read hash by hash (one tile in 256).
        let hashes: Vec<Hash> = if last - first < 4 * tree::TILE_WIDTH {
            let span = self
                .store
                .read_range(first, last - first + 1)
                .map_err(|e| TlogError::Unreadable(e.to_string()))?;
            indices.iter().map(|i| span[(i - first) as usize]).collect()
        } else {
            use tree::HashReader;
            let r = self.store.reader();
            indices
                .iter()
                .map(|&i| r.read_hash(i))
                .collect::<Result<_, _>>()
                .map_err(TlogError::Unreadable)?
        };
        Ok(hashes.concat())
    }

    /// The inclusion proof of leaf `index` in the tree of `size` (index < size checked by the
    /// caller).
    pub fn inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>, TlogError> {
        let served = self.within(size)?;
        let edge = served.as_ref().and_then(|s| s.edge(size));
        tree::inclusion_proof_with(index, size, &self.store.reader(), edge)
            .map_err(TlogError::Unreadable)
    }

    /// The consistency proof from `old` to `new` (1 ≤ old ≤ new checked by the caller).
    pub fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, TlogError> {
        let served = self.within(new)?;
        let edge = served.as_ref().and_then(|s| s.edge(new));
        tree::consistency_proof_with(old, new, &self.store.reader(), edge)
            .map_err(TlogError::Unreadable)
    }
}

/// The generated log key's file name in the data directory.
pub const KEY_FILE: &str = "tlog.key";

/// The log key: from `key_file` if set, else `tlog.key` in `data_dir` (generated there, mode
/// 0600, on first start), else (with --amnesia) generated in memory. The boolean says whether
/// the key was generated now.
pub fn load_key(
    origin: &str,
    key_file: Option<&std::path::Path>,
    data_dir: Option<&std::path::Path>,
) -> Result<(LogKey, bool), String> {
    let read = |path: &std::path::Path| -> Result<LogKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("log key {}: {e}", path.display()))?;
        LogKey::parse(&text).map_err(|e| format!("log key {}: {e}", path.display()))
    };
    if let Some(path) = key_file {
        return Ok((read(path)?, false));
    }
    let Some(dir) = data_dir else {
        return Ok((LogKey::generate(origin)?, true));
    };
    let path = dir.join(KEY_FILE);
    if path.exists() {
        return Ok((read(&path)?, false));
    }
    let key = LogKey::generate(origin)?;
    write_key_file(&path, &key).map_err(|e| format!("log key {}: {e}", path.display()))?;
    // IMPORTANT: the directory entry is synced too, or a crash could lose the key after the
    // first checkpoint it signed was served.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((key, true))
}

/// Write `key`'s private form to a new file of mode 0600 (never over an existing one).
pub fn write_key_file(path: &std::path::Path, key: &LogKey) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{}\n", key.private_text()).as_bytes())?;
    f.sync_all()
}

/// A C2SP `tlog-proof` (c2sp.org/tlog-proof), as `ronctl registry prove` writes it: the header
/// line, `extra` carrying the 32 raw bytes of `hash_V` (unauthenticated by itself: the inclusion
/// proof is what binds it to the signed root), the leaf index, the proof hashes from the leaf's
/// sibling up, a blank line, then the signed checkpoint verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofFile {
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub hashes: Vec<Hash>,
    pub checkpoint: String,
}

const PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

impl ProofFile {
    pub fn text(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        let mut out = format!("{PROOF_HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", b64.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.hashes {
            out.push_str(&b64.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    pub fn parse(text: &str) -> Result<ProofFile, String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        let rest = text
            .strip_prefix(PROOF_HEADER)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or("a tlog-proof starts with the line c2sp.org/tlog-proof@v1")?;
        let (head, checkpoint) = rest
            .split_once("\n\n")
            .ok_or("a tlog-proof has a blank line before its checkpoint")?;
        let mut lines = head.split('\n').peekable();
        let mut extra = None;
        if let Some(e) = lines.peek().and_then(|l| l.strip_prefix("extra ")) {
            extra = Some(b64.decode(e).map_err(|_| "the extra data is not base64")?);
            lines.next();
        }
        let index = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .and_then(|n| n.parse::<u64>().ok().filter(|v| v.to_string() == n))
            .ok_or("the line after the header (and extra) is index <decimal>")?;
        let mut hashes = Vec::new();
        for line in lines {
            let h = b64.decode(line).map_err(|_| "a proof hash is not base64")?;
            hashes.push(h.try_into().map_err(|_| "a proof hash is not 32 bytes")?);
        }
        Ok(ProofFile {
            extra,
            index,
            hashes,
            checkpoint: checkpoint.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn b64(h: &Hash) -> String {
        base64::engine::general_purpose::STANDARD.encode(h)
    }

    fn tlog_of(n: u64) -> Tlog {
        let key = LogKey::from_seed("test/log", [3; 32]).unwrap();
        let t = Tlog::new("test/log".into(), key, HashStore::memory()).unwrap();
        let mut f = tree::Frontier::new();
        let mut out = Vec::new();
        for i in 0..n {
            f.push(tree::leaf_hash(&[i as u8; 32]), &mut out);
        }
        t.store.write_at(0, &out).unwrap();
        t.publish(TreeHead {
            size: n,
            root: f.root().unwrap(),
        });
        t
    }

    #[test]
    fn nothing_is_served_beyond_the_published_size() {
        let t = tlog_of(5);
        assert!(matches!(
            t.inclusion(0, 6),
            Err(TlogError::Beyond { size: 6, served: 5 })
        ));
        assert!(t.consistency(1, 6).is_err());
        assert!(t.tile(&Tile::parse("0/000.p/6").unwrap()).is_err());
        assert_eq!(
            t.tile(&Tile::parse("0/000.p/5").unwrap()).unwrap().len(),
            5 * 32
        );
        assert!(t.tile(&Tile::parse("0/000").unwrap()).is_err());
        let cp = t.checkpoint().unwrap();
        assert!(cp.text.starts_with("test/log\n5\n"));
        // Cached: the same allocation for the same size.
        assert!(Arc::ptr_eq(&cp, &t.checkpoint().unwrap()));
    }

    /// Each publication keeps the edges of the last RECENT_EDGES sizes; proofs against any
    /// served size, with an edge or without, are the proofs folded from stored hashes.
    #[test]
    fn published_edges_serve_recent_sizes_and_change_no_proof() {
        let key = LogKey::from_seed("test/log", [3; 32]).unwrap();
        let t = Tlog::new("test/log".into(), key, HashStore::memory()).unwrap();
        let mut f = tree::Frontier::new();
        let mut out = Vec::new();
        for n in 1..=40u64 {
            out.clear();
            let at = tree::stored_hash_count(n - 1);
            f.push(tree::leaf_hash(&[n as u8; 32]), &mut out);
            t.store.write_at(at, &out).unwrap();
            t.publish(TreeHead {
                size: n,
                root: f.root().unwrap(),
            });
            let served = t.served.load();
            let sizes: Vec<u64> = served
                .as_ref()
                .unwrap()
                .edges
                .iter()
                .map(|e| e.size())
                .collect();
            let want: Vec<u64> = (n.saturating_sub(RECENT_EDGES as u64 - 1).max(1)..=n)
                .rev()
                .collect();
            assert_eq!(sizes, want, "edges kept after publishing {n}");
        }
        // Republishing a size (a restart's check, say) does not keep its edge twice.
        t.publish(t.head().unwrap());
        assert_eq!(t.served.load().as_ref().unwrap().edges.len(), RECENT_EDGES);
        let stored = t.store.read_range(0, tree::stored_hash_count(40)).unwrap();
        for size in 1..=40u64 {
            for index in 0..size {
                assert_eq!(
                    t.inclusion(index, size).unwrap(),
                    tree::inclusion_proof(index, size, &stored).unwrap(),
                    "inclusion {index} in {size}"
                );
            }
            for old in 1..=size {
                assert_eq!(
                    t.consistency(old, size).unwrap(),
                    tree::consistency_proof(old, size, &stored).unwrap(),
                    "consistency {old} -> {size}"
                );
            }
        }
    }

    #[test]
    fn proof_files_round_trip() {
        let t = tlog_of(7);
        let p = t.inclusion(3, 7).unwrap();
        let cp = t.checkpoint().unwrap();
        for extra in [None, Some(vec![0xfb; 32])] {
            let file = ProofFile {
                extra,
                index: 3,
                hashes: p.clone(),
                checkpoint: cp.text.clone(),
            };
            assert_eq!(ProofFile::parse(&file.text()).unwrap(), file);
        }
        // The spec's own example layout: extra before index, no hashes for a one-leaf tree.
        let f = ProofFile::parse("c2sp.org/tlog-proof@v1\nindex 0\n\nlog\n1\nAA==\n").unwrap();
        assert_eq!((f.index, f.hashes.len(), f.extra), (0, 0, None));
        assert!(ProofFile::parse("c2sp.org/tlog-proof@v1\nindex 01\n\nx\n").is_err());
    }

    #[test]
    fn a_key_named_otherwise_than_the_origin_is_refused() {
        let key = LogKey::from_seed("other", [3; 32]).unwrap();
        assert!(Tlog::new("test/log".into(), key, HashStore::memory()).is_err());
    }

    /// Go's `sumdb/tlog` over the same leaves (tests/vectors/tlog.json, written by the Go program
    /// beside the interop test); skipped with a line when the file is absent.
    #[test]
    fn go_tlog_vectors() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/tlog.json");
        let Ok(text) = std::fs::read_to_string(path) else {
            // Through the Stderr handle, not eprintln!: visible even when the test passes.
            use std::io::Write;
            let _ = std::io::stderr()
                .write_all(format!("\nSKIPPED go_tlog_vectors: {path} is absent\n").as_bytes());
            return;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut f = tree::Frontier::new();
        let mut stored = Vec::new();
        let mut roots = std::collections::BTreeMap::new();
        for h in v["leaf_hashes_input"].as_array().unwrap() {
            let data = hex::decode(h.as_str().unwrap()).unwrap();
            f.push(tree::leaf_hash(&data), &mut stored);
            roots.insert(f.size().to_string(), b64(&f.root().unwrap()));
        }
        let want = v["roots"].as_object().unwrap();
        assert!(!want.is_empty());
        for (size, root) in want {
            assert_eq!(
                roots.get(size).map(String::as_str),
                root.as_str(),
                "root of {size}"
            );
        }
        let hashes = |p: &Vec<Hash>| p.iter().map(b64).collect::<Vec<_>>();
        let strs = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        for c in v["inclusion"].as_array().unwrap() {
            let (i, n) = (c["index"].as_u64().unwrap(), c["size"].as_u64().unwrap());
            let got = tree::inclusion_proof(i, n, &stored).unwrap();
            assert_eq!(hashes(&got), strs(&c["proof"]), "inclusion {i} in {n}");
        }
        for c in v["consistency"].as_array().unwrap() {
            let (o, n) = (c["old"].as_u64().unwrap(), c["new"].as_u64().unwrap());
            let got = tree::consistency_proof(o, n, &stored).unwrap();
            assert_eq!(hashes(&got), strs(&c["proof"]), "consistency {o} -> {n}");
        }
        for t in v["tiles"].as_array().unwrap() {
            let path = t["path"].as_str().unwrap();
            let tile = Tile::parse(path.strip_prefix("tile/").unwrap()).unwrap();
            let bytes: Vec<u8> = tile
                .hash_indices()
                .flat_map(|i| stored[i as usize])
                .collect();
            assert_eq!(hex::encode(bytes), t["hex"].as_str().unwrap(), "{path}");
        }
    }
}
