//! The HTTP transport: every line of HTTP code lives under this module.
//!
//! tiny_http 0.12 cannot bound what hostile clients cost from the outside (one thread per
//! connection, no read or write timeouts, no header caps; see docs/ARCHITECTURE.md "Transport"),
//! so this is a small HTTP/1.1 server of our own: `httparse` parses request heads, and each
//! worker thread runs one `mio` readiness loop over non-blocking sockets. No futures, no async
//! runtime.
//!
//! The handler layer above (src/api) sees only [`Request`], [`Response`], [`Outcome`] and
//! [`Replier`]; it knows nothing about sockets, buffers or deadlines.
//!
//! Files, one job each: `listener.rs` binds (and the crate's one Unix-socket bind helper),
//! `accept.rs` is the acceptor thread, `worker.rs` a worker's poll loop and deadline sweep,
//! `connection.rs` one connection's state machine, `transport.rs` the byte stream a connection
//! owns (the TLS seam), `tls.rs` the rustls session a TLS socket carries, `parse.rs` the request parser, `respond.rs` response heads and corr ids,
//! `reply.rs` the way back for deferred answers, `server.rs` start and shutdown. This file holds
//! the types handlers see.
//!
//! Threads: one acceptor thread per listener (bounded by `max_connections`), `workers` event-loop
//! threads. A handler may answer at once ([`Outcome::Respond`]), later from another thread
//! through its [`Replier`] ([`Outcome::Deferred`]) without blocking the worker, or take the
//! connection away for streaming ([`Outcome::Stream`]).

pub mod client;
pub mod events;
pub mod tls;

mod accept;
mod connection;
mod listener;
mod parse;
mod reply;
mod respond;
mod server;
mod target;
mod transport;
mod worker;

#[cfg(test)]
mod tests;

pub(crate) use listener::bind_unix_socket;
pub use listener::Listener;
pub use reply::Replier;
pub(crate) use respond::{decimal, push_decimal};
pub use server::{Server, ServerHandle};
pub use tls::{ServerTls, TlsStream};

use std::time::{Duration, Instant};

/// Limits and deadlines of one listener; every one is a bound on what a client can cost us.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Number of event-loop worker threads.
    pub workers: usize,
    /// Open connections at most; over it new connections are closed at accept.
    pub max_connections: usize,
    /// Requests being handled at most (dispatched, not yet answered); over it `429 busy`.
    pub max_inflight: usize,
    /// Request head (request line + headers) bytes at most; over it `431`, or `414` when the
    /// request line alone does not end within it (the target is too long).
    pub max_header_bytes: usize,
    /// Header lines at most; over it `431`.
    pub max_headers: usize,
    /// Request body bytes at most, declared or chunked; over it `413`.
    pub max_body_bytes: usize,
    /// The whole request head must arrive within this time from its first byte.
    pub head_timeout: Duration,
    /// The body must arrive within this time after the head.
    pub body_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// A response that makes no write progress for this long closes the connection.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            workers: 2,
            max_connections: 10_000,
            max_inflight: 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 1024 * 1024,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// HTTP methods the service knows; anything else is `Other` (answered 405 or 404 by routing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Other,
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
}

/// A fully read request: head parsed, body read and de-chunked (bounded by `max_body_bytes`).
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// The path part of the request target as sent (percent-encoded): for logs and messages.
    /// Routing uses [`Request::segments`].
    pub path: String,
    /// The raw query string without `?`, if any; read it with [`Request::query_param`].
    pub query: Option<String>,
    /// Header names lower-cased; values as sent (lossy UTF-8).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `X-Corr-Id` from the request if it was sane (≤ 64 visible ASCII chars), else generated.
    pub corr_id: String,
    /// When the first byte of this request arrived.
    pub started: Instant,
}

impl Request {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path's segments, each percent-decoded once (see `target.rs` for `%2F`). The
    /// transport refused every request whose path does not decode, so this fails only for a
    /// request built by hand.
    pub fn segments(&self) -> Result<Vec<String>, String> {
        target::path_segments(&self.path)
    }

    /// Like [`Request::segments`], lazily and borrowed from the path where a segment has no
    /// escapes: what a router walks on every request, with no allocation.
    pub fn segments_iter(
        &self,
    ) -> Result<impl Iterator<Item = Result<std::borrow::Cow<'_, str>, String>>, String> {
        target::segments(&self.path)
    }

    /// The query's `key=value` pairs, percent-decoded, `+` as space; a key given twice is an
    /// error (the transport refused such requests with `400` already).
    pub fn query_params(&self) -> Result<Vec<(String, String)>, String> {
        target::query_pairs(self.query.as_deref())
    }

    /// The decoded value of query parameter `name`, if given (an undecodable query has none).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params()
            .ok()?
            .into_iter()
            .find_map(|(k, v)| (k == name).then_some(v))
    }

    /// Like [`Request::query_param`] without building the list of pairs: borrowed from the query
    /// when the value has no escapes (a hot route's parameters cost no allocation). The
    /// transport refused every query that does not decode or repeats a key, so the first match
    /// is the only one.
    pub fn query_value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        let query = self.query.as_deref()?;
        for piece in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            if target::decode(k, true).ok()? == name {
                return target::decode(v, true).ok();
            }
        }
        None
    }
}

