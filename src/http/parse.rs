//! The incremental HTTP/1.1 request parser, free of sockets and threads: request heads
//! (`httparse`) and the body decoder (`Content-Length` or chunked, trailers skipped).
//!
//! Runs on whichever worker thread owns the connection (see `connection.rs`); it never blocks and
//! never allocates in proportion to anything but bytes it was given and accepted.
//!
//! Bounds, all from [`Limits`]:
//! - the request head is parsed from at most `max_header_bytes` bytes, with at most
//!   `max_headers` header lines (`431 headers_too_large` otherwise; `414 uri_too_long` when the
//!   request line alone does not end within the cap);
//! - a declared `Content-Length` over `max_body_bytes` is refused before any body byte is read,
//!   and a chunked body is refused as soon as a chunk size would take it over the cap
//!   (`413 too_large`);
//! - a chunk-size line is at most [`MAX_CHUNK_LINE`] bytes and trailers at most
//!   `max_header_bytes` in total;
//! - the body buffer grows with the bytes received, never with what a client merely declares.
//!
//! RFC 9112 details: any `HTTP/1.x` with x ≥ 1 is served as HTTP/1.1, another major version is
//! `505`; an HTTP/1.1 request must carry exactly one `Host` (any request at most one), else
//! `400`; the target's path and query must percent-decode (`target.rs`), else `400`.
//!
//! The parser is fed "all bytes not yet consumed" each time and reports how many it consumed,
//! so the caller can parse straight out of a shared scratch buffer and keep only the unconsumed
//! tail (an incomplete head or pipelined requests) in the connection's own buffer.

use super::respond::{new_corr_id, valid_corr_id};
use super::target;
use super::{Limits, Method, Request, Response};
use std::time::Instant;

/// Header slots kept on the stack for `httparse`; more only if `max_headers` asks for more.
const STACK_HEADERS: usize = 128;
/// A chunk-size line (size + extensions) longer than this is refused.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;
/// Initial body buffer at most; it grows as bytes actually arrive.
const BODY_PREALLOC: usize = 64 * 1024;

/// How the transport must treat the connection after answering a parsed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    /// The client wants (and its HTTP version allows) another request on this connection.
    pub keep_alive: bool,
    /// The request was `HEAD`: answer with the headers of the `GET` response and no body.
    pub head: bool,
    /// The client speaks HTTP/1.1 (or a later 1.x): a body of unknown length may be chunked.
    pub http11: bool,
}

/// What [`Parser::advance`] found in the bytes it was given.
#[derive(Debug)]
pub(crate) enum Step {
    /// Every byte that could be used was consumed; more are needed.
    NeedMore,
    /// The head is complete, a body follows and the client sent `Expect: 100-continue`: write
    /// the interim response, then keep feeding the parser.
    Continue,
    /// A whole request, body included.
    Request(Box<Request>, Meta),
    /// The request is refused with this response (corr id attached) and the connection must
    /// close after it.
    Reject(Response, String),
}

/// An incremental HTTP/1.1 request parser for one connection.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    state: State,
    /// Head bytes already searched for the end of the head (`\n\n` / `\n\r\n`).
    scanned: usize,
}

#[derive(Debug, Default)]
enum State {
    /// Waiting for (the rest of) a request head.
    #[default]
    Head,
    /// The head is parsed; reading the body.
    Body(Box<InBody>),
}

#[derive(Debug)]
struct InBody {
    request: Request,
    meta: Meta,
    framing: Framing,
}

#[derive(Debug)]
enum Framing {
    /// `Content-Length`: bytes still to come.
    Length(usize),
    Chunked(Chunk),
}

#[derive(Debug)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: bytes still to come.
    Data(usize),
    /// After a chunk's data: expecting its CRLF.
    DataEnd,
    /// After the last (zero) chunk: trailer lines, this many bytes seen so far.
    Trailers(usize),
}

/// The head-parsing result.
enum Head {
    NeedMore,
    Reject(Response, String),
    /// Bytes of the head, the request without its body, and its framing (None: no body).
    Done(usize, Request, Meta, Option<Framing>, bool),
}

/// The body-decoding result.
enum Body {
    NeedMore,
    Done,
    Reject(Response),
}

