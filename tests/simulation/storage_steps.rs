//! Storage and time steps: syncs, clock jumps, injected faults, checkpoints (with a window,
//! each followed by the retention drop) and proposal reads.

use svc_registry::roles::retention;

use super::*;

impl Sim {
    /// The writer just poisoned itself: every waiting commit got 503.
    pub(crate) fn poisoned_now(&mut self) {
        let seed = self.seed;
        let life = self.life.as_mut().expect("life");
        life.poisoned = true;
        for (_, rx, _) in std::mem::take(&mut life.held).into_values().flatten() {
            assert_eq!(
                answer(&rx).map(|g| g.0),
                Some(503),
                "seed {seed}: a held commit after the failure"
            );
        }
        life.held_count = 0;
        for w in life.waiting.drain(..) {
            let got = w.early.or_else(|| answer(&w.rx).map(|g| g.0));
            assert_eq!(
                got,
                Some(503),
                "seed {seed}: a waiting commit after the failure"
            );
        }
        life.staged_head = life.published;
        let snap = life.snapshot.load_full();
        life.staged_state = snap
            .descriptors
            .values()
            .map(|d| (d.kind(), d.id().to_string()))
            .collect();
    }

    pub(crate) fn step_sync(&mut self) {
        let risky = self.faults_pending();
        let life = self.life.as_mut().expect("life");
        if life.positions.is_empty() || life.fsync_gone {
            return;
        }
        // One group sync covering a prefix of what is waiting.
        let k = 1 + (self.rng.below(life.positions.len() as u64) as usize);
        let life = self.life.as_mut().expect("life");
        let upto = life.positions[k - 1];
        let line = format!("sync to {upto} ({k} of {})", life.positions.len());
        self.log(line);
        self.sync_upto(upto, risky);
    }

    /// Play the fsync thread for the pending frames the writer just appended: a 202 / 200
    /// waits for the sync that covers its frame (docs/FORMATS.md); that sync covers every staged
    /// commit before it too, as a real group sync does.
    pub(crate) fn sync_requested(&mut self) {
        let risky = self.faults_pending();
        let life = self.life.as_mut().expect("life");
        let asked: Vec<u64> = life.sync_rx.try_iter().collect();
        if let Some(&upto) = asked.last() {
            if life.fsync_gone {
                return;
            }
            self.log(format!("sync pending frames to {upto}"));
            self.sync_upto(upto, risky);
        }
    }

    /// One sync up to `upto`, and everything it answers.
    pub(crate) fn sync_upto(&mut self, upto: u64, risky: bool) {
        let life = self.life.as_mut().expect("life");
        let result = life.syncer.sync_to(upto);
        self.log(format!("  -> {result:?}"));
        let seed = self.seed;
        match result {
            Ok(covered) => {
                let durable = covered.max(upto);
                let life = self.life.as_mut().expect("life");
                while life.positions.front().is_some_and(|&p| p <= durable) {
                    life.positions.pop_front();
                }
                life.writer.on_internal(Internal::Durable(durable));
                let snap = life.snapshot.load_full();
                let mut acked_now = Vec::new();
                while life.waiting.front().is_some_and(|w| w.position <= durable) {
                    let w = life.waiting.pop_front().expect("front");
                    let (status, v) = answer(&w.rx)
                        .unwrap_or_else(|| panic!("seed {seed}: durable commit unanswered"));
                    assert_eq!(status, 200, "seed {seed}: durable commit answered {v}");
                    assert_eq!(v["version"], w.version, "seed {seed}: version {v}");
                    let hash = v["hash"].as_str().expect("hash").to_string();
                    assert!(
                        w.version <= snap.version(),
                        "seed {seed}: acknowledged {} not published",
                        w.version
                    );
                    acked_now.push((w.version, hash));
                }
                for w in &life.waiting {
                    assert!(
                        w.rx.is_empty(),
                        "seed {seed}: commit at {} answered before its sync",
                        w.position
                    );
                }
                // Each acknowledged record, read back from the log as `/registry/{version}`
                // serves it, has the acknowledged hash.
                for (version, hash) in acked_now {
                    let readable = !self.dropped(&snap, version);
                    if let Some(rec) = readable
                        .then(|| self.read_history(&snap, version))
                        .flatten()
                    {
                        assert_eq!(rec.hash, hash, "seed {seed}: acknowledged hash");
                    }
                    self.acked.insert(version, hash);
                    self.stats.acked += 1;
                }
            }
            Err(e) => {
                check!(self, risky, "a sync failed with no fault armed: {e}");
                self.stats.sync_failures += 1;
                let life = self.life.as_mut().expect("life");
                life.fsync_gone = true;
                life.positions.clear();
                let was_poisoned = life.poisoned;
                life.writer.on_internal(Internal::SyncFailed(e.to_string()));
                if was_poisoned {
                    let life = self.life.as_mut().expect("life");
                    assert!(life.waiting.is_empty());
                } else {
                    self.poisoned_now();
                }
            }
        }
    }

