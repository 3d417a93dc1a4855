//! The follower: a verifying read replica that trusts nothing its upstream says.
//!
//! Thread: `follower` (only with `[follow]` / `--follow`). It catches up with `GET
//! /registry/log?from=V` pages, then listens to `GET /registry/stream` (resuming with
//! `Last-Event-ID`) and fetches a page whenever an event or heartbeat names a version it does
//! not have. While a page's signatures verify, a short-lived scoped `follow-fetch` thread
//! fetches and parses the next page (judged only when its turn comes). Out: verify jobs to the
//! verifier pool (whose results come back on its own channel), `WriteRequest::Apply` to the
//! writer. State it owns alone: the verified [`Tip`] (version, hash, signer history), which
//! upstream it follows, and which it refused.
//!
//! Invariant: a record reaches the writer only after [`Tip::prepare`] and
//! [`Prepared::conclude`] (the same steps `ronctl registry verify` runs) accepted it, in order,
//! from the pinned genesis hash; the writer re-checks version and prev_hash and stores the
//! record's own bytes through the authority's commit path. Nothing unverified is stored or
//! served.
//!
//! Decision table for one upstream (the loop moves to the next upstream on anything but
//! success):
//! - connection error, timeout, stall (a stream silent for `timeout`, then a probe page that
//!   does not answer either; a probe that answers just opens a fresh stream), a page that is
//!   not JSON, a non-200 answer, an upstream behind us → *failed*: count a reconnect, try the
//!   next upstream (after a short backoff once every upstream failed in a row).
//! - a record that does not verify → *refused*: `verification failed at version V`; the
//!   upstream is never asked again by this process, `/readyz` names it.
//! - the upstream's record at our head has another hash → *refused*: `fork at version V`,
//!   both hashes logged.
//! - the writer refuses a verified record: its ops do not apply or its descriptor count is not
//!   theirs → *refused* as a verification failure; storage stopped → *local*: wait, resume from
//!   the published head.
//!
//! - the upstream's signed checkpoint (SPEC §12) is not consistent with the history verified
//!   here — same size and another root, or a consistency proof from our tree that does not
//!   verify → *refused*: `split view: …` (the upstream shows others a log that is not the one it
//!   served us). Checked after each catch-up and then at most every [`CHECKPOINT_EVERY`]; an
//!   upstream without a transparency log (404) is not checked.
//!
//! Shutdown: the `stop` flag, checked between requests; every request is bounded by the
//! timeout, so the thread ends within about one timeout of the flag.

use crate::config::Follow;
use crate::domain::audit::{Break, Prepared, Tip, Trust};
use crate::domain::record::CommitRecord;
use crate::domain::signers::SignerSet;
use crate::http::client::{self, Target};
use crate::http::events::next_event;
use crate::metrics::m;
use crate::ops::FollowState;
use crate::roles::reply::Reply;
use crate::roles::verifier::{Verified, VerifyJob};
use crate::roles::writer::{Committed, WriteRequest};
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a followed upstream's checkpoint is checked against our tree, at most.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// Records asked for per page (the upstream's own ceiling, docs/API.md).
const PAGE_LIMIT: u64 = 1000;
/// A page body larger than this is refused unread (the upstream caps its pages far below).
const PAGE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Backoff after every upstream failed in a row: doubles up to the ceiling.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long one page's signature checks may take on the pool before the page is given up on
/// (and fetched again): far above a page's ~0.1 s of work, so only a wedged pool hits it.
const VERIFY_WAIT: Duration = Duration::from_secs(60);
/// Applies handed to the writer whose answer is not awaited yet: about two pages, so the
/// writer's append and sync of one page overlap the fetch and verification of the next.
const APPLY_PIPELINE: usize = 2 * PAGE_LIMIT as usize;

pub struct FollowerParts {
    pub registry_id: String,
    pub follow: Follow,
    pub state: Arc<FollowState>,
    /// The published snapshot: where the verified tip starts, and where it goes back to if the
    /// writer refuses an apply.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub writer: Sender<WriteRequest>,
    pub verify_tx: Sender<VerifyJob>,
    pub verified_rx: Receiver<Verified>,
    pub stop: Arc<AtomicBool>,
    /// This node's transparency log (built from what it verified): each upstream checkpoint is
    /// checked against it (a split view is refused). None with `[log] enabled = false`.
    pub tlog: Option<Arc<crate::tlog::Tlog>>,
}

