//! The writer's typed answers as HTTP: builds a domain [`Reply`] from a request's transport
//! [`Replier`], and turns each result into the JSON body of docs/API.md.
//!
//! Invariant: this is the only place writer results become responses; every error goes through
//! [`super::error_response`].

use super::{error_response, json_response};
use crate::domain::dsse;
use crate::http::{Replier, Response};
use crate::roles::reply::Reply;
use crate::roles::writer::{
    Accepted, Approved, Committed, ProposalState, ProposalView, SubmitCommitted,
};

/// A [`Reply`] whose result is answered on `replier` through `ok` (or the error table).
pub fn reply<T: 'static>(replier: Replier, ok: fn(T) -> Response) -> Reply<T> {
    let corr_id = replier.corr_id.clone();
    Reply::new(corr_id, move |result: Result<T, _>| {
        replier.send(match result {
            Ok(value) => ok(value),
            Err(e) => error_response(&e),
        })
    })
}

/// `202` for `POST /propose`.
pub fn accepted(a: Accepted) -> Response {
    json_response(
        202,
        &serde_json::json!({
            "proposal_id": a.proposal_id,
            "expires_at": crate::clock::rfc3339(a.expires_at),
        }),
    )
}

/// `200` for `POST /approve`.
pub fn approved(a: Approved) -> Response {
    let mut body = serde_json::json!({
        "proposal_id": a.proposal_id,
        "approvals": a.approvals,
        "threshold": a.threshold,
    });
    // A set_signers proposal needs the new set's quorum too (docs/FORMATS.md).
    if let Some((counted, threshold)) = a.new_quorum {
        body["new_approvals"] = counted.into();
        body["new_threshold"] = threshold.into();
    }
    json_response(200, &body)
}

/// `200` for `POST /commit`.
pub fn committed(c: Committed) -> Response {
    Response::json(200, commit_body(&c.hash, None, c.version))
}

/// `200` for `POST /submit`.
pub fn submitted(c: SubmitCommitted) -> Response {
    Response::json(200, commit_body(&c.hash, Some(&c.proposal_id), c.version))
}

/// The body of a commit's or a submit's `200`, in the key order `serde_json::json!` gives
/// (sorted): written straight into one buffer, because these closures run on the writer
/// thread, which pays for every `Value` map it would build.
fn commit_body(hash: &str, proposal_id: Option<&str>, version: u64) -> Vec<u8> {
    use crate::domain::{write_json_str, write_u64};
    let mut out = Vec::with_capacity(80 + hash.len() + proposal_id.map_or(0, str::len));
    // Strings are escaped as serde_json escapes them in a `Value`.
    out.extend_from_slice(b"{\"hash\":");
    write_json_str(&mut out, hash);
    if let Some(id) = proposal_id {
        out.extend_from_slice(b",\"proposal_id\":");
        write_json_str(&mut out, id);
    }
    out.extend_from_slice(b",\"version\":");
    write_u64(&mut out, version);
    out.push(b'}');
    out
}

/// `200` for `GET /proposals/{id}`.
pub fn proposal(v: ProposalView) -> Response {
    let body = match v.state {
        ProposalState::Committed { version } => serde_json::json!({
            "proposal_id": v.proposal_id,
            "payload": dsse::b64(&v.payload),
            "approvals": v.approvals,
            "threshold": v.threshold,
            "state": "committed",
            "version": version,
            "diff": [],
        }),
        ProposalState::Pending {
            base_version,
            expires_at,
        }
        | ProposalState::Expired {
            base_version,
            expires_at,
        } => {
            let state = if matches!(v.state, ProposalState::Expired { .. }) {
                "expired"
            } else {
                "pending"
            };
            // A set_signers proposal's one op: what it changes in the signer set.
            let signers_diff = v.signers_change.as_ref().map(|c| {
                let mut entry = serde_json::to_value(c).unwrap_or_default();
                entry["op"] = "set_signers".into();
                entry
            });
            let diff: Vec<serde_json::Value> = v
                .diff
                .iter()
                .map(|d| {
                    let current = d
                        .current
                        .as_ref()
                        .map(|b| serde_json::to_value(&**b).unwrap_or_default());
                    let proposed = d
                        .proposed
                        .as_ref()
                        .and_then(|b| serde_json::to_value(&**b).ok());
                    serde_json::json!({
                        "op": d.op, "kind": d.kind, "id": &*d.id,
                        "current": current, "proposed": proposed,
                    })
                })
                .chain(signers_diff)
                .collect();
            let mut body = serde_json::json!({
                "proposal_id": v.proposal_id,
                "payload": dsse::b64(&v.payload),
                "approvals": v.approvals,
                "threshold": v.threshold,
                "state": state,
                "base_version": base_version,
                "expires_at": crate::clock::rfc3339(expires_at),
                "diff": diff,
            });
            if let Some((counted, threshold)) = v.new_quorum {
                body["new_approvals"] = counted.into();
                body["new_threshold"] = threshold.into();
            }
            body
        }
    };
    json_response(200, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_bodies_are_what_a_json_map_gives() {
        let hash = "ab\"c\\";
        let want = serde_json::to_vec(&serde_json::json!({"version": 7, "hash": hash})).unwrap();
        assert_eq!(commit_body(hash, None, 7), want);
        let want = serde_json::to_vec(
            &serde_json::json!({"version": u64::MAX, "hash": hash, "proposal_id": "p\u{1}"}),
        )
        .unwrap();
        assert_eq!(commit_body(hash, Some("p\u{1}"), u64::MAX), want);
    }
}
