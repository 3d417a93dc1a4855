//! The HTTP/1.1 server: listeners, the acceptor thread, the worker event loops, per-connection
//! state machines, deadlines and graceful shutdown.
//!
//! Threads (all named after the server, e.g. `registry-accept`, `registry-worker-0`):
//! - `{name}-accept`: one `mio` poll over the listener and a waker. Accepts until `WouldBlock`,
//!   closes new connections at once while `max_connections` are open, and hands each accepted
//!   socket round-robin to a worker (a channel plus that worker's waker).
//! - `{name}-worker-{i}` (`limits.workers` of them): one `mio` poll each over its connections,
//!   edge-triggered, every socket registered once for read and write. A worker reads into one
//!   shared 64 KiB scratch buffer and parses straight out of it; only an incomplete request (or
//!   pipelined bytes waiting behind a deferred one) is copied into the connection's own buffer,
//!   which is freed again as soon as it is empty. An idle keep-alive connection therefore owns no
//!   heap buffer at all.
//! - Handlers run on the worker; a deferred answer comes back from any thread through a
//!   [`ReplyTarget`] (channel + waker) and is matched by token *and* request generation, so a
//!   late answer for a closed connection (or a reused token) is dropped.
//!
//! Bounds: open connections ≤ `max_connections`; requests in flight ≤ `max_inflight` (shared by
//! the workers of one server, `429 busy` beyond); per request the parser's caps (see
//! `conn.rs`); time: `head_timeout` from a head's first byte, `body_timeout` after the head,
//! `idle_timeout` between requests, `write_timeout` without write progress. Deadlines are
//! checked by a sweep every [`TICK`], so they fire up to one tick late. A deferred request has no
//! deadline here: whoever holds its [`Replier`] answers it (or drops it, which answers `503`).
//! A connection closed after a response lingers up to [`LINGER`] (write side shut, reading and
//! discarding) so a client still sending a refused body sees the response rather than a reset.
//!
//! Shutdown ([`ServerHandle::shutdown`]): the acceptor stops and closes the listener; workers
//! close idle connections, refuse nothing already dispatched, answer requests in flight with
//! `Connection: close`, and exit once they own no connection; past the deadline they close
//! everything and the call returns false.

use super::conn::{self, Meta, Parser, Step};
use super::{Handler, Limits, Outcome, Replier, Request, Response, Socket, StreamSocket};
use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Token, Waker};
use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, ToSocketAddrs};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The waker's token in every poll (slab keys never get near it).
const WAKE: Token = Token(usize::MAX);
/// The listener's token in the acceptor's poll.
const LISTENER: Token = Token(0);
/// Per-worker read buffer.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Deadline sweep period and the longest a worker sleeps in `poll`.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// How long a connection closed after a response keeps draining the client's bytes.
const LINGER: Duration = Duration::from_secs(1);
/// Bytes a lingering connection may still send us before it is cut.
const LINGER_BYTES: usize = 256 * 1024;
/// Listen backlog.
const BACKLOG: i32 = 1024;
/// Accept retry delay after an error such as EMFILE.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// A bound listening socket, TCP or Unix-domain.
pub enum Listener {
    Tcp(std::net::TcpListener),
    /// The listener and the path of its socket file (removed at shutdown).
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

impl Listener {
    /// Bind a TCP listener (`host:port`, port 0 picks one) with `SO_REUSEADDR`, `TCP_NODELAY`
    /// (inherited by accepted sockets on Linux) and a backlog of 1024.
    pub fn bind_tcp(addr: &str) -> io::Result<Listener> {
        use socket2::{Domain, Protocol, Socket as RawSocket, Type};
        let mut last = io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no address in {addr:?}"),
        );
        for sa in addr.to_socket_addrs()? {
            let bound = (|| {
                let s = RawSocket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP))?;
                s.set_reuse_address(true)?;
                s.set_nodelay(true)?;
                s.bind(&sa.into())?;
                s.listen(BACKLOG)?;
                Ok::<_, io::Error>(s)
            })();
            match bound {
                Ok(s) => return Ok(Listener::Tcp(s.into())),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Bind a Unix-domain listener at `path`: a stale socket file is removed first (any other
    /// kind of file is an error), the socket is made `0660`.
    pub fn bind_unix(path: &Path) -> io::Result<Listener> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        Ok(Listener::Unix(listener, path.to_path_buf()))
    }

    /// `ip:port` for TCP (the port actually bound), the socket path for Unix.
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string()),
            Listener::Unix(_, path) => path.display().to_string(),
        }
    }
}

/// The listener as the acceptor polls it.
enum MioListener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

impl MioListener {
    fn accept(&self) -> io::Result<Socket> {
        match self {
            MioListener::Tcp(l) => {
                let (s, _) = l.accept()?;
                // Inherited from the listener on Linux; set again to be sure (errors ignored).
                let _ = s.set_nodelay(true);
                Ok(Socket::Tcp(s))
            }
            MioListener::Unix(l) => Ok(Socket::Unix(l.accept()?.0)),
        }
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            MioListener::Tcp(l) => l,
            MioListener::Unix(l) => l,
        }
    }
}

/// State shared by the acceptor, the workers and the handle of one server.
struct Shared {
    handler: Arc<dyn Handler>,
    limits: Limits,
    /// Open connections (accepted, not yet closed or handed to a stream owner).
    open: AtomicUsize,
    /// Requests dispatched to the handler and not yet answered.
    inflight: AtomicUsize,
    /// Shutdown requested: stop accepting, answer what is in flight, close the rest.
    draining: AtomicBool,
    /// The acceptor is gone: no new connection can reach a worker any more.
    accept_stopped: AtomicBool,
    /// The deadline passed: close everything now.
    force: AtomicBool,
}

/// Entry point: start a server on a bound listener.
pub struct Server;

