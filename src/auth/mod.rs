//! Capabilities (docs/ARCHITECTURE.md "Capabilities"): macaroon bearer tokens, their caveats,
//! and the root keys that sign them. [`authorize`] takes a token's text, the key ring and a request, and says allowed, 401 or
//! 403; it does no I/O and reads no clock (the keys file loader in [`keys`] is the one edge).
//!
//! Why hand-written: the token format must be exactly libmacaroons' V2 binary format so that
//! libmacaroons and pymacaroons can mint, attenuate and inspect the same tokens, and there is no
//! maintained Rust macaroon crate to get it from: the `macaroon` crate depends on `sodiumoxide`,
//! which is deprecated and unmaintained (and links libsodium for primitives we do not need).
//! What a first-party-only verifier needs is small — HMAC-SHA256 (the `hmac` and `sha2` crates),
//! a varint, and a strict parser of a five-production grammar — about 300 lines that we can
//! bound (token size, caveat count, field length) and test against pymacaroons' own output
//! (`tests/vectors/macaroons_vectors.py`, `tests/macaroon_vectors.rs`).
//!
//! Invariant: no error, message or `Debug` output of this module contains a token, a signature
//! or a root secret. 401-class errors mean "not a credential we accept now" (malformed, unknown
//! or retired root key, bad signature, unreadable caveat, expired); 403-class means a valid
//! credential whose caveats do not cover this request.
//!
//! Order of checks in [`authorize`], each refusing with the first failure: parse the token
//! (bounded), read the identifier `v1:<key id>:<nonce>`, find the key, verify the signature
//! chain in constant time, refuse a key past its `not_after`, then check every caveat
//! ([`caveats::check`]). The signature is verified before the key's age is looked at, so a
//! forged token learns nothing about which keys are retired.

pub mod caveats;
pub mod gate;
pub mod keys;
pub mod macaroon;
pub mod tool;

pub use caveats::{Action, OpRef, Request};
pub use gate::{Gate, PendingOps};
pub use keys::{KeyRing, KeysError, RootKey};
pub use macaroon::{FormatError, Macaroon};

/// Why a request's token does not authorize it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token at all (for the HTTP layer).
    Missing,
    Malformed(FormatError),
    /// The identifier is not `v1:<key id>:<nonce>`.
    BadIdentifier,
    UnknownKey {
        key_id: String,
    },
    /// The key exists but is past its `not_after`.
    KeyRetired {
        key_id: String,
    },
    BadSignature,
    /// A caveat that is not UTF-8 `name = value`, has an unknown name or a malformed value.
    BadCaveat(String),
    /// An `expires` caveat has passed.
    Expired,
    Forbidden(Denial),
}

/// Which caveat of a valid token does not cover the request (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    Registry {
        allowed: String,
    },
    Scope {
        action: Action,
    },
    Kind {
        allowed: String,
        op_id: String,
    },
    IdPrefix {
        allowed: String,
        op_id: String,
    },
    /// A `kind`/`id_prefix` caveat on a request without ops (other than a read).
    NoOps {
        caveat: &'static str,
        action: Action,
    },
}

impl AuthError {
    /// The HTTP status: 401 (get a valid token) or 403 (this token cannot do this).
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Forbidden(_) => 403,
            _ => 401,
        }
    }

    /// A short fixed label, e.g. for `auth_failures_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::BadIdentifier => "bad_identifier",
            AuthError::UnknownKey { .. } => "unknown_key",
            AuthError::KeyRetired { .. } => "key_retired",
            AuthError::BadSignature => "bad_signature",
            AuthError::BadCaveat(_) => "bad_caveat",
            AuthError::Expired => "expired",
            AuthError::Forbidden(Denial::Registry { .. }) => "registry",
            AuthError::Forbidden(Denial::Scope { .. }) => "scope",
            AuthError::Forbidden(Denial::Kind { .. }) => "kind",
            AuthError::Forbidden(Denial::IdPrefix { .. }) => "id_prefix",
            AuthError::Forbidden(Denial::NoOps { .. }) => "no_ops",
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => write!(f, "no bearer token"),
            AuthError::Malformed(e) => write!(f, "malformed token: {e}"),
            AuthError::BadIdentifier => {
                write!(f, "token identifier is not v1:<key id>:<nonce>")
            }
            AuthError::UnknownKey { key_id } => {
                write!(f, "token names unknown root key \"{key_id}\"")
            }
            AuthError::KeyRetired { key_id } => {
                write!(f, "root key \"{key_id}\" is past its not_after")
            }
            AuthError::BadSignature => write!(f, "token signature does not verify"),
            AuthError::BadCaveat(why) => write!(f, "token refused: {why}"),
            AuthError::Expired => write!(f, "token has expired"),
            AuthError::Forbidden(d) => match d {
                Denial::Registry { allowed } => {
                    write!(f, "token is for registry \"{allowed}\", not this one")
                }
                Denial::Scope { action } => write!(f, "token scope does not allow {action}"),
                Denial::Kind { allowed, op_id } => {
                    write!(
                        f,
                        "token allows kind {allowed} only; op \"{op_id}\" is not one"
                    )
                }
                Denial::IdPrefix { allowed, op_id } => {
                    write!(
                        f,
                        "token allows ids starting \"{allowed}\" only, not \"{op_id}\""
                    )
                }
                Denial::NoOps { caveat, action } => {
                    write!(
                        f,
                        "token has a {caveat} caveat, which {action} cannot satisfy"
                    )
                }
            },
        }
    }
}

