//! The registry state: descriptors keyed by (kind, id), in a persistent ordered map so that
//! version V+1 shares structure with V (publishing costs O(ops · log n), not O(n)).

use super::descriptor::{Descriptor, Key, Kind};
use super::proposal::Op;
use crate::error::ApiError;
use imbl::OrdMap;
use std::sync::Arc;

pub type Descriptors = OrdMap<Key, Arc<Descriptor>>;

/// Apply `ops` as version `version`. A delete of an absent descriptor is `409 conflict`, and
/// then nothing is applied (the input map is untouched: it is persistent).
pub fn apply(current: &Descriptors, ops: &[Op], version: u64) -> Result<Descriptors, ApiError> {
    let mut next = current.clone();
    for op in ops {
        match op {
            Op::Put { kind, id, body } => {
                next.insert(
                    (*kind, id.clone()),
                    Arc::new(Descriptor {
                        kind: *kind,
                        id: id.clone(),
                        version,
                        body: body.clone(),
                    }),
                );
            }
            Op::Delete { kind, id } => {
                if next.remove(&(*kind, id.clone())).is_none() {
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
) -> (Vec<Arc<Descriptor>>, bool) {
    use std::ops::Bound;
    let start: Bound<Key> = match (kind, after) {
        (Some(k), Some(a)) => Bound::Excluded((k, Arc::from(a))),
        (Some(k), None) => Bound::Included((k, Arc::from(""))),
        (None, _) => Bound::Unbounded,
    };
    let mut out = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    for (key, d) in descriptors.range((start, Bound::Unbounded)) {
        if kind.is_some_and(|k| key.0 != k) {
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
        assert_eq!(p.iter().map(|d| &*d.id).collect::<Vec<_>>(), ["a", "b"]);
        assert!(more);
        let (p, more) = page(&s, Some(Kind::Service), Some("b"), 2);
        assert_eq!(p.iter().map(|d| &*d.id).collect::<Vec<_>>(), ["c"]);
        assert!(!more);
        let (p, _) = page(&s, None, None, 10);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].kind, Kind::Node);
    }
}
