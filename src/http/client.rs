//! A tiny blocking HTTP/1.1 client over TCP, TLS (rustls `ClientConnection`, blocking) or a
//! Unix-domain socket, for `ronctl` and the integration tests (no crate does blocking HTTP over
//! Unix sockets simply).
//!
//! Runs on the caller's thread; one connection per request (`Connection: close`). Every socket
//! operation is bounded by the `timeout` given (connect, each read, each write). Response heads
//! are capped at [`MAX_HEAD`] bytes; bodies are framed by `Content-Length`, chunked encoding or
//! end of stream.

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Response heads larger than this are refused.
pub const MAX_HEAD: usize = 64 * 1024;
/// Header lines at most in a response head.
const MAX_HEADERS: usize = 128;

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `host:port`.
    Tcp(String),
    /// A Unix-domain socket path.
    Unix(PathBuf),
    /// `host:port` over TLS.
    Tls(TlsTarget),
}

/// The client's TLS files for `https://` URLs (all PEM).
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// The CAs to trust; None: the system's.
    pub cacert: Option<PathBuf>,
    /// Mutual TLS: the client certificate chain and its key (both or neither).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// An `https://` target: where to connect and how to check the server.
#[derive(Clone)]
pub struct TlsTarget {
    /// `host:port`; the host is the name the server's certificate must carry.
    pub addr: String,
    pub config: Arc<ClientConfig>,
}

impl PartialEq for TlsTarget {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr && Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for TlsTarget {}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "https://{}", self.addr)
    }
}

impl Target {
    /// Like [`Target::parse`], and `https://host[:port][/]` too (port 443 if absent), trusting
    /// the CAs in `cacert` (PEM), else the system's.
    pub fn parse_with_cacert(url: &str, cacert: Option<&Path>) -> Result<Target, String> {
        let tls = TlsOptions {
            cacert: cacert.map(Path::to_path_buf),
            ..TlsOptions::default()
        };
        Target::parse_with_tls(url, &tls)
    }

    /// Like [`Target::parse`], and `https://host[:port][/]` too (port 443 if absent), checked
    /// and (mutual TLS) identified as `tls` says.
    pub fn parse_with_tls(url: &str, tls: &TlsOptions) -> Result<Target, String> {
        let Some(rest) = url.trim().strip_prefix("https://") else {
            return Target::parse(url);
        };
        let Target::Tcp(addr) = Target::parse(&format!("http://{rest}"))? else {
            return Err(format!("no host in {url:?}"));
        };
        let addr = match addr.strip_suffix(":80") {
            // `parse` filled in http's default port; https's is 443.
            Some(host) if !rest.contains(":80") => format!("{host}:443"),
            _ => addr,
        };
        let identity = match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => return Err("a client certificate needs its key, and a key its certificate (--client-cert with --client-key)".to_string()),
        };
        let config = super::tls::client_config(tls.cacert.as_deref(), identity)?;
        Target::https(&addr, config)
    }

    /// An `https://` target for `host:port` with a ready client configuration.
    pub fn https(addr: &str, config: Arc<ClientConfig>) -> Result<Target, String> {
        super::tls::server_name(addr)?;
        Ok(Target::Tls(TlsTarget {
            addr: addr.to_string(),
            config,
        }))
    }

    /// `http://host:port[/]`, `unix:/path` (also `unix:///path`), or a bare `host:port`.
    /// `https://` needs TLS settings: see [`Target::parse_with_cacert`].
    pub fn parse(url: &str) -> Result<Target, String> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("no socket path after unix:".to_string());
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(format!(
                "{url:?}: https:// needs TLS settings (Target::parse_with_cacert)"
            ));
        } else if url.contains("://") {
            return Err(format!(
                "unsupported scheme in {url:?} (use http://, https:// or unix:)"
            ));
        } else {
            url
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if !path.is_empty() && path != "/" {
            return Err(format!(
                "{url:?} has a path; give only the scheme, host and port"
            ));
        }
        if authority.is_empty() {
            return Err(format!("no host in {url:?}"));
        }
        // `host:port` or `[v6]:port`; a missing port means 80.
        let has_port = match authority.rfind(']') {
            Some(i) => authority[i..].contains(':'),
            None => authority.contains(':'),
        };
        if has_port {
            Ok(Target::Tcp(authority.to_string()))
        } else {
            Ok(Target::Tcp(format!("{authority}:80")))
        }
    }

    fn host(&self) -> &str {
        match self {
            Target::Tcp(a) => a,
            Target::Tls(t) => &t.addr,
            Target::Unix(_) => "localhost",
        }
    }
}

/// A TLS handshake that failed on a certificate or a protocol refusal (unknown CA, wrong host,
/// expired, no client certificate, not a TLS server): the message says which and what to do.
/// Retrying cannot help, so a caller that retries (`ronctl tail`) stops on it.
#[derive(Debug)]
pub struct TlsHandshakeError(pub String);

impl std::fmt::Display for TlsHandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsHandshakeError {}