impl std::error::Error for AuthError {}

/// The key id of a `v1:<key id>:<nonce>` identifier; the nonce must not be empty.
pub fn identifier_key_id(identifier: &[u8]) -> Option<&str> {
    let rest = identifier.strip_prefix(b"v1:")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let (id, nonce) = (&rest[..colon], &rest[colon + 1..]);
    let id = std::str::from_utf8(id).ok()?;
    (keys::valid_key_id(id) && !nonce.is_empty()).then_some(id)
}

/// What a successful [`authorize`] learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub key_id: String,
}

/// Whether `token` (the bearer text) authorizes `req` under `keys`; see the module doc for the
/// order of checks.
///
/// A token whose signature this thread already verified under the same ring (same
/// [`KeyRing::generation`]) skips the decoding and the HMAC chain — the cost that dominates
/// (docs/PERFORMANCE.md, "TLS" and the criterion `auth` group) — and is judged again on
/// everything that can change with time or request: the key's `not_after` and every caveat.
/// Only tokens whose signature verified are remembered, so a client sending garbage or forged
/// tokens gets no cache entries and pays the full check every time.
pub fn authorize(token: &str, keys: &KeyRing, req: &Request<'_>) -> Result<Verified, AuthError> {
    if let Some(judged) = verified::judge_cached(token, keys, req) {
        return judged;
    }
    let m = Macaroon::from_base64(token).map_err(AuthError::Malformed)?;
    let key_id = identifier_key_id(&m.identifier).ok_or(AuthError::BadIdentifier)?;
    let key = keys.get(key_id).ok_or_else(|| AuthError::UnknownKey {
        key_id: key_id.to_string(),
    })?;
    if !m.verify_signature(key.secret()) {
        return Err(AuthError::BadSignature);
    }
    if !key.live_at(req.now_unix_s) {
        return Err(AuthError::KeyRetired {
            key_id: key.id.clone(),
        });
    }
    // Remembered read: a caveat that does not read fails every request alike, so such a
    // token is not remembered and pays the full check each time.
    let caveats = caveats::parse_all(&m.caveats)?;
    let judged = caveats::check_parsed(&caveats, req).map(|()| Verified {
        key_id: key.id.clone(),
    });
    verified::remember(token, keys, key_id, caveats);
    judged
}

/// The checks after the signature, for a remembered token: the key's age, then every caveat.
fn judge(
    keys: &KeyRing,
    key_id: &str,
    caveats: &[caveats::Caveat],
    req: &Request<'_>,
) -> Result<Verified, AuthError> {
    let key = keys.get(key_id).ok_or_else(|| AuthError::UnknownKey {
        key_id: key_id.to_string(),
    })?;
    if !key.live_at(req.now_unix_s) {
        return Err(AuthError::KeyRetired {
            key_id: key.id.clone(),
        });
    }
    caveats::check_parsed(caveats, req)?;
    Ok(Verified {
        key_id: key.id.clone(),
    })
}