/// A complete response. The transport adds `Content-Length`, `Connection`, `Date`-free framing
/// and `X-Corr-Id`.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Route template for metrics (`/registry/{version}`), set by the router.
    pub route: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Ask the transport to close the connection after this response.
    pub close: bool,
    /// The head of a stream of unknown length ([`Response::stream_head`]): no
    /// `Content-Length`, and `Transfer-Encoding: chunked` towards an HTTP/1.1 client.
    pub stream: bool,
}

impl Response {
    pub fn new(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            route: "unknown",
            headers: Vec::new(),
            body,
            close: false,
            stream: false,
        }
    }

    /// Mark this response as the head of a stream that the stream's owner frames in chunks
    /// towards HTTP/1.1 clients ([`StreamSocket::chunked`]); close-delimited for HTTP/1.0. As
    /// the answer to `HEAD` it is sent as the same head with no body.
    pub fn stream_head(mut self) -> Response {
        self.stream = true;
        self
    }

    /// A JSON response (`Content-Type: application/json`).
    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response::new(status, body).header("Content-Type", "application/json".to_string())
    }

    /// The docs/API.md error body `{"error": CODE, "message": TEXT}`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        let body = serde_json::to_vec(&serde_json::json!({"error": code, "message": message}))
            .expect("serializing a JSON object of two strings cannot fail");
        Response::json(status, body)
    }

    pub fn header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    pub fn route(mut self, route: &'static str) -> Response {
        self.route = route;
        self
    }
}

/// A connection taken away from the transport for streaming (SSE). The owner writes `pending`
/// first (the response head the transport built), then whatever it likes, and closes it by
/// dropping it. The socket is non-blocking and registered with no poller.
pub struct StreamSocket {
    pub socket: Socket,
    pub pending: Vec<u8>,
    pub corr_id: String,
    /// The head announced `Transfer-Encoding: chunked`: every write must be a chunk
    /// (`{len:x}\r\n…\r\n`) and the stream ends with the zero chunk `0\r\n\r\n`.
    pub chunked: bool,
}

/// A TCP or Unix-domain stream socket (non-blocking, `mio`), or a TCP socket with its TLS
/// session: reads and writes on a `Tls` socket are plaintext, and `flush` pushes the records
/// the session still holds (`WouldBlock` while the socket is full).
pub enum Socket {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
    Tls(Box<TlsStream>),
}

impl Socket {
    /// The TCP socket underneath (plain or TLS), for socket options.
    pub fn tcp(&self) -> Option<&mio::net::TcpStream> {
        match self {
            Socket::Tcp(s) => Some(s),
            Socket::Tls(s) => Some(s.tcp()),
            Socket::Unix(_) => None,
        }
    }
}

impl std::io::Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
            Socket::Tls(s) => s.read(buf),
        }
    }
}

impl std::io::Write for Socket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
            Socket::Tls(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write_vectored(bufs),
            Socket::Unix(s) => s.write_vectored(bufs),
            Socket::Tls(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Socket::Tcp(_) | Socket::Unix(_) => Ok(()),
            Socket::Tls(s) => s.flush(),
        }
    }
}

impl mio::event::Source for Socket {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        match self {
            Socket::Tcp(s) => s.register(registry, token, interests),
            Socket::Unix(s) => s.register(registry, token, interests),
            Socket::Tls(s) => s.register(registry, token, interests),
        }
    }
    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        match self {
            Socket::Tcp(s) => s.reregister(registry, token, interests),
            Socket::Unix(s) => s.reregister(registry, token, interests),
            Socket::Tls(s) => s.reregister(registry, token, interests),
        }
    }
    fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        match self {
            Socket::Tcp(s) => s.deregister(registry),
            Socket::Unix(s) => s.deregister(registry),
            Socket::Tls(s) => s.deregister(registry),
        }
    }
}

/// What a handler does with a request.
pub enum Outcome {
    /// Answer now, on this worker.
    Respond(Response),
    /// The handler moved its [`Replier`] into a job on another thread, which will answer.
    /// The connection waits (no further pipelined request is read) but the worker does not.
    Deferred,
    /// Take the connection away: the transport serializes `head` (status + headers, no
    /// Content-Length, `Connection: close`), puts it in [`StreamSocket::pending`] and calls
    /// `take` on the worker thread. `take` must not block.
    Stream {
        head: Response,
        take: Box<dyn FnOnce(StreamSocket) + Send>,
    },
}

/// The handler layer: called on worker threads, must not block for long.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request, replier: Replier) -> Outcome;

    /// Called by the transport once per answered request (metrics, access log).
    fn observe(&self, _route: &'static str, _status: u16, _elapsed: Duration, _corr_id: &str) {}

    /// Called by the transport whenever the number of requests in flight changes.
    fn inflight(&self, _now: usize) {}

    /// Called when a request is refused because `max_inflight` is reached.
    fn rejected_busy(&self) {}
}
