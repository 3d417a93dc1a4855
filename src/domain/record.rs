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
        self.encode().0
    }

    /// This record's JSON (exactly [`CommitRecord::to_json`]'s bytes) and, from the same
    /// encoding, the `/registry/head` body (exactly `serde_json::to_vec(&self.head_json())`):
    /// the writer's commit step encodes a record once for the log frame and the head.
    ///
    /// The head's fields are the record's first five, in the same order, so the head body is
    /// the record's prefix closed with `}`. Written by hand rather than through serde's
    /// intermediate structs (a clone of every string and a base64 `String` per commit); the
    /// unit tests hold both byte-for-byte to serde's output. Genesis (its signer set) goes
    /// through serde: it is encoded once per registry.
    pub fn encode(&self) -> (Vec<u8>, Arc<[u8]>) {
        if self.version == 0 {
            let json = serde_json::to_vec(&self.to_record_json()).expect("a record serializes");
            let head = serde_json::to_vec(&self.head_json()).expect("head serializes");
            return (json, head.into());
        }
        use base64::Engine;
        let payload_b64 = base64::encoded_len(self.payload.len(), true).unwrap_or(0);
        let sigs: usize = self
            .signatures
            .iter()
            .map(|(k, s)| k.len() + s.len() + 24)
            .sum();
        let mut out = Vec::with_capacity(
            300 + self.hash.len()
                + self.prev_hash.len()
                + self.proposal_id.len()
                + payload_b64
                + sigs,
        );
        // Each string escaped exactly as serde_json would inside the struct.
        let string = super::write_json_str;
        out.extend_from_slice(b"{\"version\":");
        super::write_u64(&mut out, self.version);
        out.extend_from_slice(b",\"hash\":");
        string(&mut out, &self.hash);
        out.extend_from_slice(b",\"prev_hash\":");
        string(&mut out, &self.prev_hash);
        out.extend_from_slice(b",\"committed_at\":");
        // RFC 3339 text needs no escaping.
        out.push(b'"');
        crate::clock::write_rfc3339_ms(&mut out, self.committed_at_ms);
        out.push(b'"');
        out.extend_from_slice(b",\"descriptors\":");
        super::write_u64(&mut out, self.descriptors);
        let head_len = out.len();
        out.extend_from_slice(b",\"proposal_id\":");
        string(&mut out, &self.proposal_id);
        out.extend_from_slice(b",\"envelope\":{\"payloadType\":");
        string(&mut out, dsse::PAYLOAD_TYPE);
        out.extend_from_slice(b",\"payload\":\"");
        // Standard base64 needs no JSON escaping: encoded straight into the buffer.
        let at = out.len();
        out.resize(at + payload_b64, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(&self.payload, &mut out[at..])
            .expect("sized by encoded_len");
        out.truncate(at + written);
        out.extend_from_slice(b"\",\"signatures\":[");
        for (i, (keyid, sig)) in self.signatures.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"keyid\":");
            string(&mut out, keyid);
            out.extend_from_slice(b",\"sig\":");
            string(&mut out, sig);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}}");
        let mut head = Vec::with_capacity(head_len + 1);
        head.extend_from_slice(&out[..head_len]);
        head.push(b'}');
        (out, head.into())
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

    /// The hand-written encoding is serde's, byte for byte, record and head alike.
    fn assert_same_as_serde(rec: &CommitRecord) {
        let (json, head) = rec.encode();
        let want = serde_json::to_vec(&rec.to_record_json()).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            String::from_utf8(want).unwrap()
        );
        let want = serde_json::to_vec(&rec.head_json()).unwrap();
        assert_eq!(&*head, &want[..]);
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
        assert_same_as_serde(&g);
        assert_same_as_serde(&rec);
        let mut odd = rec.clone();
        // Strings that need escaping, several signatures, an empty payload, a negative time.
        odd.signatures = vec![
            ("a\"b\\c\u{1}é".to_string(), "s1".to_string()),
            ("z".to_string(), "s/2+=".to_string()),
        ];
        odd.payload = Arc::from(&b""[..]);
        odd.committed_at_ms = -1;
        assert_same_as_serde(&odd);
        odd.signatures.clear();
        odd.payload = Arc::from(&[0xffu8; 1000][..]);
        odd.committed_at_ms = 1_767_225_600_100;
        assert_same_as_serde(&odd);
        let back = CommitRecord::from_json(&rec.to_json()).unwrap();
        assert_eq!(back, rec);
        assert!(back.verify_link("r", &g.hash));
        let mut tampered = back.clone();
        tampered.payload = Arc::from(&b"{\"p\":2}"[..]);
        assert!(!tampered.verify_link("r", &g.hash));
    }
}