/// Tokens whose signature this thread verified, per ring generation. Thread-local: the HTTP
/// workers are the callers and share nothing, so no lock is taken on the request path.
/// Bounded: at most [`VERIFIED_TOKENS_MAX`] tokens of at most [`VERIFIED_TOKEN_CHARS_MAX`]
/// characters each (about 4 MiB per thread at worst); when full it starts over. The tokens
/// are bearer credentials already present in request buffers; they are never logged from here.
mod verified {
    use super::caveats::Caveat;
    use super::{judge, AuthError, KeyRing, Request, Verified};
    use std::cell::RefCell;
    use std::collections::HashMap;

    pub(super) const VERIFIED_TOKENS_MAX: usize = 1024;
    pub(super) const VERIFIED_TOKEN_CHARS_MAX: usize = 4096;

    struct Entry {
        key_id: Box<str>,
        /// Read once: a request judges them without parsing text or times again.
        caveats: Vec<Caveat>,
    }

    #[derive(Default)]
    struct Cache {
        generation: u64,
        tokens: HashMap<Box<str>, Entry>,
    }

    thread_local! {
        static VERIFIED: RefCell<Cache> = RefCell::new(Cache::default());
    }

    /// `Some(judgement)` when `token` was verified under `keys` on this thread.
    pub(super) fn judge_cached(
        token: &str,
        keys: &KeyRing,
        req: &Request<'_>,
    ) -> Option<Result<Verified, AuthError>> {
        VERIFIED.with(|v| {
            let v = v.borrow();
            if v.generation != keys.generation() {
                return None;
            }
            let e = v.tokens.get(token)?;
            Some(judge(keys, &e.key_id, &e.caveats, req))
        })
    }

    /// Remember that `token`'s signature verified under `keys` with `key_id`.
    pub(super) fn remember(token: &str, keys: &KeyRing, key_id: &str, caveats: Vec<Caveat>) {
        if token.len() > VERIFIED_TOKEN_CHARS_MAX {
            return;
        }
        VERIFIED.with(|v| {
            let mut v = v.borrow_mut();
            if v.generation != keys.generation() || v.tokens.len() >= VERIFIED_TOKENS_MAX {
                v.tokens.clear();
                v.generation = keys.generation();
            }
            v.tokens.insert(
                token.into(),
                Entry {
                    key_id: key_id.into(),
                    caveats,
                },
            );
        });
    }

