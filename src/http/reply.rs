//! The way back to a waiting connection: [`Replier`] (what a handler holds), where its answer
//! goes ([`ReplyTo`], [`ReplyTarget`]), the inline fast path, and the [`Completion`]s a worker
//! receives.
//!
//! Invariants: every dispatched request is answered exactly once: by `send`, or with `503` when
//! its Replier is dropped unsent. An answer is matched to its connection by worker, token *and*
//! request generation, so a late answer for a closed connection (or a reused token) is dropped,
//! never written to another client.

use super::Response;
use crossbeam_channel::Sender;
use mio::Waker;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The way back to a waiting connection. Sending wakes the connection's worker. Dropping a
/// Replier without sending answers `503 unavailable`, so a job lost on a dead thread never
/// leaves a client hanging.
pub struct Replier {
    pub(crate) inner: Option<ReplyTo>,
    pub corr_id: String,
    pub started: Instant,
    /// Route template given to an answer that does not name its own (metrics labels).
    pub route: &'static str,
    /// Headers added to whatever answer this Replier sends (CORS), the 503 of a drop included.
    pub headers: Vec<(&'static str, String)>,
}

/// Where a [`Replier`]'s answer goes.
pub(crate) enum ReplyTo {
    /// The worker that owns the waiting connection.
    Worker(ReplyTarget),
    /// A plain channel: simulations, benchmarks and tests that drive the writer without HTTP.
    Channel(crossbeam_channel::Sender<Response>),
}

impl ReplyTo {
    fn complete(self, response: Response) {
        match self {
            ReplyTo::Worker(target) => target.complete(response),
            ReplyTo::Channel(tx) => {
                let _ = tx.send(response);
            }
        }
    }
}

impl Replier {
    /// A Replier not tied to any connection: its answer arrives on the returned channel.
    pub fn detached(corr_id: &str) -> (Replier, crossbeam_channel::Receiver<Response>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let replier = Replier {
            inner: Some(ReplyTo::Channel(tx)),
            corr_id: corr_id.to_string(),
            started: Instant::now(),
            route: "unknown",
            headers: Vec::new(),
        };
        (replier, rx)
    }

    pub fn send(mut self, mut response: Response) {
        if let Some(target) = self.inner.take() {
            if response.route == "unknown" {
                response.route = self.route;
            }
            response.headers.append(&mut self.headers);
            target.complete(response);
        }
    }

    /// Give up the right to answer because the handler answers synchronously with
    /// [`Outcome::Respond`]; spares building the 503 that dropping it would send.
    pub fn dismiss(mut self) {
        self.inner = None;
    }

    /// Add `headers` to the answer, whichever it is.
    pub fn with_headers(mut self, mut headers: Vec<(&'static str, String)>) -> Replier {
        self.headers.append(&mut headers);
        self
    }

    /// Label deferred answers with `route`.
    pub fn with_route(mut self, route: &'static str) -> Replier {
        self.route = route;
        self
    }
}

impl Drop for Replier {
    fn drop(&mut self) {
        if let Some(target) = self.inner.take() {
            let mut response = Response::error(
                503,
                "unavailable",
                "the request was dropped before it was answered",
            )
            .route(self.route);
            response.headers.append(&mut self.headers);
            target.complete(response);
        }
    }
}

/// An answer from another thread for a deferred request.
pub(super) struct Completion {
    pub(super) token: usize,
    pub(super) generation: u64,
    pub(super) response: Response,
}

/// A worker's waker for completions, woken once per batch: the writer answers a whole
/// group commit at once, and one `eventfd` write per answer would be a syscall each for
/// nothing while the worker has not looked at the first one yet. The `pending` flag alone
/// does not make it once per batch when the worker drains faster than the writer answers (it
/// clears the flag between two answers); the writer therefore batches its wakes too
/// ([`crate::wake`]): one per worker per message it handles.
///
/// Invariant: a completion sent before the worker [`CompletionWaker::taking`] is drained by
/// that pass; one sent after it finds `pending` false and wakes the worker again.
pub(crate) struct CompletionWaker {
    waker: Arc<Waker>,
    /// A wake was sent and the worker has not started draining since.
    pending: AtomicBool,
}

impl CompletionWaker {
    pub(super) fn new(waker: Arc<Waker>) -> CompletionWaker {
        CompletionWaker {
            waker,
            pending: AtomicBool::new(false),
        }
    }

    /// The worker is about to drain its completions: later ones need a new wake.
    pub(super) fn taking(&self) {
        self.pending.store(false, Ordering::SeqCst);
    }
}

impl crate::wake::Wake for CompletionWaker {
    /// Called after a completion was queued: wake the worker unless a wake is pending.
    fn wake(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }
}

/// Where a [`Replier`] sends its answer: the worker that owns the connection.
pub(crate) struct ReplyTarget {
    tx: Sender<Completion>,
    /// The worker's [`CompletionWaker`]; woken through [`crate::wake::wake`], so a thread that
    /// answers a batch (the writer) wakes each worker once per batch.
    waker: Arc<dyn crate::wake::Wake>,
    worker: usize,
    token: usize,
    generation: u64,
}

/// A handler answering on the worker thread while `handle` runs (a Replier sent or dropped
/// inside `handle`) lands here instead of going round the channel and the waker.
struct Inline {
    worker: usize,
    generation: u64,
    response: Option<Response>,
}

thread_local! {
    static INLINE: RefCell<Option<Inline>> = const { RefCell::new(None) };
}

impl ReplyTarget {
    /// The target of request `generation` on connection `token` of worker `worker`, whose
    /// completions go to `tx` (then `waker` wakes the worker).
    pub(super) fn new(
        tx: Sender<Completion>,
        waker: Arc<CompletionWaker>,
        worker: usize,
        token: usize,
        generation: u64,
    ) -> ReplyTarget {
        ReplyTarget {
            tx,
            waker,
            worker,
            token,
            generation,
        }
    }

    /// Deliver the answer and wake the worker (at once, or at the answering thread's next
    /// [`crate::wake::flush`] if it batches); if the worker is gone, nothing happens.
    pub(crate) fn complete(self, response: Response) {
        let mut response = Some(response);
        let _ = INLINE.try_with(|slot| {
            if let Ok(mut slot) = slot.try_borrow_mut() {
                if let Some(inline) = slot.as_mut() {
                    if inline.worker == self.worker
                        && inline.generation == self.generation
                        && inline.response.is_none()
                    {
                        inline.response = response.take();
                    }
                }
            }
        });
        let Some(response) = response else {
            return;
        };
        let completion = Completion {
            token: self.token,
            generation: self.generation,
            response,
        };
        if self.tx.send(completion).is_ok() {
            crate::wake::wake(&self.waker);
        }
    }
}

/// Open the inline slot for request `generation` of worker `worker`, just before its handler
/// runs on this thread.
pub(super) fn begin_inline(worker: usize, generation: u64) {
    INLINE.with(|slot| {
        *slot.borrow_mut() = Some(Inline {
            worker,
            generation,
            response: None,
        })
    });
}

/// Close the inline slot after the handler returned: the answer a Replier sent (or dropped)
/// inside `handle`, if any.
pub(super) fn take_inline() -> Option<Response> {
    INLINE
        .with(|slot| slot.borrow_mut().take())
        .and_then(|i| i.response)
}

/// A worker id unique across all servers of the process (inline reply matching).
pub(super) fn next_worker_id() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
