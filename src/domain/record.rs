//! Commit records: what one version of the chain is, in the JSON form served at
//! `/registry/{version}` and `/registry/log` and stored in the log.

use super::chain;
use super::dsse;
use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One committed version. Genesis (version 0) has no proposal and no signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitRecord {
    pub version: u64,
    pub hash: String,
    pub prev_hash: String,
    /// Milliseconds since the Unix epoch; not covered by the hash.
    pub committed_at_ms: i64,
    pub proposal_id: String,
    /// The exact proposal bytes.
    pub payload: Arc<[u8]>,
    /// (keyid, standard base64 signature), sorted by keyid.
    pub signatures: Vec<(String, String)>,
    /// Descriptors in the state at this version (not covered by the hash; lets stream replay
    /// rebuild each version's head without the state).
    pub descriptors: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureJson {
    pub keyid: String,
    pub sig: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
struct EnvelopeJson {
    payload_type: String,
    payload: String,
    signatures: Vec<SignatureJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordJson {
    version: u64,
    hash: String,
    prev_hash: String,
    committed_at: String,
    #[serde(default)]
    descriptors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proposal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    envelope: Option<EnvelopeJson>,
}

/// The head summary served at `/registry/head` and in stream events.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeadJson {
    pub version: u64,
    pub hash: String,
    pub prev_hash: String,
    pub committed_at: String,
    pub descriptors: u64,
}

impl CommitRecord {
    /// The genesis record of a registry (committed_at is the Unix epoch: genesis has no time).
    pub fn genesis(registry_id: &str) -> CommitRecord {
        CommitRecord {
            version: 0,
            hash: chain::genesis_hash(registry_id),
            prev_hash: chain::ZERO_HASH.to_string(),
            committed_at_ms: 0,
            proposal_id: String::new(),
            payload: Arc::from(&[][..]),
            signatures: Vec::new(),
            descriptors: 0,
        }
    }

    /// Does this record's hash follow from `prev` and its own contents?
    pub fn verify_link(&self, registry_id: &str, prev_hash: &str) -> bool {
        if self.version == 0 {
            return self.prev_hash == chain::ZERO_HASH
                && self.hash == chain::genesis_hash(registry_id);
        }
        self.prev_hash == prev_hash
            && super::sha256_hex(&self.payload) == self.proposal_id
            && self.hash
                == chain::commit_hash(
                    registry_id,
                    self.version,
                    prev_hash,
                    &self.proposal_id,
                    &self.signatures,
                )
    }

    pub fn head_json(&self) -> HeadJson {
        HeadJson {
            version: self.version,
            hash: self.hash.clone(),
            prev_hash: self.prev_hash.clone(),
            committed_at: crate::clock::rfc3339_ms(self.committed_at_ms),
            descriptors: self.descriptors,
        }
    }

    fn to_record_json(&self) -> RecordJson {
        let genesis = self.version == 0;
        RecordJson {
            version: self.version,
            hash: self.hash.clone(),
            prev_hash: self.prev_hash.clone(),
            committed_at: crate::clock::rfc3339_ms(self.committed_at_ms),
            descriptors: self.descriptors,
            proposal_id: (!genesis).then(|| self.proposal_id.clone()),
            envelope: (!genesis).then(|| EnvelopeJson {
                payload_type: dsse::PAYLOAD_TYPE.to_string(),
                payload: dsse::b64(&self.payload),
                signatures: self
                    .signatures
                    .iter()
                    .map(|(keyid, sig)| SignatureJson {
                        keyid: keyid.clone(),
                        sig: sig.clone(),
                    })
                    .collect(),
            }),
        }
    }

    /// The JSON served at `/registry/{version}`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_record_json()).expect("a record serializes")
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self.to_record_json()).expect("a record serializes")
    }

    /// Parse the JSON form back (log replay, `ronctl registry verify`). Checks shape, not the
    /// chain: that is [`CommitRecord::verify_link`]'s job.
    pub fn from_json(bytes: &[u8]) -> Result<CommitRecord, ApiError> {
        let raw: RecordJson = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("record is not valid JSON: {e}")))?;
        Self::from_record_json(raw)
    }

    pub fn from_value(value: serde_json::Value) -> Result<CommitRecord, ApiError> {
        let raw: RecordJson = serde_json::from_value(value)
            .map_err(|e| ApiError::bad_request(format!("record is not valid: {e}")))?;
        Self::from_record_json(raw)
    }

    fn from_record_json(raw: RecordJson) -> Result<CommitRecord, ApiError> {
        let committed_at_ms = time::OffsetDateTime::parse(
            &raw.committed_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| ApiError::bad_request("record committed_at is not RFC 3339"))?;
        let (proposal_id, payload, signatures) = match (raw.proposal_id, raw.envelope) {
            (None, None) if raw.version == 0 => (String::new(), Vec::new(), Vec::new()),
            (Some(id), Some(env)) if raw.version > 0 => {
                if env.payload_type != dsse::PAYLOAD_TYPE {
                    return Err(ApiError::bad_request("record has a foreign payloadType"));
                }
                let payload = dsse::unb64(&env.payload)
                    .ok_or_else(|| ApiError::bad_request("record payload is not base64"))?;
                let sigs = env
                    .signatures
                    .into_iter()
                    .map(|s| (s.keyid, s.sig))
                    .collect();
                (id, payload, sigs)
            }
            _ => {
                return Err(ApiError::bad_request(
                    "record must have proposal_id and envelope exactly when version > 0",
                ))
            }
        };
        Ok(CommitRecord {
            version: raw.version,
            hash: raw.hash,
            prev_hash: raw.prev_hash,
            committed_at_ms,
            proposal_id,
            payload: payload.into(),
            signatures,
            descriptors: raw.descriptors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json() {
        let g = CommitRecord::genesis("r");
        assert_eq!(CommitRecord::from_json(&g.to_json()).unwrap(), g);
        assert!(g.verify_link("r", ""));
        assert!(!g.verify_link("other", ""));
        let payload: Arc<[u8]> = Arc::from(&b"{\"p\":1}"[..]);
        let pid = crate::domain::sha256_hex(&payload);
        let sigs = vec![("a".to_string(), dsse::encode_sig(&[7u8; 64]))];
        let rec = CommitRecord {
            version: 1,
            hash: chain::commit_hash("r", 1, &g.hash, &pid, &sigs),
            prev_hash: g.hash.clone(),
            committed_at_ms: 1_767_225_600_123,
            proposal_id: pid,
            payload,
            signatures: sigs,
            descriptors: 3,
        };
        let back = CommitRecord::from_json(&rec.to_json()).unwrap();
        assert_eq!(back, rec);
        assert!(back.verify_link("r", &g.hash));
        let mut tampered = back.clone();
        tampered.payload = Arc::from(&b"{\"p\":2}"[..]);
        assert!(!tampered.verify_link("r", &g.hash));
    }
}
