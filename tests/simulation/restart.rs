//! Boots and restarts: recovery after a kill or a power cut, checked against everything ever
//! published.

use super::*;

impl Sim {
    /// Open the data directory, restore, check the recovered state against what is known, and
    /// start a writer on it. On the way, recovery may itself be cut by a power cut or fail on
    /// an injected read error; it is then retried, as an operator's restart would.
    pub(crate) fn boot(&mut self, previous_staged: &BTreeMap<u64, String>) {
        let opts = StorageOptions {
            segment_bytes: SEGMENT_BYTES,
            checkpoints_kept: 2,
        };
        let mut attempts = 0;
        // Opened as the server opens it: records below the newest checkpoint's `log_end` are
        // checked by header only, and only their locations are kept.
        let mut index;
        let mut checkpoint_bytes: Option<(u64, Vec<u8>)>;
        let opened = loop {
            attempts += 1;
            check!(self, attempts < 10, "recovery never succeeded");
            // Sometimes make recovery itself fail: a power cut during its repairs, or EIO. What
            // does not fire during recovery stays armed for the lifetime that follows.
            let mut injected = false;
            if attempts == 1 && self.rng.chance(15) {
                if self.rng.chance(60) {
                    let n = self.rng.below(6);
                    self.io.crash_at_mutation(n);
                    self.crash_at = Some(self.io.mutations() + n);
                    self.log(format!("  recovery: power cut armed at mutation +{n}"));
                } else {
                    let (op, n) = if self.rng.chance(50) {
                        (Op::Read, self.rng.below(8))
                    } else {
                        (Op::SyncFile, 0)
                    };
                    self.io.inject(op, n, FaultKind::Eio);
                    let at = self.io.calls(op) + n;
                    self.armed.push((op, at, FaultKind::Eio));
                    self.log(format!("  recovery: EIO armed at {op:?} #{at}"));
                }
                injected = true;
            }
            // Opened as `svc_registry::storage::open` opens it; on a new data directory the
            // genesis record (genesis v2, docs/FORMATS.md) is written and synced before anything else. A
            // crash or a fault during it is a failed start like any other.
            index = svc_registry::storage::FrameIndex::default();
            // The checkpoint's payload is kept whole here (restore_over parses it twice); the
            // log layer keeps the one whose CRC matched (`streamed_checkpoint`).
            checkpoint_bytes = None;
            let mut load = |seq: u64, r: &mut dyn std::io::Read| -> Result<u64, String> {
                let mut bytes = Vec::new();
                r.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
                let trusted = restore::checkpoint_log_end(&bytes).unwrap_or(0);
                checkpoint_bytes = Some((seq, bytes));
                Ok(trusted)
            };
            let scanned = storage::open_index(
                Path::new(DATA),
                &opts,
                Arc::new(self.io.clone()),
                &mut load,
                &mut |end, len, head| index.add(end, len, head),
            );
            let opened = scanned.and_then(|mut o| {
                if index.first.is_none() {
                    let set = Arc::new(self.set.clone());
                    let g = svc_registry::storage::write_genesis(
                        &mut o,
                        Path::new(DATA),
                        REGISTRY,
                        &set,
                    )?;
                    index.first = Some(g);
                }
                Ok(o)
            });
            match opened {
                Ok(o) => break o,
                Err(e) => {
                    check!(
                        self,
                        injected || self.io.powered_off(),
                        "recovery refused: {e}"
                    );
                    self.stats.recovery_interrupted += 1;
                    self.log(format!("  recovery failed ({e}); restarting"));
                    if self.io.powered_off() {
                        let s = self.rng.next_u64();
                        self.io.crash(s);
                    } else {
                        self.io.kill();
                    }
                    self.armed.clear();
                    self.crash_at = None;
                }
            }
        };
        if let Some(t) = &opened.truncated_tail {
            self.stats.torn_tails += 1;
            let line = format!("  torn tail cut at {}:{}", t.path.display(), t.offset);
            self.log(line);
        }

        // Restore exactly as `storage::open` does (history read back through the log reader),
        // but a checkpoint that disagrees with the log is a bug here (it was written from a
        // published, hence durable, state).
        let read_back = |index| {
            svc_registry::storage::history_of(
                REGISTRY,
                opened.reader.clone(),
                Path::new(DATA),
                opened.first_segment,
                index,
            )
        };
        // Reading back genesis and the pending frames may meet an EIO armed for recovery that
        // did not fire there: start-up refuses, and the operator's restart reads again.
        let indexed = match read_back(index.clone()) {
            Err(e) if self.read_fault_armed() && !self.io.powered_off() => {
                self.log(format!(
                    "  reading back failed on an injected read fault ({e}); again"
                ));
                read_back(index)
            }
            other => other,
        };
        let (history, frames) = match indexed {
            Ok(h) => h,
            Err(e) => panic!(
                "seed {}: the recovered log's genesis or pending frames do not read back: {e}",
                self.seed
            ),
        };
        let cp = match (&opened.streamed_checkpoint, &checkpoint_bytes) {
            (Some((seq, _)), Some((loaded, bytes))) if seq == loaded => {
                Some((*seq, bytes.as_slice()))
            }
            _ => None,
        };
        // A log a retention window cut starts past genesis: only its checkpoint restores it
        // (there is no full replay to compare with; `check_recovered` replays the model's
        // copies of the dropped records instead).
        if history.oldest_version() > 0 {
            check!(
                self,
                self.window > 0,
                "a log without a window starts at {}",
                history.oldest_version()
            );
            let oldest = history.oldest_version();
            let covering = cp.filter(|(seq, _)| *seq >= oldest);
            let Some((seq, _)) = covering else {
                // Only an injected read error can hide the newest checkpoint (recovery skips
                // one it cannot read and may fall back to an older one, from before the
                // drop): restore then refuses to start, and the operator's restart (the fault
                // has fired) finds the checkpoint again.
                check!(
                    self,
                    self.read_fault_armed(),
                    "the log starts at version {} and no checkpoint covers it",
                    history.oldest_version()
                );
                let refused = self.restore_over(cp, &history, &frames);
                check!(
                    self,
                    refused.is_err(),
                    "a windowed log restored without a checkpoint covering its start"
                );
                self.log("  the checkpoint did not read back; start refused, restarting".into());
                self.stats.recovery_interrupted += 1;
                drop(opened);
                self.io.kill();
                self.armed.clear();
                self.crash_at = None;
                return self.boot(previous_staged);
            };
            self.stats.windowed_boots += 1;
            let restored = match self.restore_over(cp, &history, &frames) {
                Ok(r) => r,
                Err(e) => panic!(
                    "seed {}: checkpoint {seq} does not restore the windowed log: {e}",
                    self.seed
                ),
            };
            self.stats.checkpoint_restores += 1;
            self.check_recovered(&restored.snapshot, previous_staged);
            return self.start_life(opened, restored);
        }
        let full = match self.restore_over(None, &history, &frames) {
            Ok(r) => r,
            Err(e) => panic!(
                "seed {}: the recovered log does not restore: {e}",
                self.seed
            ),
        };
        let restored = match cp {
            None => full,
            Some((seq, _)) => {
                let from_cp = self.restore_over(cp, &history, &frames);
                let r = match from_cp {
                    Ok(r) => r,
                    Err(e) => panic!(
                        "seed {}: checkpoint {seq} disagrees with the log: {e}",
                        self.seed
                    ),
                };
                self.stats.checkpoint_restores += 1;
                check!(
                    self,
                    r.snapshot.head.hash == full.snapshot.head.hash,
                    "checkpoint head"
                );
                let a: Vec<Vec<u8>> = r
                    .snapshot
                    .descriptors
                    .values()
                    .map(|d| d.to_json())
                    .collect();
                let b: Vec<Vec<u8>> = full
                    .snapshot
                    .descriptors
                    .values()
                    .map(|d| d.to_json())
                    .collect();
                check!(
                    self,
                    a == b,
                    "restore from checkpoint {seq} differs from a full replay"
                );
                r
            }
        };
        self.check_recovered(&restored.snapshot, previous_staged);
        self.start_life(opened, restored);
    }

