//! The checkpoint thread: periodic checkpoints of the published snapshot.
//!
//! Thread: `checkpoint`. Input: wake-ups after publications that reach its commit count
//! ([`CheckpointNudge`]; bounded channel of capacity 1: a full channel just means a wake-up is
//! already pending) and its own tick. Output: checkpoint files through the
//! storage seam. State: when and at which version the last checkpoint was written. It reads the
//! published snapshot (immutable), so serializing a large state never stalls the writer.
//! Shutdown: when the sender is dropped (a final checkpoint is written if commits happened since
//! the last one).
//!
//! Pending frames: each checkpoint also carries the log's pending frames up to its record,
//! compacted (docs/FORMATS.md), so start-up reads only the pending frames after it. The thread
//! keeps them gathered ([`PendingCarry`]). The writer hands it every pending frame it appends,
//! as it built it, with the position past it and a proposal's base version ([`PendingFeed`]:
//! bounded, `try_send`, never waits); at each wake-up the thread takes the frames at or below
//! the published head's record (durable and published; a frame past it waits, and one whose
//! sync failed is never taken: nothing is published after a failed sync), skipping a
//! proposal built below the published head (it cannot come back), and at each checkpoint it
//! forgets the proposals that can no longer come back. The log is read back only for a range
//! in which the feed lost a frame (its channel was full), or when there is no feed.
//! Invariant: the carried frames are what replaying every pending frame up to `scanned_to`
//! gathers, minus such proposals, where `scanned_to` is always the end of a published (so
//! durable) record or where the writer continued at start: no frame past it is ever taken, fed
//! or read back. If a gathering fails they are dropped, and later checkpoints go without them
//! (start-up then reads every pending frame, as before).

use crate::domain::pending::{self, PendingFrame, PendingFrames};
use crate::log::LogReader;
use crate::metrics::m;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type WriteCheckpoint = Box<dyn FnMut(u64, &[u8]) -> Result<(), String> + Send>;

pub struct CheckpointParts {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub wake: Receiver<()>,
    pub every_commits: u64,
    pub interval: Duration,
    /// The version of the checkpoint found at start (0 if none).
    pub last_version: u64,
    pub write: WriteCheckpoint,
    /// Run after each durable checkpoint (and once at start for the checkpoint found then),
    /// with the snapshot and the version that checkpoint covers: the retention drop.
    pub after_checkpoint: Option<AfterCheckpoint>,
    /// The pending frames gathered at start-up, carried on (None: checkpoints go without).
    pub pending: Option<PendingCarry>,
    /// Write a checkpoint at once even if no commit happened: the one found at start does not
    /// carry the pending frames (an older build wrote it), so until a new one is written every
    /// start would read all of them; or it is of an earlier payload version (JSON), slower to
    /// load than the one the server writes.
    pub upgrade: bool,
}

/// The pending frames gathered from the log up to `scanned_to`.
pub struct PendingCarry {
    pub reader: Arc<LogReader>,
    /// The Lsn the frames are gathered up to (at start: where the writer continues).
    pub scanned_to: u64,
    pub frames: PendingFrames,
    /// The writer's frames as it appends them ([`PendingCarry::feed`]); None: every range is
    /// read back from the log.
    pub feed: Option<FeedEnd>,
}

/// How many appended pending frames may wait for the checkpoint thread. It takes them at every
/// wake-up (its tick is at most a second) up to the published record; three-step writes append
/// two to four frames each, so this is seconds of the fastest three-step load measured
/// (≈ 3,600 commits/s, docs/PERFORMANCE.md). A full channel (that load, or a long stretch of
/// proposals and approvals with no commit published) costs only a read of the log for the
/// range it lost.
pub const PENDING_FEED: usize = 32_768;

/// A pending frame the writer appended, as it built it.
pub struct Appended {
    /// The journal position just past the frame (what the append returned).
    pub end: u64,
    pub frame: PendingFrame,
    /// For a proposal frame, the `base_version` the writer parsed from its payload (the same
    /// field, by the same serde rules, that [`PendingFrames::retain_live`] reads); None for an
    /// approvals frame.
    pub base_version: Option<u64>,
}

/// The writer's end of the feed: [`PendingFeed::send`] never blocks and never allocates.
pub struct PendingFeed {
    tx: Sender<Appended>,
    lost: Arc<AtomicU64>,
}

