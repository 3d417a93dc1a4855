//! The retention window (SPEC §14, `[storage] retain_versions`): dropping the journal's bytes
//! of versions older than the newest N, and the gauges that say how much history a node holds.
//!
//! Who runs the drop: on disk, the checkpoint thread, right after a checkpoint is durable (only
//! a durable checkpoint may cover what is dropped, and the writer never waits for it); with
//! `--amnesia` there are no checkpoints (nothing survives a restart anyway), and the `retention`
//! thread started here drops as soon as versions leave the window.
//!
//! Thread `retention` (amnesia only): input, wake-ups after publications (bounded channel of
//! capacity 1); state, none of its own (the floor lives in the history); shutdown when the
//! sender is dropped.
//!
//! Invariants: the floor (oldest readable version) is raised BEFORE any byte below it is
//! released, so a reader either sees the old floor and reads intact bytes, or sees the new floor
//! and answers 410 (`history.rs`). Nothing at or after `min(HEAD - N + 1, covered)` is ever
//! released, where `covered` is the version of a durable checkpoint: the record a checkpoint
//! names stays in the log, so restore can always tie the checkpoint to it. State at HEAD is
//! never touched.

use crate::history::History;
use crate::metrics::m;
use crate::snapshot::{Publisher, Snapshot};
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;

/// What one drop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// The oldest version still readable after the drop.
    pub oldest: u64,
    /// Journal bytes released (files deleted or memory punched out).
    pub bytes: u64,
}

/// Drop what falls out of a window of `retain` versions below `head`, but nothing at or after
/// `covered` (the newest durable checkpoint's version; `u64::MAX` when nothing needs covering).
/// `None` when there is nothing to drop (no window, a window not yet full, or the oldest
/// whole unit of the journal still holds a version to keep).
pub fn drop_window(
    history: &History,
    head: u64,
    covered: u64,
    retain: u64,
) -> Result<Option<Dropped>, String> {
    if retain == 0 || head < retain {
        return Ok(None);
    }
    let keep_from = (head - retain + 1).min(covered);
    if keep_from == 0 || keep_from <= history.oldest_version() {
        return Ok(None);
    }
    let Some(loc) = history.loc(keep_from) else {
        return Ok(None);
    };
    let source = history.source();
    let cut = source.cut_at_or_below(loc.end - u64::from(loc.len));
    if cut == 0 {
        return Ok(None);
    }
    let Some(oldest) = history.first_version_from(cut) else {
        return Ok(None);
    };
    debug_assert!(oldest <= keep_from);
    // Floor first, bytes second (module invariant).
    history.raise_floor(oldest);
    let bytes = source.release_below(cut)?;
    m().registry_oldest_version
        .set(history.oldest_version() as i64);
    Ok(Some(Dropped {
        oldest: history.oldest_version(),
        bytes,
    }))
}

/// [`drop_window`] on a published snapshot, logged; failures are logged and retried at the next
/// trigger (a failed drop loses nothing: the bytes stay, the log only grows).
pub fn drop_and_log(snap: &Snapshot, covered: u64, retain: u64) {
    match drop_window(&snap.history, snap.version(), covered, retain) {
        Ok(Some(d)) => {
            log::info!(
                "msg=\"retention window: old history dropped\" oldest_version={} head={} \
                 released_bytes={} retain_versions={retain}",
                d.oldest,
                snap.version(),
                d.bytes
            );
            set_gauges(snap);
        }
        Ok(None) => {}
        Err(e) => log::error!(
            "msg=\"retention window: dropping old history failed; retried at the next checkpoint\" \
             head={} error={e:?}",
            snap.version()
        ),
    }
}

/// `registry_oldest_version` and `registry_log_bytes` for `snap`.
pub fn set_gauges(snap: &Snapshot) {
    let head_end = snap.history.loc(snap.version()).map_or(0, |l| l.end);
    m().registry_oldest_version
        .set(snap.history.oldest_version() as i64);
    m().registry_log_bytes
        .set(snap.history.source().bytes_held(head_end) as i64);
}

/// The writer's publisher: keep the gauges current and, with `--amnesia` and a window, wake the
/// retention thread.
pub struct RetentionPublisher(pub Option<Sender<()>>);

impl Publisher for RetentionPublisher {
    fn published(
        &mut self,
        snapshot: &Arc<Snapshot>,
        _: &[Arc<crate::domain::record::CommitRecord>],
    ) {
        set_gauges(snapshot);
        if let Some(wake) = &self.0 {
            let _ = wake.try_send(());
        }
    }
}

