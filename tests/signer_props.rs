//! Properties of the pure quorum counter and the signer history (docs/FORMATS.md): whatever keys,
//! keyids, rotations and approvals, no set of keys reaches a quorum it should not.
//!
//! - A quorum counts distinct public keys: one key under several keyids, or with several
//!   signatures, counts once; a key counts only under the keyid its set gives it.
//! - Keys that are not in the set in force at a proposal's base (removed by a rotation, or only
//!   added later) never count for it.
//! - The count and S do not depend on the order of approvals; S holds only signatures that
//!   counted, and a double quorum is met exactly when both are.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use svc_registry::domain::quorum::{self, Approval, SignerHistory};
use svc_registry::domain::signers::{SignerKey, SignerSet};

const POOL: usize = 6;

fn public(seed: usize) -> Vec<u8> {
    SigningKey::from_bytes(&[seed as u8 + 1; 32])
        .verifying_key()
        .as_bytes()
        .to_vec()
}

fn keyid(i: usize) -> String {
    format!("k{i}")
}

/// A signer set over the key pool: which seeds, which keyid each gets (a permutation, so the
/// same keyid may name different keys in different sets), windows, threshold.
#[derive(Clone, Debug)]
struct SetSpec {
    members: Vec<(usize, usize, Option<i64>, Option<i64>)>, // (seed, keyid, not_before, not_after)
    threshold_pick: usize,
}

impl SetSpec {
    fn build(&self) -> SignerSet {
        let keys: Vec<SignerKey> = self
            .members
            .iter()
            .map(|&(seed, k, nb, na)| SignerKey {
                keyid: keyid(k),
                public: SigningKey::from_bytes(&[seed as u8 + 1; 32])
                    .verifying_key()
                    .into(),
                not_before: nb,
                not_after: na,
            })
            .collect();
        let threshold = 1 + self.threshold_pick % keys.len();
        SignerSet::new(threshold, keys).expect("a valid set")
    }
}

fn window() -> impl Strategy<Value = (Option<i64>, Option<i64>)> {
    prop_oneof![
        Just((None, None)),
        Just((None, Some(50))),
        Just((Some(60), None)),
        Just((Some(40), Some(70))),
    ]
}

fn set_spec() -> impl Strategy<Value = SetSpec> {
    (
        proptest::sample::subsequence((0..POOL).collect::<Vec<_>>(), 1..=POOL),
        Just((0..POOL).collect::<Vec<_>>()).prop_shuffle(),
        proptest::collection::vec(window(), POOL),
        0usize..POOL,
    )
        .prop_map(|(seeds, perm, windows, threshold_pick)| SetSpec {
            members: seeds
                .into_iter()
                .map(|s| (s, perm[s], windows[s].0, windows[s].1))
                .collect(),
            threshold_pick,
        })
}

/// An approval: keyid (POOL = one no set has), signing seed, verified?, time, which signature.
fn approval() -> impl Strategy<Value = Approval> {
    (
        0..=POOL,
        0..POOL,
        proptest::bool::weighted(0.85),
        prop_oneof![Just(0i64), Just(45), Just(55), Just(100)],
        0u8..2,
    )
        .prop_map(|(k, seed, verified, at_unix, n)| Approval {
            keyid: keyid(k),
            public_key: public(seed),
            sig: format!("sig-{seed}-{n}"),
            verified,
            at_unix,
        })
}

/// The model of one quorum, straight from the rule: distinct public keys P such that some verified
/// approval names a keyid the set maps to P, was verified under P, and was made while P's key
/// was valid.
fn model(set: &SignerSet, approvals: &[Approval]) -> usize {
    let counted: BTreeSet<&[u8]> = approvals
        .iter()
        .filter(|a| a.verified)
        .filter_map(|a| {
            let k = set.keys.iter().find(|k| k.keyid == a.keyid)?;
            (k.public.as_bytes() == a.public_key && k.valid_at(a.at_unix))
                .then_some(a.public_key.as_slice())
        })
        .collect();
    counted.len()
}

