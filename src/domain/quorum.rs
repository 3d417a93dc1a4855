//! Quorum counting against the signer set in force, and the history of signer sets
//! (docs/FORMATS.md).
//!
//! `count` is the whole decision of whether a proposal may commit, and `SignerHistory` answers
//! which set a proposal is judged against. Both are pure: the caller verifies signatures (on
//! its verifier threads) and reads the clock, and passes in what it found.
//!
//! Invariants:
//! - A quorum is counted by distinct **public key**, never by keyid or by approval: one key
//!   never counts twice in one set, whatever keyids or signatures it comes with.
//! - An approval counts in a set only if that set holds its keyid *with the public key it was
//!   verified under*, valid at the approval's time. Keys of any other set (a removed one, a
//!   later one) never count.
//! - A `set_signers` proposal commits only when both quorums are met: the set in force and the
//!   new set, each counted separately (a key present in both counts in both).
//! - The signature list for the hash (§4's S) is every signature that counted for either
//!   quorum, each (keyid, sig) once, sorted by keyid (then sig), and depends only on the set of
//!   approvals, not on their order.

use super::signers::SignerSet;
use std::collections::BTreeSet;
use std::sync::Arc;

/// One approval as the caller found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    pub keyid: String,
    /// The public key bytes the signature was verified under (the key the keyid selected).
    pub public_key: Vec<u8>,
    /// The signature in its stored form (standard base64 with padding, docs/FORMATS.md).
    pub sig: String,
    /// Did `sig` verify strictly over the proposal's PAE under `public_key`?
    pub verified: bool,
    /// When the approval was made, Unix seconds (validity windows are judged at this time).
    pub at_unix: i64,
}

/// How many distinct keys of one set counted, against its threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    pub threshold: usize,
    pub counted: usize,
}

impl Tally {
    pub fn met(&self) -> bool {
        self.counted >= self.threshold
    }

    /// How many more distinct keys this quorum needs (0 when met).
    pub fn short_by(&self) -> usize {
        self.threshold.saturating_sub(self.counted)
    }
}

/// Which quorum of a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The set in force at the proposal's `base_version`.
    InForce,
    /// The set a `set_signers` proposal puts in force.
    New,
}

/// A quorum that is not met, and by how much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    pub which: Which,
    pub counted: usize,
    pub threshold: usize,
}

impl Shortfall {
    pub fn short_by(&self) -> usize {
        self.threshold.saturating_sub(self.counted)
    }
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.which {
            Which::InForce => "the signer set in force",
            Which::New => "the new signer set",
        };
        write!(
            f,
            "{name} has {} of {} approvals ({} short)",
            self.counted,
            self.threshold,
            self.short_by()
        )
    }
}

/// The outcome of counting a proposal's approvals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumCount {
    pub in_force: Tally,
    /// `Some` for a `set_signers` proposal.
    pub new: Option<Tally>,
    /// §4's S: (keyid, sig) of every signature that counted for either quorum, sorted.
    pub signatures: Vec<(String, String)>,
}

impl QuorumCount {
    /// Are all the quorums this proposal needs met?
    pub fn met(&self) -> bool {
        self.shortfalls().is_empty()
    }

    /// The quorums that are short, in-force first.
    pub fn shortfalls(&self) -> Vec<Shortfall> {
        [
            (Which::InForce, Some(self.in_force)),
            (Which::New, self.new),
        ]
        .into_iter()
        .filter_map(|(which, tally)| {
            let t = tally?;
            (!t.met()).then_some(Shortfall {
                which,
                counted: t.counted,
                threshold: t.threshold,
            })
        })
        .collect()
    }

    /// A sentence naming every short quorum, or `None` when all are met.
    pub fn shortfall_message(&self) -> Option<String> {
        let parts: Vec<String> = self.shortfalls().iter().map(|s| s.to_string()).collect();
        (!parts.is_empty()).then(|| format!("quorum not met: {}", parts.join("; ")))
    }
}

/// Count `approvals` against the set in force and, for a `set_signers` proposal, the new set.
pub fn count(in_force: &SignerSet, new: Option<&SignerSet>, approvals: &[Approval]) -> QuorumCount {
    // Order-independence: which of two signatures by one key is kept must not depend on the
    // order the approvals arrived in, or two honest replicas could hash differently.
    let mut sorted: Vec<&Approval> = approvals.iter().collect();
    sorted.sort_by(|a, b| (&a.keyid, &a.sig).cmp(&(&b.keyid, &b.sig)));
    let mut s = BTreeSet::new();
    let in_force_tally = tally(in_force, &sorted, &mut s);
    let new_tally = new.map(|set| tally(set, &sorted, &mut s));
    QuorumCount {
        in_force: in_force_tally,
        new: new_tally,
        signatures: s.into_iter().collect(),
    }
}

