//! Write steps: proposals, approvals, verifier deliveries, commits and held commits.

use super::*;

impl Sim {
    pub(crate) fn new_proposal(&mut self, base: u64) -> (Vec<u8>, Vec<(Kind, String, bool)>) {
        let n = 1 + self.rng.index(3);
        let present: Vec<(Kind, String)> = self.life().staged_state.iter().cloned().collect();
        let mut ops: Vec<(Kind, String, bool)> = Vec::new();
        while ops.len() < n {
            // Deletes mostly of descriptors that exist (a delete of an absent one is a 409).
            let delete = self.rng.chance(25);
            let (kind, id) = if delete && !present.is_empty() && !self.rng.chance(10) {
                present[self.rng.index(present.len())].clone()
            } else {
                let kind = if self.rng.chance(60) {
                    Kind::Node
                } else {
                    Kind::Service
                };
                (kind, IDS[self.rng.index(IDS.len())].to_string())
            };
            if ops.iter().any(|(k, i, _)| *k == kind && *i == id) {
                continue;
            }
            ops.push((kind, id, !delete));
        }
        self.nonce += 1;
        let text: Vec<String> = ops
            .iter()
            .map(|(k, id, put)| {
                if *put {
                    format!(
                        r#"{{"op":"put","kind":"{}","id":"{id}","body":{{"n":{}}}}}"#,
                        k.as_str(),
                        self.nonce
                    )
                } else {
                    format!(r#"{{"op":"delete","kind":"{}","id":"{id}"}}"#, k.as_str())
                }
            })
            .collect();
        let bytes = format!(
            r#"{{"registry_id":"{REGISTRY}","base_version":{base},"ops":[{}],"note":"s{}-{}"}}"#,
            text.join(","),
            self.seed,
            self.nonce
        )
        .into_bytes();
        (bytes, ops)
    }

    pub(crate) fn step_propose(&mut self) {
        let now = sim_clock();
        let staged_head = self.life().staged_head;
        let resubmit = if self.rng.chance(8) && !self.life().props.is_empty() {
            let props: Vec<SimProp> = self.life().props.values().cloned().collect();
            Some(props[self.rng.index(props.len())].clone())
        } else {
            None
        };
        let invalid = resubmit.is_none() && self.rng.chance(3);
        let (bytes, base, ops) = match &resubmit {
            Some(p) => (p.bytes.clone(), p.base, p.ops.clone()),
            None => {
                // Ahead of HEAD often enough that held commits meet every other event.
                let base = match self.rng.below(20) {
                    0 => staged_head.saturating_sub(1),
                    1..=3 => staged_head + 1,
                    _ => staged_head,
                };
                let (mut bytes, ops) = self.new_proposal(base);
                if invalid {
                    bytes = String::from_utf8(bytes)
                        .unwrap()
                        .replace(REGISTRY, "other-registry")
                        .into_bytes();
                }
                (bytes, base, ops)
            }
        };
        let id = sha256_hex(&bytes);
        if !invalid {
            self.catalog
                .entry(id.clone())
                .or_insert_with(|| (bytes.clone(), base, ops.clone()));
        }
        let risky = self.faults_pending();
        let life = self.life.as_mut().expect("life");
        let was_live = life.props.get(&id).is_some_and(|p| now < p.expires);
        let full = !life.props.contains_key(&id) && life.props.len() >= MAX_PENDING;
        let expect = if life.poisoned {
            503
        } else if invalid {
            400
        } else if life.committed.contains(&id) {
            409
        } else if life.props.get(&id).is_some_and(|p| now < p.expires) {
            202
        } else if base < life.staged_head {
            409
        } else if full && !evict_dead(life, now) {
            self.stats.busy += 1;
            429
        } else {
            if full {
                self.stats.evicted += 1;
            }
            life.props.insert(
                id.clone(),
                SimProp {
                    bytes: bytes.clone(),
                    base,
                    ops,
                    expires: now + TTL_SECS as i64,
                    approvals: BTreeSet::new(),
                },
            );
            202
        };
        let (replier, rx) = reply(replies::accepted);
        life.writer.on_request(WriteRequest::Propose {
            bytes: bytes.clone(),
            reply: replier,
        });
        self.sync_requested();
        let got = answer(&rx);
        let line = format!(
            "propose {} base {base} (staged {}) -> {:?} expect {expect}",
            &id[..8],
            staged_head,
            got.as_ref().map(|g| g.0)
        );
        self.log(line);
        let (status, v) = got.unwrap_or_else(|| panic!("seed {}: propose unanswered", self.seed));
        if expect == 202 && !was_live && risky && (status == 503 || status == 507) {
            // The pending frame's append or sync failed: nothing was acknowledged.
            self.pending_write_failed(status);
            self.life.as_mut().expect("life").props.remove(&id);
            return;
        }
        check!(
            self,
            status == expect,
            "propose answered {status} {v}, expected {expect}"
        );
        if status == 202 {
            check!(self, v["proposal_id"] == id.as_str(), "proposal id {v}");
        }
    }

    pub(crate) fn sign(&mut self, slot: usize, payload: &[u8]) -> [u8; 64] {
        let key = (slot, sha256_hex(payload));
        let signing = &self.keys[slot];
        *self
            .signed
            .entry(key)
            .or_insert_with(|| sign_payload(signing, payload))
    }

    pub(crate) fn has_committable(&self) -> bool {
        let now = sim_clock();
        let life = self.life.as_ref().expect("life");
        life.props.values().any(|p| {
            now < p.expires && p.approvals.len() >= THRESHOLD && p.base == life.staged_head
        })
    }

    /// A proposal id to act on: mostly one of the pending proposals (`committable`: approved,
    /// on the staged head and live, if any; otherwise live ones short of the threshold), now and
    /// then a committed, expired or unknown one.
    pub(crate) fn pick_proposal(&mut self, committable: bool) -> String {
        let now = sim_clock();
        let life = self.life.as_ref().expect("life");
        let head = life.staged_head;
        let live = |p: &SimProp| now < p.expires;
        let preferred: Vec<String> = life
            .props
            .iter()
            .filter(|(_, p)| {
                live(p)
                    && if committable {
                        p.approvals.len() >= THRESHOLD && p.base == head
                    } else {
                        p.approvals.len() < THRESHOLD
                    }
            })
            .map(|(id, _)| id.clone())
            .collect();
        let any: Vec<String> = life.props.keys().cloned().collect();
        let committed: Vec<String> = life.committed.iter().cloned().collect();
        match self.rng.below(20) {
            0 if !committed.is_empty() => committed[self.rng.index(committed.len())].clone(),
            1 => sha256_hex(&self.rng.next_u64().to_le_bytes()),
            2..=4 if !any.is_empty() => any[self.rng.index(any.len())].clone(),
            _ if !preferred.is_empty() => preferred[self.rng.index(preferred.len())].clone(),
            _ if !any.is_empty() => any[self.rng.index(any.len())].clone(),
            _ => sha256_hex(&self.rng.next_u64().to_le_bytes()),
        }
    }

    pub(crate) fn step_approve(&mut self) {
        let now = sim_clock();
        let id = self.pick_proposal(false);
        let quorum = self.rng.chance(60);
        let bytes = self
            .life()
            .props
            .get(&id)
            .map(|p| p.bytes.clone())
            .unwrap_or_else(|| b"{}".to_vec());
        let n = if quorum {
            2
        } else if self.rng.chance(3) {
            0
        } else {
            1 + self.rng.index(3)
        };
        // (keyid, slot if configured, signature, good?)
        let mut sigs: Vec<(String, Option<usize>, [u8; 64], bool)> = Vec::new();
        let first = self.rng.index(self.keys.len());
        for i in 0..n {
            if quorum {
                let slot = (first + i) % self.keys.len();
                let sig = self.sign(slot, &bytes);
                sigs.push((format!("k{slot}"), Some(slot), sig, true));
                continue;
            }
            if self.rng.chance(3) {
                sigs.push(("kx".into(), None, [7; 64], false));
                continue;
            }
            let slot = self.rng.index(self.keys.len());
            let mut sig = self.sign(slot, &bytes);
            let good = !self.rng.chance(8);
            if !good {
                if self.rng.chance(50) {
                    sig = sign_payload(&self.keys[slot], b"another payload");
                } else {
                    sig[self.rng.index(32)] ^= 1;
                }
            }
            sigs.push((format!("k{slot}"), Some(slot), sig, good));
        }
        let life = self.life.as_mut().expect("life");
        enum Expect {
            Now(u16),
            Deferred,
        }
        let prop = life.props.get(&id);
        let to_verify: Vec<usize> = sigs
            .iter()
            .enumerate()
            .filter(|(_, (_, slot, _, good))| {
                !(*good && prop.is_some_and(|p| p.approvals.contains(&slot.unwrap())))
            })
            .map(|(i, _)| i)
            .collect();
        let expect = if life.poisoned {
            Expect::Now(503)
        } else if life.committed.contains(&id) {
            Expect::Now(409)
        } else if prop.is_none() {
            Expect::Now(404)
        } else if prop.is_some_and(|p| now >= p.expires) {
            Expect::Now(410)
        } else if sigs.is_empty() {
            Expect::Now(400)
        } else if sigs.iter().any(|s| s.1.is_none()) {
            Expect::Now(403)
        } else if to_verify.is_empty() {
            Expect::Now(200)
        } else {
            Expect::Deferred
        };
        let (replier, rx) = reply(replies::approved);
        life.writer.on_request(WriteRequest::Approve {
            proposal_id: id.clone(),
            signatures: sigs.iter().map(|s| (s.0.clone(), s.2.into())).collect(),
            reply: replier,
        });
        let jobs: Vec<VerifyJob> = life.verify_rx.try_iter().collect();
        self.sync_requested();
        let got = answer(&rx);
        let line = format!(
            "approve {} sigs {:?} -> {:?} jobs {}",
            &id[..8],
            sigs.iter().map(|s| (s.0.as_str(), s.3)).collect::<Vec<_>>(),
            got.as_ref().map(|g| g.0),
            jobs.len()
        );
        self.log(line);
        let seed = self.seed;
        let life = self.life.as_mut().expect("life");
        match expect {
            Expect::Now(status) => {
                let (got_status, v) =
                    got.unwrap_or_else(|| panic!("seed {seed}: approve unanswered"));
                assert_eq!(got_status, status, "seed {seed}: approve answered {v}");
                assert!(
                    jobs.is_empty(),
                    "seed {seed}: verify jobs for a settled approval"
                );
                if status == 200 {
                    let count = life.props[&id].approvals.len();
                    assert_eq!(v["approvals"], count, "seed {seed}: approval count {v}");
                }
            }
            Expect::Deferred => {
                assert!(
                    got.is_none(),
                    "seed {seed}: approve answered before verification"
                );
                assert_eq!(jobs.len(), to_verify.len(), "seed {seed}: verify job count");
                let request = jobs[0].request;
                life.approves.insert(
                    request,
                    PendingApprove {
                        proposal_id: id,
                        rx,
                        good: sigs.iter().filter_map(|s| s.1).collect(),
                        any_bad: sigs.iter().any(|s| !s.3),
                        jobs_left: jobs.len(),
                    },
                );
                if self.rng.chance(70) {
                    let mut jobs = jobs;
                    while !jobs.is_empty() {
                        let i = self.rng.index(jobs.len());
                        let job = jobs.swap_remove(i);
                        self.deliver(job);
                    }
                } else {
                    self.life().held_jobs.extend(jobs);
                }
            }
        }
    }

    /// A pending frame (proposal or approvals) failed to append or to sync: the request got
    /// 507 (disk full, nothing changed) or 503 (the write plane stopped).
    pub(crate) fn pending_write_failed(&mut self, status: u16) {
        self.log(format!("  pending frame failed: {status}"));
        if status == 507 {
            self.stats.storage_full += 1;
        } else if !self.life().poisoned {
            self.stats.append_failures += 1;
            self.poisoned_now();
        }
    }

    /// Play one verifier: verify, report, and check the answer once the last job is in.
    pub(crate) fn deliver(&mut self, job: VerifyJob) {
        let now = sim_clock();
        let risky = self.faults_pending();
        let ok = job.key.verify(&job.sig, &job.pae);
        let seed = self.seed;
        let life = self.life.as_mut().expect("life");
        life.writer.on_internal(Internal::Verified(Verified {
            request: job.request,
            index: job.index,
            ok,
        }));
        let pending = life
            .approves
            .get_mut(&job.request)
            .expect("a known approval");
        pending.jobs_left -= 1;
        if pending.jobs_left > 0 {
            assert!(answer(&pending.rx).is_none(), "seed {seed}: answered early");
            return;
        }
        let pending = life.approves.remove(&job.request).expect("known");
        let id = &pending.proposal_id;
        let expect = if pending.any_bad {
            403
        } else if life.poisoned {
            // Storage failed while the signatures verified: the approval cannot be made durable.
            503
        } else if life.committed.contains(id) {
            409
        } else {
            match life.props.get(id) {
                None => 404,
                Some(p) if now >= p.expires => 410,
                Some(_) => 200,
            }
        };
        // The approvals' frame is synced before the 200 (docs/FORMATS.md).
        let id = id.clone();
        self.sync_requested();
        let got = answer(&pending.rx);
        if expect == 200 && risky && matches!(got, Some((503 | 507, _))) {
            self.pending_write_failed(got.expect("matched").0);
            return;
        }
        if expect == 200 && got.as_ref().is_some_and(|g| g.0 == 200) {
            let life = self.life.as_mut().expect("life");
            let p = life.props.get_mut(&id).expect("live");
            p.approvals.extend(pending.good.iter().copied());
        }
        let id = &id;
        let line = format!(
            "  verified {} -> {:?} expect {expect}",
            &id[..8],
            got.as_ref().map(|g| g.0)
        );
        self.log(line);
        let (status, v) = got.unwrap_or_else(|| panic!("seed {seed}: approval never answered"));
        check!(
            self,
            status == expect,
            "approval answered {status} {v}, expected {expect}"
        );
        if status == 200 {
            let count = self.life().props[id].approvals.len();
            check!(
                self,
                v["approvals"] == count,
                "approval count {v}, expected {count}"
            );
        }
    }

    pub(crate) fn step_deliver_held(&mut self) {
        let held = self.life().held_jobs.len();
        if held == 0 {
            return self.step_commit();
        }
        let i = self.rng.index(held);
        let job = self.life().held_jobs.swap_remove(i);
        self.log("deliver a held verify job".into());
        self.deliver(job);
    }

    pub(crate) fn step_commit(&mut self) {
        let now = sim_clock();
        let committable = self.rng.chance(85);
        if committable && self.rng.chance(70) && !self.has_committable() {
            return self.step_approve();
        }
        let id = self.pick_proposal(committable);
        let risky = self.faults_pending();
        let enospc = self.enospc_pending();
        let life = self.life.as_mut().expect("life");
        let expect = expect_commit(life, &id, None, now, true);
        let (replier, rx) = reply(replies::committed);
        life.writer.on_request(WriteRequest::Commit {
            proposal_id: id.clone(),
            reply: replier,
        });
        let positions: Vec<u64> = life.sync_rx.try_iter().collect();
        let got = answer(&rx);
        let line = format!(
            "commit {} (staged {}) -> {:?} positions {positions:?}{}",
            &id[..8],
            life.staged_head,
            got.as_ref().map(|g| g.1.to_string()),
            if risky { " [faults armed]" } else { "" }
        );
        self.log(line);
        let mut positions = positions.into_iter();
        let staged_before = self.life().staged_head;
        self.settle_commit(id, None, expect, got, rx, &mut positions, risky, enospc);
        if self.life().staged_head > staged_before {
            self.retry_held(&mut positions, risky, enospc);
        }
        check!(
            self,
            positions.next().is_none(),
            "a sync was requested for no staged commit"
        );
        check!(
            self,
            self.life().waiting.iter().all(|w| w.early.is_none()),
            "a staged commit was answered before its sync"
        );
    }

    /// Check the writer's answer (or silence) to one commit against the model's expectation
    /// and update the model: a staged commit takes the next sync position, a held one joins
    /// `held`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn settle_commit(
        &mut self,
        id: String,
        submit: Option<SimProp>,
        expect: CommitExpect,
        got: Option<(u16, serde_json::Value)>,
        rx: Receiver<Response>,
        positions: &mut impl Iterator<Item = u64>,
        risky: bool,
        enospc: bool,
    ) {
        let seed = self.seed;
        let life = self.life.as_mut().expect("life");
        match (expect, got) {
            (CommitExpect::Now(status), Some((got_status, v))) => {
                assert_eq!(got_status, status, "seed {seed}: commit answered {v}");
            }
            (CommitExpect::Now(status), None) => {
                panic!("seed {seed}: commit staged or held, expected {status}")
            }
            (CommitExpect::Hold(base), None) => {
                life.held
                    .entry(base)
                    .or_default()
                    .push_back((id, rx, submit));
                life.held_count += 1;
                self.stats.held += 1;
            }
            (CommitExpect::Hold(_), Some((status, v))) => {
                panic!("seed {seed}: a commit ahead of HEAD should be held, answered {status} {v}")
            }
            (CommitExpect::Stage(next), got) => {
                // Silence means staged. A 503 may also follow a stage: a held commit retried
                // behind it failed its append, and the failure answers every staged commit; then
                // its sync request is the next one (one that failed itself made none, and
                // nothing stages after a failure). See `Waiting::early`.
                let position = match got {
                    None => Some(positions.next().unwrap_or_else(|| {
                        panic!("seed {seed}: a staged commit without a sync request")
                    })),
                    Some((507, _)) if enospc => {
                        self.stats.storage_full += 1;
                        None
                    }
                    Some((503, _)) if risky => {
                        let position = positions.next();
                        if position.is_none() {
                            self.stats.append_failures += 1;
                        }
                        position
                    }
                    Some((status, ref v)) => {
                        panic!("seed {seed}: commit should have staged, answered {status} {v}")
                    }
                };
                let life = self.life.as_mut().expect("life");
                match position {
                    Some(position) => {
                        let version = life.staged_head + 1;
                        life.staged_head = version;
                        life.staged_state = next;
                        life.props.remove(&id);
                        life.committed.insert(id.clone());
                        life.staged_ids.insert(version, id);
                        life.waiting.push_back(Waiting {
                            version,
                            position,
                            rx,
                            early: got.map(|g| g.0),
                        });
                        life.positions.push_back(position);
                    }
                    None if got.as_ref().is_some_and(|g| g.0 == 503) => self.poisoned_now(),
                    None => {}
                }
            }
        }
    }