impl Parser {
    pub(crate) fn new() -> Parser {
        Parser::default()
    }

    /// True while the parser is reading a body (the head is complete).
    pub(crate) fn in_body(&self) -> bool {
        matches!(self.state, State::Body(_))
    }

    /// Feed `input`: every byte received and not consumed so far. Returns how many bytes were
    /// consumed and what happened. `started` is when the first byte of this request arrived.
    pub(crate) fn advance(
        &mut self,
        input: &[u8],
        limits: &Limits,
        started: Instant,
    ) -> (usize, Step) {
        let mut used = 0;
        if let State::Head = self.state {
            match self.parse_head(input, limits, started) {
                Head::NeedMore => return (0, Step::NeedMore),
                Head::Reject(r, corr) => return (0, Step::Reject(r, corr)),
                Head::Done(n, request, meta, None, _) => {
                    self.scanned = 0;
                    return (n, Step::Request(Box::new(request), meta));
                }
                Head::Done(n, request, meta, Some(framing), expect) => {
                    self.scanned = 0;
                    used = n;
                    self.state = State::Body(Box::new(InBody {
                        request,
                        meta,
                        framing,
                    }));
                    if expect {
                        return (used, Step::Continue);
                    }
                }
            }
        }
        let State::Body(body) = &mut self.state else {
            return (used, Step::NeedMore);
        };
        let (n, outcome) = decode_body(body, &input[used..], limits);
        used += n;
        match outcome {
            Body::NeedMore => (used, Step::NeedMore),
            Body::Reject(r) => {
                let corr = body.request.corr_id.clone();
                self.state = State::Head;
                (used, Step::Reject(r, corr))
            }
            Body::Done => match std::mem::take(&mut self.state) {
                State::Body(b) => (used, Step::Request(Box::new(b.request), b.meta)),
                State::Head => (used, Step::NeedMore),
            },
        }
    }

    fn parse_head(&mut self, input: &[u8], limits: &Limits, started: Instant) -> Head {
        // Re-parsing a growing head on every few bytes would be quadratic: after a first look
        // (which catches garbage early) parse only once the end of the head may be there.
        if self.scanned > 0 && !has_head_end(input, self.scanned) {
            self.scanned = input.len();
            return if input.len() > limits.max_header_bytes {
                head_too_large(&input[..limits.max_header_bytes], limits)
            } else {
                Head::NeedMore
            };
        }
        self.scanned = input.len().max(1);
        // Never look at more than the cap: a head that does not end within it is refused.
        let window = &input[..input.len().min(limits.max_header_bytes)];
        let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
        let mut heap;
        let slots: &mut [httparse::Header<'_>] = if limits.max_headers <= STACK_HEADERS {
            &mut stack[..limits.max_headers]
        } else {
            heap = vec![httparse::EMPTY_HEADER; limits.max_headers];
            &mut heap[..]
        };
        let mut parsed = httparse::Request::new(slots);
        let mut result = parsed.parse(window);
        // httparse knows only HTTP/1.0 and 1.1: serve a later 1.x as 1.1 (RFC 9112 §2.3), by
        // parsing a copy whose version reads 1.1 (same length, so offsets are unchanged).
        let patched;
        if let Err(httparse::Error::Version) = result {
            match later_minor_version(window) {
                Version::Incomplete if input.len() > limits.max_header_bytes => {
                    return head_too_large(window, limits)
                }
                Version::Incomplete => return Head::NeedMore,
                Version::Major => {
                    return Head::Reject(
                        Response::error(
                            505,
                            "version_not_supported",
                            "only HTTP/1.x is served here",
                        ),
                        new_corr_id(),
                    )
                }
                Version::Bad => {
                    return bad_request(
                        "malformed request head: invalid HTTP version",
                        new_corr_id(),
                    )
                }
                Version::LaterMinor(at) => {
                    let mut copy = window.to_vec();
                    copy[at] = b'1';
                    patched = copy;
                    parsed = httparse::Request::new(parsed.headers);
                    result = parsed.parse(&patched);
                }
            }
        }
        match result {
            Ok(httparse::Status::Partial) => {
                if input.len() > limits.max_header_bytes {
                    head_too_large(window, limits)
                } else {
                    Head::NeedMore
                }
            }
            Ok(httparse::Status::Complete(n)) => build_head(&parsed, n, limits, started),
            Err(httparse::Error::TooManyHeaders) => Head::Reject(
                Response::error(
                    431,
                    "headers_too_large",
                    &format!("more than {} header lines", limits.max_headers),
                ),
                new_corr_id(),
            ),
            Err(e) => bad_request(&format!("malformed request head: {e}"), new_corr_id()),
        }
    }
}

