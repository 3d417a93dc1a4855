//! A worker thread (`{name}-worker-{i}`): one `mio` poll over the connections it owns,
//! edge-triggered, each socket registered once for read and write. It takes new sockets from the
//! acceptor, drives connections on readiness and on deferred answers, sweeps deadlines, closes
//! connections, and hands a socket over for `Outcome::Stream`.
//!
//! Deadlines are checked by a sweep every [`TICK`], so they fire up to one tick late. A deferred
//! request has no deadline here: whoever holds its `Replier` answers it (or drops it, which
//! answers `503`).
//!
//! Invariant: every connection this worker removes from its slab leaves `Shared::open` exactly
//! once, whether closed or handed over.

use super::connection::{self, Conn, Ctx, Disposition, Phase, StreamSocketParts};
use super::reply::{self, Completion};
use super::server::{Shared, WAKE};
use super::transport::Transport;
use super::{Socket, StreamSocket};
use crossbeam_channel::Receiver;
use mio::{Events, Poll, Token, Waker};
use slab::Slab;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-worker read buffer.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Deadline sweep period and the longest a worker sleeps in `poll`.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// A worker whose connections fell by at least this many from their peak (and to half of it or
/// less) gives freed memory back to the OS (see [`Worker::ebb`]).
const TRIM_EBB_CONNS: usize = 128;

pub(super) struct Worker {
    poll: Poll,
    conns: Slab<Conn>,
    scratch: Box<[u8]>,
    new_conns: Receiver<Socket>,
    done_rx: Receiver<Completion>,
    ctx: Ctx,
    /// Most connections held since memory was last given back (see [`Worker::ebb`]).
    peak_conns: usize,
}

impl Worker {
    /// A worker for `shared`'s server taking new sockets from `new_conns`; the returned waker
    /// wakes its poll (new sockets, deferred answers, shutdown).
    pub(super) fn new(
        shared: Arc<Shared>,
        new_conns: Receiver<Socket>,
    ) -> io::Result<(Worker, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        // Unbounded on purpose, bounded by use: one completion per deferred request, and at most
        // `max_inflight` requests are in flight, so the queue never holds more than that. A
        // bound here could only make an answering thread (the writer) block on a slow worker.
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let worker = Worker {
            poll,
            conns: Slab::new(),
            scratch: vec![0u8; SCRATCH_BYTES].into_boxed_slice(),
            new_conns,
            done_rx,
            ctx: Ctx {
                id: reply::next_worker_id(),
                shared,
                waker: Arc::new(reply::CompletionWaker::new(waker.clone())),
                done_tx,
                generation: 0,
                draining: false,
            },
            peak_conns: 0,
        };
        Ok((worker, waker))
    }

