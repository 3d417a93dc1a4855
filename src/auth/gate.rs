//! The capability gate of both listeners (docs/ARCHITECTURE.md "Capabilities"): one check per
//! action, called by the HTTP handlers on the worker thread before any work is queued.
//!
//! [`Gate`] holds the running policy — the root key ring and the actions `[auth] require`
//! names — behind an `ArcSwap`, so a SIGHUP swaps it without a lock on the request path. The
//! checks take the request (for its `Authorization` header) and what the action touches:
//! [`Gate::propose`] the proposal bytes, [`Gate::approve`] / [`Gate::commit`] the id of a pending
//! proposal, looked up in [`PendingOps`] (the writer's pending table, shared read-only).
//! [`Gate::proposal`] checks several actions against one set of proposal bytes at once (for a
//! one-request write that proposes, approves and commits).
//!
//! Invariants: an action that is not required is never refused here; a required one passes only
//! with a token [`super::authorize`] accepts for it, and for propose / approve / commit with every
//! op of the proposal inside the token's `kind` / `id_prefix` caveats (a proposal whose ops
//! cannot be known — not pending — fails closed). No token text reaches a log line, an error
//! body or a metric label (labels are [`super::AuthError::reason`]'s fixed set).

use super::{Action, AuthError, Denial, KeyRing, KeysError, OpRef, Request as AuthRequest};
use crate::config::AuthConfig;
use crate::domain::proposal::{self, Proposal, ProposalLimits};
use crate::error::{ApiError, Code};
use crate::http::Request;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Every `reason` label of `auth_failures_total`: [`AuthError::reason`]'s words and
/// `not_pending` (a `kind` / `id_prefix` token on a proposal that is not pending).
pub const FAILURE_REASONS: [&str; 14] = [
    "missing",
    "malformed",
    "bad_identifier",
    "unknown_key",
    "key_retired",
    "bad_signature",
    "bad_caveat",
    "expired",
    "registry",
    "scope",
    "kind",
    "id_prefix",
    "no_ops",
    "not_pending",
];

/// The policy in force: `None` keys means auth is off (no `[auth]`).
struct Policy {
    keys: Option<Arc<KeyRing>>,
    require: [bool; 5],
}

impl Policy {
    fn requires(&self, action: Action) -> bool {
        self.keys.is_some() && self.require[index(action)]
    }
}

fn index(action: Action) -> usize {
    Action::ALL
        .iter()
        .position(|a| *a == action)
        .expect("ALL lists every action")
}

/// Load the keys file of `[auth]`: strict (mode 0600 or stricter) unless the dev-only exemption
/// is set, which still refuses a file others may write.
pub fn load_keys(auth: &AuthConfig) -> Result<KeyRing, KeysError> {
    if auth.dev_insecure_permissions {
        KeyRing::load_allowing_readable(&auth.keys_file)
    } else {
        KeyRing::load(&auth.keys_file)
    }
}

/// The capability gate; see the module doc.
pub struct Gate {
    registry_id: Arc<str>,
    policy: ArcSwap<Policy>,
    /// Unix seconds (injected for tests).
    clock: fn() -> i64,
}

fn now_unix_s() -> i64 {
    crate::clock::now_unix_ms().div_euclid(1000)
}

impl Gate {
    /// A gate that allows everything (no `[auth]`).
    pub fn open(registry_id: &str) -> Gate {
        Gate {
            registry_id: registry_id.into(),
            policy: ArcSwap::from_pointee(Policy {
                keys: None,
                require: [false; 5],
            }),
            clock: now_unix_s,
        }
    }

    /// The gate of `[auth]` (open without it); the keys file is read now.
    pub fn from_config(registry_id: &str, auth: Option<&AuthConfig>) -> Result<Gate, KeysError> {
        let gate = Gate::open(registry_id);
        if let Some(auth) = auth {
            gate.set(auth, load_keys(auth)?);
        }
        Ok(gate)
    }

    /// Put `keys` and `auth.require` in force.
    pub fn set(&self, auth: &AuthConfig, keys: KeyRing) {
        let mut require = [false; 5];
        for word in &auth.require {
            if let Some(a) = Action::parse(word) {
                require[index(a)] = true;
            }
        }
        self.policy.store(Arc::new(Policy {
            keys: Some(Arc::new(keys)),
            require,
        }));
    }

    /// SIGHUP: re-read the keys file of `auth`. On error the running keys and `require` stay
    /// and the error (which never quotes a secret) is returned for the reload's log line.
    pub fn reload(&self, auth: &AuthConfig) -> Result<usize, KeysError> {
        let keys = load_keys(auth)?;
        let n = keys.keys().len();
        self.set(auth, keys);
        Ok(n)
    }