/// What the version of a request line httparse refused is.
enum Version {
    /// The request line has not ended yet.
    Incomplete,
    /// `HTTP/1.x` with x ≥ 2: the offset of the minor digit.
    LaterMinor(usize),
    /// `HTTP/d.d` with another major version.
    Major,
    Bad,
}

fn later_minor_version(head: &[u8]) -> Version {
    let Some(end) = head.iter().position(|&b| b == b'\n') else {
        return Version::Incomplete;
    };
    let line = &head[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(space) = line.iter().rposition(|&b| b == b' ') else {
        return Version::Bad;
    };
    match &line[space + 1..] {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
            Version::LaterMinor(space + 8)
        }
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Version::Major
        }
        // `HTTP/2` as some clients write it.
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() && *major != b'1' => {
            Version::Major
        }
        _ => Version::Bad,
    }
}

/// A head over the cap: `414` when its request line does not even end within `window` (the
/// cap's worth of bytes), `431` otherwise.
fn head_too_large(window: &[u8], limits: &Limits) -> Head {
    if !window.contains(&b'\n') {
        return Head::Reject(
            Response::error(
                414,
                "uri_too_long",
                &format!(
                    "request line over {} bytes (the request target is too long)",
                    limits.max_header_bytes
                ),
            ),
            new_corr_id(),
        );
    }
    Head::Reject(
        Response::error(
            431,
            "headers_too_large",
            &format!("request head over {} bytes", limits.max_header_bytes),
        ),
        new_corr_id(),
    )
}

fn bad_request(message: &str, corr: String) -> Head {
    Head::Reject(Response::error(400, "bad_request", message), corr)
}

/// Whether `buf` may hold a complete head: a blank line ends at or after `from - 3`.
fn has_head_end(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3).min(buf.len());
    let tail = &buf[start..];
    tail.iter().enumerate().any(|(i, &b)| {
        b == b'\n'
            && match tail.get(i + 1) {
                Some(b'\n') => true,
                Some(b'\r') => tail.get(i + 2) == Some(&b'\n'),
                _ => false,
            }
    })
}