impl PendingFeed {
    /// Hand `frame` (appended, ending at `end`) to the checkpoint thread; when its channel is
    /// full, remember that the log up to `end` must be read back instead.
    pub fn send(&self, end: u64, frame: PendingFrame, base_version: Option<u64>) {
        let appended = Appended {
            end,
            frame,
            base_version,
        };
        if self.tx.try_send(appended).is_err() {
            // Before the record that publishes past `end` (the writer appends and publishes
            // after this), so the thread sees it once it sees that record published.
            self.lost.fetch_max(end, Ordering::SeqCst);
        }
    }
}

/// The checkpoint thread's end of the feed.
pub struct FeedEnd {
    rx: Receiver<Appended>,
    /// The highest position of a frame the channel could not take (0: none).
    lost: Arc<AtomicU64>,
    /// The first frame taken past the published record it was taken for; every later one is
    /// still in the channel (which bounds them: the writer appends in log order).
    waiting: Option<Appended>,
}

impl FeedEnd {
    /// The next fed frame if it ends at or below `end`. Every frame sent before the record
    /// ending at `end` was published is in the channel by the time the thread sees that
    /// record published (the writer sends before it appends the record).
    fn next_up_to(&mut self, end: u64) -> Option<Appended> {
        let a = match self.waiting.take() {
            Some(a) => a,
            None => self.rx.try_recv().ok()?,
        };
        if a.end <= end {
            Some(a)
        } else {
            self.waiting = Some(a);
            None
        }
    }
}

impl PendingCarry {
    /// The writer's end of a feed of appended frames for this carry (a bounded channel of
    /// `capacity`), which from now on is read instead of the log.
    pub fn feed(&mut self, capacity: usize) -> PendingFeed {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let lost = Arc::new(AtomicU64::new(0));
        self.feed = Some(FeedEnd {
            rx,
            lost: lost.clone(),
            waiting: None,
        });
        PendingFeed { tx, lost }
    }

    /// Gather the pending frames up to `end`, the end of the published record of version
    /// `head` (durable: the writer only appends past it).
    ///
    /// From the feed when it lost nothing since `scanned_to`: the frames at or below `end` are
    /// added in log order, except a proposal built below `head`, which is forgotten instead
    /// (with the approvals that follow it, which then find no proposal). That is what adding
    /// it and forgetting it at the checkpoint ([`PendingFrames::retain_live`] at a head at or
    /// past `head`) gives: its base version is its payload's, so every frame for its id is
    /// built below too. Otherwise the range is read back from the log and every frame in it
    /// added, and the feed's frames up to `end` are dropped.
    pub fn gather(&mut self, end: u64, head: u64) -> Result<(), String> {
        if end <= self.scanned_to {
            return Ok(());
        }
        let lost = self
            .feed
            .as_ref()
            .map_or(u64::MAX, |f| f.lost.load(Ordering::SeqCst));
        if lost > self.scanned_to {
            self.scan(end)?;
        }
        let frames = &mut self.frames;
        if let Some(feed) = &mut self.feed {
            while let Some(a) = feed.next_up_to(end) {
                if a.end <= self.scanned_to {
                    // Read back from the log already.
                    continue;
                }
                match (a.frame, a.base_version) {
                    (PendingFrame::Proposal { proposal_id, .. }, Some(base)) if base < head => {
                        frames.forget_if(&proposal_id, |_| true);
                    }
                    (frame, _) => frames.add(frame)?,
                }
            }
        }
        self.scanned_to = end;
        Ok(())
    }

    /// Read the pending frames from `scanned_to` to `end` back from the log and add them all.
    fn scan(&mut self, end: u64) -> Result<(), String> {
        let frames = &mut self.frames;
        let mut bad = None;
        self.reader
            .scan(
                self.scanned_to,
                end,
                pending::PENDING_PREFIX,
                &mut |_, payload| {
                    let added = PendingFrame::from_bytes(&payload).and_then(|f| frames.add(f));
                    if let Err(e) = added {
                        bad.get_or_insert(e);
                    }
                },
            )
            .map_err(|e| e.to_string())?;
        if let Some(e) = bad {
            return Err(e);
        }
        self.scanned_to = end;
        Ok(())
    }

    /// The compacted frames for a checkpoint of version `head` whose record ends at `end`:
    /// the frames up to `end` gathered, then the proposals that cannot come back at `head`
    /// forgotten.
    ///
    /// When the record ends before `scanned_to` (only just after start-up: pending frames
    /// after the last commit), the carried frames include some past it; start-up replays
    /// those again after the checkpoint's frames, which changes nothing (a proposal frame
    /// starts its proposal afresh with the approvals after it, an approval already held is
    /// held once).
    pub fn carried(
        &mut self,
        end: u64,
        head: u64,
        now_unix: i64,
    ) -> Result<Vec<PendingFrame>, String> {
        self.gather(end, head)?;
        self.frames.retain_live(head, now_unix);
        Ok(self.frames.to_frames())
    }