    /// Start a writer on the recovered log and state: the lifetime that follows a boot.
    fn start_life(&mut self, opened: storage::Opened, restored: restore::Restored) {
        let snapshot = Arc::new(ArcSwap::from_pointee(restored.snapshot));
        let (_req_tx, req_rx) = crossbeam_channel::bounded(1);
        let (_int_tx, int_rx) = crossbeam_channel::unbounded();
        let (verify_tx, verify_rx) = crossbeam_channel::unbounded();
        let (sync_tx, sync_rx) = crossbeam_channel::unbounded();
        let poisoned_flag = WritePlane::new();
        let mut publishers: Vec<Box<dyn svc_registry::snapshot::Publisher>> = Vec::new();
        let tree = self.new_life_tree().map(|(tree, feed)| {
            publishers.push(Box::new(feed));
            tree
        });
        let mut writer = Writer::new(WriterParts {
            registry_id: REGISTRY.into(),
            snapshot: snapshot.clone(),
            settings: Arc::new(ArcSwap::from_pointee(WriterSettings {
                ttl: Duration::from_secs(TTL_SECS),
                max_pending: MAX_PENDING,
                // Never ends by itself: `step_hold_deadline` ends every wait.
                commit_wait: Duration::from_secs(600),
                limits: limits(),
            })),
            requests: req_rx,
            internal_rx: int_rx,
            verify_tx,
            sync_tx: Some(sync_tx),
            journal: Box::new(DiskJournal {
                writer: opened.writer,
                sync: true,
            }),
            publisher: Box::new(Publishers(publishers)),
            plane: poisoned_flag.clone(),
            clock_ms: || sim_clock() * 1000,
        });
        let mut committed = BTreeSet::new();
        for (id, v) in restored.recent_commits {
            committed.insert(id.clone());
            writer.remember_committed(id, v);
        }
        let snap = snapshot.load_full();
        let props = self.check_pending_restored(&restored.pending, &committed, snap.version());
        let back = writer.restore_pending(restored.pending);
        check!(
            self,
            back == props.len(),
            "the writer restored {back} pending proposals, the model {}",
            props.len()
        );
        let staged_state = snap
            .descriptors
            .values()
            .map(|d| (d.kind(), d.id().to_string()))
            .collect();
        self.life = Some(Life {
            writer,
            snapshot,
            verify_rx,
            sync_rx,
            syncer: opened.syncer,
            reader: opened.reader.clone(),
            poisoned_flag,
            _lock: opened.lock,
            props,
            committed,
            staged_head: snap.version(),
            staged_state,
            staged_ids: BTreeMap::new(),
            waiting: VecDeque::new(),
            held: BTreeMap::new(),
            held_count: 0,
            positions: VecDeque::new(),
            fsync_gone: false,
            held_jobs: Vec::new(),
            approves: BTreeMap::new(),
            poisoned: false,
            published: snap.version(),
            tree,
        });
        let line = format!("  booted at version {}", snap.version());
        self.log(line);
        self.tree_booted();
        self.check_tree();
    }