/// The `retention` thread of an amnesiac node with a window.
pub fn run(snapshot: Arc<ArcSwap<Snapshot>>, wake: Receiver<()>, retain: u64) {
    while wake.recv().is_ok() {
        let snap = snapshot.load_full();
        drop_and_log(&snap, u64::MAX, retain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::record::CommitRecord;
    use crate::history::{HistorySource, Loc, Read};
    use parking_lot::Mutex;

    /// A journal of fixed-size units that records what was released.
    struct Units {
        unit: u64,
        released: Mutex<u64>,
    }

    impl HistorySource for Units {
        fn read(&self, loc: Loc) -> Result<Vec<u8>, String> {
            if loc.end - u64::from(loc.len) < *self.released.lock() {
                return Ok(vec![0; loc.len as usize]);
            }
            Ok(loc.end.to_string().into_bytes())
        }
        fn cut_at_or_below(&self, start: u64) -> u64 {
            start / self.unit * self.unit
        }
        fn release_below(&self, cut: u64) -> Result<u64, String> {
            let mut r = self.released.lock();
            let n = cut.saturating_sub(*r);
            *r = (*r).max(cut);
            Ok(n)
        }
    }

    fn history(versions: u64, record: u64, unit: u64) -> (History, Arc<Units>) {
        let units = Arc::new(Units {
            unit,
            released: Mutex::new(0),
        });
        let genesis = Arc::new(CommitRecord::genesis(
            "r",
            crate::domain::signers::test_set(1, 1),
        ));
        let mut h = History::new(genesis, units.clone());
        for v in 1..=versions {
            h.push(Loc {
                end: v * record,
                len: record as u32,
            });
        }
        (h, units)
    }

    #[test]
    fn drops_whole_units_below_the_window_and_never_what_a_checkpoint_does_not_cover() {
        // 100 versions of 10 bytes (version v at [10(v-1), 10v)), units of 100 bytes.
        let (h, units) = history(100, 10, 100);
        assert_eq!(
            drop_window(&h, 100, u64::MAX, 0).unwrap(),
            None,
            "no window"
        );
        assert_eq!(
            drop_window(&h, 100, u64::MAX, 200).unwrap(),
            None,
            "not full"
        );
        // Keep 1..: the checkpoint covers nothing past version 25, so versions from 25 stay,
        // and the unit [200, 300) holding version 21..30 is the first kept.
        let d = drop_window(&h, 100, 25, 10).unwrap().unwrap();
        assert_eq!(
            d,
            Dropped {
                oldest: 21,
                bytes: 200
            }
        );
        assert_eq!(h.oldest_version(), 21);
        assert_eq!(h.read(20).unwrap(), Read::Expired { oldest: 21 });
        assert_eq!(
            h.read(0).unwrap(),
            Read::Expired { oldest: 21 },
            "genesis too"
        );
        assert!(matches!(h.read(21).unwrap(), Read::Bytes(_)));
        // Window edges with everything covered: keep 91..100 → units from [900, 1000).
        let d = drop_window(&h, 100, u64::MAX, 10).unwrap().unwrap();
        assert_eq!(
            d,
            Dropped {
                oldest: 91,
                bytes: 700
            }
        );
        assert_eq!(h.read(90).unwrap(), Read::Expired { oldest: 91 });
        assert!(matches!(h.read(91).unwrap(), Read::Bytes(_)));
        assert_eq!(*units.released.lock(), 900);
        // Again: nothing more to drop.
        assert_eq!(drop_window(&h, 100, u64::MAX, 10).unwrap(), None);
    }

    #[test]
    fn the_index_is_trimmed_by_the_next_push_and_clones_share_the_floor() {
        let (mut h, _) = history(100, 10, 100);
        let old = h.clone();
        drop_window(&h, 100, u64::MAX, 10).unwrap().unwrap();
        assert_eq!(
            old.oldest_version(),
            91,
            "an older snapshot's history sees the floor"
        );
        h.push(Loc { end: 1010, len: 10 });
        assert_eq!(h.len(), 102);
        assert_eq!(h.loc(90), None, "trimmed");
        assert_eq!(h.loc(91), Some(Loc { end: 910, len: 10 }));
        assert_eq!(h.first_version_from(905), Some(92));
    }
}