    /// The staged head grew: the writer retried every held commit whose base it reached, lowest
    /// base first, oldest first within a base (a retry that stages lets the next base in).
    pub(crate) fn retry_held(
        &mut self,
        positions: &mut impl Iterator<Item = u64>,
        risky: bool,
        enospc: bool,
    ) {
        let now = sim_clock();
        loop {
            let life = self.life.as_mut().expect("life");
            let Some(entry) = life.held.first_entry() else {
                return;
            };
            if *entry.key() > life.staged_head {
                return;
            }
            let queue = entry.remove();
            life.held_count -= queue.len();
            for (id, rx, submit) in queue {
                let life = self.life.as_mut().expect("life");
                let expect = expect_commit(life, &id, submit.as_ref(), now, false);
                let got = answer(&rx);
                if got.is_none() {
                    self.stats.held_staged += 1;
                }
                self.log(format!(
                    "  held commit {} retried -> {:?}",
                    &id[..8],
                    got.as_ref().map(|g| g.0)
                ));
                self.settle_commit(id, submit, expect, got, rx, positions, risky, enospc);
            }
        }
    }

    /// Every held commit's wait ends: each is answered as a commit that is not held would be.
    pub(crate) fn step_hold_deadline(&mut self) {
        let now = sim_clock();
        let life = self.life.as_mut().expect("life");
        if life.held_count == 0 {
            return;
        }
        life.writer
            .on_tick(Instant::now() + Duration::from_secs(3600));
        let held: Vec<HeldCommit> = std::mem::take(&mut life.held)
            .into_values()
            .flatten()
            .collect();
        life.held_count = 0;
        self.log(format!(
            "hold deadline: {} held commits released",
            held.len()
        ));
        let mut none = std::iter::empty();
        for (id, rx, submit) in held {
            let life = self.life.as_mut().expect("life");
            let expect = expect_commit(life, &id, submit.as_ref(), now, false);
            check!(
                self,
                matches!(expect, CommitExpect::Now(_)),
                "a held commit could stage at its deadline"
            );
            let got = answer(&rx);
            self.settle_commit(id, submit, expect, got, rx, &mut none, false, false);
        }
    }
}
