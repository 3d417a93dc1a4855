//! The model side: the signer keys, what each answer must be, and the model of the state.

use super::*;

pub(crate) fn signer_keys() -> Vec<SigningKey> {
    (0..3u8)
        .map(|i| SigningKey::from_bytes(&[11 + i; 32]))
        .collect()
}

pub(crate) fn signer_set(keys: &[SigningKey]) -> SignerSet {
    SignerSet::new(
        THRESHOLD,
        keys.iter()
            .enumerate()
            .map(|(i, k)| SignerKey {
                keyid: format!("k{i}"),
                public: k.verifying_key().into(),
                not_before: None,
                not_after: None,
            })
            .collect(),
    )
    .expect("a valid signer set")
}

pub(crate) fn limits() -> ProposalLimits {
    ProposalLimits {
        max_ops: 8,
        max_descriptor_bytes: 512,
    }
}

/// A full pending table frees the oldest proposal that can never commit (expired, or its base
/// passed), ties broken by id; false when every one is live.
pub(crate) fn evict_dead(life: &mut Life, now: i64) -> bool {
    let dead = life
        .props
        .iter()
        .filter(|(_, p)| now >= p.expires || p.base < life.staged_head)
        .min_by_key(|(id, p)| (p.expires, (*id).clone()))
        .map(|(id, _)| id.clone());
    dead.is_some_and(|id| life.props.remove(&id).is_some())
}

/// What the writer must do with a commit of proposal `id` now.
pub(crate) enum CommitExpect {
    Now(u16),
    Stage(BTreeSet<(Kind, String)>),
    /// Held: its base is ahead of the staged head.
    Hold(u64),
}

/// `submit`: the model of a verified `/submit` of `id` (its own approvals; it is not pending).
pub(crate) fn expect_commit(
    life: &Life,
    id: &str,
    submit: Option<&SimProp>,
    now: i64,
    may_hold: bool,
) -> CommitExpect {
    if life.poisoned {
        return CommitExpect::Now(503);
    }
    if life.committed.contains(id) {
        return CommitExpect::Now(409);
    }
    match submit.or_else(|| life.props.get(id)) {
        None => CommitExpect::Now(404),
        Some(p) if now >= p.expires => CommitExpect::Now(410),
        Some(p) if p.approvals.len() < THRESHOLD => CommitExpect::Now(412),
        Some(p) if p.base > life.staged_head && may_hold && life.held_count < MAX_PENDING => {
            CommitExpect::Hold(p.base)
        }
        Some(p) if p.base != life.staged_head => CommitExpect::Now(409),
        Some(p) => match apply_model(&life.staged_state, &p.ops) {
            None => CommitExpect::Now(409),
            Some(next) => CommitExpect::Stage(next),
        },
    }
}

/// A writer reply answered as the registry listener would (src/api/replies.rs).
pub(crate) fn reply<T: 'static>(ok: fn(T) -> Response) -> (Reply<T>, Receiver<Response>) {
    let (r, rx) = Replier::detached("sim");
    (replies::reply(r, ok), rx)
}

pub(crate) fn answer(rx: &Receiver<Response>) -> Option<(u16, serde_json::Value)> {
    rx.try_recv().ok().map(|r| {
        let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
        (r.status, v)
    })
}

/// Would `ops` apply to `state` (no delete of an absent descriptor)? Returns the next state.
pub(crate) fn apply_model(
    state: &BTreeSet<(Kind, String)>,
    ops: &[(Kind, String, bool)],
) -> Option<BTreeSet<(Kind, String)>> {
    let mut next = state.clone();
    for (kind, id, put) in ops {
        if *put {
            next.insert((*kind, id.clone()));
        } else if !next.remove(&(*kind, id.clone())) {
            return None;
        }
    }
    Some(next)
}