    pub(crate) fn step_clock(&mut self) {
        let secs = if self.rng.chance(15) {
            20 + self.rng.below(20)
        } else {
            1 + self.rng.below(5)
        };
        advance_clock(secs as i64);
        self.log(format!("clock +{secs}s"));
    }

    pub(crate) fn step_fault(&mut self) {
        let nth = self.rng.below(3);
        let (op, kind) = match self.rng.below(9) {
            0 => (Op::MapSync, FaultKind::Eio),
            1 => (Op::MapSync, FaultKind::SyncFailedPersisted),
            2 => {
                self.lost_sync = true;
                (Op::MapSync, FaultKind::SyncFailedLost)
            }
            3 => (Op::SyncDir, FaultKind::Eio),
            4 | 5 => (Op::Preallocate, FaultKind::Enospc),
            6 => (Op::MapWrite, FaultKind::Eio),
            7 => (Op::Create, FaultKind::Enospc),
            _ => {
                let n = self.rng.below(16);
                self.io.crash_at_mutation(n);
                self.crash_at = Some(self.io.mutations() + n);
                self.log(format!("fault: power cut at mutation +{n}"));
                return;
            }
        };
        self.io.inject(op, nth, kind);
        let at = self.io.calls(op) + nth;
        self.armed.push((op, at, kind));
        self.log(format!("fault: {kind:?} at {op:?} #{at}"));
    }

    pub(crate) fn step_checkpoint(&mut self) {
        let snap = self.life().snapshot.load_full();
        if snap.version() == 0 {
            return;
        }
        if self.window > 0 {
            self.arm_drop_fault();
        }
        let risky = self.faults_pending();
        // Both payload versions the server reads: version 2 (what it writes) at even versions,
        // version 1 (what earlier builds wrote) at odd ones.
        let bytes = if snap.version() % 2 == 0 {
            restore::checkpoint_payload(&snap, None)
        } else {
            restore::checkpoint_bytes(&snap)
        };
        let result =
            storage::write_checkpoint(Path::new(DATA), &self.io, snap.version(), &bytes, 2);
        let line = format!(
            "checkpoint {} -> {:?}",
            snap.version(),
            result.as_ref().err()
        );
        self.log(line);
        match result {
            Ok(_) => self.stats.checkpoints += 1,
            Err(e) => {
                check!(self, risky, "checkpoint failed with no fault armed: {e}");
                return;
            }
        }
        if self.window == 0 {
            return;
        }
        // The checkpoint thread's `after_checkpoint` (src/app.rs): drop what the window and
        // this durable checkpoint allow. A kill between the two is a restart right here.
        if self.rng.chance(10) {
            self.log("  killed between the checkpoint and the drop".into());
            return self.restart();
        }
        let first_before = self.first_segment();
        let dropped =
            retention::drop_window(&snap.history, snap.version(), snap.version(), self.window);
        let line = format!(
            "  drop below the window of {} at {} -> {dropped:?}, segments from {first_before} to {}",
            self.window,
            snap.version(),
            self.first_segment()
        );
        self.log(line);
        match dropped {
            Ok(Some(d)) => {
                self.stats.drops += 1;
                self.stats.segments_dropped += self.first_segment() - first_before;
                check!(
                    self,
                    d.oldest + self.window <= snap.version() + 1,
                    "dropped into the window: oldest {} at {}",
                    d.oldest,
                    snap.version()
                );
            }
            Ok(None) => {}
            Err(e) => check!(self, risky, "a drop failed with no fault armed: {e}"),
        }
    }

