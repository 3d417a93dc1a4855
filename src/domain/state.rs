//! The registry state: descriptors keyed by (kind, id), in a persistent ordered set so that
//! version V+1 shares structure with V (publishing costs O(ops · log n), not O(n)).
//!
//! Invariant: the set holds each descriptor once, as its compact [`Descriptor`] (one allocation),
//! ordered by its key `[kind][id]`; the key is not stored apart from the descriptor, so the map's
//! nodes hold one 8-byte pointer per descriptor.

use super::descriptor::{self, Descriptor, Kind};
use super::proposal::Op;
use crate::error::ApiError;
use imbl::OrdSet;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ops::Bound;

/// A descriptor as an element of the set: compared by its key alone, so that the set can be
/// searched with a borrowed key (`&[u8]`) and a put replaces the descriptor of the same key.
#[derive(Clone)]
#[repr(transparent)]
struct Entry(Descriptor);

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.0.key() == other.0.key()
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> Ordering {
        self.0.key().cmp(other.0.key())
    }
}
// `Borrow` requires the borrowed form to compare as the owner does: both compare the key bytes.
impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.0.key()
    }
}

/// The descriptors of one version, sorted by (kind, id). Cloning is O(1) (structure is shared).
#[derive(Clone, Default)]
pub struct Descriptors {
    set: OrdSet<Entry>,
}

impl std::fmt::Debug for Descriptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.values()).finish()
    }
}

impl Descriptors {
    pub fn new() -> Descriptors {
        Descriptors::default()
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn get(&self, kind: Kind, id: &str) -> Option<&Descriptor> {
        self.set
            .get(descriptor::key(kind, id).as_slice())
            .map(|e| &e.0)
    }

    pub fn contains(&self, kind: Kind, id: &str) -> bool {
        self.get(kind, id).is_some()
    }

    /// Every descriptor, sorted by (kind, id).
    pub fn values(&self) -> impl Iterator<Item = &Descriptor> {
        self.set.iter().map(|e| &e.0)
    }

    /// Put `d`, replacing the descriptor of the same kind and id; returns the one replaced.
    pub fn insert(&mut self, d: Descriptor) -> Option<Descriptor> {
        self.set.insert(Entry(d)).map(|e| e.0)
    }

    pub fn remove(&mut self, kind: Kind, id: &str) -> Option<Descriptor> {
        self.set
            .remove(descriptor::key(kind, id).as_slice())
            .map(|e| e.0)
    }

    /// Descriptors sorted by (kind, id) from `start` on (`start` is a key `[kind][id]`).
    fn starting_at(&self, start: Bound<&[u8]>) -> impl Iterator<Item = &Descriptor> {
        self.set
            .range::<_, [u8]>((start, Bound::Unbounded))
            .map(|e| &e.0)
    }

    /// Whether any descriptor sorts after `(kind, id)`.
    pub fn any_after(&self, kind: Kind, id: &str) -> bool {
        let k = descriptor::key(kind, id);
        self.starting_at(Bound::Excluded(k.as_slice()))
            .next()
            .is_some()
    }
}

/// Apply `ops` as version `version`. A delete of an absent descriptor is `409 conflict`, and
/// then nothing is applied (the input map is untouched: it is persistent).
pub fn apply(current: &Descriptors, ops: &[Op], version: u64) -> Result<Descriptors, ApiError> {
    let mut next = current.clone();
    for op in ops {
        match op {
            Op::Put { kind, id, body } => {
                next.insert(Descriptor::new(*kind, id, version, body.get()));
            }
            Op::Delete { kind, id } => {
                if next.remove(*kind, id).is_none() {
                    return Err(ApiError::conflict(format!(
                        "delete of {}/{id}: no such descriptor",
                        kind.as_str()
                    )));
                }
            }
            // The signer set is not a descriptor: its history is kept beside the state.
            Op::SetSigners { .. } => {}
        }
    }
    Ok(next)
}

/// One page of a listing sorted by (kind, id): descriptors of `kind` (all kinds if `None`)
/// with id strictly after `after`, at most `limit`. Returns the page and whether more follow.
pub fn page(
    descriptors: &Descriptors,
    kind: Option<Kind>,
    after: Option<&str>,
    limit: usize,
) -> (Vec<Descriptor>, bool) {
    let start_key: Option<(Vec<u8>, bool)> = match (kind, after) {
        (Some(k), Some(a)) => Some((descriptor::key(k, a), false)),
        (Some(k), None) => Some((descriptor::key(k, ""), true)),
        (None, _) => None,
    };
    let start = match &start_key {
        Some((k, true)) => Bound::Included(k.as_slice()),
        Some((k, false)) => Bound::Excluded(k.as_slice()),
        None => Bound::Unbounded,
    };
    let mut out = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    for d in descriptors.starting_at(start) {
        if kind.is_some_and(|k| d.kind() != k) {
            break;
        }
        if out.len() == limit {
            more = true;
            break;
        }
        out.push(d.clone());
    }
    (out, more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use std::sync::Arc;

    fn put(kind: Kind, id: &str) -> Op {
        Op::Put {
            kind,
            id: id.into(),
            body: Arc::from(RawValue::from_string("{}".into()).unwrap()),
        }
    }

    #[test]
    fn apply_puts_and_deletes_without_touching_the_input() {
        let s0 = Descriptors::new();
        let s1 = apply(&s0, &[put(Kind::Node, "a"), put(Kind::Node, "b")], 1).unwrap();
        assert_eq!(s1.len(), 2);
        assert!(s0.is_empty());
        let s2 = apply(
            &s1,
            &[Op::Delete {
                kind: Kind::Node,
                id: "a".into(),
            }],
            2,
        )
        .unwrap();
        assert_eq!(s2.len(), 1);
        assert_eq!(s1.len(), 2);
    }

    #[test]
    fn a_delete_of_an_absent_descriptor_conflicts_and_applies_nothing() {
        let s1 = apply(&Descriptors::new(), &[put(Kind::Node, "a")], 1).unwrap();
        let err = apply(
            &s1,
            &[
                put(Kind::Node, "b"),
                Op::Delete {
                    kind: Kind::Service,
                    id: "a".into(),
                },
            ],
            2,
        )
        .unwrap_err();
        assert_eq!(err.code, crate::error::Code::Conflict);
        assert_eq!(s1.len(), 1);
    }

    #[test]
    fn pages_follow_kind_then_id_with_a_cursor() {
        let ops: Vec<Op> = ["c", "a", "b"]
            .iter()
            .map(|id| put(Kind::Service, id))
            .chain([put(Kind::Node, "z")])
            .collect();
        let s = apply(&Descriptors::new(), &ops, 1).unwrap();
        let (p, more) = page(&s, Some(Kind::Service), None, 2);
        assert_eq!(p.iter().map(|d| d.id()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(more);
        let (p, more) = page(&s, Some(Kind::Service), Some("b"), 2);
        assert_eq!(p.iter().map(|d| d.id()).collect::<Vec<_>>(), ["c"]);
        assert!(!more);
        let (p, _) = page(&s, None, None, 10);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].kind(), Kind::Node);
    }
}
