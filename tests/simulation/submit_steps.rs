//! The `/submit` step: one request that proposes, approves and commits. Its refusals before the
//! commit step are the propose and approve steps' (checked here); once its signatures are
//! verified it is a commit of its own model of the proposal (`expect_commit` with `submit`),
//! staged, held or refused exactly like `/commit` — and it never adds a pending proposal or asks
//! for a sync of its own (a pending frame would show as a sync request for no staged commit).

use super::*;

impl Sim {
    pub(crate) fn step_submit(&mut self) {
        let now = sim_clock();
        let staged_head = self.life().staged_head;
        // Which proposal: a fresh one (mostly on the staged head, sometimes ahead of it or behind
        // it), a pending one's exact bytes, a committed one's, or one for another registry.
        let pending: Vec<SimProp> = self.life().props.values().cloned().collect();
        let catalog = &self.catalog;
        let committed: Vec<String> = self
            .life
            .as_ref()
            .expect("life")
            .committed
            .iter()
            .filter(|id| catalog.contains_key(*id))
            .cloned()
            .collect();
        let choice = self.rng.below(100);
        let mut invalid = false;
        let (bytes, base, ops) = if choice < 12 && !pending.is_empty() {
            let p = &pending[self.rng.index(pending.len())];
            (p.bytes.clone(), p.base, p.ops.clone())
        } else if choice < 17 && !committed.is_empty() {
            self.catalog[&committed[self.rng.index(committed.len())]].clone()
        } else {
            let base = match self.rng.below(20) {
                0 => staged_head.saturating_sub(1),
                1 | 2 => staged_head + 1,
                _ => staged_head,
            };
            let (mut bytes, ops) = self.new_proposal(base);
            invalid = self.rng.chance(4);
            if invalid {
                bytes = String::from_utf8(bytes)
                    .unwrap()
                    .replace(REGISTRY, "other-registry")
                    .into_bytes();
            }
            (bytes, base, ops)
        };
        let id = sha256_hex(&bytes);
        // Signatures: (keyid, slot if configured, signature, good?).
        let mut sigs: Vec<(String, Option<usize>, [u8; 64], bool)> = Vec::new();
        let first = self.rng.index(self.keys.len());
        let n = match self.rng.below(100) {
            0..=54 => 2,
            55..=64 => 3,
            65..=74 => 1,
            75..=79 => 0,
            _ => 2,
        };
        for i in 0..n {
            let slot = (first + i) % self.keys.len();
            let sig = self.sign(slot, &bytes);
            sigs.push((format!("k{slot}"), Some(slot), sig, true));
        }
        match self.rng.below(100) {
            // The same key twice counts once.
            0..=7 if !sigs.is_empty() => {
                let again = sigs[0].clone();
                sigs[1..].iter_mut().for_each(|s| *s = again.clone());
            }
            8..=14 if !sigs.is_empty() => {
                let last = sigs.len() - 1;
                sigs[last].2 = sign_payload(&self.keys[first], b"another payload");
                sigs[last].3 = false;
            }
            15..=19 => sigs.push(("kx".into(), None, [7; 64], false)),
            _ => {}
        }
        let risky = self.faults_pending();
        let enospc = self.enospc_pending();
        let life = self.life.as_mut().expect("life");
        // The propose and approve steps' refusals, in their order.
        let refused_before_verify = if life.poisoned {
            Some(503)
        } else if invalid {
            Some(400)
        } else if life.committed.contains(&id) || base < life.staged_head {
            Some(409)
        } else if sigs.is_empty() {
            Some(400)
        } else if sigs.iter().any(|s| s.1.is_none()) {
            Some(403)
        } else {
            None
        };
        let (replier, rx) = reply(replies::submitted);
        life.writer.on_request(WriteRequest::Submit {
            bytes: bytes.clone(),
            signatures: sigs.iter().map(|s| (s.0.clone(), s.2.into())).collect(),
            reply: replier,
        });
        // The verifier pool, all at once and in any order.
        let mut jobs: Vec<VerifyJob> = life.verify_rx.try_iter().collect();
        let seed = self.seed;
        let job_count = jobs.len();
        if refused_before_verify.is_some() {
            assert_eq!(
                job_count, 0,
                "seed {seed}: verify jobs for a refused submit"
            );
        } else {
            assert!(
                answer(&rx).is_none(),
                "seed {seed}: submit answered before verification"
            );
            assert_eq!(
                job_count,
                sigs.len(),
                "seed {seed}: one verify job a signature"
            );
        }
        while !jobs.is_empty() {
            let job = jobs.swap_remove(self.rng.index(jobs.len()));
            let ok = job.key.verify(&job.sig, &job.pae);
            self.life().writer.on_internal(Internal::Verified(Verified {
                request: job.request,
                index: job.index,
                ok,
            }));
        }
        let life = self.life.as_mut().expect("life");
        let positions: Vec<u64> = life.sync_rx.try_iter().collect();
        let got = answer(&rx);
        self.log(format!(
            "submit {} base {base} (staged {staged_head}) sigs {:?} -> {:?} positions {positions:?}",
            &id[..8],
            sigs.iter().map(|s| (s.0.as_str(), s.3)).collect::<Vec<_>>(),
            got.as_ref().map(|g| g.0),
        ));
        let expect = match refused_before_verify {
            Some(status) => CommitExpect::Now(status),
            None if sigs.iter().any(|s| !s.3) => CommitExpect::Now(403),
            None => {
                let model = SimProp {
                    bytes,
                    base,
                    ops,
                    expires: now + TTL_SECS as i64,
                    approvals: sigs.iter().filter_map(|s| s.1).collect(),
                };
                let life = self.life.as_ref().expect("life");
                let expect = expect_commit(life, &id, Some(&model), now, true);
                let mut positions = positions.into_iter();
                let staged_before = life.staged_head;
                let staged = got.is_none() && matches!(expect, CommitExpect::Stage(_));
                self.settle_commit(
                    id,
                    Some(model),
                    expect,
                    got,
                    rx,
                    &mut positions,
                    risky,
                    enospc,
                );
                if staged {
                    self.stats.submits_staged += 1;
                }
                if self.life().staged_head > staged_before {
                    self.retry_held(&mut positions, risky, enospc);
                }
                check!(
                    self,
                    positions.next().is_none(),
                    "a sync was requested for no staged commit"
                );
                return;
            }
        };
        check!(
            self,
            positions.is_empty(),
            "a refused submit asked for a sync"
        );
        let (status, v) = got.unwrap_or_else(|| panic!("seed {seed}: submit unanswered"));
        let CommitExpect::Now(want) = expect else {
            unreachable!("refusals only")
        };
        check!(
            self,
            status == want,
            "submit answered {status} {v}, expected {want}"
        );
    }
}
