//! The HTTP/1.1 server as a whole: starting its threads on a bound listener, the state they
//! share, and graceful shutdown.
//!
//! Threads (all named after the server, e.g. `registry-accept`, `registry-worker-0`): one
//! acceptor (`accept.rs`) and `limits.workers` event-loop workers (`worker.rs`), each owning the
//! connections (`connection.rs`) the acceptor handed it. Deferred answers come back through
//! `reply.rs`.
//!
//! Bounds: open connections ≤ `max_connections`; requests in flight ≤ `max_inflight` (shared by
//! the workers of one server, `429 busy` beyond); per request the parser's caps (see
//! `parse.rs`); time: `head_timeout` from a head's first byte, `body_timeout` after the head,
//! `idle_timeout` between requests, `write_timeout` without write progress (enforced by the
//! workers' sweep, see `worker.rs`).
//!
//! Shutdown ([`ServerHandle::shutdown`]): the acceptor stops and closes the listener; workers
//! close idle connections, refuse nothing already dispatched, answer requests in flight with
//! `Connection: close`, and exit once they own no connection; past the deadline they close
//! everything and the call returns false. Invariant: `open` and `inflight` count exactly the
//! connections and requests some thread of this server still owns.

use super::accept::Acceptor;
use super::listener::{Listener, MioListener};
use super::tls::{HandshakeCounters, ServerTls};
use super::worker::Worker;
use super::{Handler, Limits};
use mio::{Token, Waker};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The waker's token in every poll of a server (slab keys never get near it).
pub(super) const WAKE: Token = Token(usize::MAX);

/// State shared by the acceptor, the workers and the handle of one server.
pub(super) struct Shared {
    pub(super) handler: Arc<dyn Handler>,
    pub(super) limits: Limits,
    /// TLS on this listener's TCP connections (the configuration is swapped by a reload), and
    /// where its handshakes are counted (labelled with the server's name).
    pub(super) tls: Option<(Arc<ServerTls>, Arc<HandshakeCounters>)>,
    /// Open connections (accepted, not yet closed or handed to a stream owner).
    pub(super) open: AtomicUsize,
    /// Requests dispatched to the handler and not yet answered.
    pub(super) inflight: AtomicUsize,
    /// Shutdown requested: stop accepting, answer what is in flight, close the rest.
    pub(super) draining: AtomicBool,
    /// The acceptor is gone: no new connection can reach a worker any more.
    pub(super) accept_stopped: AtomicBool,
    /// The deadline passed: close everything now.
    pub(super) force: AtomicBool,
}

impl Shared {
    /// A request left the handler's hands (answered, or its connection is gone).
    pub(super) fn leave_inflight(&self) {
        let n = self
            .inflight
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        self.handler.inflight(n);
    }
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
        Server::start_with_tls(name, listener, limits, handler, None)
    }

    /// [`Server::start`], speaking TLS on every TCP connection when `tls` is given (a Unix
    /// listener is local and stays plaintext: its socket file's mode is its access control).
    pub fn start_with_tls(
        name: &str,
        listener: Listener,
        limits: Limits,
        handler: Arc<dyn Handler>,
        tls: Option<Arc<ServerTls>>,
    ) -> io::Result<ServerHandle> {
        let tls = match listener {
            Listener::Tcp(_) => tls.map(|tls| (tls, HandshakeCounters::for_listener(name))),
            Listener::Unix(..) => None,
        };
        let local_addr = listener.local_addr();
        let (mio_listener, unix_path) = MioListener::new(listener)?;
        let workers_n = limits.workers.max(1);
        let shared = Arc::new(Shared {
            handler,
            limits,
            tls,
            open: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            accept_stopped: AtomicBool::new(false),
            force: AtomicBool::new(false),
        });
        let (acceptor, accept_waker) = Acceptor::new(mio_listener, shared.clone())?;

        let mut handle = ServerHandle {
            local_addr,
            shared: shared.clone(),
            accept_waker,
            acceptor: None,
            workers: Vec::with_capacity(workers_n),
            unix_path,
        };
        // On any error below, dropping `handle` stops the threads already started (and drops
        // the acceptor, which closes the listener).
        let mut outlets = Vec::with_capacity(workers_n);
        for i in 0..workers_n {
            // Unbounded on purpose, bounded by use: the acceptor hands a socket over only while
            // fewer than `max_connections` are open (it counts them before sending), so at most
            // `max_connections` sockets can ever wait here, and the acceptor never blocks.
            let (conn_tx, conn_rx) = crossbeam_channel::unbounded();
            let (worker, waker) = Worker::new(shared.clone(), conn_rx)?;
            let thread = std::thread::Builder::new()
                .name(format!("{name}-worker-{i}"))
                .spawn(move || worker.run())?;
            handle.workers.push((thread, waker.clone()));
            outlets.push((conn_tx, waker));
        }
        let acceptor = acceptor.with_outlets(outlets);
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
