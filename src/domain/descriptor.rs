//! Descriptors: `{"kind": K, "id": ID, "body": OBJECT}` (docs/FORMATS.md), and the compact form
//! a state holds them in.
//!
//! Invariant: a [`Descriptor`] is immutable once built and costs one allocation; its served JSON
//! ([`Descriptor::to_json`]) is byte for byte what the read plane served before it was compact.

use serde::{Deserialize, Serialize};
use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicUsize, Ordering};

/// The three descriptor kinds, ordered as they sort in listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Node,
    Region,
    Service,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "node" => Some(Kind::Node),
            "service" => Some(Kind::Service),
            "region" => Some(Kind::Region),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Service => "service",
            Kind::Region => "region",
        }
    }
}

/// `[A-Za-z0-9._:-]{1,128}`.
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A descriptor as it stands in a state: its body is kept as the exact JSON text submitted.
///
/// Memory layout (issue 14, "descriptors compact too"): one heap allocation per descriptor,
/// reached through a thin (8-byte) reference-counted pointer, holding the version and the bytes
/// `[kind][id][body]`. Nothing else: no separate allocation for the id, the body or the counts.
/// A state of a million descriptors is a million of these plus the map's nodes, and the map's
/// nodes hold 8 bytes per descriptor (docs/ARCHITECTURE.md, "Memory"). The bytes never change
/// after construction, so clones share them across threads and snapshots without a lock.
///
/// `[kind][id]` is the descriptor's sort key ([`Descriptor::key`]): the kind byte follows the
/// kinds' order (node < region < service), then the id's bytes, which sorts exactly as the
/// `(kind, id)` pairs did.
pub struct Descriptor {
    ptr: NonNull<Header>,
}

/// The start of a descriptor's allocation; `len` bytes follow it: the kind byte, `id_len` bytes
/// of id, then the body.
#[repr(C)]
struct Header {
    refs: AtomicUsize,
    version: u64,
    len: u32,
    id_len: u32,
}

const HEADER_BYTES: usize = std::mem::size_of::<Header>();

fn layout(len: usize) -> Layout {
    Layout::from_size_align(HEADER_BYTES + len, std::mem::align_of::<Header>())
        .expect("a descriptor's size fits a Layout")
}

// SAFETY: the bytes behind `ptr` are written once in `new` and never again; the only shared
// mutable part is the atomic reference count. Sharing and sending is then as sound as for
// `Arc<[u8]>`.
unsafe impl Send for Descriptor {}
// SAFETY: see `Send`.
unsafe impl Sync for Descriptor {}

impl Kind {
    /// The kind's byte in a sort key: ordered as the kinds are.
    fn key_byte(self) -> u8 {
        match self {
            Kind::Node => 0,
            Kind::Region => 1,
            Kind::Service => 2,
        }
    }

    fn from_key_byte(b: u8) -> Kind {
        match b {
            0 => Kind::Node,
            1 => Kind::Region,
            2 => Kind::Service,
            _ => unreachable!("a descriptor's key starts with a kind byte"),
        }
    }
}

/// The sort key of `(kind, id)`: `[kind byte][id]`, as [`Descriptor::key`] returns it.
pub fn key(kind: Kind, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(kind.key_byte());
    k.extend_from_slice(id.as_bytes());
    k
}