/// The request from a complete head: target split, headers copied, framing decided.
fn build_head(
    parsed: &httparse::Request<'_, '_>,
    head_len: usize,
    limits: &Limits,
    started: Instant,
) -> Head {
    let method = Method::parse(parsed.method.unwrap_or(""));
    let version = parsed.version.unwrap_or(1);
    let (path, query) = split_target(parsed.path.unwrap_or("/"));

    let mut headers = Vec::with_capacity(parsed.headers.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut corr_id = None;
    let mut hosts = 0;
    let mut bad: Option<&str> = None;
    for h in parsed.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "host" => hosts += 1,
            "content-length" => match parse_length(h.value) {
                Some(n) if content_length.is_none() || content_length == Some(n) => {
                    content_length = Some(n)
                }
                Some(_) => bad = Some("conflicting Content-Length headers"),
                None => bad = Some("Content-Length is not a number"),
            },
            "transfer-encoding" => {
                for token in tokens(h.value) {
                    // Only a lone `chunked` is supported; anything else cannot be framed.
                    if token.eq_ignore_ascii_case("chunked") && !chunked && !transfer_encoding {
                        chunked = true;
                    } else {
                        bad = Some("unsupported Transfer-Encoding");
                    }
                    transfer_encoding = true;
                }
            }
            "connection" => {
                for token in tokens(h.value) {
                    conn_close |= token.eq_ignore_ascii_case("close");
                    conn_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
            "expect" => {
                expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
            }
            "x-corr-id" if corr_id.is_none() && valid_corr_id(h.value) => {
                corr_id = Some(String::from_utf8_lossy(h.value).into_owned());
            }
            _ => {}
        }
        headers.push((name, String::from_utf8_lossy(h.value).into_owned()));
    }
    let corr_id = corr_id.unwrap_or_else(new_corr_id);
    if transfer_encoding && content_length.is_some() {
        bad = Some("both Content-Length and Transfer-Encoding");
    }
    // RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host; none at all carries two.
    if hosts > 1 {
        bad = Some("more than one Host header");
    } else if hosts == 0 && version >= 1 {
        bad = Some("an HTTP/1.1 request needs a Host header");
    }
    if let Some(message) = bad {
        return bad_request(message, corr_id);
    }
    // `*` (asterisk-form) is a target for OPTIONS alone (RFC 9112 §3.2.4).
    let checked = if path == "*" && method == Method::Options {
        target::query_pairs(query.as_deref()).map(drop)
    } else {
        target::check_path(&path).and_then(|_| target::query_pairs(query.as_deref()).map(drop))
    };
    if let Err(e) = checked {
        return bad_request(&format!("bad request target: {e}"), corr_id);
    }
    let framing = if chunked {
        Some(Framing::Chunked(Chunk::Size))
    } else {
        match content_length {
            Some(n) if n > limits.max_body_bytes as u64 => {
                return Head::Reject(
                    Response::error(
                        413,
                        "too_large",
                        &format!(
                            "body of {n} bytes over the {} byte limit",
                            limits.max_body_bytes
                        ),
                    ),
                    corr_id,
                );
            }
            // Within the cap, hence within usize.
            Some(n) if n > 0 => Some(Framing::Length(n as usize)),
            _ => None,
        }
    };
    let body_capacity = match framing {
        Some(Framing::Length(n)) => n.min(BODY_PREALLOC),
        _ => 0,
    };
    let keep_alive = if version >= 1 {
        !conn_close
    } else {
        conn_keep_alive && !conn_close
    };
    let meta = Meta {
        keep_alive,
        head: method == Method::Head,
        http11: version >= 1,
    };
    let request = Request {
        method,
        path,
        query,
        headers,
        body: Vec::with_capacity(body_capacity),
        corr_id,
        started,
    };
    let expect = expect_continue && version >= 1 && framing.is_some();
    Head::Done(head_len, request, meta, framing, expect)
}

/// Split a request target into path and raw query; absolute-form targets lose their authority.
fn split_target(target: &str) -> (String, Option<String>) {
    let target = match target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    match target.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (target.to_string(), None),
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &v[start..end.max(start)]
}

/// Comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(v: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(v)
        .unwrap_or("\u{fffd}")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A `Content-Length` value: ASCII digits only. Absurdly long numbers saturate (and are then
/// refused as too large rather than as malformed).
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Decode body bytes from `input` into `body`; returns bytes consumed and the outcome.
fn decode_body(body: &mut InBody, input: &[u8], limits: &Limits) -> (usize, Body) {
    let mut off = 0;
    loop {
        let rest = &input[off..];
        match &mut body.framing {
            Framing::Length(remaining) => {
                let take = (*remaining).min(rest.len());
                body.request.body.extend_from_slice(&rest[..take]);
                *remaining -= take;
                off += take;
                return if *remaining == 0 {
                    (off, Body::Done)
                } else {
                    (off, Body::NeedMore)
                };
            }
            Framing::Chunked(chunk) => match chunk {
                Chunk::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        off += n;
                        let room = limits
                            .max_body_bytes
                            .saturating_sub(body.request.body.len());
                        if size == 0 {
                            *chunk = Chunk::Trailers(0);
                        } else if size > room as u64 {
                            let message = format!(
                                "chunked body over the {} byte limit",
                                limits.max_body_bytes
                            );
                            return (
                                off,
                                Body::Reject(Response::error(413, "too_large", &message)),
                            );
                        } else {
                            // At most `room`, hence within usize.
                            *chunk = Chunk::Data(size as usize);
                        }
                    }
                    Ok(httparse::Status::Partial) if rest.len() <= MAX_CHUNK_LINE => {
                        return (off, Body::NeedMore)
                    }
                    _ => {
                        return (
                            off,
                            Body::Reject(Response::error(400, "bad_request", "bad chunk size")),
                        )
                    }
                },
                Chunk::Data(remaining) => {
                    let take = (*remaining).min(rest.len());
                    body.request.body.extend_from_slice(&rest[..take]);
                    *remaining -= take;
                    off += take;
                    if *remaining > 0 {
                        return (off, Body::NeedMore);
                    }
                    *chunk = Chunk::DataEnd;
                }
                Chunk::DataEnd => {
                    if rest.starts_with(b"\r\n") {
                        off += 2;
                        *chunk = Chunk::Size;
                    } else if rest.is_empty() || rest == b"\r" {
                        return (off, Body::NeedMore);
                    } else {
                        return (
                            off,
                            Body::Reject(Response::error(
                                400,
                                "bad_request",
                                "chunk data not followed by CRLF",
                            )),
                        );
                    }
                }
                Chunk::Trailers(seen) => match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        off += i + 1;
                        if i == 0 || (i == 1 && rest[0] == b'\r') {
                            return (off, Body::Done);
                        }
                        // A trailer line: ignored (never merged into the headers).
                        *seen += i + 1;
                        if *seen > limits.max_header_bytes {
                            return (off, Body::Reject(trailers_too_large(limits)));
                        }
                    }
                    None if *seen + rest.len() > limits.max_header_bytes => {
                        return (off, Body::Reject(trailers_too_large(limits)))
                    }
                    None => return (off, Body::NeedMore),
                },
            },
        }
    }
}

