//! Held commits: a commit (or a verified submit) whose proposal builds on a version not staged
//! yet waits (at most `proposals.commit_wait_ms`, at most `max_pending` of them) for the staged
//! head to reach its base, instead of being refused while its predecessor is still on its way.
//!
//! Invariant: every held commit is answered exactly once — retried when the staged head reaches
//! its base, refused when its deadline passes, on shutdown, or when the write plane stops.

use super::{Held, Work, Writer};
use crate::metrics::m;
use std::collections::VecDeque;
use std::time::Instant;

impl Writer {
    /// End the wait of every held commit whose deadline is at or before `now` (the thread body
    /// calls this from its timer; simulations call it directly).
    pub fn on_tick(&mut self, now: Instant) {
        self.release_held(Some(now));
    }

    /// The earliest deadline among held commits.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.held.values().flatten().map(|h| h.deadline).min()
    }

    /// Answer (refuse, usually) every held commit whose deadline is at or before `now`, or all
    /// of them with `None`.
    pub(super) fn release_held(&mut self, now: Option<Instant>) {
        let mut due = Vec::new();
        for queue in self.held.values_mut() {
            let (go, stay): (VecDeque<Held>, VecDeque<Held>) = std::mem::take(queue)
                .into_iter()
                .partition(|h| now.is_none_or(|now| h.deadline <= now));
            *queue = stay;
            due.extend(go);
        }
        self.held.retain(|_, q| !q.is_empty());
        self.held_count -= due.len();
        m().registry_commits_held.set(self.held_count as i64);
        for h in due {
            self.commit(h.work, h.reply, h.started, false);
        }
    }

    /// Retry every held commit whose base the staged head has reached: the one at exactly the
    /// staged version stages (and may let the next base through); one below it lost its race
    /// and gets its 409.
    pub(super) fn retry_held(&mut self) {
        if self.releasing {
            return;
        }
        self.releasing = true;
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > self.staged.version() {
                break;
            }
            let queue = entry.remove();
            self.held_count -= queue.len();
            m().registry_commits_held.set(self.held_count as i64);
            for h in queue {
                self.commit(h.work, h.reply, h.started, false);
            }
        }
        self.releasing = false;
    }

    /// The base version of `work`'s proposal (pending, or carried by a submit) when it is above
    /// the staged head (a conflict that the staged head may still grow out of).
    pub(super) fn ahead_of_staged(&self, work: &Work) -> Option<u64> {
        let base = match work {
            Work::Commit(id) => self.pending.get(id)?.proposal.base_version,
            Work::Submit(submission, _) => submission.proposal.base_version,
        };
        (base > self.staged.version()).then_some(base)
    }
}