/// Count distinct public keys of `set` among `approvals`, adding each counted (keyid, sig) to `s`.
fn tally(set: &SignerSet, approvals: &[&Approval], s: &mut BTreeSet<(String, String)>) -> Tally {
    // Ordered rather than hashed: the writer counts every commit, and a set of a few keys is
    // cheaper to search than to hash into (no per-set random keys, no SipHash of each key).
    let mut keys: BTreeSet<&[u8]> = BTreeSet::new();
    for a in approvals {
        if !a.verified {
            continue;
        }
        let Some(slot) = set.slot(&a.keyid) else {
            continue;
        };
        let key = &set.keys[slot];
        let public = key.public.as_bytes();
        if public != a.public_key.as_slice() || !key.valid_at(a.at_unix) {
            continue;
        }
        if keys.insert(public) {
            s.insert((a.keyid.clone(), a.sig.clone()));
        }
    }
    Tally {
        threshold: set.threshold,
        counted: keys.len(),
    }
}

/// Why a history refuses an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryError {
    /// The first entry must be the genesis set, in force since version 0.
    NoGenesis,
    /// Entries must be in strictly increasing version order.
    NotIncreasing { previous: u64, version: u64 },
}

impl std::fmt::Display for HistoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HistoryError::NoGenesis => {
                write!(
                    f,
                    "signer history must start with the genesis set at version 0"
                )
            }
            HistoryError::NotIncreasing { previous, version } => write!(
                f,
                "signer set at version {version} does not follow the one at version {previous}"
            ),
        }
    }
}

/// Which signer set is in force for which base versions: the genesis set from version 0, then
/// each committed `set_signers` from the version that committed it (docs/FORMATS.md: "in force for every
/// proposal whose base_version is at or after the version that committed it").
///
/// Invariant: non-empty, the first entry at version 0, versions strictly increasing.
#[derive(Clone, Debug)]
pub struct SignerHistory {
    entries: Vec<(u64, Arc<SignerSet>)>,
}

impl SignerHistory {
    pub fn genesis(set: Arc<SignerSet>) -> SignerHistory {
        SignerHistory {
            entries: vec![(0, set)],
        }
    }

    /// Rebuild from (since_version, set) pairs, e.g. read back from a checkpoint.
    pub fn from_entries(
        entries: Vec<(u64, Arc<SignerSet>)>,
    ) -> Result<SignerHistory, HistoryError> {
        if entries.first().map(|e| e.0) != Some(0) {
            return Err(HistoryError::NoGenesis);
        }
        for pair in entries.windows(2) {
            if pair[1].0 <= pair[0].0 {
                return Err(HistoryError::NotIncreasing {
                    previous: pair[0].0,
                    version: pair[1].0,
                });
            }
        }
        Ok(SignerHistory { entries })
    }

    /// Record that the `set_signers` committed at `version` put `set` in force.
    pub fn record(&mut self, version: u64, set: Arc<SignerSet>) -> Result<(), HistoryError> {
        let previous = self.entries.last().expect("history is never empty").0;
        if version <= previous {
            return Err(HistoryError::NotIncreasing { previous, version });
        }
        self.entries.push((version, set));
        Ok(())
    }

    /// The entry in force for proposals on `base_version`: (since_version, set).
    pub fn in_force_at(&self, base_version: u64) -> (u64, &Arc<SignerSet>) {
        // The first entry is at 0, so the partition point is at least 1.
        let i = self.entries.partition_point(|e| e.0 <= base_version);
        let (since, set) = &self.entries[i - 1];
        (*since, set)
    }

    /// The set in force for proposals on `base_version`.
    pub fn set_at(&self, base_version: u64) -> &Arc<SignerSet> {
        self.in_force_at(base_version).1
    }

    /// The version that put in force the set used for proposals on `base_version` (0 for
    /// genesis).
    pub fn since_version(&self, base_version: u64) -> u64 {
        self.in_force_at(base_version).0
    }

    /// The newest set: (since_version, set).
    pub fn current(&self) -> (u64, &Arc<SignerSet>) {
        let (since, set) = self.entries.last().expect("history is never empty");
        (*since, set)
    }

    /// Every (since_version, set), oldest first.
    pub fn entries(&self) -> &[(u64, Arc<SignerSet>)] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::signers::SignerKey;
    use ed25519_dalek::SigningKey;