fn trailers_too_large(limits: &Limits) -> Response {
    Response::error(
        431,
        "headers_too_large",
        &format!("trailers over {} bytes", limits.max_header_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 1024,
            max_headers: 8,
            max_body_bytes: 100,
            ..Limits::default()
        }
    }

    /// Feed `input` in pieces of `step` bytes the way the server does (unconsumed bytes are
    /// kept and offered again); return every step that is not NeedMore.
    fn feed(input: &[u8], step: usize, limits: &Limits) -> Vec<Step> {
        let mut parser = Parser::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                let (used, s) = parser.advance(&buf, limits, Instant::now());
                buf.drain(..used);
                match s {
                    Step::NeedMore => break,
                    Step::Reject(..) => {
                        out.push(s);
                        return out;
                    }
                    s => out.push(s),
                }
            }
        }
        out
    }

    fn request(s: &Step) -> &Request {
        match s {
            Step::Request(r, _) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn rejected(s: &Step) -> u16 {
        match s {
            Step::Reject(r, _) => r.status,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn simple_get_in_any_split() {
        let raw = b"GET /registry/head?x=1&y HTTP/1.1\r\nHost: a\r\nX-Corr-Id: abc-1\r\n\r\n";
        for step in [1, 2, 3, 7, raw.len()] {
            let steps = feed(raw, step, &limits());
            assert_eq!(steps.len(), 1, "step {step}");
            let r = request(&steps[0]);
            assert_eq!(r.method, Method::Get);
            assert_eq!(r.path, "/registry/head");
            assert_eq!(r.query.as_deref(), Some("x=1&y"));
            assert_eq!(r.header("host"), Some("a"));
            assert_eq!(r.corr_id, "abc-1");
            assert!(r.body.is_empty());
        }
    }

    #[test]
    fn pipelined_requests_and_keep_alive_rules() {
        let raw = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n\
                    GET /c HTTP/1.0\r\n\r\nHEAD /d HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
        let steps = feed(raw, raw.len(), &limits());
        let got: Vec<(String, Meta)> = steps
            .iter()
            .map(|s| match s {
                Step::Request(r, m) => (r.path.clone(), *m),
                other => panic!("{other:?}"),
            })
            .collect();
        let meta = |keep_alive, head, http11| Meta {
            keep_alive,
            head,
            http11,
        };
        assert_eq!(
            got,
            vec![
                ("/a".to_string(), meta(true, false, true)),
                ("/b".to_string(), meta(false, false, true)),
                ("/c".to_string(), meta(false, false, false)),
                ("/d".to_string(), meta(true, true, false)),
            ]
        );
    }

    #[test]
    fn content_length_body() {
        let raw = b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: t\r\n\r\n";
        for step in [1, 4, raw.len()] {
            let steps = feed(raw, step, &limits());
            assert_eq!(steps.len(), 2);
            assert_eq!(request(&steps[0]).body, b"hello");
            assert_eq!(request(&steps[1]).path, "/");
        }
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n\
                    GET /next HTTP/1.1\r\nHost: t\r\n\r\n";
        for step in [1, 3, 10, raw.len()] {
            let steps = feed(raw, step, &limits());
            assert_eq!(steps.len(), 2, "step {step}");
            assert_eq!(request(&steps[0]).body, b"hello 0123456789");
            assert_eq!(request(&steps[1]).path, "/next");
        }
    }

    #[test]
    fn chunked_over_cap_is_413_at_the_size_line() {
        let raw = b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n50\r\n";
        let mut parser = Parser::new();
        let (_, s) = parser.advance(raw, &limits(), Instant::now());
        assert!(matches!(s, Step::NeedMore));
        // 0x50 = 80 bytes fit; the next 0x20 = 32 do not (cap 100).
        let mut body = b"50\r\n".to_vec();
        body.extend_from_slice(&[b'x'; 80]);
        body.extend_from_slice(b"\r\n20\r\n");
        let raw = [
            &b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            &body,
        ]
        .concat();
        let steps = feed(&raw, 7, &limits());
        assert_eq!(rejected(&steps[0]), 413);
    }

    #[test]
    fn bad_chunks_are_400() {
        for body in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"5\nhello\r\n0\r\n\r\n"] {
            let raw = [
                &b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                body,
            ]
            .concat();
            let steps = feed(&raw, raw.len(), &limits());
            assert_eq!(rejected(&steps[0]), 400, "{body:?}");
        }
        // An endless chunk extension is cut off.
        let mut raw =
            b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;".to_vec();
        raw.extend(std::iter::repeat_n(b'e', MAX_CHUNK_LINE + 10));
        assert_eq!(rejected(&feed(&raw, 100, &limits())[0]), 400);
    }

    #[test]
    fn endless_trailers_are_431() {
        let mut raw =
            b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        for _ in 0..200 {
            raw.extend_from_slice(b"X-Trailer: 0123456789\r\n");
        }
        assert_eq!(rejected(&feed(&raw, 50, &limits())[0]), 431);
    }

    #[test]
    fn content_length_over_cap_is_413_before_the_body() {
        let raw = b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n";
        assert_eq!(rejected(&feed(raw, raw.len(), &limits())[0]), 413);
        let raw =
            b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999999\r\n\r\n";
        assert_eq!(rejected(&feed(raw, raw.len(), &limits())[0]), 413);
    }

    #[test]
    fn framing_conflicts_are_400() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        ] {
            assert_eq!(
                rejected(&feed(head, head.len(), &limits())[0]),
                400,
                "{head:?}"
            );
        }
        // Equal duplicates are fine.
        let raw = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(request(&feed(raw, raw.len(), &limits())[0]).body, b"x");
    }

    #[test]
    fn head_limits() {
        // Bytes: a head that does not end within the cap.
        let mut raw = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 2000));
        raw.extend_from_slice(b"\r\n\r\n");
        for step in [1, 100, raw.len()] {
            assert_eq!(rejected(&feed(&raw, step, &limits())[0]), 431);
        }
        // Count.
        let mut raw = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
        for i in 0..9 {
            raw.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(rejected(&feed(&raw, raw.len(), &limits())[0]), 431);
        // Exactly at the count is fine (Host is one of the 8).
        let mut raw = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
        for i in 0..7 {
            raw.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(request(&feed(&raw, 5, &limits())[0]).headers.len(), 8);
        // More header slots than the stack holds.
        let many = Limits {
            max_headers: 300,
            max_header_bytes: 64 * 1024,
            ..limits()
        };
        let mut raw = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
        for i in 0..199 {
            raw.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(request(&feed(&raw, raw.len(), &many)[0]).headers.len(), 200);
    }

    #[test]
    fn garbage_is_400_early() {
        let raw = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
        assert_eq!(rejected(&feed(raw, raw.len(), &limits())[0]), 400);
    }

    #[test]
    fn versions_hosts_and_long_targets_follow_rfc_9112() {
        // Another major version is 505 (it used to be 400 "malformed").
        for raw in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET / HTTP/3.0\r\nHost: t\r\n\r\n",
        ] {
            assert_eq!(rejected(&feed(raw, raw.len(), &limits())[0]), 505);
        }
        // A later 1.x is served as 1.1 (keep-alive by default, Host required), in any split.
        let raw = b"GET /x?a=1 HTTP/1.2\r\nHost: t\r\n\r\n";
        for step in [1, 5, raw.len()] {
            let steps = feed(raw, step, &limits());
            match &steps[0] {
                Step::Request(r, m) => {
                    assert_eq!((r.path.as_str(), r.query.as_deref()), ("/x", Some("a=1")));
                    assert!(m.http11 && m.keep_alive);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            rejected(&feed(b"GET / HTTP/1.2\r\n\r\n", 64, &limits())[0]),
            400
        );
        assert_eq!(
            rejected(&feed(b"GET / HTTP/x.1\r\n\r\n", 64, &limits())[0]),
            400
        );
        // Host: exactly one in HTTP/1.1, at most one in 1.0.
        for raw in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n",
        ] {
            assert_eq!(
                rejected(&feed(raw, raw.len(), &limits())[0]),
                400,
                "{raw:?}"
            );
        }
        let raw = b"GET / HTTP/1.0\r\n\r\n";
        assert!(matches!(
            feed(raw, raw.len(), &limits())[0],
            Step::Request(..)
        ));
        // A request line that does not end within the cap is 414, in any split.
        let mut raw = b"GET /".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 2000));
        raw.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\n\r\n");
        for step in [1, 100, raw.len()] {
            assert_eq!(rejected(&feed(&raw, step, &limits())[0]), 414);
        }
        // Targets must percent-decode; `*` is for OPTIONS only; repeated keys are refused.
        for raw in [
            &b"GET /a%zz HTTP/1.1\r\nHost: t\r\n\r\n"[..],
            b"GET /a%FF HTTP/1.1\r\nHost: t\r\n\r\n",
            b"GET /a?x=1&x=2 HTTP/1.1\r\nHost: t\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: t\r\n\r\n",
        ] {
            assert_eq!(
                rejected(&feed(raw, raw.len(), &limits())[0]),
                400,
                "{raw:?}"
            );
        }
        let raw = b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n";
        assert_eq!(request(&feed(raw, raw.len(), &limits())[0]).path, "*");
    }

    #[test]
    fn expect_continue_only_with_a_body_within_the_cap() {
        let raw =
            b"POST /p HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        let mut parser = Parser::new();
        let (n, s) = parser.advance(raw, &limits(), Instant::now());
        assert_eq!(n, raw.len());
        assert!(matches!(s, Step::Continue));
        assert!(parser.in_body());
        let (n, s) = parser.advance(b"abc", &limits(), Instant::now());
        assert_eq!(n, 3);
        assert_eq!(request(&s).body, b"abc");
        assert!(!parser.in_body());

        let raw =
            b"POST /p HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 300\r\n\r\n";
        assert_eq!(rejected(&feed(raw, raw.len(), &limits())[0]), 413);
        let raw = b"GET /p HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n";
        assert!(matches!(
            feed(raw, raw.len(), &limits())[0],
            Step::Request(..)
        ));
    }

    #[test]
    fn absolute_form_target() {
        let raw = b"GET http://example.org/registry/head?a=b HTTP/1.1\r\nHost: t\r\n\r\n";
        let steps = feed(raw, raw.len(), &limits());
        let r = request(&steps[0]);
        assert_eq!(r.path, "/registry/head");
        assert_eq!(r.query.as_deref(), Some("a=b"));
    }

    #[test]
    fn invalid_corr_id_from_a_client_is_replaced() {
        let raw = b"GET / HTTP/1.1\r\nHost: t\r\nX-Corr-Id: bad id\r\n\r\n";
        let steps = feed(raw, raw.len(), &limits());
        assert_eq!(request(&steps[0]).corr_id.len(), 16);
    }

    #[test]
    fn head_end_detection() {
        assert!(has_head_end(b"GET / HTTP/1.1\r\n\r\n", 0));
        assert!(has_head_end(b"GET / HTTP/1.1\n\n", 0));
        assert!(!has_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0));
        // The terminator straddles the previously scanned part.
        assert!(has_head_end(b"GET / HTTP/1.1\r\n\r\n", 17));
        assert!(!has_head_end(b"GET / HTTP/1.1\r\n\r\n", 40));
    }
}