impl Server {
    /// Start the acceptor and `limits.workers` worker threads (named `{name}-accept`,
    /// `{name}-worker-{i}`) serving `handler` on `listener`.
    pub fn start(
        name: &str,
        listener: Listener,
        limits: Limits,
        handler: Arc<dyn Handler>,
    ) -> io::Result<ServerHandle> {
        let local_addr = listener.local_addr();
        let (mut mio_listener, unix_path) = match listener {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                (MioListener::Tcp(mio::net::TcpListener::from_std(l)), None)
            }
            Listener::Unix(l, path) => {
                l.set_nonblocking(true)?;
                (
                    MioListener::Unix(mio::net::UnixListener::from_std(l)),
                    Some(path),
                )
            }
        };
        let workers_n = limits.workers.max(1);
        let shared = Arc::new(Shared {
            handler,
            limits,
            open: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            accept_stopped: AtomicBool::new(false),
            force: AtomicBool::new(false),
        });
        let accept_poll = Poll::new()?;
        let accept_waker = Arc::new(Waker::new(accept_poll.registry(), WAKE)?);
        accept_poll
            .registry()
            .register(mio_listener.source(), LISTENER, Interest::READABLE)?;

        let mut handle = ServerHandle {
            local_addr,
            shared: shared.clone(),
            accept_waker,
            acceptor: None,
            workers: Vec::with_capacity(workers_n),
            unix_path,
        };
        // On any error below, dropping `handle` stops the threads already started.
        let mut outlets = Vec::with_capacity(workers_n);
        for i in 0..workers_n {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            let (conn_tx, conn_rx) = crossbeam_channel::unbounded();
            let (done_tx, done_rx) = crossbeam_channel::unbounded();
            let worker = Worker {
                poll,
                conns: Slab::default(),
                scratch: vec![0u8; SCRATCH_BYTES].into_boxed_slice(),
                new_conns: conn_rx,
                done_rx,
                ctx: Ctx {
                    id: next_worker_id(),
                    shared: shared.clone(),
                    waker: waker.clone(),
                    done_tx,
                    generation: 0,
                    draining: false,
                },
            };
            let thread = std::thread::Builder::new()
                .name(format!("{name}-worker-{i}"))
                .spawn(move || worker.run())?;
            handle.workers.push((thread, waker.clone()));
            outlets.push((conn_tx, waker));
        }
        let acceptor = Acceptor {
            poll: accept_poll,
            listener: mio_listener,
            shared,
            outlets,
            next: 0,
        };
        handle.acceptor = Some(
            std::thread::Builder::new()
                .name(format!("{name}-accept"))
                .spawn(move || acceptor.run())?,
        );
        Ok(handle)
    }
}

/// A running server. Dropping it without [`ServerHandle::shutdown`] stops it at once.
pub struct ServerHandle {
    local_addr: String,
    shared: Arc<Shared>,
    accept_waker: Arc<Waker>,
    acceptor: Option<JoinHandle<()>>,
    workers: Vec<(JoinHandle<()>, Arc<Waker>)>,
    unix_path: Option<PathBuf>,
}

impl ServerHandle {
    /// What the listener is bound to (see [`Listener::local_addr`]).
    pub fn local_addr(&self) -> String {
        self.local_addr.clone()
    }

    /// Connections currently open (streams handed away are not counted).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Requests currently dispatched and not yet answered.
    pub fn inflight(&self) -> usize {
        self.shared.inflight.load(Ordering::SeqCst)
    }

    /// Stop accepting, let requests in flight finish (deferred ones included) and flush their
    /// responses with `Connection: close`, close idle connections, join every thread. Returns
    /// false if `deadline` passed with work still in flight (it is then cut off).
    pub fn shutdown(mut self, deadline: Instant) -> bool {
        self.stop(deadline)
    }