    /// `restore_history` over the recovered log. An EIO armed for recovery that did not fire
    /// there fires in restore's reads: restore then refuses, as start-up would, and the
    /// operator's restart restores again (the fault fires once).
    fn restore_over(
        &mut self,
        cp: Option<(u64, &[u8])>,
        history: &svc_registry::history::History,
        frames: &svc_registry::domain::pending::PendingFrames,
    ) -> Result<restore::Restored, restore::RestoreError> {
        let at = |v: u64| format!("version {v}");
        // Every pending frame is at hand: the checkpoint's carried frames (if any) are not used.
        let run = || {
            let cp = match cp {
                Some((seq, bytes)) => Some(restore::parse_checkpoint(seq, bytes)?),
                None => None,
            };
            restore::restore_history(
                REGISTRY,
                cp,
                history.clone(),
                &mut |_| Ok(frames.clone()),
                &at,
            )
        };
        match run() {
            Err(e) if self.read_fault_armed() && !self.io.powered_off() => {
                self.log(format!(
                    "  restore failed on an injected read fault ({e}); again"
                ));
                run()
            }
            other => other,
        }
    }

    /// docs/FORMATS.md: every proposal the last lifetime acknowledged (202) that is still live and can
    /// still commit is restored, with every approval acknowledged (200) for it. Returns the
    /// model of the proposals the writer takes back: the restored ones not expired and based
    /// at or after HEAD (approvals that were durable but never answered come back too).
    pub(crate) fn check_pending_restored(
        &mut self,
        restored: &[svc_registry::domain::pending::RestoredPending],
        committed: &BTreeSet<String>,
        head: u64,
    ) -> BTreeMap<String, SimProp> {
        let now = sim_clock();
        let slots = |r: &svc_registry::domain::pending::RestoredPending| -> BTreeSet<usize> {
            r.approvals
                .iter()
                .filter_map(|(keyid, _, _)| keyid.strip_prefix('k')?.parse().ok())
                .collect()
        };
        let acked = std::mem::take(&mut self.acked_pending);
        for (id, p) in &acked {
            if now >= p.expires || p.base < head || committed.contains(id) {
                continue;
            }
            let Some(r) = restored.iter().find(|r| &r.proposal_id == id) else {
                panic!(
                    "seed {}: acknowledged proposal {} lost across the restart",
                    self.seed,
                    &id[..8]
                );
            };
            check!(
                self,
                r.expires_at == p.expires,
                "proposal {} came back with another expiry",
                &id[..8]
            );
            check!(
                self,
                p.approvals.is_subset(&slots(r)),
                "acknowledged approvals of {} lost: {:?} not within {:?}",
                &id[..8],
                p.approvals,
                slots(r)
            );
            self.stats.pending_restored += 1;
        }
        restored
            .iter()
            .filter(|r| now < r.expires_at)
            .filter_map(|r| {
                let (bytes, base, ops) = self.catalog.get(&r.proposal_id)?.clone();
                (base >= head).then(|| {
                    (
                        r.proposal_id.clone(),
                        SimProp {
                            bytes,
                            base,
                            ops,
                            expires: r.expires_at,
                            approvals: slots(r),
                        },
                    )
                })
            })
            .collect()
    }