impl TlsHandshakeError {
    /// Whether `e` is (or wraps) a failed TLS handshake.
    pub fn is(e: &io::Error) -> bool {
        e.get_ref()
            .is_some_and(|inner| inner.is::<TlsHandshakeError>())
    }
}

/// A response: status, headers (names lower-cased, in order) and the whole body.
#[derive(Clone, Debug)]
pub struct ClientResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ClientResponse {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request, one connection. `headers` are sent as given; `Host`, `Connection: close` and
/// `Content-Length` are added.
pub fn request(
    target: &Target,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<ClientResponse> {
    let mut stream = connect(target, timeout)?;
    send(&mut stream, target, method, path, headers, body)?;
    let mut reader = BufReader::new(stream);
    read_response(&mut reader, method.eq_ignore_ascii_case("HEAD"))
}

/// `GET path` and return the response head and a reader positioned at the start of the body
/// (de-chunked if need be), for reading a Server-Sent-Events stream line by line. Reads on it
/// fail after `timeout` without data.
pub fn open_stream(
    target: &Target,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<(ClientResponse, Box<dyn BufRead + Send>)> {
    let mut stream = connect(target, timeout)?;
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("accept"))
    {
        all.push(("Accept", "text/event-stream"));
    }
    send(&mut stream, target, "GET", path, &all, None)?;
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader)?;
    let framing = framing(status, &headers, false)?;
    let head = ClientResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let body: Box<dyn BufRead + Send> = match framing {
        Framing::Empty => Box::new(io::empty()),
        Framing::Length(n) => Box::new(BufReader::new(reader.take(n))),
        Framing::Chunked => Box::new(BufReader::new(Chunked::new(reader))),
        Framing::ToEof => Box::new(reader),
    };
    Ok((head, body))
}

/// A connected stream socket.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => match s.read(buf) {
                // The server closed the socket without close_notify (a stream's end, a crash):
                // an end of stream; HTTP framing still catches a body cut short.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(_) | Stream::Unix(_) => Ok(()),
            Stream::Tls(s) => s.flush(),
        }
    }
}

fn connect_tcp(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("no address in {addr:?}"),
    );
    for sa in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connect and complete the TLS handshake, so that a certificate problem is reported as such
/// (with what to do about it) rather than as a failed first write.
fn connect_tls(target: &TlsTarget, timeout: Duration) -> io::Result<Stream> {
    let name = super::tls::server_name(&target.addr)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut tcp = connect_tcp(&target.addr, timeout)?;
    let mut session =
        ClientConnection::new(target.config.clone(), name).map_err(io::Error::other)?;
    while session.is_handshaking() {
        if let Err(e) = session.complete_io(&mut tcp) {
            let explained = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .map(|tls| super::tls::explain_client_error(&target.addr, tls));
            return Err(match explained {
                Some(message) => {
                    io::Error::new(io::ErrorKind::InvalidData, TlsHandshakeError(message))
                }
                None if e.kind() == io::ErrorKind::UnexpectedEof => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "TLS: {} closed the connection during the handshake (is it an \
                         https listener? does it require a client certificate?)",
                        target.addr
                    ),
                ),
                None => e,
            });
        }
    }
    Ok(Stream::Tls(Box::new(StreamOwned::new(session, tcp))))
}

fn connect(target: &Target, timeout: Duration) -> io::Result<Stream> {
    let timeout = timeout.max(Duration::from_millis(1));
    match target {
        Target::Tcp(addr) => Ok(Stream::Tcp(connect_tcp(addr, timeout)?)),
        Target::Tls(tls) => connect_tls(tls, timeout),
        Target::Unix(path) => {
            let s = UnixStream::connect(path)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            Ok(Stream::Unix(s))
        }
    }
}

fn send(
    stream: &mut Stream,
    target: &Target,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<()> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        target.host()
    );
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    let body = body.unwrap_or(&[]);
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes)?;
    stream.flush()
}

/// Read one whole response (interim `1xx` responses skipped). `head_request`: the request was
/// `HEAD`, so no body follows whatever the headers say.
pub fn read_response<R: BufRead>(reader: &mut R, head_request: bool) -> io::Result<ClientResponse> {
    let (status, headers) = read_head(reader)?;
    let body = match framing(status, &headers, head_request)? {
        Framing::Empty => Vec::new(),
        Framing::Length(n) => {
            let mut body = Vec::with_capacity(n.min(1 << 20) as usize);
            reader.take(n).read_to_end(&mut body)?;
            if (body.len() as u64) < n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("body ended after {} of {n} bytes", body.len()),
                ));
            }
            body
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            Chunked::new(reader).read_to_end(&mut body)?;
            body
        }
        Framing::ToEof => {
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            body
        }
    };
    Ok(ClientResponse {
        status,
        headers,
        body,
    })
}

enum Framing {
    Empty,
    Length(u64),
    Chunked,
    ToEof,
}