    fn stop(&mut self, deadline: Instant) -> bool {
        self.shared.draining.store(true, Ordering::SeqCst);
        let _ = self.accept_waker.wake();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.shared.accept_stopped.store(true, Ordering::SeqCst);
        if let Some(path) = self.unix_path.take() {
            let _ = std::fs::remove_file(path);
        }
        for (_, waker) in &self.workers {
            let _ = waker.wake();
        }
        let mut clean = true;
        loop {
            if self.workers.iter().all(|(t, _)| t.is_finished()) {
                break;
            }
            if Instant::now() >= deadline {
                clean = false;
                self.shared.force.store(true, Ordering::SeqCst);
                for (_, waker) in &self.workers {
                    let _ = waker.wake();
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for (thread, _) in self.workers.drain(..) {
            let _ = thread.join();
        }
        clean
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.acceptor.is_some() || !self.workers.is_empty() {
            self.stop(Instant::now());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Acceptor

struct Acceptor {
    poll: Poll,
    listener: MioListener,
    shared: Arc<Shared>,
    /// Per worker: its new-connection channel and waker.
    outlets: Vec<(Sender<Socket>, Arc<Waker>)>,
    next: usize,
}

impl Acceptor {
    fn run(mut self) {
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

// ---------------------------------------------------------------------------------------------
// Deferred replies

/// An answer from another thread for a deferred request.
struct Completion {
    token: usize,
    generation: u64,
    response: Response,
}

/// Where a [`Replier`] sends its answer: the worker that owns the connection.
pub(crate) struct ReplyTarget {
    tx: Sender<Completion>,
    waker: Arc<Waker>,
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
    /// Deliver the answer and wake the worker; if the worker is gone, nothing happens.
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
            let _ = self.waker.wake();
        }
    }
}

fn next_worker_id() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Worker

/// A minimal slab: connections by token, freed slots reused.
struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(key) => {
                self.entries[key] = Some(value);
                key
            }
            None => {
                self.entries.push(Some(value));
                self.entries.len() - 1
            }
        }
    }

    fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.entries.get_mut(key).and_then(Option::as_mut)
    }

    fn remove(&mut self, key: usize) -> Option<T> {
        let value = self.entries.get_mut(key)?.take()?;
        self.len -= 1;
        self.free.push(key);
        Some(value)
    }

    fn capacity_keys(&self) -> std::ops::Range<usize> {
        0..self.entries.len()
    }
}

/// What the worker does with a connection after servicing it.
enum Disposition {
    Keep,
    Close,
    /// Hand the socket to a stream owner.
    Stream(StreamSocketParts),
}

struct StreamSocketParts {
    take: Box<dyn FnOnce(StreamSocket) + Send>,
    pending: Vec<u8>,
    corr_id: String,
}

/// What is reported to the handler once a response is written (or its connection is lost).
struct Answered {
    route: &'static str,
    status: u16,
    started: Instant,
    corr_id: String,
    /// Counted in `inflight` (dispatched to the handler).
    counted: bool,
}

/// Bytes on their way out.
struct Outgoing {
    head: Vec<u8>,
    body: Vec<u8>,
    pos: usize,
    /// Close the connection once written.
    close: bool,
    /// `100 Continue`: the request is still being read.
    interim: bool,
    answered: Option<Answered>,
}

/// A request whose handler answers later.
struct Waiting {
    generation: u64,
    meta: Meta,
    corr_id: String,
    started: Instant,
}

enum Phase {
    /// Reading (or waiting for) a request.
    Reading,
    /// Dispatched with `Outcome::Deferred`; nothing is read until the answer comes.
    Waiting(Waiting),
    /// A response (or `100 Continue`) is being written; nothing is read meanwhile.
    Writing(Outgoing),
    /// Closed for writing after a final response; discarding input until EOF or the deadline.
    Lingering { until: Instant, discarded: usize },
}

struct Conn {
    socket: Socket,
    /// Received bytes the parser has not consumed; empty (unallocated) when idle.
    inbuf: Vec<u8>,
    /// `inbuf` holds bytes the parser has not seen in its current state.
    reparse: bool,
    parser: Parser,
    phase: Phase,
    /// The socket may have bytes to read (edge-triggered: set by events, cleared by a short
    /// read or `WouldBlock`).
    readable: bool,
    /// An event reported the peer's end of stream (or an error): a short read no longer means
    /// the socket is drained, because the FIN may sit behind the data with no edge to come.
    read_closed: bool,
    /// First byte of the current request (head deadline), None between requests.
    request_started: Option<Instant>,
    /// When the head completed (body deadline).
    body_started: Instant,
    /// Accepted, last response finished, or last write progress (idle and write deadlines).
    last_activity: Instant,
}

/// Worker state the per-connection code needs besides the connection itself.
struct Ctx {
    /// Unique across all servers of the process (inline reply matching).
    id: usize,
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    done_tx: Sender<Completion>,
    /// Dispatch counter: identifies a request for its deferred answer.
    generation: u64,
    draining: bool,
}

struct Worker {
    poll: Poll,
    conns: Slab<Conn>,
    scratch: Box<[u8]>,
    new_conns: Receiver<Socket>,
    done_rx: Receiver<Completion>,
    ctx: Ctx,
}

impl Worker {
    fn run(mut self) {
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
                for key in self.conns.capacity_keys() {
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
                && self.conns.len == 0
                && self.ctx.shared.accept_stopped.load(Ordering::SeqCst)
            {
                self.drain_new_conns();
                return;
            }
        }
    }

    /// Take new connections from the acceptor and register them.
    fn accept_new(&mut self) {
        while let Ok(mut socket) = self.new_conns.try_recv() {
            if self.ctx.draining {
                self.ctx.shared.open.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let now = Instant::now();
            let key = self.conns.entries.len();
            let key = self.conns.free.last().copied().unwrap_or(key);
            // Registered once for both directions: edge-triggered, so an interest that is not
            // needed costs at most one spurious wake-up per state change, never a busy loop.
            if let Err(e) = self.poll.registry().register(
                &mut socket,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("msg=\"cannot register connection\" error={e}");
                self.ctx.shared.open.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let inserted = self.conns.insert(Conn {
                socket,
                inbuf: Vec::new(),
                reparse: false,
                parser: Parser::new(),
                phase: Phase::Reading,
                readable: false,
                read_closed: false,
                request_started: None,
                body_started: now,
                last_activity: now,
            });
            debug_assert_eq!(inserted, key);
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
        match service(&mut self.ctx, conn, key, &mut self.scratch) {
            Disposition::Keep => {}
            Disposition::Close => self.close(key),
            Disposition::Stream(parts) => self.hand_off(key, parts),
        }
    }

    /// A deferred answer arrived.
    fn complete(&mut self, done: Completion) {
        let Some(conn) = self.conns.get_mut(done.token) else {
            return;
        };
        let Phase::Waiting(waiting) = &conn.phase else {
            return;
        };
        if waiting.generation != done.generation {
            return;
        }
        let Phase::Waiting(waiting) = std::mem::replace(&mut conn.phase, Phase::Reading) else {
            return;
        };
        queue_response(
            &self.ctx,
            conn,
            done.response,
            waiting.corr_id,
            waiting.started,
            waiting.meta,
            true,
        );
        self.drive(done.token);
    }

    /// Shutdown began: close every connection with nothing in flight.
    fn start_drain(&mut self) {
        for key in self.conns.capacity_keys() {
            let idle = self
                .conns
                .get_mut(key)
                .is_some_and(|c| matches!(c.phase, Phase::Reading | Phase::Lingering { .. }));
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
        for key in self.conns.capacity_keys() {
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
                    None => (now.duration_since(conn.last_activity) > idle_timeout).then_some(None),
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
                    let response = Response::error(408, "bad_request", message);
                    let meta = Meta {
                        keep_alive: false,
                        head: false,
                    };
                    let started = conn.request_started.unwrap_or(now);
                    conn.parser = Parser::new();
                    conn.inbuf = Vec::new();
                    queue_response(
                        &self.ctx,
                        conn,
                        response,
                        conn::new_corr_id(),
                        started,
                        meta,
                        false,
                    );
                    self.drive(key);
                }
            }
        }
    }

    /// Close a connection, settling what it owed: a response being written is reported, a
    /// request still with its handler leaves `inflight` (its late answer will be dropped).
    fn close(&mut self, key: usize) {
        let Some(conn) = self.conns.remove(key) else {
            return;
        };
        match conn.phase {
            Phase::Writing(out) => {
                if let Some(answered) = out.answered {
                    finish(&self.ctx, answered);
                }
            }
            Phase::Waiting(_) => leave_inflight(&self.ctx.shared),
            Phase::Reading | Phase::Lingering { .. } => {}
        }
        // Dropping the socket closes it, which also removes it from the epoll set.
        drop(conn.socket);
        self.ctx.shared.open.fetch_sub(1, Ordering::SeqCst);
    }

    /// `Outcome::Stream`: give the socket away.
    fn hand_off(&mut self, key: usize, parts: StreamSocketParts) {
        let Some(mut conn) = self.conns.remove(key) else {
            return;
        };
        self.ctx.shared.open.fetch_sub(1, Ordering::SeqCst);
        if let Err(e) = self.poll.registry().deregister(&mut conn.socket) {
            log::debug!("msg=\"cannot deregister a stream socket\" error={e}");
            return;
        }
        let stream = StreamSocket {
            socket: conn.socket,
            pending: parts.pending,
            corr_id: parts.corr_id,
        };
        let take = parts.take;
        if panic::catch_unwind(AssertUnwindSafe(move || take(stream))).is_err() {
            log::error!("msg=\"stream hand-off panicked\"");
        }
    }
}

/// Run a connection's state machine as far as it goes without blocking.
fn service(ctx: &mut Ctx, conn: &mut Conn, key: usize, scratch: &mut [u8]) -> Disposition {
    loop {
        match &mut conn.phase {
            Phase::Waiting(_) => return Disposition::Keep,
            Phase::Writing(_) => match flush(conn) {
                Err(_) => return Disposition::Close,
                Ok(false) => return Disposition::Keep,
                Ok(true) => {
                    let Phase::Writing(out) = std::mem::replace(&mut conn.phase, Phase::Reading)
                    else {
                        return Disposition::Close;
                    };
                    if let Some(answered) = out.answered {
                        finish(ctx, answered);
                    }
                    if out.close {
                        if ctx.draining {
                            return Disposition::Close;
                        }
                        linger(conn);
                        continue;
                    }
                    if !out.interim {
                        conn.request_started = None;
                        conn.last_activity = Instant::now();
                    }
                    conn.reparse = !conn.inbuf.is_empty();
                }
            },
            Phase::Lingering { discarded, .. } => {
                if !conn.readable {
                    return Disposition::Keep;
                }
                match conn.socket.read(scratch) {
                    Ok(0) => return Disposition::Close,
                    Ok(n) => {
                        *discarded += n;
                        if *discarded > LINGER_BYTES {
                            return Disposition::Close;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        conn.readable = false;
                        return Disposition::Keep;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Disposition::Close,
                }
            }
            Phase::Reading => {
                if ctx.draining {
                    return Disposition::Close;
                }
                if conn.reparse {
                    conn.reparse = false;
                    let buf = std::mem::take(&mut conn.inbuf);
                    let (used, disposition) = process(ctx, conn, key, &buf);
                    conn.inbuf = buf;
                    conn.inbuf.drain(..used);
                    if conn.inbuf.is_empty() {
                        conn.inbuf = Vec::new();
                    }
                    if let Some(d) = disposition {
                        return d;
                    }
                    continue;
                }
                if !conn.readable {
                    return Disposition::Keep;
                }
                match conn.socket.read(scratch) {
                    // The peer closed: an unfinished request is abandoned.
                    Ok(0) => return Disposition::Close,
                    Ok(n) => {
                        // A short read drained the socket; the next arrival is a new edge
                        // (unless the end of stream came with this edge: read on to see it).
                        if n < scratch.len() && !conn.read_closed {
                            conn.readable = false;
                        }
                        if conn.inbuf.is_empty() {
                            // Fast path: parse out of the scratch buffer, keep only the rest.
                            let (used, disposition) = process(ctx, conn, key, &scratch[..n]);
                            if let Some(d) = disposition {
                                return d;
                            }
                            if used < n {
                                conn.inbuf.extend_from_slice(&scratch[used..n]);
                            }
                        } else {
                            conn.inbuf.extend_from_slice(&scratch[..n]);
                            conn.reparse = true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        conn.readable = false;
                        return Disposition::Keep;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Disposition::Close,
                }
            }
        }
    }
}

/// Parse and dispatch requests from `input` while the connection is reading. Returns the bytes
/// consumed and, if the connection must go (closed or streamed), how.
fn process(
    ctx: &mut Ctx,
    conn: &mut Conn,
    key: usize,
    input: &[u8],
) -> (usize, Option<Disposition>) {
    let mut off = 0;
    while matches!(conn.phase, Phase::Reading) && off < input.len() {
        if conn.request_started.is_none() && !conn.parser.in_body() {
            // Empty lines between requests (a CRLF some clients send after a body) are not a
            // request head: they must not start the head deadline of an idle connection.
            off += input[off..]
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            if off == input.len() {
                break;
            }
        }
        let now = Instant::now();
        let started = *conn.request_started.get_or_insert(now);
        let was_head = !conn.parser.in_body();
        let (used, step) = conn
            .parser
            .advance(&input[off..], &ctx.shared.limits, started);
        off += used;
        if was_head && conn.parser.in_body() {
            conn.body_started = now;
        }
        match step {
            Step::NeedMore => return (off, None),
            Step::Continue => {
                conn.last_activity = now;
                conn.phase = Phase::Writing(Outgoing {
                    head: b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
                    body: Vec::new(),
                    pos: 0,
                    close: false,
                    interim: true,
                    answered: None,
                });
            }
            Step::Reject(response, corr_id) => {
                let meta = Meta {
                    keep_alive: false,
                    head: false,
                };
                queue_response(ctx, conn, response, corr_id, started, meta, false);
            }
            Step::Request(request, meta) => {
                if let Some(d) = dispatch(ctx, conn, key, *request, meta) {
                    return (off, Some(d));
                }
            }
        }
    }
    // Stopped by a phase change: whatever is left is for later.
    conn.reparse = off < input.len();
    (off, None)
}

/// Hand a complete request to the handler (or refuse it: shutting down, too busy).
fn dispatch(
    ctx: &mut Ctx,
    conn: &mut Conn,
    key: usize,
    request: Request,
    meta: Meta,
) -> Option<Disposition> {
    let corr_id = request.corr_id.clone();
    let started = request.started;
    if ctx.draining {
        let response = Response::error(503, "unavailable", "the server is shutting down");
        queue_response(ctx, conn, response, corr_id, started, meta, false);
        return None;
    }
    let shared = ctx.shared.clone();
    let n = shared.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    if n > shared.limits.max_inflight {
        shared.inflight.fetch_sub(1, Ordering::SeqCst);
        shared.handler.rejected_busy();
        let response = Response::error(429, "busy", "too many requests in flight")
            .header("Retry-After", "1".to_string());
        queue_response(ctx, conn, response, corr_id, started, meta, false);
        return None;
    }
    shared.handler.inflight(n);

    ctx.generation += 1;
    let generation = ctx.generation;
    let replier = Replier {
        inner: Some(super::ReplyTo::Worker(ReplyTarget {
            tx: ctx.done_tx.clone(),
            waker: ctx.waker.clone(),
            worker: ctx.id,
            token: key,
            generation,
        })),
        corr_id: corr_id.clone(),
        started,
        route: "unknown",
    };
    INLINE.with(|slot| {
        *slot.borrow_mut() = Some(Inline {
            worker: ctx.id,
            generation,
            response: None,
        })
    });
    let handler = &shared.handler;
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler.handle(request, replier)));
    // A Replier sent (or dropped) inside `handle` left its answer here.
    let inline = INLINE
        .with(|slot| slot.borrow_mut().take())
        .and_then(|i| i.response);
    match outcome {
        Ok(Outcome::Respond(response)) => {
            queue_response(ctx, conn, response, corr_id, started, meta, true);
        }
        Ok(Outcome::Deferred) => match inline {
            Some(response) => queue_response(ctx, conn, response, corr_id, started, meta, true),
            None => {
                conn.phase = Phase::Waiting(Waiting {
                    generation,
                    meta,
                    corr_id,
                    started,
                })
            }
        },
        Ok(Outcome::Stream { head, take }) => {
            let pending = conn::response_head(&head, &corr_id, true, None);
            let answered = Answered {
                route: head.route,
                status: head.status,
                started,
                corr_id: corr_id.clone(),
                counted: true,
            };
            finish(ctx, answered);
            return Some(Disposition::Stream(StreamSocketParts {
                take,
                pending,
                corr_id,
            }));
        }
        Err(_) => {
            log::error!("msg=\"handler panicked\" corr_id={corr_id}");
            let response = Response::error(503, "unavailable", "the request handler failed");
            queue_response(ctx, conn, response, corr_id, started, meta, true);
        }
    }
    None
}

/// Serialize a response and make it the connection's output.
fn queue_response(
    ctx: &Ctx,
    conn: &mut Conn,
    response: Response,
    corr_id: String,
    started: Instant,
    meta: Meta,
    counted: bool,
) {
    let close = response.close || !meta.keep_alive || ctx.draining;
    let bodiless = conn::bodiless(response.status);
    let length = (!bodiless).then_some(response.body.len());
    let head = conn::response_head(&response, &corr_id, close, length);
    let body = if meta.head || bodiless {
        Vec::new()
    } else {
        response.body
    };
    conn.last_activity = Instant::now();
    conn.phase = Phase::Writing(Outgoing {
        head,
        body,
        pos: 0,
        close,
        interim: false,
        answered: Some(Answered {
            route: response.route,
            status: response.status,
            started,
            corr_id,
            counted,
        }),
    });
}

/// Write queued bytes until done (true) or the socket is full (false).
fn flush(conn: &mut Conn) -> io::Result<bool> {
    let Phase::Writing(out) = &mut conn.phase else {
        return Ok(true);
    };
    loop {
        let head_left = out.head.len().saturating_sub(out.pos);
        let body_at = out.pos.saturating_sub(out.head.len());
        if head_left == 0 && body_at >= out.body.len() {
            return Ok(true);
        }
        let written = if head_left > 0 {
            let bufs = [IoSlice::new(&out.head[out.pos..]), IoSlice::new(&out.body)];
            conn.socket.write_vectored(&bufs)
        } else {
            conn.socket.write(&out.body[body_at..])
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                out.pos += n;
                conn.last_activity = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// After a final response: shut the write side, then read and discard until EOF or deadline.
fn linger(conn: &mut Conn) {
    let _ = match &conn.socket {
        Socket::Tcp(s) => s.shutdown(Shutdown::Write),
        Socket::Unix(s) => s.shutdown(Shutdown::Write),
    };
    conn.inbuf = Vec::new();
    conn.readable = true;
    conn.phase = Phase::Lingering {
        until: Instant::now() + LINGER,
        discarded: 0,
    };
}

/// A response is out (or its connection is gone): report it, release its in-flight slot.
fn finish(ctx: &Ctx, answered: Answered) {
    let handler = &ctx.shared.handler;
    handler.observe(
        answered.route,
        answered.status,
        answered.started.elapsed(),
        &answered.corr_id,
    );
    if answered.counted {
        leave_inflight(&ctx.shared);
    }
}

fn leave_inflight(shared: &Shared) {
    let n = shared
        .inflight
        .fetch_sub(1, Ordering::SeqCst)
        .saturating_sub(1);
    shared.handler.inflight(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::client::{self, ClientResponse, Target};
    use crossbeam_channel::{Receiver, Sender};
    use parking_lot::Mutex;
    use std::io::{BufRead, BufReader};
    use std::net::TcpStream;

    const WAIT: Duration = Duration::from_secs(5);

    /// Routes: `/hello`, `/echo`, `/defer?ms=N` (answered from another thread), `/hold`
    /// (answered by the test), `/inline` (sent inside `handle`), `/drop` (Replier dropped),
    /// `/stream` (socket handed to the test), `/panic`, `/big?mb=N`.
    struct TestHandler {
        held: Mutex<Vec<Replier>>,
        dispatched: (Sender<String>, Receiver<String>),
        streams: (Sender<StreamSocket>, Receiver<StreamSocket>),
        observed: AtomicUsize,
        busy: AtomicUsize,
    }

    impl TestHandler {
        fn new() -> Arc<TestHandler> {
            Arc::new(TestHandler {
                held: Mutex::new(Vec::new()),
                dispatched: crossbeam_channel::unbounded(),
                streams: crossbeam_channel::unbounded(),
                observed: AtomicUsize::new(0),
                busy: AtomicUsize::new(0),
            })
        }

        /// Wait until the handler got a request for `path`.
        fn wait_dispatched(&self, path: &str) {
            loop {
                let got = self
                    .dispatched
                    .1
                    .recv_timeout(WAIT)
                    .expect("request never dispatched");
                if got == path {
                    return;
                }
            }
        }
    }

    impl Handler for TestHandler {
        fn handle(&self, req: Request, replier: Replier) -> Outcome {
            let _ = self.dispatched.0.send(req.path.clone());
            let text = |s: String| Response::new(200, s.into_bytes()).route("/test");
            match req.path.as_str() {
                "/hello" => {
                    Outcome::Respond(text(format!("hello {}", req.query.unwrap_or_default())))
                }
                "/echo" => Outcome::Respond(Response::new(200, req.body)),
                "/defer" => {
                    let ms = req
                        .query_param("ms")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(50);
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(ms));
                        replier.send(text("deferred".into()));
                    });
                    Outcome::Deferred
                }
                "/hold" => {
                    self.held.lock().push(replier);
                    Outcome::Deferred
                }
                "/inline" => {
                    replier.send(Response::new(201, b"inline".to_vec()));
                    Outcome::Deferred
                }
                "/drop" => {
                    drop(replier);
                    Outcome::Deferred
                }
                "/stream" => {
                    let tx = self.streams.0.clone();
                    Outcome::Stream {
                        head: Response::new(200, Vec::new())
                            .header("Content-Type", "text/event-stream".into()),
                        take: Box::new(move |s| {
                            let _ = tx.send(s);
                        }),
                    }
                }
                "/panic" => panic!("test handler panic (expected)"),
                "/big" => {
                    let mb = req
                        .query_param("mb")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1);
                    Outcome::Respond(Response::new(200, vec![b'x'; mb << 20]))
                }
                _ => Outcome::Respond(Response::error(404, "not_found", "no such route")),
            }
        }

        fn observe(&self, _: &'static str, _: u16, _: Duration, _: &str) {
            self.observed.fetch_add(1, Ordering::SeqCst);
        }

        fn rejected_busy(&self) {
            self.busy.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn limits() -> Limits {
        Limits {
            workers: 2,
            max_connections: 1000,
            max_inflight: 64,
            max_header_bytes: 8 * 1024,
            max_headers: 32,
            max_body_bytes: 1024,
            head_timeout: Duration::from_secs(2),
            body_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(2),
        }
    }

    fn start(limits: Limits) -> (ServerHandle, Arc<TestHandler>) {
        let handler = TestHandler::new();
        let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
        let server = Server::start("test", listener, limits, handler.clone()).unwrap();
        (server, handler)
    }

    struct Client {
        stream: TcpStream,
        reader: BufReader<TcpStream>,
    }

    impl Client {
        fn connect(server: &ServerHandle) -> Client {
            let stream = TcpStream::connect(server.local_addr()).unwrap();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let reader = BufReader::new(stream.try_clone().unwrap());
            Client { stream, reader }
        }

        fn send(&mut self, raw: &[u8]) {
            self.stream.write_all(raw).unwrap();
        }

        fn get(&mut self, path: &str) -> ClientResponse {
            self.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            self.read()
        }

        fn read(&mut self) -> ClientResponse {
            client::read_response(&mut self.reader, false).expect("a response")
        }

        fn read_head_only(&mut self) -> ClientResponse {
            client::read_response(&mut self.reader, true).expect("a response")
        }

        /// True if the server closes the connection (EOF or reset) within `within`.
        fn closed_within(&mut self, within: Duration) -> bool {
            let deadline = Instant::now() + within;
            self.stream.set_read_timeout(Some(within)).unwrap();
            let mut buf = [0u8; 4096];
            while Instant::now() < deadline {
                match self.reader.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => return false,
                    Err(_) => return true,
                }
            }
            false
        }
    }

    fn error_code(r: &ClientResponse) -> String {
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON error body");
        v["error"].as_str().unwrap_or("").to_string()
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn keep_alive_serves_two_requests_on_one_connection() {
        let (server, handler) = start(limits());
        let mut c = Client::connect(&server);
        let r = c.get("/hello?a=1");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello a=1");
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.header("content-length"), Some("9"));
        let generated = r.header("x-corr-id").unwrap().to_string();
        assert_eq!(generated.len(), 16);
        c.send(b"GET /hello?b=2 HTTP/1.1\r\nX-Corr-Id: my-id-42\r\n\r\n");
        let r = c.read();
        assert_eq!(r.body, b"hello b=2");
        assert_eq!(r.header("x-corr-id"), Some("my-id-42"));
        assert_eq!(server.open_connections(), 1);
        wait_until("two observations", || {
            handler.observed.load(Ordering::SeqCst) == 2
        });
        wait_until("in-flight to drop", || server.inflight() == 0);
        assert!(server.shutdown(Instant::now() + WAIT));
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let (server, _h) = start(limits());
        let mut c = Client::connect(&server);
        c.send(
            b"GET /defer?ms=150 HTTP/1.1\r\n\r\nGET /hello?n=2 HTTP/1.1\r\n\r\n\
              POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nthreeHEAD /hello?n=4 HTTP/1.1\r\n\r\n\
              GET /inline HTTP/1.1\r\n\r\n",
        );
        assert_eq!(c.read().body, b"deferred");
        assert_eq!(c.read().body, b"hello n=2");
        assert_eq!(c.read().body, b"three");
        let head = c.read_head_only();
        assert_eq!(head.header("content-length"), Some("9"));
        let r = c.read();
        assert_eq!((r.status, &r.body[..]), (201, &b"inline"[..]));
    }

    #[test]
    fn deferred_reply_from_another_thread_and_dropped_replier() {
        let (server, _h) = start(limits());
        let mut c = Client::connect(&server);
        let r = c.get("/defer?ms=100");
        assert_eq!((r.status, &r.body[..]), (200, &b"deferred"[..]));
        let r = c.get("/drop");
        assert_eq!((r.status, error_code(&r)), (503, "unavailable".into()));
        let r = c.get("/panic");
        assert_eq!((r.status, error_code(&r)), (503, "unavailable".into()));
        // The connection is still fine.
        assert_eq!(c.get("/hello").status, 200);
        wait_until("in-flight to drop", || server.inflight() == 0);
    }

    #[test]
    fn huge_header_is_431_and_closed() {
        let (server, _h) = start(limits());
        let mut c = Client::connect(&server);
        let mut raw = b"GET /hello HTTP/1.1\r\nX-Big: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 64 * 1024));
        raw.extend_from_slice(b"\r\n\r\n");
        c.send(&raw);
        let r = c.read();
        assert_eq!(
            (r.status, error_code(&r)),
            (431, "headers_too_large".into())
        );
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed_within(WAIT));
        // Too many header lines.
        let mut c = Client::connect(&server);
        let mut raw = b"GET /hello HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            raw.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        c.send(&raw);
        assert_eq!(c.read().status, 431);
    }

    #[test]
    fn declared_body_over_cap_is_413_before_the_body() {
        let (server, _h) = start(limits());
        let mut c = Client::connect(&server);
        c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n");
        let r = c.read();
        assert_eq!((r.status, error_code(&r)), (413, "too_large".into()));
        assert!(c.closed_within(WAIT));
    }

    #[test]
    fn chunked_body_over_cap_is_413() {
        let (server, _h) = start(limits());
        let mut c = Client::connect(&server);
        c.send(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n");
        c.send(&[b'x'; 0x200]);
        c.send(b"\r\n300\r\n");
        let r = c.read();
        assert_eq!((r.status, error_code(&r)), (413, "too_large".into()));
        assert!(c.closed_within(WAIT));
    }

    #[test]
    fn chunked_body_and_expect_continue() {
        let (server, _h) = start(limits());
        let mut c = Client::connect(&server);
        c.send(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: 1\r\n\r\n");
        assert_eq!(c.read().body, b"abcde");

        c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        let mut line = String::new();
        c.reader.read_line(&mut line).unwrap();
        assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
        line.clear();
        c.reader.read_line(&mut line).unwrap();
        assert_eq!(line, "\r\n");
        c.send(b"hello");
        assert_eq!(c.read().body, b"hello");
    }

    #[test]
    fn malformed_and_http10() {
        let (server, _h) = start(limits());
        let mut c = Client::connect(&server);
        c.send(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n");
        let r = c.read();
        assert_eq!((r.status, error_code(&r)), (400, "bad_request".into()));
        assert!(c.closed_within(WAIT));

        let mut c = Client::connect(&server);
        c.send(b"GET /hello HTTP/1.0\r\n\r\n");
        let r = c.read();
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed_within(WAIT));

        let mut c = Client::connect(&server);
        c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(c.read().header("connection"), Some("keep-alive"));
        c.send(b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(c.read().header("connection"), Some("close"));
        assert!(c.closed_within(WAIT));
    }

    #[test]
    fn slowloris_is_cut_off_by_the_head_deadline() {
        let (server, _h) = start(Limits {
            head_timeout: Duration::from_secs(1),
            ..limits()
        });
        let mut c = Client::connect(&server);
        let started = Instant::now();
        // One byte, then one more every 250 ms: activity must not extend the deadline.
        let mut writer = c.stream.try_clone().unwrap();
        let dripper = std::thread::spawn(move || {
            for b in b"GET /hello HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa".iter() {
                if writer.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        let mut rest = Vec::new();
        let _ = c.reader.read_to_end(&mut rest);
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(3),
            "cut off after {elapsed:?}"
        );
        assert!(
            rest.starts_with(b"HTTP/1.1 408 "),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
        let _ = dripper.join();
        wait_until("the connection to close", || server.open_connections() == 0);
    }

    #[test]
    fn idle_keep_alive_connections_are_closed() {
        let (server, _h) = start(Limits {
            idle_timeout: Duration::from_millis(500),
            ..limits()
        });
        let mut c = Client::connect(&server);
        assert_eq!(c.get("/hello").status, 200);
        let started = Instant::now();
        assert!(c.closed_within(Duration::from_secs(3)));
        assert!(started.elapsed() >= Duration::from_millis(300));
        // A connection that never sends anything too.
        let mut c = Client::connect(&server);
        assert!(c.closed_within(Duration::from_secs(3)));
        wait_until("no connection open", || server.open_connections() == 0);
    }

    #[test]
    fn stray_crlf_between_requests_keeps_the_connection_idle() {
        let (server, _h) = start(Limits {
            head_timeout: Duration::from_millis(300),
            ..limits()
        });
        let mut c = Client::connect(&server);
        c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nok\r\n");
        assert_eq!(c.read().body, b"ok");
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(c.get("/hello").status, 200);
    }

    #[test]
    fn max_inflight_answers_429_with_retry_after() {
        let (server, handler) = start(Limits {
            max_inflight: 1,
            ..limits()
        });
        let mut a = Client::connect(&server);
        a.send(b"GET /hold HTTP/1.1\r\n\r\n");
        handler.wait_dispatched("/hold");
        assert_eq!(server.inflight(), 1);
        let mut b = Client::connect(&server);
        let r = b.get("/hello");
        assert_eq!((r.status, error_code(&r)), (429, "busy".into()));
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(handler.busy.load(Ordering::SeqCst), 1);
        let replier = handler.held.lock().pop().unwrap();
        replier.send(Response::new(200, b"held".to_vec()));
        assert_eq!(a.read().body, b"held");
        wait_until("in-flight to drop", || server.inflight() == 0);
        assert_eq!(b.get("/hello").status, 200);
    }

    #[test]
    fn stream_outcome_hands_the_socket_over() {
        let (server, handler) = start(limits());
        let mut c = Client::connect(&server);
        c.send(b"GET /stream HTTP/1.1\r\nX-Corr-Id: s1\r\n\r\n");
        let mut s = handler.streams.1.recv_timeout(WAIT).unwrap();
        assert_eq!(s.corr_id, "s1");
        let head = String::from_utf8(s.pending.clone()).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/event-stream\r\n"));
        assert!(head.contains("Connection: close\r\n"));
        assert!(head.contains("X-Corr-Id: s1\r\n"));
        assert!(!head.contains("Content-Length"));
        wait_until("the hand-off to be uncounted", || {
            server.open_connections() == 0
        });
        let mut out = std::mem::take(&mut s.pending);
        out.extend_from_slice(b"data: hi\n\n");
        let mut written = 0;
        while written < out.len() {
            match s.socket.write(&out[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        drop(s);
        let r = c.read(); // no Content-Length: the body runs to EOF
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"data: hi\n\n");
        // The server is unaffected.
        assert_eq!(Client::connect(&server).get("/hello").status, 200);
    }

    #[test]
    fn shutdown_drains_a_deferred_request() {
        let (server, handler) = start(limits());
        let mut a = Client::connect(&server);
        a.send(b"GET /defer?ms=300 HTTP/1.1\r\n\r\n");
        handler.wait_dispatched("/defer");
        let mut idle = Client::connect(&server);
        wait_until("both connections open", || server.open_connections() == 2);
        let addr = server.local_addr();
        assert!(server.shutdown(Instant::now() + WAIT), "drained in time");
        let r = a.read();
        assert_eq!((r.status, &r.body[..]), (200, &b"deferred"[..]));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(a.closed_within(WAIT));
        assert!(idle.closed_within(WAIT));
        assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
    }

    #[test]
    fn shutdown_past_the_deadline_force_closes() {
        let (server, handler) = start(limits());
        let mut a = Client::connect(&server);
        a.send(b"GET /hold HTTP/1.1\r\n\r\n");
        handler.wait_dispatched("/hold");
        assert!(!server.shutdown(Instant::now() + Duration::from_millis(300)));
        assert!(a.closed_within(WAIT));
        // A late answer for a dead worker goes nowhere.
        handler
            .held
            .lock()
            .pop()
            .unwrap()
            .send(Response::new(200, Vec::new()));
    }

    #[test]
    fn max_connections_closes_new_connections_at_accept() {
        let (server, _h) = start(Limits {
            max_connections: 2,
            ..limits()
        });
        let mut a = Client::connect(&server);
        let mut b = Client::connect(&server);
        assert_eq!(a.get("/hello").status, 200);
        assert_eq!(b.get("/hello").status, 200);
        let mut c = Client::connect(&server);
        assert!(c.closed_within(WAIT));
        drop(a);
        wait_until("a slot to free", || server.open_connections() == 1);
        assert_eq!(Client::connect(&server).get("/hello").status, 200);
    }

    #[test]
    fn write_timeout_closes_a_client_that_does_not_read() {
        let (server, _h) = start(Limits {
            write_timeout: Duration::from_millis(300),
            ..limits()
        });
        let mut c = Client::connect(&server);
        c.send(b"GET /big?mb=64 HTTP/1.1\r\n\r\n");
        wait_until("the stalled connection to close", || {
            server.open_connections() == 0
        });
    }

    #[test]
    fn many_idle_connections_then_shutdown() {
        let (server, _h) = start(limits());
        let clients: Vec<Client> = (0..200).map(|_| Client::connect(&server)).collect();
        wait_until("all accepted", || server.open_connections() == 200);
        let started = Instant::now();
        assert!(server.shutdown(Instant::now() + WAIT));
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(clients);
    }

    #[test]
    fn client_over_tcp_and_unix() {
        let (server, _h) = start(limits());
        let target = Target::parse(&format!("http://{}", server.local_addr())).unwrap();
        let r = client::request(
            &target,
            "POST",
            "/echo",
            &[("X-Corr-Id", "c1")],
            Some(b"{}"),
            WAIT,
        )
        .unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"{}"[..]));
        assert_eq!(r.header("X-Corr-Id"), Some("c1"));
        let r = client::request(&target, "HEAD", "/hello", &[], None, WAIT).unwrap();
        assert!(r.body.is_empty());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        std::fs::write(&path, b"").unwrap();
        assert!(
            Listener::bind_unix(&path).is_err(),
            "a regular file is not replaced"
        );
        std::fs::remove_file(&path).unwrap();
        drop(Listener::bind_unix(&path).unwrap()); // leaves a stale socket file behind
        let listener = Listener::bind_unix(&path).unwrap();
        assert_eq!(listener.local_addr(), path.display().to_string());
        let handler = TestHandler::new();
        let unix = Server::start("unix", listener, limits(), handler.clone()).unwrap();
        let target = Target::parse(&format!("unix:{}", path.display())).unwrap();
        let r = client::request(&target, "GET", "/hello?u", &[], None, WAIT).unwrap();
        assert_eq!(r.body, b"hello u");

        // A stream over the Unix socket, read with the client.
        let t = target.clone();
        let reader = std::thread::spawn(move || {
            let (head, mut body) = client::open_stream(&t, "/stream", &[], WAIT).unwrap();
            let mut line = String::new();
            body.read_line(&mut line).unwrap();
            (head, line)
        });
        let mut s = handler.streams.1.recv_timeout(WAIT).unwrap();
        let mut out = std::mem::take(&mut s.pending);
        out.extend_from_slice(b"event: commit\n");
        s.socket.write_all(&out).unwrap();
        let (head, line) = reader.join().unwrap();
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        assert_eq!(line, "event: commit\n");
        drop(s);

        assert!(unix.shutdown(Instant::now() + WAIT));
        assert!(!path.exists(), "the socket file is removed at shutdown");
    }
}