    /// The recovered chain against what the model knows: every version ever published is
    /// there unchanged (acknowledged ones included); anything later was staged at that version
    /// by the last lifetime; links verify; descriptors equal a replay of the proposals.
    pub(crate) fn check_recovered(
        &mut self,
        snap: &Snapshot,
        previous_staged: &BTreeMap<u64, String>,
    ) {
        let history: Vec<Arc<CommitRecord>> =
            self.chain_of(snap).into_iter().map(Arc::new).collect();
        let head = snap.version();
        let known_head = self.known.len() as u64 - 1;
        check!(
            self,
            head >= known_head,
            "recovered HEAD {head} is behind published version {known_head}"
        );
        for (v, (hash, _)) in self.known.iter().enumerate() {
            check!(
                self,
                &history[v].hash == hash,
                "published version {v} changed after recovery"
            );
        }
        for (v, hash) in &self.acked {
            check!(
                self,
                &history[*v as usize].hash == hash,
                "acknowledged version {v} lost"
            );
        }
        for rec in &history[self.known.len()..] {
            let staged = previous_staged.get(&rec.version);
            check!(
                self,
                staged == Some(&rec.proposal_id),
                "recovered version {} (proposal {}) was never staged at that version (staged: {staged:?})",
                rec.version,
                rec.proposal_id
            );
        }
        let mut prev = String::new();
        let mut replay = state::Descriptors::new();
        for rec in &history {
            check!(
                self,
                rec.verify_link(REGISTRY, &prev),
                "version {} does not link",
                rec.version
            );
            prev = rec.hash.clone();
            if rec.version > 0 {
                let p = proposal::parse(&rec.payload, REGISTRY, &limits()).expect("payload");
                replay = state::apply(&replay, &p.ops, rec.version).expect("replays");
            }
        }
        let a: Vec<Vec<u8>> = replay.values().map(|d| d.to_json()).collect();
        let b: Vec<Vec<u8>> = snap.descriptors.values().map(|d| d.to_json()).collect();
        check!(
            self,
            a == b,
            "recovered descriptors differ from a replay of the chain"
        );
        self.known = history
            .iter()
            .map(|r| (r.hash.clone(), r.proposal_id.clone()))
            .collect();
        if self.window > 0 {
            self.records = history.iter().map(|r| (**r).clone()).collect();
        }
        self.stats.max_version = self.stats.max_version.max(head);
    }

    /// End the lifetime: a process kill or a power cut, then boot again.
    pub(crate) fn restart(&mut self) {
        let previous = self.life.take().expect("a running life");
        let staged = previous.staged_ids.clone();
        self.acked_pending = previous.props.clone();
        drop(previous);
        let power_cut = self.io.powered_off() || self.lost_sync || self.rng.chance(60);
        if power_cut {
            let s = self.rng.next_u64();
            self.io.crash(s);
            self.stats.power_cuts += 1;
            self.tree_power_cut();
        } else {
            self.io.kill();
            self.stats.kills += 1;
        }
        self.stats.restarts += 1;
        self.lost_sync = false;
        self.armed.clear();
        self.crash_at = None;
        let line = format!(
            "restart: {}",
            if power_cut {
                "power cut"
            } else {
                "process kill"
            }
        );
        self.log(line);
        self.boot(&staged);
    }

    /// The chain 0..=HEAD of `snap` as the checks see it, read back from the log; with a
    /// window, the versions below the node's oldest retained one come from the model's copies
    /// (read back when they were published), after checking that each of them answers Expired
    /// naming that oldest version, that the window holds at least `retain_versions` versions
    /// and that every version inside it reads back (no gap). The power must be on.
    pub(crate) fn chain_of(&self, snap: &Snapshot) -> Vec<CommitRecord> {
        let head = snap.version();
        let oldest = snap.history.oldest_version();
        check!(
            self,
            oldest == 0 || self.window > 0,
            "versions below {oldest} dropped without a window"
        );
        check!(
            self,
            oldest <= head && head - oldest + 1 >= self.window.min(head + 1),
            "the window [{oldest}, {head}] is narrower than retain_versions {}",
            self.window
        );
        check!(
            self,
            oldest as usize <= self.records.len() || oldest == 0,
            "version {oldest} is the oldest kept, but the model saw only {} published",
            self.records.len()
        );
        let mut chain = Vec::with_capacity(head as usize + 1);
        for v in 0..oldest {
            let read = snap.history.read(v);
            check!(
                self,
                read == Ok(svc_registry::history::Read::Expired { oldest }),
                "version {v} below the window answered {read:?}"
            );
            chain.push(self.records[v as usize].clone());
        }
        for v in oldest..=head {
            chain.push(
                self.read_history(snap, v)
                    .expect("the power is on after recovery"),
            );
        }
        chain
    }