/// How following one upstream ended.
enum End {
    /// Try the next upstream (connection error, stall, bad answer).
    Failed(String),
    /// Never follow this upstream again: the reason starts with `verification failed at
    /// version V` or `fork at version V`.
    Refused(String),
    /// The writer refused what was verified (storage stopped, or a bug): start again from the
    /// published head.
    Local(String),
    /// The upstream no longer holds our next version (`410 expired`: its retention window,
    /// SPEC §14, starts after our head): try the next upstream; if none can serve it, `/readyz`
    /// says so. Never a silent gap.
    Expired(String),
    Stopped,
}

struct Upstream {
    url: String,
    target: Target,
}

/// The thread body.
pub fn run(parts: FollowerParts) {
    let upstreams: Vec<Upstream> = parts
        .follow
        .upstreams
        .iter()
        .filter_map(
            |url| match Target::parse_with_cacert(url, parts.follow.cacert.as_deref()) {
                Ok(target) => Some(Upstream {
                    url: url.clone(),
                    target,
                }),
                Err(e) => {
                    // Validated with the config; a CA store that vanished since is an operating
                    // error worth a line, not a crash.
                    log::error!("msg=\"follow: cannot use upstream\" upstream={url} error={e:?}");
                    None
                }
            },
        )
        .collect();
    let mut f = Follower {
        tip: tip_of(&parts.snapshot.load()),
        p: parts,
        batch: 0,
        pending: VecDeque::new(),
        checkpoint_checked: None,
    };
    f.p.state.set_verified(f.tip.version);
    let mut next = 0;
    let mut failed_in_a_row = 0usize;
    let mut backoff = BACKOFF_MIN;
    while !f.stopped() {
        let live: Vec<usize> = (0..upstreams.len())
            .map(|k| (next + k) % upstreams.len().max(1))
            .filter(|&i| !f.p.state.is_refused(&upstreams[i].url))
            .collect();
        let Some(&i) = live.first() else {
            // Every upstream refused: keep serving what was verified, say so in /readyz.
            f.sleep(Duration::from_millis(500));
            continue;
        };
        let up = &upstreams[i];
        log::info!(
            "msg=\"following upstream\" upstream={} from_version={}",
            up.url,
            f.tip.version
        );
        let end = f.follow(up);
        // A 410 is a failure of this upstream like any other, plus a note for /readyz.
        let expired = matches!(end, End::Expired(_));
        match end {
            End::Stopped => break,
            End::Refused(reason) => {
                m().registry_follow_verify_failures_total.inc();
                if reason.starts_with("fork at") {
                    m().registry_follow_forks_total.inc();
                }
                log::error!(
                    "msg=\"upstream refused; not following it again\" upstream={} reason={reason:?} verified_version={}",
                    up.url,
                    f.tip.version
                );
                f.p.state.refuse(&up.url, reason);
                next = i + 1;
                failed_in_a_row = 0;
            }
            End::Failed(why) | End::Expired(why) => {
                m().registry_follow_reconnects_total.inc();
                if expired {
                    f.p.state.set_expired(&up.url, Some(why.clone()));
                    m().registry_follow_upstreams_expired
                        .set(f.p.state.expired_count() as i64);
                    log::warn!(
                        "msg=\"upstream no longer holds our next version (retention window); trying the next\" upstream={} error={why:?} verified_version={}",
                        up.url,
                        f.tip.version
                    );
                } else {
                    log::warn!(
                        "msg=\"upstream failed; trying the next\" upstream={} error={why:?} verified_version={}",
                        up.url,
                        f.tip.version
                    );
                }
                next = i + 1;
                failed_in_a_row += 1;
                if failed_in_a_row >= live.len() {
                    f.sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    failed_in_a_row = 0;
                }
                continue;
            }
            End::Local(why) => {
                log::error!("msg=\"follow: the writer refused a verified record\" error={why:?}");
                f.sleep(BACKOFF_MAX);
            }
        }
        backoff = BACKOFF_MIN;
    }
    log::info!("msg=\"follower stopped\" version={}", f.tip.version);
}