    /// Whether tokens are checked at all.
    pub fn enabled(&self) -> bool {
        self.policy.load().keys.is_some()
    }

    /// Whether `action` needs a token now.
    pub fn requires(&self, action: Action) -> bool {
        self.policy.load().requires(action)
    }

    /// Everything about `action` that can be judged without the ops it touches: the token, its
    /// key, expiry, registry and scope. For a write route before its body is read, so that a
    /// client without a valid token gets 401 whatever it sent; the write's own check
    /// ([`Gate::propose`], [`Gate::approve`], [`Gate::commit`]) then judges `kind` / `id_prefix`.
    pub fn precheck(&self, req: &Request, action: Action) -> Result<(), ApiError> {
        self.check(req, &[action], Some(|| OpsLookup::Deferred))
    }

    /// `read` (every registry read route and the stream).
    pub fn read(&self, req: &Request) -> Result<(), ApiError> {
        self.check(req, &[Action::Read], None::<fn() -> OpsLookup>)
    }

    /// `admin` (the admin routes of the metrics listener).
    pub fn admin(&self, req: &Request) -> Result<(), ApiError> {
        self.check(req, &[Action::Admin], None::<fn() -> OpsLookup>)
    }

    /// `propose`, against every op of `body` (the proposal as submitted).
    pub fn propose(&self, req: &Request, body: &[u8]) -> Result<(), ApiError> {
        self.proposal(req, &[Action::Propose], body)
    }

    /// Every one of `actions` against the ops of the proposal `body`; for a request that does
    /// several actions on a proposal it carries (a one-request write: propose, approve, commit).
    pub fn proposal(&self, req: &Request, actions: &[Action], body: &[u8]) -> Result<(), ApiError> {
        self.check(
            req,
            actions,
            Some(|| match parse_ops(body, &self.registry_id) {
                Ok(p) => OpsLookup::Found(p),
                Err(e) => OpsLookup::Invalid(e),
            }),
        )
    }

    /// `approve` of the pending proposal `proposal_id`.
    pub fn approve(
        &self,
        req: &Request,
        proposal_id: &str,
        pending: &PendingOps,
    ) -> Result<(), ApiError> {
        self.pending_action(req, Action::Approve, proposal_id, pending)
    }

    /// `commit` of the pending proposal `proposal_id`.
    pub fn commit(
        &self,
        req: &Request,
        proposal_id: &str,
        pending: &PendingOps,
    ) -> Result<(), ApiError> {
        self.pending_action(req, Action::Commit, proposal_id, pending)
    }

    fn pending_action(
        &self,
        req: &Request,
        action: Action,
        proposal_id: &str,
        pending: &PendingOps,
    ) -> Result<(), ApiError> {
        self.check(
            req,
            &[action],
            Some(|| match pending.get(proposal_id) {
                Some(p) => OpsLookup::Found(p),
                None => OpsLookup::NotPending(proposal_id.to_string()),
            }),
        )
    }

    /// The one check: nothing required → allowed; else a token that `authorize` accepts for
    /// every action. The ops are looked up only if a caveat needs them (a token without
    /// `kind` / `id_prefix` never costs a proposal parse or a lock).
    fn check<F: FnOnce() -> OpsLookup>(
        &self,
        req: &Request,
        actions: &[Action],
        ops: Option<F>,
    ) -> Result<(), ApiError> {
        // The common path (auth off, or an open read) is one `ArcSwap` load and no allocation.
        let policy = self.policy.load();
        let Some(keys) = policy.keys.as_ref() else {
            return Ok(());
        };
        let mut required = actions
            .iter()
            .copied()
            .filter(|a| policy.requires(*a))
            .peekable();
        let Some(&first) = required.peek() else {
            return Ok(());
        };
        let token = match bearer(req) {
            Ok(t) => t,
            Err(e) => return Err(refuse(req, first, &e)),
        };
        let now = (self.clock)();
        // The ops, once looked up: `Some(None)` for a deferred lookup (judged as no ops, which
        // `kind` / `id_prefix` hold for vacuously: the later check has the real ones).
        let mut looked_up: Option<Option<Arc<Proposal>>> = None;
        let mut lookup = ops;
        for action in required {
            let mut auth_req = AuthRequest {
                action,
                registry_id: &self.registry_id,
                now_unix_s: now,
                ops: None,
            };
            let result = match super::authorize(token, keys, &auth_req) {
                Err(AuthError::Forbidden(Denial::NoOps { .. }))
                    if lookup.is_some() || looked_up.is_some() =>
                {
                    if looked_up.is_none() {
                        let find = lookup.take().expect("checked above");
                        looked_up = Some(match find() {
                            OpsLookup::Found(p) => Some(p),
                            OpsLookup::Deferred => None,
                            OpsLookup::Invalid(e) => return Err(e),
                            OpsLookup::NotPending(id) => {
                                count(req, action, "not_pending");
                                return Err(ApiError::forbidden(format!(
                                    "the token limits kind or id_prefix, and proposal {id} is not pending, so its ops cannot be checked"
                                )));
                            }
                        });
                    }
                    let refs = match looked_up.as_ref().expect("set above") {
                        Some(p) => op_refs(p),
                        None => Vec::new(),
                    };
                    auth_req.ops = Some(&refs);
                    super::authorize(token, keys, &auth_req).map(|_| ())
                }
                other => other.map(|_| ()),
            };
            if let Err(e) = result {
                return Err(refuse(req, action, &e));
            }
        }
        Ok(())
    }
}

