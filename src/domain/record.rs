//! Commit records: what one version of the chain is, in the JSON form served at
//! `/registry/{version}` and `/registry/log` and stored in the log.

use super::chain;
use super::dsse;
use super::signers::{SignerSet, SignerSetJson};
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
    /// Genesis only (docs/FORMATS.md, genesis v2): the initial signer set, fixed into `hash`. `None`
    /// for every later version.
    pub genesis_signers: Option<Arc<SignerSet>>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signers: Option<SignerSetJson>,
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
    /// The genesis (v2) record of a registry whose initial signer set is `signers`
    /// (committed_at is the Unix epoch: genesis has no time).
    pub fn genesis(registry_id: &str, signers: Arc<SignerSet>) -> CommitRecord {
        CommitRecord {
            version: 0,
            hash: chain::genesis_hash_v2(registry_id, &signers.digest()),
            prev_hash: chain::ZERO_HASH.to_string(),
            committed_at_ms: 0,
            proposal_id: String::new(),
            payload: Arc::from(&[][..]),
            signatures: Vec::new(),
            descriptors: 0,
            genesis_signers: Some(signers),
        }
    }

    /// Does this record's hash follow from `prev` and its own contents?
    pub fn verify_link(&self, registry_id: &str, prev_hash: &str) -> bool {
        if self.version == 0 {
            // Only genesis v2 is a genesis here: a v1 genesis (no signer set) links nothing.
            return self.prev_hash == chain::ZERO_HASH
                && self.genesis_signers.as_ref().is_some_and(|set| {
                    self.hash == chain::genesis_hash_v2(registry_id, &set.digest())
                });
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
            signers: self
                .genesis_signers
                .as_ref()
                .map(|s| s.to_json_form_as_listed()),
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
        let genesis_signers = match (raw.version, raw.signers) {
            (0, Some(form)) => {
                Some(Arc::new(SignerSet::from_json_form(&form).map_err(|e| {
                    ApiError::bad_request(format!("genesis record signers: {e}"))
                })?))
            }
            (0, None) => None,
            (_, Some(_)) => {
                return Err(ApiError::bad_request(
                    "only the genesis record carries signers",
                ))
            }
            (_, None) => None,
        };
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
            genesis_signers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> Arc<SignerSet> {
        let key = |seed: u8, keyid: &str| crate::domain::signers::SignerKey {
            keyid: keyid.to_string(),
            public: ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .into(),
            not_before: None,
            not_after: Some(1_900_000_000),
        };
        Arc::new(SignerSet::new(1, vec![key(1, "a"), key(2, "b")]).unwrap())
    }

    #[test]
    fn records_round_trip_through_json() {
        let g = CommitRecord::genesis("r", set());
        let json: serde_json::Value = serde_json::from_slice(&g.to_json()).unwrap();
        assert_eq!(json["signers"]["threshold"], 1);
        assert_eq!(
            json["signers"]["keys"][0]["not_before"],
            serde_json::Value::Null
        );
        assert_eq!(CommitRecord::from_json(&g.to_json()).unwrap(), g);
        assert!(g.verify_link("r", ""));
        assert!(!g.verify_link("other", ""));
        assert_eq!(
            g.hash,
            chain::genesis_hash_v2("r", &set().digest()),
            "genesis is v2"
        );
        // A genesis without its signer set (v1) links nothing.
        let mut v1 = g.clone();
        v1.genesis_signers = None;
        v1.hash = chain::genesis_hash("r");
        assert!(!v1.verify_link("r", ""));
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
            genesis_signers: None,
        };
        let back = CommitRecord::from_json(&rec.to_json()).unwrap();
        assert_eq!(back, rec);
        assert!(back.verify_link("r", &g.hash));
        let mut tampered = back.clone();
        tampered.payload = Arc::from(&b"{\"p\":2}"[..]);
        assert!(!tampered.verify_link("r", &g.hash));
    }
}