    #[cfg(test)]
    pub(super) fn cached_tokens() -> usize {
        VERIFIED.with(|v| v.borrow().tokens.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600;

    fn ring() -> KeyRing {
        KeyRing::from_keys(vec![
            RootKey::new("old", [1; 32], Some(NOW)).unwrap(),
            RootKey::new("new", [2; 32], None).unwrap(),
        ])
        .unwrap()
    }

    fn req(action: Action) -> Request<'static> {
        Request {
            action,
            registry_id: "reg",
            now_unix_s: NOW,
            ops: None,
        }
    }

    fn outcome(token: &str, r: &Request<'_>) -> String {
        match authorize(token, &ring(), r) {
            Ok(v) => format!("ok {}", v.key_id),
            Err(e) => format!("{} {}", e.status(), e.reason()),
        }
    }

    #[test]
    fn identifiers_must_be_v1_with_a_valid_key_id_and_a_nonce() {
        assert_eq!(identifier_key_id(b"v1:k1:abc"), Some("k1"));
        assert_eq!(identifier_key_id(b"v1:k1:a:b"), Some("k1"));
        for bad in [
            &b"v1:k1:"[..],
            b"v1:k1",
            b"v2:k1:n",
            b"v1::n",
            b"k1:n",
            b"v1:k 1:n",
            b"",
        ] {
            assert_eq!(
                identifier_key_id(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_verified_token_is_judged_again_on_time_caveats_and_ring() {
        let ring = ring();
        let mut m = ring.get("new").unwrap().mint(&[7; 16]);
        m.add_first_party_caveat(b"scope = read").unwrap();
        m.add_first_party_caveat(b"expires = 2026-01-01T00:00:00Z")
            .unwrap();
        let token = m.to_base64();
        let at = |now: i64, action| Request {
            now_unix_s: now,
            ..req(action)
        };
        // Verified once (remembered), then every later judgement is made afresh.
        assert!(authorize(&token, &ring, &at(NOW - 10, Action::Read)).is_ok());
        assert!(verified::cached_tokens() >= 1);
        assert!(authorize(&token, &ring, &at(NOW - 10, Action::Read)).is_ok());
        let scope = authorize(&token, &ring, &at(NOW - 10, Action::Admin)).unwrap_err();
        assert_eq!(scope.reason(), "scope");
        // `expires` is 2026-01-01T00:00:00Z = NOW: one second later it has passed.
        let late = authorize(&token, &ring, &at(NOW + 1, Action::Read)).unwrap_err();
        assert_eq!(late.reason(), "expired");
        // A reloaded ring without the key: the remembered verification does not count.
        let reloaded =
            KeyRing::from_keys(vec![RootKey::new("old", [1; 32], None).unwrap()]).unwrap();
        let gone = authorize(&token, &reloaded, &at(NOW - 10, Action::Read)).unwrap_err();
        assert_eq!(gone.reason(), "unknown_key");
        // A ring with the same id but another secret: the signature is checked again.
        let swapped =
            KeyRing::from_keys(vec![RootKey::new("new", [9; 32], None).unwrap()]).unwrap();
        let forged = authorize(&token, &swapped, &at(NOW - 10, Action::Read)).unwrap_err();
        assert_eq!(forged.reason(), "bad_signature");
    }

    #[test]
    fn only_verified_tokens_are_remembered_and_the_cache_is_bounded() {
        let ring = ring();
        let new = ring.get("new").unwrap();
        let before = verified::cached_tokens();
        let mut tampered = new.mint(&[5; 16]);
        tampered.signature[0] ^= 1;
        for _ in 0..3 {
            assert!(authorize(&tampered.to_base64(), &ring, &req(Action::Read)).is_err());
        }
        assert_eq!(verified::cached_tokens(), before);
        for i in 0..(verified::VERIFIED_TOKENS_MAX + 10) {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let t = new.mint(&nonce).to_base64();
            assert!(authorize(&t, &ring, &req(Action::Read)).is_ok());
            assert!(verified::cached_tokens() <= verified::VERIFIED_TOKENS_MAX);
        }
    }

    #[test]
    fn authorize_walks_the_checks_in_order() {
        let ring = ring();
        let new = ring.get("new").unwrap();
        let mut m = new.mint(&[9; 16]);
        m.add_first_party_caveat(b"scope = read,propose").unwrap();
        let token = m.to_base64();
        assert_eq!(outcome(&token, &req(Action::Read)), "ok new");
        assert_eq!(outcome(&token, &req(Action::Admin)), "403 scope");
        assert_eq!(outcome("%%%", &req(Action::Read)), "401 malformed");

        let old = ring.get("old").unwrap();
        let old_token = old.mint(&[1; 16]).to_base64();
        let before = Request {
            now_unix_s: NOW - 1,
            ..req(Action::Admin)
        };
        assert_eq!(outcome(&old_token, &before), "ok old");
        assert_eq!(outcome(&old_token, &req(Action::Admin)), "401 key_retired");

        // Same identifier, signed with another secret.
        let forged = Macaroon::mint(&[3; 32], &m.identifier).to_base64();
        assert_eq!(outcome(&forged, &req(Action::Read)), "401 bad_signature");
        let stranger = RootKey::new("gone", [2; 32], None)
            .unwrap()
            .mint(&[0; 16])
            .to_base64();
        assert_eq!(outcome(&stranger, &req(Action::Read)), "401 unknown_key");
        let odd = Macaroon::mint(&[2; 32], b"not-v1").to_base64();
        assert_eq!(outcome(&odd, &req(Action::Read)), "401 bad_identifier");
    }

    #[test]
    fn no_error_message_contains_the_token_or_the_secret() {
        let ring = ring();
        let mut m = ring.get("new").unwrap().mint(&[9; 16]);
        m.add_first_party_caveat(b"scope = read").unwrap();
        let token = m.to_base64();
        let secret_hex = hex::encode([2u8; 32]);
        let mut tampered = m.clone();
        tampered.signature[0] ^= 1;
        for (t, action) in [
            (token.clone(), Action::Admin),
            (tampered.to_base64(), Action::Read),
            (format!("{token}x"), Action::Read),
        ] {
            let msg = authorize(&t, &ring, &req(action)).unwrap_err().to_string();
            let dbg = format!("{:?}", authorize(&t, &ring, &req(action)).unwrap_err());
            for shown in [&msg, &dbg] {
                assert!(!shown.contains(&token[..20]), "{shown}");
                assert!(!shown.contains(&m.signature_hex()[..16]), "{shown}");
                assert!(!shown.contains(&secret_hex[..16]), "{shown}");
            }
        }
    }
}