    /// [`PendingCarry::carried`] for a checkpoint of `snap`. None when the record has no
    /// location in the log (then the checkpoint has no `log_end` either).
    fn frames_for(
        &mut self,
        snap: &Snapshot,
        now_unix: i64,
    ) -> Result<Option<Vec<PendingFrame>>, String> {
        match snap.history.loc(snap.version()) {
            Some(loc) => self.carried(loc.end, snap.version(), now_unix).map(Some),
            None => Ok(None),
        }
    }
}

pub type AfterCheckpoint = Box<dyn FnMut(&Snapshot, u64) + Send>;

/// The writer's publisher: nudge the checkpoint thread when `every_commits` versions were
/// published since the last nudge (or since the checkpoint found at start).
///
/// Only the commit-count trigger needs a nudge: the time trigger, a retry after a failed write
/// and the upgrade of an old checkpoint are the thread's own tick (at most one second). A
/// nudge per publication woke the thread once per group commit to find nothing due (measured:
/// ≈ 0.2 syscalls per write at 64 clients, docs/PERFORMANCE.md). Never late: the thread's last
/// checkpoint is at or after the version of the last nudge (it checkpoints at least that
/// version when woken, and time checkpoints only move it on), so its count trigger cannot come
/// before the nudge's; an early nudge finds nothing due, as every nudge did before.
pub struct CheckpointNudge {
    tx: Sender<()>,
    every_commits: u64,
    /// The version at (or after) the last nudge, or of the checkpoint found at start.
    nudged_at: u64,
}

impl CheckpointNudge {
    /// A nudge for the thread fed by `tx`, whose checkpoint at start covers `last_version`.
    pub fn new(tx: Sender<()>, every_commits: u64, last_version: u64) -> CheckpointNudge {
        CheckpointNudge {
            tx,
            every_commits,
            nudged_at: last_version,
        }
    }

    /// Whether publishing `version` calls for a nudge (remembered if so).
    fn due(&mut self, version: u64) -> bool {
        let due = version.saturating_sub(self.nudged_at) >= self.every_commits;
        if due {
            self.nudged_at = version;
        }
        due
    }
}

impl crate::snapshot::Publisher for CheckpointNudge {
    fn published(
        &mut self,
        snapshot: &Arc<Snapshot>,
        _: &[Arc<crate::domain::record::CommitRecord>],
    ) {
        if self.due(snapshot.version()) {
            let _ = self.tx.try_send(());
        }
    }
}

/// Run `f` on the carry, if any; when it fails the carry is dropped (later checkpoints go
/// without pending frames, and start-up reads them all from the log).
fn with_carry<T>(
    carry: &mut Option<PendingCarry>,
    f: impl FnOnce(&mut PendingCarry) -> Result<T, String>,
) -> Option<T> {
    match f(carry.as_mut()?) {
        Ok(t) => Some(t),
        Err(e) => {
            log::error!(
                "msg=\"cannot gather the log's pending frames; checkpoints go without them\" error={e:?}"
            );
            *carry = None;
            None
        }
    }
}