    /// With a window, whether `v` is below the oldest version `snap` still holds (its reads
    /// answer Expired: the checks that read it back skip it, `chain_of` checks the answer).
    pub(crate) fn dropped(&self, snap: &Snapshot, v: u64) -> bool {
        self.window > 0 && v < snap.history.oldest_version()
    }

    // -----------------------------------------------------------------------------------------
    // Checks after every step.

    /// Was an EIO on a read injected (at boot) in this lifetime? Such a fault fires once, in
    /// recovery, in restore or in a later read of history.
    pub(crate) fn read_fault_armed(&self) -> bool {
        self.armed.iter().any(|(op, _, _)| *op == Op::Read)
    }

    /// Version `v` of `snap`'s history, read back from the log through the log reader exactly
    /// as `/registry/{version}` does. None only when the power is cut (every read fails then);
    /// an injected read fault fails one read, which is then tried once more.
    pub(crate) fn read_history(&self, snap: &Snapshot, v: u64) -> Option<CommitRecord> {
        for attempt in 0..2 {
            match snap.history.record(v) {
                Ok(Some(rec)) => return Some(rec),
                Ok(None) => panic!(
                    "seed {}: version {v} is not in the history of HEAD {}",
                    self.seed,
                    snap.version()
                ),
                Err(_) if self.io.powered_off() => return None,
                Err(e) => assert!(
                    attempt == 0 && self.read_fault_armed(),
                    "seed {}: reading version {v} back from the log failed: {e}",
                    self.seed
                ),
            }
        }
        unreachable!("the second attempt returns or panics")
    }

    pub(crate) fn check_live(&mut self) {
        let seed = self.seed;
        let snap = self.life().snapshot.load_full();
        let v = snap.version();
        let published = self.life().published;
        assert!(
            v >= published,
            "seed {seed}: published version went back from {published} to {v}"
        );
        // Newly published records, read back through the server's read path (the log reader);
        // with the power cut, what could not be read is checked at the next boot instead.
        let mut read = Vec::new();
        for version in published + 1..=v {
            // A drop never reaches a version not yet seen published (it keeps a window
            // below HEAD and the power-cut case stops reading first).
            check!(
                self,
                !self.dropped(&snap, version),
                "version {version} dropped before it was read back"
            );
            match self.read_history(&snap, version) {
                Some(rec) => read.push(rec),
                None => break,
            }
        }
        let acked: Vec<Option<CommitRecord>> = self
            .acked
            .keys()
            .map(|av| {
                if self.dropped(&snap, *av) {
                    None
                } else {
                    self.read_history(&snap, *av)
                }
            })
            .collect();
        let life = self.life.as_mut().expect("a running life");
        let complete = read.len() as u64 == v - published;
        for rec in read {
            let version = rec.version;
            assert_eq!(
                life.staged_ids.get(&version),
                Some(&rec.proposal_id),
                "seed {seed}: published version {version} was not staged as such"
            );
            assert_eq!(
                self.known.len() as u64,
                version,
                "seed {seed}: known chain gap"
            );
            self.known.push((rec.hash.clone(), rec.proposal_id.clone()));
            if self.window > 0 {
                self.records.push(rec);
            }
        }
        if complete {
            life.published = v;
        }
        if !life.poisoned {
            assert!(
                v <= life.staged_head,
                "seed {seed}: published {v} beyond staged {}",
                life.staged_head
            );
        }
        for ((av, hash), rec) in self.acked.iter().zip(acked) {
            assert!(
                *av <= v,
                "seed {seed}: acknowledged {av} is not published ({v})"
            );
            if let Some(rec) = rec {
                assert_eq!(
                    &rec.hash, hash,
                    "seed {seed}: acknowledged version {av} changed"
                );
            }
        }
        assert_eq!(
            life.poisoned,
            life.poisoned_flag.poisoned().is_some(),
            "seed {seed}: poisoned flag disagrees with the model"
        );
    }
}