/// The verified tip of a published snapshot.
fn tip_of(snap: &Snapshot) -> Tip {
    Tip {
        version: snap.version(),
        hash: snap.head.hash.clone(),
        signers: (*snap.signers).clone(),
    }
}

#[derive(Deserialize)]
struct Page<'a> {
    head: u64,
    #[serde(borrow)]
    records: Vec<&'a RawValue>,
}

struct Follower {
    p: FollowerParts,
    tip: Tip,
    /// Numbers verify batches (see `send_checks`).
    batch: u64,
    /// Answers of applies handed to the writer, oldest first (see `apply`).
    pending: VecDeque<Receiver<Result<Committed, crate::error::ApiError>>>,
    /// When the followed upstream's checkpoint was last checked.
    checkpoint_checked: Option<Instant>,
}

impl Follower {
    fn stopped(&self) -> bool {
        self.p.stop.load(Ordering::SeqCst)
    }

    /// Sleep `d`, waking early on stop.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    fn saw_head(&self, up: &Upstream, head: u64) {
        self.p.state.saw_upstream_head(&up.url, head);
        let (_, newest, lag) = self.p.state.lag();
        if let Some(h) = newest {
            m().registry_follow_upstream_head_version.set(h as i64);
        }
        m().registry_follow_lag_versions.set(lag as i64);
    }

    /// Follow one upstream until it fails, is refused, or the thread stops.
    fn follow(&mut self, up: &Upstream) -> End {
        if let Err(end) = self.catch_up(up, None) {
            return end;
        }
        self.checkpoint_checked = None;
        if let Err(end) = self.check_checkpoint(up) {
            return end;
        }
        self.stream(up)
    }

    /// Is the upstream's signed checkpoint consistent with the history verified here? (At most
    /// every [`CHECKPOINT_EVERY`].) Answers that cannot be had (no log upstream, a timeout) are
    /// not judged: only a checkpoint and proof the upstream did serve can refuse it.
    fn check_checkpoint(&mut self, up: &Upstream) -> Result<(), End> {
        let Some(tlog) = self.p.tlog.clone() else {
            return Ok(());
        };
        if self
            .checkpoint_checked
            .is_some_and(|at| at.elapsed() < CHECKPOINT_EVERY)
        {
            return Ok(());
        }
        self.checkpoint_checked = Some(Instant::now());
        let Some(ours) = tlog.head() else {
            return Ok(());
        };
        let Ok(body) = self.get(up, "/registry/checkpoint") else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&body);
        let Some((note_text, _)) = text.rsplit_once("\n\n") else {
            return Err(End::Refused(
                "split view: the upstream's checkpoint is not a signed note".into(),
            ));
        };
        let theirs = crate::tlog::note::Checkpoint::parse(&format!("{note_text}\n"))
            .map_err(|e| End::Refused(format!("split view: the upstream's checkpoint: {e}")))?;
        let split = |why: String| {
            End::Refused(format!(
                "split view: the upstream's checkpoint of size {} {why}, not consistent with the history verified here (tree size {})",
                theirs.size, ours.size
            ))
        };
        if theirs.size <= ours.size {
            let root = crate::tlog::tree::tree_hash(theirs.size.max(1), tlog.store())
                .map_err(End::Local)?;
            if theirs.size == 0 || root != theirs.root {
                return Err(split("has another root".into()));
            }
            return Ok(());
        }
        let path = format!(
            "/registry/proof/consistency?old={}&new={}",
            ours.size, theirs.size
        );
        let Ok(body) = self.get(up, &path) else {
            return Ok(());
        };
        let proof: Vec<crate::tlog::tree::Hash> =
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v["hashes"]
                        .as_array()?
                        .iter()
                        .map(|h| {
                            crate::domain::dsse::unb64(h.as_str()?).and_then(|b| b.try_into().ok())
                        })
                        .collect()
                })
                .ok_or_else(|| split("came with a malformed consistency proof".into()))?;
        if !crate::tlog::tree::verify_consistency(
            ours.size,
            theirs.size,
            &ours.root,
            &theirs.root,
            &proof,
        ) {
            return Err(split(
                "does not extend our tree (the consistency proof fails)".into(),
            ));
        }
        Ok(())
    }

    /// Fetch pages from the tip until the upstream has nothing newer (and, with `until`, at
    /// least that version is verified).
    fn catch_up(&mut self, up: &Upstream, until: Option<u64>) -> Result<(), End> {
        let caught_up = self.catch_up_pages(up, until);
        // Whatever ended the pages, the applies already handed over are answered first: a
        // refusal by the writer concerns earlier records than anything the pages found.
        self.settle()?;
        caught_up
    }

    fn catch_up_pages(&mut self, up: &Upstream, until: Option<u64>) -> Result<(), End> {
        // The next page, fetched and parsed while this one's signatures verify: (its `from`,
        // the page). Used only if the tip then is that `from` (every record before it
        // verified); whatever it says is judged like any page when its turn comes.
        let mut prefetched: Option<Prefetched> = None;
        loop {
            if self.stopped() {
                return Err(End::Stopped);
            }
            let from = self.tip.version;
            let page = match prefetched.take() {
                Some((at, page)) if at == from => page?,
                _ => fetch_page(&up.target, from, self.p.follow.timeout)?,
            };
            // It serves our head again (a window may have been widened, or it is another node).
            if self.p.state.set_expired(&up.url, None) {
                m().registry_follow_upstreams_expired
                    .set(self.p.state.expired_count() as i64);
            }
            let records = page.records;
            let Some(first) = records.first() else {
                if page.head < from {
                    return Err(End::Failed(format!(
                        "the upstream's head {} is behind our verified head {from}",
                        page.head
                    )));
                }
                return Err(End::Failed("the upstream sent an empty page".to_string()));
            };
            // The page starts at our own head: the upstream must hold the same record there.
            if first.version != from || first.hash != self.tip.hash {
                return Err(End::Refused(self.divergence(up, from, first)));
            }
            // Its head counts for readiness once it agrees with us on ours.
            self.saw_head(up, page.head);
            if records.len() == 1 {
                // Nothing after our head. Fine if the upstream's head says so; otherwise it
                // names versions its log does not serve (a cut page, or a head it made up).
                if page.head > from {
                    return Err(End::Failed(format!(
                        "the page holds nothing after {from} though the upstream's head is {}",
                        page.head
                    )));
                }
                if let Some(u) = until.filter(|&u| u > from) {
                    return Err(End::Failed(format!(
                        "the upstream announced version {u} but its log ends at {}",
                        page.head
                    )));
                }
                return Ok(());
            }
            // The upstream has more than this page: ask for the next one (from this page's
            // last record, our tip if it verifies) while this one verifies.
            let last = records.last().map_or(from, |r| r.version);
            let next = (last < page.head).then_some(last);
            prefetched = self.verify_and_apply(up, &records[1..], next)?;
            let done = until.is_none_or(|u| self.tip.version >= u);
            if done && self.tip.version >= page.head {
                return Ok(());
            }
        }
    }

    /// The reason for an upstream whose record at `version` (our head) is not ours.
    fn divergence(&self, up: &Upstream, version: u64, theirs: &CommitRecord) -> String {
        if theirs.version != version {
            return format!(
                "verification failed at version {version}: expected version {version}, found {}",
                theirs.version
            );
        }
        if version == 0 {
            return format!(
                "verification failed at version 0: genesis hash is {}, the pinned genesis hash is {}",
                theirs.hash, self.p.follow.genesis_hash
            );
        }
        log::error!(
            "msg=\"fork: the upstream holds another record at a version we verified\" upstream={} version={version} our_hash={} upstream_hash={}",
            up.url,
            self.tip.hash,
            theirs.hash
        );
        format!(
            "fork at version {version}: upstream hash {}, verified hash {}",
            theirs.hash, self.tip.hash
        )
    }

    /// Verify `records` (the next versions after the tip, in order): the chain in order on this
    /// thread, each record's signatures sent to the verifier pool as soon as its link checked
    /// (so the pool starts on the first while the chain is walked); then hand the verified
    /// prefix to the writer (its answers are awaited by `settle`, at the latest when the
    /// catch-up ends). A record that fails refuses the upstream after everything before it was
    /// stored. With `prefetch`, the page from that version is fetched and parsed on a helper
    /// thread meanwhile, and returned (unjudged) for the caller's next round.
    fn verify_and_apply(
        &mut self,
        up: &Upstream,
        records: &[CommitRecord],
        prefetch: Option<u64>,
    ) -> Result<Option<Prefetched>, End> {
        let registry_id = self.p.registry_id.clone();
        let start = self.tip.clone();
        let timeout = self.p.follow.timeout;
        let (prepared, tips, broken, results, next) = std::thread::scope(|scope| {
            let fetch = prefetch.map(|from| {
                let target = &up.target;
                std::thread::Builder::new()
                    .name("follow-fetch".to_string())
                    .spawn_scoped(scope, move || (from, fetch_page(target, from, timeout)))
            });
            // A helper thread that cannot start only costs the overlap: fetched later.
            let fetch = fetch.and_then(Result::ok);
            self.batch += 1;
            let mut slots = Vec::new();
            let mut tips = Vec::with_capacity(records.len());
            let mut prepared: Vec<Prepared> = Vec::with_capacity(records.len());
            let mut broken: Option<Break> = None;
            let mut sent = Ok(());
            for rec in records {
                match self.tip.prepare(&registry_id, rec) {
                    Ok(p) => {
                        sent = self.send_checks(&p, prepared.len(), &mut slots);
                        prepared.push(p);
                        tips.push(self.tip.clone());
                        if sent.is_err() {
                            break;
                        }
                    }
                    Err(b) => {
                        broken = Some(b);
                        break;
                    }
                }
            }
            let results = sent.and_then(|()| self.collect_checks(&prepared, &slots));
            let next = fetch.and_then(|h| h.join().ok());
            (prepared, tips, broken, results, next)
        });
        let mut broken = broken;
        let results = match results {
            Ok(r) => r,
            Err(end) => {
                self.tip = start;
                return Err(end);
            }
        };
        let mut good = 0;
        self.tip = start;
        for ((p, rec), ok) in prepared.iter().zip(records).zip(&results) {
            if let Err(b) = p.conclude(rec, ok) {
                broken = Some(b);
                break;
            }
            self.tip = tips[good].clone();
            good += 1;
        }
        self.apply(&records[..good], &prepared[..good])?;
        if broken.is_some() {
            // What verified before the broken record is stored first.
            self.settle()?;
        }
        match broken {
            Some(b) => Err(End::Refused(format!(
                "verification failed at version {}: {}",
                b.version, b.reason
            ))),
            None => Ok(next),
        }
    }

    /// Queue every signature check of `p` (record `r` of the current batch) on the pool;
    /// `slots` maps each job's index to its (record, check).
    fn send_checks(
        &self,
        p: &Prepared,
        r: usize,
        slots: &mut Vec<(usize, usize)>,
    ) -> Result<(), End> {
        for (c, check) in p.checks.iter().enumerate() {
            // Jobs carry (batch, flat index); a result of an earlier batch that was given up on
            // (the pool did not answer in time) is recognised and ignored.
            let job = VerifyJob {
                key: check.key.clone(),
                sig: check.sig.clone(),
                pae: p.pae.clone(),
                request: self.batch,
                index: slots.len(),
            };
            if self.p.verify_tx.send(job).is_err() {
                return Err(End::Stopped);
            }
            slots.push((r, c));
        }
        Ok(())
    }

    /// The results of every job [`Follower::send_checks`] queued for `prepared`:
    /// `results[r][c]` for record r's check c.
    fn collect_checks(
        &self,
        prepared: &[Prepared],
        slots: &[(usize, usize)],
    ) -> Result<Vec<Vec<bool>>, End> {
        let mut results: Vec<Vec<bool>> = prepared
            .iter()
            .map(|p| vec![false; p.checks.len()])
            .collect();
        let mut outstanding = slots.len();
        while outstanding > 0 {
            match self.p.verified_rx.recv_timeout(VERIFY_WAIT) {
                Ok(v) if v.request == self.batch => {
                    if let Some(&(r, c)) = slots.get(v.index) {
                        results[r][c] = v.ok;
                    }
                    outstanding -= 1;
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(End::Local(format!(
                    "the verifier pool did not answer {outstanding} checks within {VERIFY_WAIT:?}"
                )))
                }
                Err(RecvTimeoutError::Disconnected) => return Err(End::Stopped),
            }
        }
        Ok(results)
    }

    /// Hand verified records to the writer (pipelined: one group commit) and wait for each
    /// to be durable and published.
    fn apply(&mut self, records: &[CommitRecord], prepared: &[Prepared]) -> Result<(), End> {
        for (rec, p) in records.iter().zip(prepared) {
            let (reply, rx) = Reply::<Committed>::channel("follow");
            let request = WriteRequest::Apply {
                record: Arc::new(rec.clone()),
                proposal: p.proposal.clone(),
                reply,
            };
            if self.p.writer.send(request).is_err() {
                return Err(End::Stopped);
            }
            self.pending.push_back(rx);
        }
        // The writer stores and syncs these while the next page is fetched and verified; at
        // most APPLY_PIPELINE wait for their answer.
        while self.pending.len() > APPLY_PIPELINE {
            self.settle_one()?;
        }
        Ok(())
    }

    /// Wait for every apply handed to the writer.
    fn settle(&mut self) -> Result<(), End> {
        while !self.pending.is_empty() {
            self.settle_one()?;
        }
        let (_, _, lag) = self.p.state.lag();
        m().registry_follow_lag_versions.set(lag as i64);
        Ok(())
    }

    /// Wait for the oldest apply: durable and published, or refused.
    fn settle_one(&mut self) -> Result<(), End> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(());
        };
        match rx.recv() {
            Ok(Ok(c)) => {
                m().registry_follow_applied_total.inc();
                self.p.state.set_verified(c.version);
                Ok(())
            }
            Ok(Err(e)) => {
                // Every apply before this one was answered (in order), so the published head
                // is where verification resumes; the later ones fail (they do not extend it).
                self.pending.clear();
                self.tip = tip_of(&self.p.snapshot.load());
                if e.code == crate::error::Code::Unavailable {
                    return Err(End::Local(e.message));
                }
                // Its ops do not apply to the verified state, or its unhashed descriptor count
                // is not theirs: the upstream's record is wrong.
                Err(End::Refused(format!(
                    "verification failed at version {}: {}",
                    self.tip.version + 1,
                    e.message
                )))
            }
            Err(_) => Err(End::Stopped),
        }
    }

    /// `GET path` on the upstream: the 200 body, bounded in size and time (a 410 is `Expired`).
    fn get(&self, up: &Upstream, path: &str) -> Result<Vec<u8>, End> {
        get_status(&up.target, path, self.p.follow.timeout).map_err(expired_or_failed)
    }

    /// Listen to the upstream's stream from our tip; catch up by pages whenever it names a
    /// version we do not have. Ends only by failure, refusal or stop.
    fn stream(&mut self, up: &Upstream) -> End {
        loop {
            match self.stream_once(up) {
                // The stream was silent for a whole timeout but the upstream answers: an idle
                // registry whose heartbeats are further apart than our timeout. Start a fresh
                // stream from the tip (a read that timed out may have left a partial line).
                None => continue,
                Some(end) => return end,
            }
        }
    }

    /// One stream connection; `None` when it was silent for `timeout` but a probe of the
    /// upstream's head answered (and whatever it named was caught up).
    fn stream_once(&mut self, up: &Upstream) -> Option<End> {
        let id = self.tip.version.to_string();
        let opened = client::open_stream(
            &up.target,
            "/registry/stream",
            &[("Last-Event-ID", id.as_str())],
            self.p.follow.timeout,
        );
        let mut reader = match opened {
            Ok((head, reader)) if head.status == 200 => reader,
            Ok((head, _)) => return Some(End::Failed(format!("stream: status {}", head.status))),
            Err(e) => return Some(End::Failed(format!("stream: {e}"))),
        };
        loop {
            if self.stopped() {
                return Some(End::Stopped);
            }
            // Each read waits at most `timeout`. Silence is then told apart from a stall by
            // asking for the head: an upstream that answers neither is stalled.
            let event = match next_event(&mut *reader) {
                Ok(Some(e)) => e,
                Ok(None) => return Some(End::Failed("stream ended".to_string())),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return self.probe(up).err();
                }
                Err(e) => return Some(End::Failed(format!("stream: {e}"))),
            };
            let version = match event.event.as_str() {
                "commit" => event.id,
                "heartbeat" => data_version(&event.data),
                // A reset at or past our head: the upstream cannot replay from our id (its
                // retention window dropped what follows it). Re-read state by pages, which
                // either catch up or say the upstream no longer holds our next version, then
                // open a fresh stream.
                "reset" if event.id.is_some_and(|h| h >= self.tip.version) => {
                    return self.catch_up(up, None).err();
                }
                "reset" => {
                    return Some(End::Failed(format!(
                        "stream reset: the upstream's head {:?} is behind our verified head {}",
                        event.id, self.tip.version
                    )))
                }
                "shutdown" => {
                    return Some(End::Failed("the upstream is shutting down".to_string()))
                }
                _ => None,
            };
            let Some(v) = version else { continue };
            self.saw_head(up, v);
            if event.event == "heartbeat" {
                if let Err(end) = self.check_checkpoint(up) {
                    return Some(end);
                }
            }
            if v == self.tip.version
                && event.event == "commit"
                && data_hash(&event.data).is_some_and(|h| h != self.tip.hash)
            {
                // The event of our own head carries another hash: the log page decides
                // (a fork is refused there, by the record itself).
                return Some(self.catch_up(up, None).err().unwrap_or_else(|| {
                    End::Failed("the stream disagrees with the log".to_string())
                }));
            }
            if v > self.tip.version {
                if let Err(end) = self.catch_up(up, Some(v)) {
                    return Some(end);
                }
            }
        }
    }

    /// After a silent stream: is the upstream alive? Catches up with whatever it has (a page
    /// from our head), or fails as stalled.
    fn probe(&mut self, up: &Upstream) -> Result<(), End> {
        self.catch_up(up, None).map_err(|end| match end {
            End::Failed(why) => {
                End::Failed(format!("stream silent and the upstream stalled: {why}"))
            }
            other => other,
        })
    }
}

