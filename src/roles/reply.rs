//! The writer's answer handle: a domain-level promise that one request gets exactly one answer.
//!
//! The roles below `api` speak in typed results (`Result<T, ApiError>`), never in HTTP. The
//! handler layer builds a [`Reply`] from its transport handle and turns the result into a
//! response; simulations, benchmarks and tests build one from a channel ([`Reply::channel`]).
//!
//! Invariant: every `Reply` is answered exactly once. One dropped unanswered (a request lost on
//! shutdown, a writer that panicked) answers `ApiError::unavailable`, so no client is ever left
//! waiting — the same 503 a dropped transport handle gives.

use crate::error::ApiError;
use crossbeam_channel::Receiver;

/// The message a [`Reply`] dropped unanswered delivers.
pub const DROPPED: &str = "the request was dropped before it was answered";

type Answer<T> = Box<dyn FnOnce(Result<T, ApiError>) + Send>;

/// Where the one answer to a request goes.
pub struct Reply<T> {
    answer: Option<Answer<T>>,
    /// The request's correlation id, for audit lines.
    pub corr_id: String,
}

impl<T> Reply<T> {
    /// A reply that hands its result to `answer`.
    pub fn new(
        corr_id: impl Into<String>,
        answer: impl FnOnce(Result<T, ApiError>) + Send + 'static,
    ) -> Reply<T> {
        Reply {
            answer: Some(Box::new(answer)),
            corr_id: corr_id.into(),
        }
    }

    /// Deliver the answer, after the lines this thread logged so far (the writer batches its
    /// lines: an audit line must be on stderr before the answer it describes, src/logging.rs).
    pub fn send(mut self, result: Result<T, ApiError>) {
        crate::logging::flush_thread();
        if let Some(answer) = self.answer.take() {
            answer(result);
        }
    }
}

impl<T: Send + 'static> Reply<T> {
    /// A reply whose answer arrives on the returned channel (capacity one: it is answered once,
    /// so the send never blocks).
    pub fn channel(corr_id: &str) -> (Reply<T>, Receiver<Result<T, ApiError>>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let reply = Reply::new(corr_id, move |r| {
            let _ = tx.send(r);
        });
        (reply, rx)
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            crate::logging::flush_thread();
            answer(Err(ApiError::unavailable(DROPPED)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_reply_answers_unavailable_once() {
        let (reply, rx) = Reply::<u32>::channel("t");
        drop(reply);
        let e = rx.try_recv().unwrap().unwrap_err();
        assert_eq!(e, ApiError::unavailable(DROPPED));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn an_answer_leaves_after_the_lines_its_thread_batched_before_it() {
        // The audit contract: a batched `msg=committed` is on stderr before its 2xx.
        let _batch = crate::logging::batch_this_thread();
        for dropped in [false, true] {
            crate::logging::queue_for_test(b"ts=x level=info msg=\"a line before an answer\"\n");
            assert!(crate::logging::batched_len() > 0);
            let (tx, rx) = crossbeam_channel::bounded(1);
            let reply = Reply::<u32>::new("t", move |_| {
                tx.send(crate::logging::batched_len()).unwrap();
            });
            if dropped {
                drop(reply);
            } else {
                reply.send(Ok(1));
            }
            assert_eq!(
                rx.try_recv().unwrap(),
                0,
                "lines still batched (dropped: {dropped})"
            );
        }
    }

    #[test]
    fn a_sent_reply_is_not_answered_again_on_drop() {
        let (reply, rx) = Reply::<u32>::channel("t");
        reply.send(Ok(7));
        assert_eq!(rx.try_recv().unwrap(), Ok(7));
        assert!(rx.try_recv().is_err());
    }
}
