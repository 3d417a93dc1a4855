//! One connection's HTTP/1.1 state machine: read and parse requests, dispatch them to the
//! handler, queue and flush responses, linger after a close, and settle what a closed connection
//! owed. Runs on the worker that owns the connection and never blocks.
//!
//! Reading: the worker reads into one shared scratch buffer and the parser works straight out of
//! it; only an incomplete request (or pipelined bytes waiting behind a deferred one) is copied
//! into the connection's own buffer, which is freed again as soon as it is empty. An idle
//! keep-alive connection therefore owns no heap buffer at all.
//!
//! Invariants: one request at a time is with the handler or being answered (pipelined requests
//! wait, unparsed, and are answered in order); every dispatched request is reported to
//! `Handler::observe` and leaves `inflight` exactly once ([`finish`]), whether its response was
//! written or its connection died first. A connection closed after a response lingers up to
//! [`LINGER`] (write side shut, reading and discarding) so a client still sending a refused body
//! sees the response rather than a reset.

use super::parse::{Meta, Parser, Step};
use super::reply::{self, Completion, ReplyTarget, ReplyTo};
use super::respond;
use super::server::Shared;
use super::transport::Transport;
use super::{Outcome, Replier, Request, Response, StreamSocket};
use crossbeam_channel::Sender;
use std::io::{self, IoSlice};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a connection closed after a response keeps draining the client's bytes.
const LINGER: Duration = Duration::from_secs(1);
/// Bytes a lingering connection may still send us before it is cut.
const LINGER_BYTES: usize = 256 * 1024;

/// What the worker does with a connection after servicing it.
pub(super) enum Disposition {
    Keep,
    Close,
    /// Hand the socket to a stream owner.
    Stream(StreamSocketParts),
}

/// What `Outcome::Stream` leaves for the worker to hand over with the socket.
pub(super) struct StreamSocketParts {
    pub(super) take: Box<dyn FnOnce(StreamSocket) + Send>,
    pub(super) pending: Vec<u8>,
    pub(super) corr_id: String,
    pub(super) chunked: bool,
}

/// What is reported to the handler once a response is written (or its connection is lost).
pub(super) struct Answered {
    route: &'static str,
    status: u16,
    started: Instant,
    corr_id: String,
    /// Counted in `inflight` (dispatched to the handler).
    counted: bool,
}

/// Bytes on their way out.
pub(super) struct Outgoing {
    head: Vec<u8>,
    body: Vec<u8>,
    pos: usize,
    /// Close the connection once written.
    close: bool,
    /// `100 Continue`: the request is still being read.
    interim: bool,
    pub(super) answered: Option<Answered>,
}

/// A request whose handler answers later.
pub(super) struct Waiting {
    pub(super) generation: u64,
    meta: Meta,
    corr_id: String,
    started: Instant,
}

pub(super) enum Phase {
    /// Reading (or waiting for) a request.
    Reading,
    /// Dispatched with `Outcome::Deferred`; nothing is read until the answer comes.
    Waiting(Waiting),
    /// A response (or `100 Continue`) is being written; nothing is read meanwhile.
    Writing(Outgoing),
    /// Closed for writing after a final response; discarding input until EOF or the deadline.
    Lingering { until: Instant, discarded: usize },
}

/// One connection. Its fields are the worker's too: the deadline sweep reads them.
pub(super) struct Conn {
    /// The byte stream; nothing here touches the socket except through it.
    pub(super) transport: Transport,
    /// Received bytes the parser has not consumed; empty (unallocated) when idle.
    pub(super) inbuf: Vec<u8>,
    /// `inbuf` holds bytes the parser has not seen in its current state.
    pub(super) reparse: bool,
    pub(super) parser: Parser,
    pub(super) phase: Phase,
    /// The socket may have bytes to read (edge-triggered: set by events, cleared by a short
    /// read or `WouldBlock`).
    pub(super) readable: bool,
    /// An event reported the peer's end of stream (or an error): a short read no longer means
    /// the socket is drained, because the FIN may sit behind the data with no edge to come.
    pub(super) read_closed: bool,
    /// First byte of the current request (head deadline), None between requests.
    pub(super) request_started: Option<Instant>,
    /// When the head completed (body deadline).
    pub(super) body_started: Instant,
    /// Accepted, last response finished, or last write progress (idle and write deadlines).
    pub(super) last_activity: Instant,
}

impl Conn {
    /// A connection just accepted: reading, no buffer, the idle deadline running from `now`.
    pub(super) fn new(transport: Transport, now: Instant) -> Conn {
        Conn {
            transport,
            inbuf: Vec::new(),
            reparse: false,
            parser: Parser::new(),
            phase: Phase::Reading,
            readable: false,
            read_closed: false,
            request_started: None,
            body_started: now,
            last_activity: now,
        }
    }