/// A page fetched ahead: the `from` it was asked with, and the page (or why there is none).
type Prefetched = (u64, Result<FetchedPage, End>);

/// One `/registry/log` page, its records parsed (not yet judged).
struct FetchedPage {
    head: u64,
    records: Vec<CommitRecord>,
}

/// `GET /registry/log?from=from`, parsed: a page that is not JSON fails the upstream, a record
/// that is not a valid record refuses it.
fn fetch_page(target: &Target, from: u64, timeout: Duration) -> Result<FetchedPage, End> {
    let path = format!("/registry/log?from={from}&limit={PAGE_LIMIT}");
    let body = get_status(target, &path, timeout).map_err(expired_or_failed)?;
    let page: Page = serde_json::from_slice(&body)
        .map_err(|e| End::Failed(format!("log page is not JSON: {e}")))?;
    let mut records = Vec::with_capacity(page.records.len());
    for (i, raw) in page.records.iter().enumerate() {
        let at = from + i as u64;
        let rec = CommitRecord::from_json(raw.get().as_bytes()).map_err(|e| {
            End::Refused(format!(
                "verification failed at version {at}: the record is not valid: {}",
                e.message
            ))
        })?;
        records.push(rec);
    }
    Ok(FetchedPage {
        head: page.head,
        records,
    })
}