    /// With a window, sometimes aim a fault at the checkpoint and the drop that follows it: a
    /// power cut at one of their next mutations (creating and renaming the checkpoint, saving
    /// genesis, each segment remove, the directory fsync), or EIO on a segment remove or on
    /// the directory fsync that ends the drop.
    fn arm_drop_fault(&mut self) {
        if self.faults_pending() || !self.rng.chance(25) {
            return;
        }
        let (op, nth, kind) = match self.rng.below(4) {
            0 | 1 => {
                let n = self.rng.below(24);
                self.io.crash_at_mutation(n);
                self.crash_at = Some(self.io.mutations() + n);
                self.log(format!(
                    "fault: power cut at mutation +{n} (checkpoint and drop)"
                ));
                return;
            }
            2 => (Op::Remove, self.rng.below(3), FaultKind::Eio),
            _ => (Op::SyncDir, self.rng.below(3), FaultKind::Eio),
        };
        self.io.inject(op, nth, kind);
        let at = self.io.calls(op) + nth;
        self.armed.push((op, at, kind));
        self.log(format!(
            "fault: {kind:?} at {op:?} #{at} (checkpoint and drop)"
        ));
    }

    /// The first segment the log reader holds.
    fn first_segment(&self) -> u64 {
        self.life.as_ref().expect("life").reader.first_segment()
    }

    pub(crate) fn step_get_proposal(&mut self) {
        let now = sim_clock();
        let id = self.pick_proposal(false);
        let seed = self.seed;
        let reads_before = self.io.calls(Op::Read);
        let life = self.life.as_mut().expect("life");
        let (replier, rx) = reply(replies::proposal);
        life.writer.on_request(WriteRequest::GetProposal {
            id: id.clone(),
            reply: replier,
        });
        let (status, v) = answer(&rx).unwrap_or_else(|| panic!("seed {seed}: unanswered"));
        // A committed proposal is read back from the log: an injected read fault that fires
        // during this very request, or a power cut (every read fails), answers 503, and nothing
        // else may.
        let reads_after = self.io.calls(Op::Read);
        let fault_fired = self
            .armed
            .iter()
            .any(|(op, at, _)| *op == Op::Read && reads_before <= *at && *at < reads_after);
        if status == 503 && (fault_fired || self.io.powered_off()) {
            self.log(format!(
                "get proposal {id}: 503 on an injected read fault or power cut"
            ));
            return;
        }
        if status == 410 && self.window > 0 {
            // A committed proposal is read back from its commit record: below the window that
            // read answers 410 naming the oldest retained version, as `/registry/{v}` does.
            let oldest = self.life().snapshot.load().history.oldest_version();
            let at = self.known.iter().position(|(_, p)| *p == id);
            check!(
                self,
                self.life().committed.contains(&id) && at.is_some_and(|v| (v as u64) < oldest),
                "GET proposal {id} answered 410 but its commit is not below the window \
                 (version {at:?}, oldest {oldest}): {v}"
            );
            let names = format!("the oldest retained version is {oldest}");
            check!(
                self,
                v["message"].as_str().is_some_and(|m| m.contains(&names)),
                "410 does not name the oldest version {oldest}: {v}"
            );
            self.log(format!(
                "get proposal {id}: 410, committed below the window"
            ));
            return;
        }
        let life = self.life.as_mut().expect("life");
        let expect = if life.poisoned {
            (503, None)
        } else if life.committed.contains(&id) {
            (200, Some("committed"))
        } else if let Some(p) = life.props.get(&id) {
            (
                200,
                Some(if now >= p.expires {
                    "expired"
                } else {
                    "pending"
                }),
            )
        } else {
            (404, None)
        };
        assert_eq!(status, expect.0, "seed {seed}: GET proposal {v}");
        if let Some(state) = expect.1 {
            assert_eq!(v["state"], state, "seed {seed}: proposal state {v}");
        }
        if expect.1 == Some("pending") {
            let want: Vec<String> = life.props[&id]
                .approvals
                .iter()
                .map(|s| format!("k{s}"))
                .collect();
            assert_eq!(
                v["approvals"],
                serde_json::json!(want),
                "seed {seed}: approvals"
            );
        }
    }
}