    /// Every key that may hold a connection. `close` removes while this is walked, so it is a
    /// range rather than an iterator over the slab; vacant keys are skipped by `get_mut`.
    fn keys(&self) -> std::ops::Range<usize> {
        0..self.conns.capacity()
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + TICK;
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(TICK)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("msg=\"worker poll failed\" error={e}");
                    std::thread::sleep(TICK);
                }
            }
            if self.ctx.shared.force.load(Ordering::SeqCst) {
                for key in self.keys() {
                    self.close(key);
                }
                self.drain_new_conns();
                return;
            }
            for event in events.iter() {
                let key = event.token().0;
                if event.token() == WAKE {
                    continue;
                }
                if let Some(conn) = self.conns.get_mut(key) {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        conn.readable = true;
                        conn.read_closed |= event.is_read_closed() || event.is_error();
                    }
                    self.drive(key);
                }
            }
            self.accept_new();
            self.ctx.waker.taking();
            while let Ok(done) = self.done_rx.try_recv() {
                self.complete(done);
            }
            if !self.ctx.draining && self.ctx.shared.draining.load(Ordering::SeqCst) {
                self.ctx.draining = true;
                self.start_drain();
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + TICK;
            }
            if self.ctx.draining
                && self.conns.is_empty()
                && self.ctx.shared.accept_stopped.load(Ordering::SeqCst)
            {
                self.drain_new_conns();
                return;
            }
        }
    }

    /// Take new connections from the acceptor and register them.
    fn accept_new(&mut self) {
        while let Ok(socket) = self.new_conns.try_recv() {
            if self.ctx.draining {
                self.ctx.shared.open.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let now = Instant::now();
            // The key the slab will give this connection: its token, registered before insert.
            let key = self.conns.vacant_key();
            let socket = match (&self.ctx.shared.tls, socket) {
                (Some((tls, counters)), Socket::Tcp(tcp)) => {
                    match tls.accept(tcp, counters.clone()) {
                        Ok(stream) => Socket::Tls(Box::new(stream)),
                        Err(e) => {
                            log::warn!("msg=\"cannot start a TLS session\" error={e}");
                            self.ctx.shared.open.fetch_sub(1, Ordering::SeqCst);
                            continue;
                        }
                    }
                }
                (_, socket) => socket,
            };
            let mut transport = Transport::new(socket);
            // Registered once for its whole life (see `Transport::interest`).
            if let Err(e) = transport.register(self.poll.registry(), Token(key)) {
                log::warn!("msg=\"cannot register connection\" error={e}");
                self.ctx.shared.open.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let inserted = self.conns.insert(Conn::new(transport, now));
            debug_assert_eq!(inserted, key);
        }
        self.peak_conns = self.peak_conns.max(self.conns.len());
    }

    /// After a flood of connections has gone, give the memory their sessions used back to the
    /// OS. glibc's malloc keeps freed chunks in its arenas for reuse: ten thousand TLS sessions
    /// (about 7 KiB of rustls state each) left ~70 MiB of RSS behind after they closed, reused
    /// by the next flood but never returned (tests/hostile_tls.rs measured it). So when a
    /// worker's connections have fallen by [`TRIM_EBB_CONNS`] or more from their peak, and to
    /// half of it or less, `malloc_trim` runs and the peak restarts from here. What stays is at
    /// most that many connections' worth per worker; a steady load (the count near its peak)
    /// never trims; it runs in the sweep, off the request path.
    fn ebb(&mut self) {
        let now_open = self.conns.len();
        if self.peak_conns >= now_open + TRIM_EBB_CONNS && now_open <= self.peak_conns / 2 {
            self.peak_conns = now_open;
            release_free_memory();
        }
    }

    /// Drop connections the acceptor queued but this worker never took (shutdown).
    fn drain_new_conns(&mut self) {
        while let Ok(socket) = self.new_conns.try_recv() {
            drop(socket);
            self.ctx.shared.open.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Service one connection and apply the outcome.
    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match connection::service(&mut self.ctx, conn, key, &mut self.scratch) {
            Disposition::Keep => {}
            Disposition::Close => self.close(key),
            Disposition::Stream(parts) => self.hand_off(key, parts),
        }
    }

    /// A deferred answer arrived.
    fn complete(&mut self, done: Completion) {
        let token = done.token;
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.complete(&self.ctx, done) {
            self.drive(token);
        }
    }

    /// Shutdown began: close every connection with nothing in flight.
    fn start_drain(&mut self) {
        for key in self.keys() {
            let idle = self.conns.get(key).is_some_and(Conn::is_idle);
            if idle {
                self.close(key);
            }
        }
    }

    /// Enforce deadlines on every connection.
    fn sweep(&mut self, now: Instant) {
        let limits = &self.ctx.shared.limits;
        let (head_timeout, body_timeout, idle_timeout, write_timeout) = (
            limits.head_timeout,
            limits.body_timeout,
            limits.idle_timeout,
            limits.write_timeout,
        );
        for key in self.keys() {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let action = match &conn.phase {
                Phase::Reading => match conn.request_started {
                    Some(_) if conn.parser.in_body() => (now.duration_since(conn.body_started)
                        > body_timeout)
                        .then_some(Some("the request body did not arrive in time")),
                    Some(started) => (now.duration_since(started) > head_timeout)
                        .then_some(Some("the request head did not arrive in time")),
                    // A TLS handshake under way is bounded like a request head, from its first
                    // byte; it has no HTTP to answer with, so it is simply closed.
                    None => match conn.transport.handshake_started() {
                        Some(started) => {
                            let late = now.duration_since(started) > head_timeout;
                            if late {
                                conn.transport.handshake_timed_out();
                            }
                            late.then_some(None)
                        }
                        None => {
                            (now.duration_since(conn.last_activity) > idle_timeout).then_some(None)
                        }
                    },
                },
                Phase::Writing(_) => {
                    (now.duration_since(conn.last_activity) > write_timeout).then_some(None)
                }
                Phase::Lingering { until, .. } => (now >= *until).then_some(None),
                Phase::Waiting(_) => None,
            };
            match action {
                None => {}
                Some(None) => self.close(key),
                Some(Some(message)) => {
                    // Tell a slow client why, if it still reads; the write deadline bounds it.
                    conn.time_out(&self.ctx, message, now);
                    self.drive(key);
                }
            }
        }
        self.ebb();
    }

    /// Close a connection, settling what it owed: a response being written is reported, a
    /// request still with its handler leaves `inflight` (its late answer will be dropped).
    fn close(&mut self, key: usize) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        // Dropping the transport closes the socket, which also removes it from the epoll set.
        drop(conn.settle(&self.ctx));
        self.ctx.shared.open.fetch_sub(1, Ordering::SeqCst);
    }

    /// `Outcome::Stream`: give the socket away.
    fn hand_off(&mut self, key: usize, parts: StreamSocketParts) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        self.ctx.shared.open.fetch_sub(1, Ordering::SeqCst);
        let socket = match conn.transport.into_socket(self.poll.registry()) {
            Ok(socket) => socket,
            Err(e) => {
                log::debug!("msg=\"cannot deregister a stream socket\" error={e}");
                return;
            }
        };
        let stream = StreamSocket {
            socket,
            pending: parts.pending,
            corr_id: parts.corr_id,
            chunked: parts.chunked,
        };
        let take = parts.take;
        if panic::catch_unwind(AssertUnwindSafe(move || take(stream))).is_err() {
            log::error!("msg=\"stream hand-off panicked\"");
        }
    }
}

/// Return the allocator's free memory to the OS (glibc; elsewhere the allocator's own policy
/// stands and this does nothing).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it locks each arena while it works, so it is
    // safe to call while other threads allocate.
    unsafe {
        libc::malloc_trim(0);
    }
}