/// A failed GET as the follower judges it: a 410 names a retention window past what we need.
fn expired_or_failed((status, why): (Option<u16>, String)) -> End {
    if status == Some(410) {
        End::Expired(why)
    } else {
        End::Failed(why)
    }
}

/// `GET path`: the 200 body, at most [`PAGE_BYTES_MAX`] bytes, every read bounded by `timeout`.
fn get_bounded(target: &Target, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    get_status(target, path, timeout).map_err(|(_, why)| why)
}

/// [`get_bounded`], with the status of a non-200 answer beside the reason (a 410's message,
/// which names the upstream's oldest retained version, is kept).
fn get_status(
    target: &Target,
    path: &str,
    timeout: Duration,
) -> Result<Vec<u8>, (Option<u16>, String)> {
    let (head, body) =
        client::open_stream(target, path, &[("Accept", "application/json")], timeout)
            .map_err(|e| (None, format!("GET {path}: {e}")))?;
    let mut out = Vec::new();
    body.take(PAGE_BYTES_MAX + 1)
        .read_to_end(&mut out)
        .map_err(|e| (None, format!("GET {path}: {e}")))?;
    if head.status != 200 {
        let mut why = format!("GET {path}: status {}", head.status);
        if head.status == 410 {
            if let Some(msg) = serde_json::from_slice::<serde_json::Value>(&out)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
            {
                why.push_str(": ");
                why.push_str(&msg);
            }
        }
        return Err((Some(head.status), why));
    }
    if out.len() as u64 > PAGE_BYTES_MAX {
        return Err((
            None,
            format!("GET {path}: body over {PAGE_BYTES_MAX} bytes"),
        ));
    }
    Ok(out)
}