impl Descriptor {
    /// A descriptor of `kind`/`id` last put by `version`, whose body is the JSON text `body`.
    ///
    /// Panics if id and body together exceed 4 GiB (descriptors are bounded far below that by
    /// `max_descriptor_bytes` and the log's frame size).
    pub fn new(kind: Kind, id: &str, version: u64, body: &str) -> Descriptor {
        let len = 1 + id.len() + body.len();
        let len32 = u32::try_from(len).expect("a descriptor is smaller than 4 GiB");
        let layout = layout(len);
        // SAFETY: `layout` has a non-zero size (the header alone is 24 bytes).
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<Header>()) else {
            handle_alloc_error(layout)
        };
        // SAFETY: `raw` is a fresh allocation of HEADER_BYTES + len bytes aligned for Header:
        // the header is written at its start and exactly `len` bytes after it.
        unsafe {
            ptr.as_ptr().write(Header {
                refs: AtomicUsize::new(1),
                version,
                len: len32,
                id_len: id.len() as u32,
            });
            let bytes = raw.add(HEADER_BYTES);
            bytes.write(kind.key_byte());
            std::ptr::copy_nonoverlapping(id.as_ptr(), bytes.add(1), id.len());
            std::ptr::copy_nonoverlapping(body.as_ptr(), bytes.add(1 + id.len()), body.len());
        }
        Descriptor { ptr }
    }

    fn header(&self) -> &Header {
        // SAFETY: `ptr` points at a live header while any `Descriptor` holds a reference.
        unsafe { self.ptr.as_ref() }
    }

    /// `[kind][id][body]`.
    fn bytes(&self) -> &[u8] {
        let len = self.header().len as usize;
        // SAFETY: `new` wrote exactly `len` initialized bytes right after the header, and they
        // live as long as the allocation, which outlives `&self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>().add(HEADER_BYTES), len) }
    }

    /// The sort key `[kind][id]` (see [`key`]).
    pub fn key(&self) -> &[u8] {
        &self.bytes()[..1 + self.header().id_len as usize]
    }

    pub fn kind(&self) -> Kind {
        Kind::from_key_byte(self.bytes()[0])
    }

    pub fn id(&self) -> &str {
        let id = &self.key()[1..];
        // SAFETY: these bytes were copied from a `&str` in `new`.
        unsafe { std::str::from_utf8_unchecked(id) }
    }

    /// The version that last put it.
    pub fn version(&self) -> u64 {
        self.header().version
    }

    /// The body: the exact JSON text submitted.
    pub fn body(&self) -> &str {
        let body = &self.bytes()[1 + self.header().id_len as usize..];
        // SAFETY: these bytes were copied from a `&str` in `new`.
        unsafe { std::str::from_utf8_unchecked(body) }
    }

    /// `{"kind", "id", "version", "body"}` as served by the read plane: the bytes serde_json
    /// wrote for these fields before descriptors were compact (a raw body is written as is).
    pub fn to_json(&self) -> Vec<u8> {
        let body = self.body();
        let mut out = Vec::with_capacity(48 + self.key().len() + body.len());
        out.extend_from_slice(b"{\"kind\":\"");
        out.extend_from_slice(self.kind().as_str().as_bytes());
        out.extend_from_slice(b"\",\"id\":");
        serde_json::to_writer(&mut out, self.id()).expect("a string serializes");
        out.extend_from_slice(b",\"version\":");
        out.extend_from_slice(self.version().to_string().as_bytes());
        out.extend_from_slice(b",\"body\":");
        out.extend_from_slice(body.as_bytes());
        out.push(b'}');
        out
    }

    pub fn to_value(&self) -> serde_json::Value {
        // The body was valid JSON when it was submitted or restored.
        let body: serde_json::Value =
            serde_json::from_str(self.body()).expect("a stored body is valid JSON");
        serde_json::json!({
            "kind": self.kind(),
            "id": self.id(),
            "version": self.version(),
            "body": body,
        })
    }
}

impl Clone for Descriptor {
    fn clone(&self) -> Descriptor {
        // Relaxed as in `Arc::clone`: a new reference is made from an existing one, which
        // already keeps the allocation alive.
        let old = self.header().refs.fetch_add(1, Ordering::Relaxed);
        if old > isize::MAX as usize {
            // Billions of clones leaked: wrapping would free a live descriptor.
            std::process::abort();
        }
        Descriptor { ptr: self.ptr }
    }
}