    fn key(seed: u8, keyid: &str) -> SignerKey {
        SignerKey {
            keyid: keyid.to_string(),
            public: SigningKey::from_bytes(&[seed; 32]).verifying_key().into(),
            not_before: None,
            not_after: None,
        }
    }

    fn set(threshold: usize, keys: &[(u8, &str)]) -> SignerSet {
        SignerSet::new(threshold, keys.iter().map(|(s, k)| key(*s, k)).collect()).unwrap()
    }

    fn approval(seed: u8, keyid: &str, sig: &str) -> Approval {
        Approval {
            keyid: keyid.to_string(),
            public_key: key(seed, keyid).public.as_bytes().to_vec(),
            sig: sig.to_string(),
            verified: true,
            at_unix: 100,
        }
    }

    #[test]
    fn a_single_set_counts_distinct_verified_keys() {
        let s = set(2, &[(1, "a"), (2, "b"), (3, "c")]);
        let mut bad = approval(3, "c", "C");
        bad.verified = false;
        let q = count(
            &s,
            None,
            &[approval(1, "a", "A1"), approval(1, "a", "A2"), bad],
        );
        assert_eq!(
            q.in_force,
            Tally {
                threshold: 2,
                counted: 1
            }
        );
        assert_eq!(
            q.shortfall_message().unwrap(),
            "quorum not met: the signer set in force has 1 of 2 approvals (1 short)"
        );
        assert_eq!(q.signatures, [("a".to_string(), "A1".to_string())]);
        let q = count(&s, None, &[approval(2, "b", "B"), approval(1, "a", "A")]);
        assert!(q.met());
        assert_eq!(q.signatures[0].0, "a");
    }

    #[test]
    fn an_approval_verified_under_another_key_does_not_count() {
        let s = set(1, &[(1, "a")]);
        let q = count(&s, None, &[approval(2, "a", "X")]);
        assert!(!q.met());
        assert!(q.signatures.is_empty());
    }

    #[test]
    fn both_quorums_are_needed_and_a_shared_key_counts_in_both() {
        let old = set(2, &[(1, "a"), (2, "b"), (3, "c")]);
        let new = set(3, &[(2, "b"), (3, "c"), (4, "d"), (5, "e")]);
        let q = count(
            &old,
            Some(&new),
            &[approval(1, "a", "A"), approval(2, "b", "B")],
        );
        assert!(q.in_force.met());
        assert_eq!(
            q.shortfalls(),
            [Shortfall {
                which: Which::New,
                counted: 1,
                threshold: 3
            }]
        );
        let q = count(
            &old,
            Some(&new),
            &[
                approval(4, "d", "D"),
                approval(2, "b", "B"),
                approval(1, "a", "A"),
                approval(5, "e", "E"),
            ],
        );
        assert!(q.met(), "{:?}", q.shortfall_message());
        let ids: Vec<&str> = q.signatures.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(ids, ["a", "b", "d", "e"]);
    }

    #[test]
    fn validity_windows_are_judged_at_approval_time() {
        let mut k = key(1, "a");
        k.not_after = Some(50);
        let s = SignerSet::new(1, vec![k]).unwrap();
        let mut a = approval(1, "a", "A");
        assert!(!count(&s, None, &[a.clone()]).met());
        a.at_unix = 50;
        assert!(count(&s, None, &[a]).met());
    }

    #[test]
    fn history_answers_the_set_in_force_for_a_base() {
        let g = Arc::new(set(1, &[(1, "a")]));
        let s5 = Arc::new(set(1, &[(2, "b")]));
        let mut h = SignerHistory::genesis(g.clone());
        h.record(5, s5.clone()).unwrap();
        assert!(Arc::ptr_eq(h.set_at(0), &g));
        assert!(Arc::ptr_eq(h.set_at(4), &g));
        assert!(Arc::ptr_eq(h.set_at(5), &s5));
        assert_eq!(h.since_version(4), 0);
        assert_eq!(h.since_version(99), 5);
        assert_eq!(h.current().0, 5);
        assert_eq!(
            h.record(5, g.clone()),
            Err(HistoryError::NotIncreasing {
                previous: 5,
                version: 5
            })
        );
        assert_eq!(
            SignerHistory::from_entries(vec![(1, g.clone())]).unwrap_err(),
            HistoryError::NoGenesis
        );
        let back = SignerHistory::from_entries(h.entries().to_vec()).unwrap();
        assert_eq!(back.since_version(7), 5);
    }
}