pub fn run(mut p: CheckpointParts) {
    super::background_priority("checkpoint");
    let mut last_at = Instant::now();
    let mut last_version = p.last_version;
    let tick = Duration::from_secs(1).min(p.interval);
    if let (Some(after), true) = (&mut p.after_checkpoint, last_version > 0) {
        // A crash between a checkpoint and its drop left the drop undone: it is done now.
        after(&p.snapshot.load_full(), last_version);
    }
    loop {
        // Woken by a due commit count or the tick: park at once rather than spin-yield.
        let closed = match super::recv_parked_timeout(&p.wake, tick) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        m().registry_checkpoint_age_seconds
            .set(last_at.elapsed().as_secs() as i64);
        let snap = p.snapshot.load_full();
        let behind = snap.version().saturating_sub(last_version);
        let due = (behind > 0
            && (closed || behind >= p.every_commits || last_at.elapsed() >= p.interval))
            || (p.upgrade && p.pending.is_some() && snap.version() > 0);
        if due {
            let started = Instant::now();
            let now_unix = crate::clock::now_unix_ms().div_euclid(1000);
            let carried = with_carry(&mut p.pending, |c| c.frames_for(&snap, now_unix)).flatten();
            let bytes = crate::restore::checkpoint_payload(&snap, carried.as_deref());
            match (p.write)(snap.version(), &bytes) {
                Ok(()) => {
                    p.upgrade = false;
                    // The drop first, so "checkpoint written" says the window is settled too.
                    if let Some(after) = &mut p.after_checkpoint {
                        after(&snap, snap.version());
                    }
                    last_version = snap.version();
                    last_at = Instant::now();
                    m().registry_checkpoint_age_seconds.set(0);
                    log::info!(
                        "msg=\"checkpoint written\" version={} descriptors={} bytes={} elapsed_ms={}",
                        snap.version(),
                        snap.descriptors.len(),
                        bytes.len(),
                        started.elapsed().as_millis()
                    );
                }
                Err(e) => {
                    // A failed checkpoint loses nothing (the log has every record); it is
                    // retried at the next trigger and shows as a growing checkpoint age.
                    log::error!(
                        "msg=\"checkpoint failed\" version={} error={e:?}",
                        snap.version()
                    );
                }
            }
        } else {
            if behind == 0 {
                // Nothing new to save: the state on disk is current.
                last_at = Instant::now();
            }
            // Take the writer's frames now, so its feed stays short between checkpoints.
            if let Some(loc) = snap.history.loc(snap.version()) {
                with_carry(&mut p.pending, |c| c.gather(loc.end, snap.version()));
            }
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::dsse;
    use crate::domain::pending::PendingApproval;

    /// One step of a log the carry tests replay.
    enum Step {
        /// A pending frame the writer appends (with a proposal's base version).
        Frame(PendingFrame, Option<u64>),
        /// A commit record (its content does not matter to the carry).
        Record,
        /// A wake-up without a checkpoint, with the published head.
        Tick(u64),
        /// A checkpoint of head `.0` at `.1` (Unix seconds), of the last record.
        Checkpoint(u64, i64),
    }

    fn proposal(name: &str, base: u64, expires_at: i64) -> (String, Step) {
        let payload = format!("{{\"base_version\":{base},\"n\":\"{name}\"}}");
        let id = crate::domain::sha256_hex(payload.as_bytes());
        let frame = PendingFrame::Proposal {
            proposal_id: id.clone(),
            payload: dsse::b64(payload.as_bytes()),
            expires_at,
        };
        (id, Step::Frame(frame, Some(base)))
    }

    fn approval(id: &str, seed: u8) -> Step {
        Step::Frame(
            PendingFrame::Approvals {
                proposal_id: id.to_string(),
                approvals: vec![PendingApproval {
                    keyid: format!("k{seed}"),
                    public_key: hex::encode([seed; 32]),
                    sig: dsse::encode_sig(&[seed; 64]),
                }],
            },
            None,
        )
    }

    fn log() -> crate::log::Opened {
        let opts = crate::log::StorageOptions {
            segment_bytes: 4096,
            checkpoints_kept: 1,
        };
        let io = crate::log::FaultIo::new();
        crate::log::open(std::path::Path::new("/data"), &opts, Arc::new(io)).unwrap()
    }

    /// Replays `steps` into a fresh log and into a carry that reads it back ("scan"), and into
    /// one fed with every frame as the writer feeds it (`capacity`, if any): the carried frames
    /// of each checkpoint, both ways, and the fed carry.
    fn replay(
        steps: Vec<Step>,
        capacity: Option<usize>,
    ) -> (Vec<Vec<PendingFrame>>, Vec<Vec<PendingFrame>>, PendingCarry) {
        let mut opened = log();
        let start = opened.writer.end();
        let carry = || PendingCarry {
            reader: opened.reader.clone(),
            scanned_to: start,
            frames: PendingFrames::default(),
            feed: None,
        };
        let (mut scan, mut fed) = (carry(), carry());
        let feed = capacity.map(|c| fed.feed(c));
        let (mut by_scan, mut by_feed) = (Vec::new(), Vec::new());
        let mut published = start;
        for step in steps {
            match step {
                Step::Frame(frame, base) => {
                    let end = opened.writer.append(&frame.to_bytes()).unwrap();
                    if let Some(feed) = &feed {
                        feed.send(end, frame, base);
                    }
                }
                Step::Record => published = opened.writer.append(b"{\"version\":1}").unwrap(),
                Step::Tick(head) => fed.gather(published, head).unwrap(),
                Step::Checkpoint(head, now) => {
                    by_scan.push(scan.carried(published, head, now).unwrap());
                    by_feed.push(fed.carried(published, head, now).unwrap());
                }
            }
        }
        (by_scan, by_feed, fed)
    }

    /// A checkpoint's carried frames as (kind, proposal id) pairs, in the order compaction
    /// writes them (by proposal id, each proposal before its approvals).
    type Shape = Vec<(&'static str, String)>;

    fn sorted(mut shape: Shape) -> Shape {
        shape.sort_by(|x, y| (&x.1, x.0 == "approvals").cmp(&(&y.1, y.0 == "approvals")));
        shape
    }

    fn shape(frames: &[PendingFrame]) -> Shape {
        frames
            .iter()
            .map(|f| match f {
                PendingFrame::Proposal { proposal_id, .. } => ("proposal", proposal_id.clone()),
                PendingFrame::Approvals { proposal_id, .. } => ("approvals", proposal_id.clone()),
            })
            .collect()
    }

    /// Committed, stale (lost its compare-and-swap), expired, re-proposed and live proposals,
    /// approvals before and after a checkpoint, frames appended past the published record.
    fn mixed_log() -> (Vec<Step>, Vec<Shape>) {
        let (a, p_a) = proposal("committed at 2", 1, 1000);
        let (s, p_s) = proposal("stale at 2", 1, 1000);
        let (c, p_c) = proposal("committed at 3", 2, 1000);
        let (l, p_l) = proposal("live until 10", 9, 1000);
        let (e, p_e) = proposal("expires at 50", 9, 50);
        let (_, p_e_again) = proposal("expires at 50", 9, 2000);
        let (y, p_y) = proposal("past the record", 20, 1000);
        let steps = vec![
            p_a,
            approval(&a, 1),
            p_s,
            approval(&s, 1),
            p_c,
            approval(&c, 1),
            p_l,
            approval(&l, 1),
            p_e,
            Step::Record,
            Step::Tick(2),
            Step::Checkpoint(2, 10),
            approval(&c, 2),
            approval(&l, 2),
            approval(&e, 1),
            Step::Record,
            Step::Tick(3),
            p_y,
            approval(&y, 1),
            Step::Checkpoint(3, 60),
            p_e_again,
            approval(&e, 2),
            Step::Tick(3),
            Step::Record,
            Step::Checkpoint(4, 70),
            Step::Record,
            Step::Checkpoint(10, 70),
        ];
        let want = vec![
            vec![
                ("proposal", c.clone()),
                ("approvals", c),
                ("proposal", l.clone()),
                ("approvals", l.clone()),
                ("proposal", e.clone()),
            ],
            vec![("proposal", l.clone()), ("approvals", l.clone())],
            vec![
                ("proposal", e.clone()),
                ("approvals", e),
                ("proposal", l.clone()),
                ("approvals", l),
                ("proposal", y.clone()),
                ("approvals", y.clone()),
            ],
            vec![("proposal", y.clone()), ("approvals", y)],
        ];
        (steps, want)
    }

    /// issue 20: the frames the writer feeds give every checkpoint exactly the frames that
    /// reading the log back gives, and those are the live proposals with their approvals.
    #[test]
    fn the_fed_frames_carry_what_reading_the_log_back_carries() {
        let (steps, want) = mixed_log();
        let (by_scan, by_feed, fed) = replay(steps, Some(PENDING_FEED));
        assert_eq!(by_feed, by_scan);
        let got: Vec<Shape> = by_scan.iter().map(|c| shape(c)).collect();
        assert_eq!(got, want.into_iter().map(sorted).collect::<Vec<_>>());
        let approvals_of_live = by_scan[1].iter().find_map(|f| match f {
            PendingFrame::Approvals { approvals, .. } => Some(approvals.len()),
            _ => None,
        });
        assert_eq!(
            approvals_of_live,
            Some(2),
            "one before the first checkpoint, one after"
        );
        assert_eq!(fed.feed.as_ref().unwrap().lost.load(Ordering::SeqCst), 0);
    }

    /// A full feed loses frames: the ranges holding them are read back from the log, and the
    /// carried frames are the same.
    #[test]
    fn a_full_feed_falls_back_to_reading_the_log() {
        let (steps, _) = mixed_log();
        let (by_scan, by_feed, fed) = replay(steps, Some(2));
        assert!(fed.feed.as_ref().unwrap().lost.load(Ordering::SeqCst) > 0);
        assert_eq!(by_feed, by_scan);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any log of proposals (six ids, any base and expiry, re-proposed at will), approvals,
        /// commit records, wake-ups and checkpoints, with a feed of any size: every checkpoint
        /// carries what reading the log back carries.
        #[test]
        fn any_log_carries_the_same_frames_fed_or_read_back(
            ops in proptest::collection::vec((0u8..5, 0usize..6, 0u64..8, 0i64..40), 1..80),
            capacity in proptest::prop_oneof![1usize..6, proptest::strategy::Just(PENDING_FEED)],
        ) {
            let (mut head, mut now) = (0u64, 0i64);
            // The id each name was last proposed under: approvals go to it (or, before any
            // proposal of the name, to an id never proposed).
            let mut ids = std::collections::HashMap::new();
            let mut steps = Vec::new();
            for (op, n, base, t) in ops {
                match op {
                    0 => {
                        let (id, step) = proposal(&format!("p{n}"), base, t);
                        ids.insert(n, id);
                        steps.push(step);
                    }
                    1 => {
                        let unknown = format!("never proposed {n}");
                        let id = ids.get(&n).unwrap_or(&unknown);
                        steps.push(approval(id, (t % 3) as u8 + 1));
                    }
                    2 => {
                        head += 1;
                        steps.push(Step::Record);
                    }
                    3 => steps.push(Step::Tick(head)),
                    _ => {
                        now += t / 4;
                        steps.push(Step::Checkpoint(head, now));
                    }
                }
            }
            steps.push(Step::Record);
            steps.push(Step::Checkpoint(head + 1, now));
            let (by_scan, by_feed, _) = replay(steps, Some(capacity));
            proptest::prop_assert_eq!(by_feed, by_scan);
        }
    }

    /// Once the range of a lost frame is read back, the feed is read again (a frame only the
    /// feed holds shows which source a range came from), and a frame past the published
    /// record is never taken.
    #[test]
    fn the_feed_is_read_again_after_the_lost_range() {
        let mut opened = log();
        let start = opened.writer.end();
        let mut carry = PendingCarry {
            reader: opened.reader.clone(),
            scanned_to: start,
            frames: PendingFrames::default(),
            feed: None,
        };
        let feed = carry.feed(1);
        let frame = |name: &str| match proposal(name, 5, 1000).1 {
            Step::Frame(f, _) => f,
            _ => unreachable!(),
        };
        let mut append = |f: &PendingFrame| opened.writer.append(&f.to_bytes()).unwrap();
        let (one, two) = (frame("one"), frame("two"));
        let end = append(&one);
        feed.send(end, one, Some(5));
        let end = append(&two);
        feed.send(end, two, Some(5));
        let lost = feed.lost.load(Ordering::SeqCst);
        assert_eq!(lost, end, "the second frame did not fit");
        let record = opened.writer.append(b"{\"version\":1}").unwrap();
        assert_eq!(carry.carried(record, 1, 0).unwrap().len(), 2, "read back");
        // Only the feed has this one, at a position inside the next record's range.
        let fed_only = frame("fed only");
        feed.send(record + 1, fed_only.clone(), Some(5));
        let three = frame("three");
        let next = opened.writer.append(&three.to_bytes()).unwrap();
        let carried = carry.carried(next, 1, 0).unwrap();
        assert!(carried.contains(&fed_only), "read from the feed");
        assert!(!carried.contains(&three), "not read from the log");
        // Fed, but past the published record: it waits.
        let past = frame("past");
        feed.send(next + 1, past.clone(), Some(5));
        assert!(!carry.carried(next, 1, 0).unwrap().contains(&past));
        assert!(carry.carried(next + 1, 1, 0).unwrap().contains(&past));
    }

    #[test]
    fn the_nudge_comes_once_per_commit_count_from_the_checkpoint_found_at_start() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let mut nudge = CheckpointNudge::new(tx, 3, 10);
        let due: Vec<u64> = (11..=20).filter(|&v| nudge.due(v)).collect();
        assert_eq!(due, vec![13, 16, 19]);
        // A group commit that jumps past the count nudges once, and counts on from there.
        assert!(nudge.due(30));
        assert!(!nudge.due(32));
        assert!(nudge.due(33));
    }

    #[test]
    fn a_count_of_one_nudges_at_every_publication() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let mut nudge = CheckpointNudge::new(tx, 1, 0);
        assert!((1..=5).all(|v| nudge.due(v)));
        assert!(!nudge.due(5), "no new version, nothing due");
    }
}