fn counts_in(set: &SignerSet, a: &Approval) -> bool {
    a.verified
        && set.keys.iter().any(|k| {
            k.keyid == a.keyid && k.public.as_bytes() == a.public_key && k.valid_at(a.at_unix)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn each_quorum_counts_exactly_the_distinct_valid_keys_of_its_set(
        old in set_spec(),
        new in proptest::option::of(set_spec()),
        approvals in proptest::collection::vec(approval(), 0..12),
    ) {
        let old = old.build();
        let new = new.map(|s| s.build());
        let q = quorum::count(&old, new.as_ref(), &approvals);
        prop_assert_eq!(q.in_force.counted, model(&old, &approvals));
        prop_assert_eq!(q.in_force.threshold, old.threshold);
        prop_assert_eq!(q.new.map(|t| t.counted), new.as_ref().map(|n| model(n, &approvals)));
        // Met exactly when every quorum that applies is met.
        let want_met = model(&old, &approvals) >= old.threshold
            && new.as_ref().is_none_or(|n| model(n, &approvals) >= n.threshold);
        prop_assert_eq!(q.met(), want_met);
        prop_assert_eq!(q.shortfall_message().is_none(), want_met);
        for s in q.shortfalls() {
            prop_assert!(s.short_by() > 0);
        }
        // S: only signatures that counted somewhere, sorted, no repeats; every key that
        // counted has a signature in it.
        for s in &q.signatures {
            prop_assert!(approvals.iter().any(|a| a.keyid == s.0 && a.sig == s.1
                && (counts_in(&old, a) || new.as_ref().is_some_and(|n| counts_in(n, a)))));
        }
        prop_assert!(q.signatures.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(q.signatures.len() >= q.in_force.counted.max(q.new.map_or(0, |t| t.counted)));
    }

    #[test]
    fn the_count_and_s_do_not_depend_on_approval_order(
        old in set_spec(),
        new in set_spec(),
        approvals in proptest::collection::vec(approval(), 0..12),
        rotate in 0usize..12,
    ) {
        let (old, new) = (old.build(), new.build());
        let mut shuffled = approvals.clone();
        shuffled.reverse();
        if !shuffled.is_empty() {
            let r = rotate % shuffled.len();
            shuffled.rotate_left(r);
        }
        prop_assert_eq!(
            quorum::count(&old, Some(&new), &approvals),
            quorum::count(&old, Some(&new), &shuffled)
        );
    }

    #[test]
    fn one_key_under_every_keyid_counts_at_most_once(
        set in set_spec(),
        seed in 0..POOL,
    ) {
        // The same key approves under every keyid there is, with two signatures each.
        let set = set.build();
        let approvals: Vec<Approval> = (0..=POOL)
            .flat_map(|k| (0..2).map(move |n| Approval {
                keyid: keyid(k),
                public_key: public(seed),
                sig: format!("sig-{n}"),
                verified: true,
                at_unix: 55,
            }))
            .collect();
        let q = quorum::count(&set, Some(&set), &approvals);
        prop_assert!(q.in_force.counted <= 1);
        prop_assert!(q.signatures.len() <= 1);
        if set.threshold > 1 {
            prop_assert!(!q.met());
        }
    }

    #[test]
    fn keys_outside_the_set_in_force_at_the_base_never_count(
        sets in proptest::collection::vec(set_spec(), 1..5),
        gaps in proptest::collection::vec(1u64..4, 4),
        base in 0u64..16,
        approvals in proptest::collection::vec(approval(), 0..16),
    ) {
        let sets: Vec<Arc<SignerSet>> = sets.iter().map(|s| Arc::new(s.build())).collect();
        let mut history = SignerHistory::genesis(sets[0].clone());
        let mut version = 0;
        for (set, gap) in sets[1..].iter().zip(&gaps) {
            version += gap;
            history.record(version, set.clone()).unwrap();
        }
        let in_force = history.set_at(base);
        // The set in force is the newest one recorded at or before the base.
        let (since, _) = history.in_force_at(base);
        prop_assert!(since <= base);
        prop_assert!(history.entries().iter().all(|(v, _)| *v <= since || *v > base));
        prop_assert_eq!(history.since_version(base), since);
        // Approvals by keys the set in force does not hold (removed earlier, or added later)
        // count for nothing, whatever keyids they use.
        let members: BTreeSet<Vec<u8>> =
            in_force.keys.iter().map(|k| k.public.as_bytes().to_vec()).collect();
        let outsiders: Vec<Approval> = approvals
            .iter()
            .filter(|a| !members.contains(&a.public_key))
            .cloned()
            .collect();
        let q = quorum::count(in_force, None, &outsiders);
        prop_assert_eq!(q.in_force.counted, 0);
        prop_assert!(q.signatures.is_empty());
        // And with everyone's approvals, the count is bounded by the members that approved.
        let approving: BTreeSet<&Vec<u8>> = approvals
            .iter()
            .filter(|a| a.verified && members.contains(&a.public_key))
            .map(|a| &a.public_key)
            .collect();
        prop_assert!(quorum::count(in_force, None, &approvals).in_force.counted <= approving.len());
    }
}