fn data_version(data: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(data)
        .ok()?
        .get("version")?
        .as_u64()
}

fn data_hash(data: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(data)
        .ok()?
        .get("hash")?
        .as_str()
        .map(str::to_string)
}

/// The genesis signer set of the registry, from the first upstream whose `/registry/0` hashes
/// to the pinned `genesis_hash` (a new data directory, or `--amnesia`). Upstreams that serve
/// another genesis are refused (as they would be later); unreachable ones are retried until
/// `stop` says otherwise.
pub fn fetch_genesis(
    registry_id: &str,
    follow: &Follow,
    state: &FollowState,
    stop: &mut dyn FnMut() -> bool,
) -> Result<Arc<SignerSet>, String> {
    let mut backoff = BACKOFF_MIN;
    loop {
        if stop() {
            return Err("stopped while waiting for the genesis record".to_string());
        }
        let mut any_live = false;
        for url in &follow.upstreams {
            if state.is_refused(url) {
                continue;
            }
            any_live = true;
            let target = Target::parse_with_cacert(url, follow.cacert.as_deref())?;
            let body = match get_bounded(&target, "/registry/0", follow.timeout) {
                Ok(body) => body,
                Err(e) => {
                    log::warn!("msg=\"follow: genesis fetch failed\" upstream={url} error={e:?}");
                    continue;
                }
            };
            let checked = CommitRecord::from_json(&body)
                .map_err(|e| format!("the record is not valid: {}", e.message))
                .and_then(|rec| {
                    Tip::from_genesis(registry_id, &rec, Trust::GenesisHash(&follow.genesis_hash))
                        .map_err(|b| b.reason)
                        .map(|_| rec)
                });
            match checked {
                Ok(rec) => {
                    let set = rec
                        .genesis_signers
                        .expect("a verified genesis carries its set");
                    log::info!(
                        "msg=\"follow: genesis verified\" upstream={url} genesis_hash={} signers_digest={}",
                        rec.hash,
                        set.digest()
                    );
                    return Ok(set);
                }
                Err(why) => {
                    let reason = format!("verification failed at version 0: {why}");
                    m().registry_follow_verify_failures_total.inc();
                    log::error!("msg=\"upstream refused; not following it again\" upstream={url} reason={reason:?}");
                    state.refuse(url, reason);
                }
            }
        }
        if !any_live {
            return Err("every upstream was refused; no verified genesis".to_string());
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until && !stop() {
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_and_commit_data_give_version_and_hash() {
        let text = "event: heartbeat\ndata: {\"version\":3}\n\nevent: commit\nid: 4\ndata: {\"version\":4,\"hash\":\"ab\"}\n\n";
        let mut r = std::io::BufReader::new(text.as_bytes());
        let a = next_event(&mut r).unwrap().unwrap();
        assert_eq!(data_version(&a.data), Some(3));
        let b = next_event(&mut r).unwrap().unwrap();
        assert_eq!((b.event.as_str(), b.id), ("commit", Some(4)));
        assert_eq!(data_hash(&b.data).as_deref(), Some("ab"));
        assert!(next_event(&mut r).unwrap().is_none());
    }
}