impl Drop for Descriptor {
    fn drop(&mut self) {
        // Release/Acquire as in `Arc::drop`: every use of the bytes through another reference
        // happens before the deallocation.
        if self.header().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        let layout = layout(self.header().len as usize);
        // SAFETY: this was the last reference; the allocation was made in `new` with this
        // layout (its `len` is read from the header that `new` wrote).
        unsafe { dealloc(self.ptr.as_ptr().cast::<u8>(), layout) }
    }
}

impl std::fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Descriptor")
            .field("kind", &self.kind())
            .field("id", &self.id())
            .field("version", &self.version())
            .field("body", &self.body())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_spec_alphabet_and_length() {
        assert!(valid_id("node-7"));
        assert!(valid_id("a.b_c:d-E9"));
        assert!(valid_id(&"x".repeat(128)));
        assert!(!valid_id(&"x".repeat(129)));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("a b"));
        assert!(!valid_id("é"));
    }

    /// The served bytes are those serde_json wrote for the struct the read plane served
    /// before descriptors were compact (tests compare bytes).
    #[test]
    fn json_is_what_the_derived_serializer_wrote() {
        use serde_json::value::RawValue;
        #[derive(Serialize)]
        struct Before<'a> {
            kind: Kind,
            id: &'a str,
            version: u64,
            body: &'a RawValue,
        }
        for (kind, id, version, body) in [
            (
                Kind::Node,
                "node-7",
                1,
                r#"{"addr":"10.0.0.1:9000","zone":"eu-1"}"#,
            ),
            (
                Kind::Service,
                "a.b_c:d-E9",
                u64::MAX,
                r#"{ "spaced" : [1, 2.5, "é\n"] }"#,
            ),
            (Kind::Region, "r", 0, "{}"),
        ] {
            let raw = RawValue::from_string(body.to_string()).unwrap();
            let want = serde_json::to_vec(&Before {
                kind,
                id,
                version,
                body: &raw,
            })
            .unwrap();
            let d = Descriptor::new(kind, id, version, body);
            assert_eq!(
                String::from_utf8(d.to_json()).unwrap(),
                String::from_utf8(want).unwrap()
            );
            assert_eq!(
                d.to_value(),
                serde_json::json!({"kind": kind, "id": id, "version": version, "body": &*raw})
            );
            assert_eq!(
                (d.kind(), d.id(), d.version(), d.body()),
                (kind, id, version, body)
            );
        }
    }

    #[test]
    fn keys_sort_as_kind_then_id() {
        let pairs = [
            (Kind::Service, "a"),
            (Kind::Node, "b"),
            (Kind::Node, "ab"),
            (Kind::Region, ""),
            (Kind::Node, "a"),
            (Kind::Region, "Z"),
            (Kind::Node, "a-"),
        ];
        let mut by_pair = pairs.to_vec();
        by_pair.sort();
        let mut by_key = pairs.to_vec();
        by_key.sort_by_key(|(k, id)| key(*k, id));
        assert_eq!(by_pair, by_key);
        let d = Descriptor::new(Kind::Region, "Z", 3, "{}");
        assert_eq!(d.key(), key(Kind::Region, "Z").as_slice());
    }

    #[test]
    fn clones_share_one_allocation_across_threads_and_free_it_once() {
        let d = Descriptor::new(Kind::Node, "shared", 9, r#"{"x":1}"#);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let mine = d.clone();
                std::thread::spawn(move || {
                    let copies: Vec<Descriptor> = (0..1000).map(|_| mine.clone()).collect();
                    copies
                        .iter()
                        .all(|c| c.body() == r#"{"x":1}"# && c.version() == 9)
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        // Every clone made above was dropped: only `d` holds the allocation now.
        assert_eq!(d.header().refs.load(Ordering::Relaxed), 1);
        assert_eq!(d.clone().ptr, d.ptr);
    }

    #[test]
    fn kinds_round_trip() {
        for k in [Kind::Node, Kind::Service, Kind::Region] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("Node"), None);
    }
}
