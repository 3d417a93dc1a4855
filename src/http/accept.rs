//! The acceptor thread (`{name}-accept`): one `mio` poll over the listener and a waker. It
//! accepts until `WouldBlock`, closes new connections at once while `max_connections` are open,
//! and hands each accepted socket round-robin to a worker (a channel plus that worker's waker).
//!
//! Invariant: a socket is counted in `Shared::open` before it is handed over, and uncounted if
//! the hand-over fails, so `open` never misses a connection a worker may own.

use super::listener::MioListener;
use super::server::{Shared, WAKE};
use super::Socket;
use crossbeam_channel::Sender;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The listener's token in the acceptor's poll.
const LISTENER: Token = Token(0);
/// Accept retry delay after an error such as EMFILE.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

pub(super) struct Acceptor {
    poll: Poll,
    listener: MioListener,
    shared: Arc<Shared>,
    /// Per worker: its new-connection channel and waker.
    outlets: Vec<(Sender<Socket>, Arc<Waker>)>,
    next: usize,
}

impl Acceptor {
    /// Register `listener` with a new poll; the returned waker stops the acceptor at shutdown
    /// (it exits on any wake-up once `draining` is set).
    pub(super) fn new(
        mut listener: MioListener,
        shared: Arc<Shared>,
    ) -> io::Result<(Acceptor, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        poll.registry()
            .register(listener.source(), LISTENER, Interest::READABLE)?;
        let acceptor = Acceptor {
            poll,
            listener,
            shared,
            outlets: Vec::new(),
            next: 0,
        };
        Ok((acceptor, waker))
    }

    /// The workers to hand connections to (at least one).
    pub(super) fn with_outlets(mut self, outlets: Vec<(Sender<Socket>, Arc<Waker>)>) -> Acceptor {
        self.outlets = outlets;
        self
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut retry = false;
        loop {
            let timeout = retry.then_some(ACCEPT_RETRY);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("msg=\"acceptor poll failed\" error={e}");
                    std::thread::sleep(ACCEPT_RETRY);
                }
                continue;
            }
            if self.shared.draining.load(Ordering::SeqCst) {
                // Dropping the listener closes it.
                return;
            }
            // Accept on any event, and after a retry delay (the edge may already be spent).
            retry = self.accept_all();
        }
    }

    /// Accept until `WouldBlock`; returns true if an error asks for a retry later.
    fn accept_all(&mut self) -> bool {
        loop {
            let socket = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::warn!("msg=\"accept failed\" error={e}");
                    return true;
                }
            };
            let max = self.shared.limits.max_connections;
            if self.shared.open.load(Ordering::SeqCst) >= max {
                log::debug!("msg=\"connection refused: max_connections reached\" max={max}");
                drop(socket);
                continue;
            }
            self.shared.open.fetch_add(1, Ordering::SeqCst);
            let (tx, waker) = &self.outlets[self.next % self.outlets.len()];
            self.next = self.next.wrapping_add(1);
            if tx.send(socket).is_ok() {
                let _ = waker.wake();
            } else {
                self.shared.open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}