/// The ops of a proposal, or why they are not known.
enum OpsLookup {
    Found(Arc<Proposal>),
    /// The proposal bytes do not parse: the same 400 the writer would give.
    Invalid(ApiError),
    /// Not judged here: every other caveat is, and the caller checks the ops later
    /// ([`Gate::precheck`]).
    Deferred,
    /// No pending proposal has this id (a checked, well-formed proposal id).
    NotPending(String),
}

/// Parse proposal bytes as the writer will, without its size limits (the body is bounded by
/// `max_body_bytes` already, and the writer applies the limits it answers 413 for).
fn parse_ops(body: &[u8], registry_id: &str) -> Result<Arc<Proposal>, ApiError> {
    let limits = ProposalLimits {
        max_ops: usize::MAX,
        max_descriptor_bytes: usize::MAX,
    };
    proposal::parse(body, registry_id, &limits).map(Arc::new)
}

/// What caveats see of a proposal's ops. A `set_signers` op targets no descriptor: it has kind
/// `set_signers` and an empty id, so any `kind` or `id_prefix` caveat (whose values are never
/// empty) refuses it — a token narrowed to some descriptors cannot replace the signer set.
fn op_refs(p: &Proposal) -> Vec<OpRef<'_>> {
    p.ops
        .iter()
        .map(|op| match op.descriptor_target() {
            Some((kind, id)) => OpRef {
                kind: kind.as_str(),
                id,
            },
            None => OpRef {
                kind: "set_signers",
                id: "",
            },
        })
        .collect()
}

