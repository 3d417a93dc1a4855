//! Deferred wake-ups: a thread that answers many requests in one step (the writer answering a
//! group commit) sends each woken thread one wake-up at the end of the step instead of one per
//! answer.
//!
//! A thread opts in with [`batch_this_thread`]; then [`wake`] only records the [`Wake`] target
//! (once per target) and [`flush`] wakes each recorded target once. Any other thread wakes at
//! once, as before. The HTTP transport's completion waker (`http::reply`) is the one target
//! today: one `eventfd` write per worker per group commit, not one per reply that found its
//! worker already draining.
//!
//! Invariant: a recorded wake-up is sent before the batching thread can block — the writer
//! flushes after every message it handles, before its loop waits again — and no recorded
//! wake-up outlives the thread (the guard flushes on drop, unwinding included). A target's
//! message is queued before its wake is recorded, so the flush always finds it.

use std::cell::RefCell;
use std::sync::Arc;

/// Something a thread can be woken through (a worker's completion waker).
pub trait Wake: Send + Sync {
    fn wake(&self);
}

thread_local! {
    /// `Some` while this thread batches: the targets to wake at the next flush.
    static PENDING: RefCell<Option<Vec<Arc<dyn Wake>>>> = const { RefCell::new(None) };
}

/// Wake `target`, or record it for this thread's next [`flush`] if the thread batches.
pub fn wake(target: &Arc<dyn Wake>) {
    let deferred = PENDING
        .try_with(|p| {
            let Ok(mut p) = p.try_borrow_mut() else {
                return false;
            };
            let Some(list) = p.as_mut() else {
                return false;
            };
            // A few workers at most: a linear scan beats hashing.
            if !list.iter().any(|t| Arc::ptr_eq(t, target)) {
                list.push(target.clone());
            }
            true
        })
        .unwrap_or(false);
    if !deferred {
        target.wake();
    }
}

/// Send the wake-ups this thread recorded (each target once).
pub fn flush() {
    let targets = PENDING
        .try_with(|p| match p.try_borrow_mut() {
            Ok(mut p) => p.as_mut().map(std::mem::take),
            Err(_) => None,
        })
        .ok()
        .flatten();
    for target in targets.into_iter().flatten() {
        target.wake();
    }
}

/// Ends batching on drop, after one last [`flush`].
pub struct BatchGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        flush();
        let _ = PENDING.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                *p = None;
            }
        });
    }
}

/// From now until the guard drops, this thread's [`wake`]s wait for its [`flush`].
pub fn batch_this_thread() -> BatchGuard {
    PENDING.with(|p| *p.borrow_mut() = Some(Vec::new()));
    BatchGuard {
        _not_send: std::marker::PhantomData,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn target() -> (Arc<Count>, Arc<dyn Wake>) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        let t: Arc<dyn Wake> = c.clone();
        (c, t)
    }

    #[test]
    fn without_a_batch_every_wake_is_sent_at_once() {
        let (c, t) = target();
        wake(&t);
        wake(&t);
        assert_eq!(c.0.load(Ordering::SeqCst), 2);
        flush();
        assert_eq!(c.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_batch_wakes_each_target_once_at_the_flush() {
        let (a, ta) = target();
        let (b, tb) = target();
        let guard = batch_this_thread();
        for _ in 0..5 {
            wake(&ta);
        }
        wake(&tb);
        assert_eq!(a.0.load(Ordering::SeqCst), 0, "deferred until the flush");
        assert_eq!(b.0.load(Ordering::SeqCst), 0);
        flush();
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        flush();
        assert_eq!(
            a.0.load(Ordering::SeqCst),
            1,
            "a flush sends only what was recorded"
        );
        // What the guard holds when it drops is sent, then the thread stops batching.
        wake(&ta);
        drop(guard);
        assert_eq!(a.0.load(Ordering::SeqCst), 2);
        wake(&ta);
        assert_eq!(a.0.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_thread_unwinding_still_sends_its_recorded_wakes() {
        let (a, ta) = target();
        let joined = std::thread::spawn(move || {
            let _guard = batch_this_thread();
            wake(&ta);
            panic!("the batching thread dies");
        })
        .join();
        assert!(joined.is_err());
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
    }
}