    /// Nothing in flight: no request with the handler and no response being written.
    pub(super) fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Reading | Phase::Lingering { .. })
    }

    /// A deadline expired while the request was still arriving: answer `408` (if the client
    /// still reads, the write deadline bounds it) and close after it.
    pub(super) fn time_out(&mut self, ctx: &Ctx, message: &str, now: Instant) {
        let response = Response::error(408, "bad_request", message);
        let meta = Meta {
            keep_alive: false,
            head: false,
            http11: false,
        };
        let started = self.request_started.unwrap_or(now);
        self.parser = Parser::new();
        self.inbuf = Vec::new();
        queue_response(
            ctx,
            self,
            response,
            respond::new_corr_id(),
            started,
            meta,
            false,
        );
    }

    /// A deferred answer arrived: queue it if it is for the request this connection is waiting
    /// on (same generation); false if it is stale and was dropped.
    pub(super) fn complete(&mut self, ctx: &Ctx, done: Completion) -> bool {
        let Phase::Waiting(waiting) = &self.phase else {
            return false;
        };
        if waiting.generation != done.generation {
            return false;
        }
        let Phase::Waiting(waiting) = std::mem::replace(&mut self.phase, Phase::Reading) else {
            return false;
        };
        queue_response(
            ctx,
            self,
            done.response,
            waiting.corr_id,
            waiting.started,
            waiting.meta,
            true,
        );
        true
    }

    /// The connection is closed: settle what it owed. A response being written is reported,
    /// a request still with its handler leaves `inflight` (its late answer will be dropped).
    /// Returns the transport, for the caller to drop (which closes the socket).
    pub(super) fn settle(self, ctx: &Ctx) -> Transport {
        match self.phase {
            Phase::Writing(out) => {
                if let Some(answered) = out.answered {
                    finish(ctx, answered);
                }
            }
            Phase::Waiting(_) => ctx.shared.leave_inflight(),
            Phase::Reading | Phase::Lingering { .. } => {}
        }
        self.transport
    }
}

/// Worker state the per-connection code needs besides the connection itself.
pub(super) struct Ctx {
    /// Unique across all servers of the process (inline reply matching).
    pub(super) id: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) waker: Arc<super::reply::CompletionWaker>,
    pub(super) done_tx: Sender<Completion>,
    /// Dispatch counter: identifies a request for its deferred answer.
    pub(super) generation: u64,
    pub(super) draining: bool,
}

/// Run a connection's state machine as far as it goes without blocking.
pub(super) fn service(
    ctx: &mut Ctx,
    conn: &mut Conn,
    key: usize,
    scratch: &mut [u8],
) -> Disposition {
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
                if conn.transport.wants_write() && conn.transport.flush_pending().is_err() {
                    return Disposition::Close;
                }
                if !conn.readable {
                    return Disposition::Keep;
                }
                match conn.transport.read(scratch) {
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
                // TLS records the transport still holds (handshake messages the socket could not
                // take at once) leave on this writable edge; nothing else would push them.
                if conn.transport.wants_write() && conn.transport.flush_pending().is_err() {
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
                match conn.transport.read(scratch) {
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
                    http11: false,
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
        inner: Some(ReplyTo::Worker(ReplyTarget::new(
            ctx.done_tx.clone(),
            ctx.waker.clone(),
            ctx.id,
            key,
            generation,
        ))),
        corr_id: corr_id.clone(),
        started,
        route: "unknown",
        headers: Vec::new(),
    };
    reply::begin_inline(ctx.id, generation);
    let handler = &shared.handler;
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler.handle(request, replier)));
    // A Replier sent (or dropped) inside `handle` left its answer here.
    let inline = reply::take_inline();
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
            // HTTP/1.1 streams are chunked when their owner frames them (a stream head): a
            // client then sees each batch as it comes, not when its buffer fills, and a proper
            // end (the zero chunk) is told apart from a cut connection.
            let chunked = head.stream && meta.http11;
            let pending = respond::response_head(&head, &corr_id, true, None, chunked);
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
                chunked,
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
    let bodiless = respond::bodiless(response.status);
    // A stream head answered here is the answer to HEAD: the same head a GET gets (no length;
    // chunked towards HTTP/1.1), and no body.
    // (Answered to anything but HEAD, a stream head is an ordinary response with its length.)
    let stream_head = response.stream && meta.head && !bodiless;
    let length = (!bodiless && !stream_head).then_some(response.body.len());
    let chunked = stream_head && meta.http11;
    let head = respond::response_head(&response, &corr_id, close, length, chunked);
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
            // Written to the transport; done once it holds nothing back either.
            return conn.transport.flush_pending();
        }
        let written = if head_left > 0 {
            let bufs = [IoSlice::new(&out.head[out.pos..]), IoSlice::new(&out.body)];
            conn.transport.write_vectored(&bufs)
        } else {
            conn.transport.write(&out.body[body_at..])
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
    conn.transport.shutdown_write();
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
        ctx.shared.leave_inflight();
    }
}