fn framing(status: u16, headers: &[(String, String)], head_request: bool) -> io::Result<Framing> {
    if head_request || status < 200 || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
    };
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked")) {
        return Ok(Framing::Chunked);
    }
    match get("content-length") {
        Some(v) => v
            .parse()
            .map(Framing::Length)
            .map_err(|_| bad(format!("bad Content-Length {v:?}"))),
        None => Ok(Framing::ToEof),
    }
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Read a final response head: status and lower-cased headers.
fn read_head<R: BufRead>(reader: &mut R) -> io::Result<(u16, Vec<(String, String)>)> {
    loop {
        let mut raw = Vec::with_capacity(512);
        loop {
            let before = raw.len();
            let n = reader
                .take((MAX_HEAD - before) as u64 + 1)
                .read_until(b'\n', &mut raw)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a complete response head",
                ));
            }
            if raw.len() > MAX_HEAD {
                return Err(bad(format!("response head over {MAX_HEAD} bytes")));
            }
            let line = &raw[before..];
            if line == b"\r\n" || line == b"\n" {
                break;
            }
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut slots);
        match parsed.parse(&raw) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(bad("incomplete response head".into())),
            Err(e) => return Err(bad(format!("malformed response head: {e}"))),
        }
        let status = parsed.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            continue; // interim response, e.g. 100 Continue
        }
        let headers = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        return Ok((status, headers));
    }
}

/// A reader that decodes a chunked body (trailers are read and dropped).
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: u64,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Self {
        Chunked {
            inner,
            left: 0,
            done: false,
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        (&mut self.inner).take(4096).read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "chunked body cut short",
            ));
        }
        Ok(String::from_utf8_lossy(&line).trim().to_string())
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            self.left = u64::from_str_radix(size, 16)
                .map_err(|_| bad(format!("bad chunk size {size:?}")))?;
            if self.left == 0 {
                while !self.line()?.is_empty() {}
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "chunked body cut short",
            ));
        }
        self.left -= n as u64;
        if self.left == 0 && !self.line()?.is_empty() {
            return Err(bad("chunk data not followed by CRLF".into()));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_targets() {
        assert_eq!(
            Target::parse("http://127.0.0.1:9444"),
            Ok(Target::Tcp("127.0.0.1:9444".into()))
        );
        assert_eq!(
            Target::parse("http://localhost:1/"),
            Ok(Target::Tcp("localhost:1".into()))
        );
        assert_eq!(
            Target::parse("http://example.org"),
            Ok(Target::Tcp("example.org:80".into()))
        );
        assert_eq!(
            Target::parse("http://[::1]:80"),
            Ok(Target::Tcp("[::1]:80".into()))
        );
        assert_eq!(
            Target::parse("127.0.0.1:5"),
            Ok(Target::Tcp("127.0.0.1:5".into()))
        );
        assert_eq!(
            Target::parse("unix:/run/r.sock"),
            Ok(Target::Unix("/run/r.sock".into()))
        );
        assert_eq!(
            Target::parse("unix:///run/r.sock"),
            Ok(Target::Unix("/run/r.sock".into()))
        );
        assert!(Target::parse("https://x:1").is_err());
        assert!(Target::parse("http://x:1/path").is_err());
        assert!(Target::parse("unix:").is_err());
        assert!(Target::parse("http://").is_err());
    }

    #[test]
    fn https_targets_default_to_443_and_need_a_usable_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
        let addr = |url: &str| match Target::parse_with_cacert(url, Some(&ca)) {
            Ok(Target::Tls(t)) => t.addr,
            other => panic!("{url}: {other:?}"),
        };
        assert_eq!(addr("https://example.org"), "example.org:443");
        assert_eq!(addr("https://example.org/"), "example.org:443");
        assert_eq!(addr("https://example.org:80"), "example.org:80");
        assert_eq!(addr("https://127.0.0.1:9444"), "127.0.0.1:9444");
        assert_eq!(addr("https://[::1]"), "[::1]:443");
        // Plain URLs are unchanged by a CA file.
        assert_eq!(
            Target::parse_with_cacert("http://h:1", Some(&ca)),
            Ok(Target::Tcp("h:1".into()))
        );
        assert!(Target::parse_with_cacert("https://h:1/path", Some(&ca)).is_err());
        // A CA file that holds no certificate is refused by name.
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Target::parse_with_cacert("https://h:1", Some(&empty)).unwrap_err();
        assert!(e.contains("--cacert") && e.contains("empty.pem"), "{e}");
        let e = Target::parse_with_cacert("https://h:1", Some(&dir.path().join("nope.pem")))
            .unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn reads_length_chunked_and_eof_bodies() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
        let r = read_response(&mut &raw[..], false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("X-A"), Some("b"));
        assert_eq!(r.body, b"hello");

        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x\r\nhello\r\n1\r\n!\r\n0\r\nT: 1\r\n\r\n";
        assert_eq!(read_response(&mut &raw[..], false).unwrap().body, b"hello!");

        let raw = b"HTTP/1.0 200 OK\r\n\r\nuntil the end";
        assert_eq!(
            read_response(&mut &raw[..], false).unwrap().body,
            b"until the end"
        );

        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert!(read_response(&mut &raw[..], true).unwrap().body.is_empty());
        assert!(read_response(&mut &raw[..], false).is_err());

        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
        assert!(read_response(&mut &raw[..], false).is_err());
    }
}
