//! Descriptors: `{"kind": K, "id": ID, "body": OBJECT}` (docs/FORMATS.md).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

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
#[derive(Clone, Debug)]
pub struct Descriptor {
    pub kind: Kind,
    pub id: Arc<str>,
    /// The version that last put it.
    pub version: u64,
    pub body: Arc<RawValue>,
}

/// The key descriptors are stored and listed under: (kind, id).
pub type Key = (Kind, Arc<str>);

#[derive(Serialize)]
struct DescriptorJson<'a> {
    kind: Kind,
    id: &'a str,
    version: u64,
    body: &'a RawValue,
}

impl Descriptor {
    /// `{"kind", "id", "version", "body"}` as served by the read plane.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&DescriptorJson {
            kind: self.kind,
            id: &self.id,
            version: self.version,
            body: &self.body,
        })
        .expect("a descriptor always serializes")
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": self.kind,
            "id": &*self.id,
            "version": self.version,
            "body": &*self.body,
        })
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

    #[test]
    fn kinds_round_trip() {
        for k in [Kind::Node, Kind::Service, Kind::Region] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("Node"), None);
    }
}