/// The bearer token of `Authorization` (scheme case-insensitive, RFC 6750 §2.1).
fn bearer(req: &Request) -> Result<&str, AuthError> {
    let value = req.header("authorization").ok_or(AuthError::Missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

fn count(req: &Request, action: Action, reason: &'static str) {
    crate::metrics::m()
        .auth_failures_total
        .with_label_values(&[reason])
        .inc();
    // The corr_id is the client's (or ours); the reason and action are fixed words. The
    // token is never logged.
    log::info!(
        "msg=\"auth refused\" corr_id={} action={action} reason={reason}",
        req.corr_id
    );
}

/// A refusal as the client sees it: 401 (get a valid token) or 403, counted and logged.
fn refuse(req: &Request, action: Action, e: &AuthError) -> ApiError {
    count(req, action, e.reason());
    match e {
        AuthError::Missing => ApiError::new(
            Code::Unauthorized,
            format!("{action} needs a token: send Authorization: Bearer <token>"),
        ),
        AuthError::Forbidden(_) => ApiError::forbidden(e.to_string()),
        _ => ApiError::new(Code::Unauthorized, e.to_string()),
    }
}

/// The ops of every live pending proposal by id: the writer's pending table, shared read-only
/// with the gate. Proposal ids are content hashes, so an id's ops never change: an entry is
/// either right or absent. The writer inserts before it answers a propose and removes on commit
/// or eviction; the gate only reads, and only for tokens with `kind` / `id_prefix` caveats.
#[derive(Default)]
pub struct PendingOps {
    by_id: Mutex<HashMap<String, Arc<Proposal>>>,
}

impl PendingOps {
    pub fn insert(&self, id: String, proposal: Arc<Proposal>) {
        self.lock().insert(id, proposal);
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Proposal>> {
        self.lock().get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Proposal>>> {
        // A panic while holding this lock cannot leave the map half-updated (one insert or
        // remove), so a poisoned lock is still a consistent map.
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::RootKey;
    use crate::http::Method;
    use std::time::Instant;

    const NOW: i64 = 1_767_225_600;

    fn request(authorization: Option<&str>) -> Request {
        Request {
            method: Method::Post,
            path: "/propose".into(),
            query: None,
            headers: authorization
                .map(|a| vec![("authorization".to_string(), a.to_string())])
                .unwrap_or_default(),
            body: Vec::new(),
            corr_id: "t".into(),
            started: Instant::now(),
        }
    }

    fn gate(require: &[&str]) -> Gate {
        let mut gate = Gate::open("reg");
        gate.clock = || NOW;
        let auth = AuthConfig {
            keys_file: "unused".into(),
            require: require.iter().map(|s| s.to_string()).collect(),
            dev_insecure_permissions: false,
        };
        let ring = KeyRing::from_keys(vec![RootKey::new("k", [5; 32], None).unwrap()]).unwrap();
        gate.set(&auth, ring);
        gate
    }

    fn token(caveats: &[&str]) -> String {
        let mut m = RootKey::new("k", [5; 32], None).unwrap().mint(&[1; 16]);
        for c in caveats {
            m.add_first_party_caveat(c.as_bytes()).unwrap();
        }
        m.to_base64()
    }

    fn outcome(r: Result<(), ApiError>) -> String {
        match r {
            Ok(()) => "ok".into(),
            Err(e) => e.code.as_str().to_string(),
        }
    }

    #[test]
    fn an_open_gate_or_an_action_not_required_allows_without_a_token() {
        let open = Gate::open("reg");
        assert!(!open.enabled());
        assert_eq!(outcome(open.admin(&request(None))), "ok");
        let g = gate(&["admin"]);
        assert_eq!(outcome(g.read(&request(None))), "ok");
        assert_eq!(outcome(g.admin(&request(None))), "unauthorized");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_no_token() {
        let g = gate(&["admin"]);
        let t = token(&["scope = admin"]);
        for header in [
            format!("Bearer {t}"),
            format!("bearer  {t} "),
            format!("BEARER {t}"),
        ] {
            assert_eq!(outcome(g.admin(&request(Some(&header)))), "ok", "{header}");
        }
        for header in [
            format!("Basic {t}"),
            "Bearer".to_string(),
            "Bearer ".to_string(),
            t,
        ] {
            assert_eq!(
                outcome(g.admin(&request(Some(&header)))),
                "unauthorized",
                "{header}"
            );
        }
    }

    #[test]
    fn kind_and_id_prefix_judge_every_op_and_never_cover_set_signers() {
        let g = gate(&["propose", "approve"]);
        let t = format!("Bearer {}", token(&["kind = node", "id_prefix = e-"]));
        let req = request(Some(&t));
        let body = |ops: &str| format!(r#"{{"registry_id":"reg","base_version":0,"ops":[{ops}]}}"#);
        let node = |id: &str| format!(r#"{{"op":"delete","kind":"node","id":"{id}"}}"#);
        let ok = body(&format!("{},{}", node("e-1"), node("e-2")));
        assert_eq!(outcome(g.propose(&req, ok.as_bytes())), "ok");
        let one_off = body(&format!("{},{}", node("e-1"), node("x-2")));
        assert_eq!(outcome(g.propose(&req, one_off.as_bytes())), "forbidden");
        let signers = body(&format!(
            r#"{{"op":"set_signers","threshold":1,"keys":[{{"keyid":"a","alg":"ed25519","public_key":"{}"}}]}}"#,
            hex::encode(
                ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                    .verifying_key()
                    .as_bytes()
            )
        ));
        assert_eq!(outcome(g.propose(&req, signers.as_bytes())), "forbidden");
        // Approve: the ops of the pending proposal, or fail closed.
        let pending = PendingOps::default();
        assert_eq!(outcome(g.approve(&req, "p1", &pending)), "forbidden");
        pending.insert("p1".into(), parse_ops(ok.as_bytes(), "reg").unwrap());
        assert_eq!(outcome(g.approve(&req, "p1", &pending)), "ok");
        pending.remove("p1");
        assert!(pending.is_empty());
        // The precheck leaves the ops to the later check, but judges every other caveat, also
        // one after a `kind` caveat.
        assert_eq!(outcome(g.precheck(&req, Action::Approve)), "ok");
        let scoped = format!("Bearer {}", token(&["kind = node", "scope = read"]));
        let scoped = request(Some(&scoped));
        assert_eq!(outcome(g.precheck(&scoped, Action::Approve)), "forbidden");
    }
}
