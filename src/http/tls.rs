//! TLS with rustls: the server configuration of both TCP listeners (reloadable), the
//! non-blocking server session a connection's [`Socket`](super::Socket) carries, and the client
//! configuration of the blocking client (`ronctl`, the tests).
//!
//! No async runtime: a [`TlsStream`] is a mio `TcpStream` plus a rustls `ServerConnection`
//! driven by hand (`read_tls` → `process_new_packets` → `reader()`, `writer()` → `write_tls`),
//! exactly as the rest of the transport drives plain sockets.
//!
//! Invariants:
//! - A read that returns fewer bytes than asked for has seen the socket answer `WouldBlock` (or
//!   its end of stream): the connection's edge-triggered "short read means drained" rule holds
//!   over TLS too.
//! - A write never lets the session's outgoing buffer grow past one write's worth: while records
//!   from an earlier write are still not on the wire, `write` answers `WouldBlock`.
//! - The handshake is bounded in bytes by rustls (a handshake message over 64 KiB is refused)
//!   and in time by the worker's sweep: [`TlsStream::handshake_started`] is the instant its first
//!   byte arrived, and `head_timeout` applies from there, exactly as to a request head.
//! - Every handshake that received a byte is counted once, per listener, as completed
//!   (`registry_tls_handshakes_total`) or failed with one [`HandshakeFailure`] reason
//!   (`registry_tls_handshake_failures_total`); a TCP connection that never sent a byte (a port
//!   probe) and a handshake cut by shutdown are neither.
//!
//! The crypto provider is *ring* (see docs/ARCHITECTURE.md, "Transport"): TLS 1.3 and 1.2, ALPN
//! `http/1.1`, client certificates required when a client CA is configured.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection};
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Why a handshake failed: the bounded `reason` label of `registry_tls_handshake_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not complete `head_timeout_ms` after its first byte (a stalled or slowloris handshake).
    Timeout,
    /// Not TLS, or TLS we do not speak: garbage, plaintext HTTP, no common version or cipher
    /// suite, a malformed or out-of-order message.
    Protocol,
    /// A certificate was refused: the client's (missing, or not chaining to `client_ca_file`)
    /// by us, or ours by the client (its alert says so: unknown CA, expired, wrong name).
    Certificate,
    /// The peer closed or reset the connection mid-handshake.
    Eof,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 4] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Protocol,
        HandshakeFailure::Certificate,
        HandshakeFailure::Eof,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Certificate => "certificate",
            HandshakeFailure::Eof => "eof",
        }
    }

    /// The reason a session error ends a handshake with.
    pub fn of(e: &rustls::Error) -> HandshakeFailure {
        use rustls::AlertDescription as A;
        match e {
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_) => HandshakeFailure::Certificate,
            rustls::Error::AlertReceived(
                A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::CertificateRequired
                | A::BadCertificateStatusResponse,
            ) => HandshakeFailure::Certificate,
            _ => HandshakeFailure::Protocol,
        }
    }
}

/// One listener's handshake counters, resolved once at start so that counting is one atomic
/// add (no label lookup per connection).
pub struct HandshakeCounters {
    completed: prometheus::IntCounter,
    /// Indexed like [`HandshakeFailure::ALL`].
    failed: [prometheus::IntCounter; 4],
}

impl HandshakeCounters {
    /// The counters of listener `name` (`registry`, `metrics`); every series exists from now
    /// on, at zero, so dashboards see zeros rather than gaps.
    pub fn for_listener(name: &str) -> Arc<HandshakeCounters> {
        let m = crate::metrics::m();
        Arc::new(HandshakeCounters {
            completed: m.registry_tls_handshakes_total.with_label_values(&[name]),
            failed: HandshakeFailure::ALL.map(|reason| {
                m.registry_tls_handshake_failures_total
                    .with_label_values(&[name, reason.as_str()])
            }),
        })
    }

    fn failed(&self, reason: HandshakeFailure) {
        let i = HandshakeFailure::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("ALL lists every reason");
        self.failed[i].inc();
    }
}

/// The one crypto provider of the process (ring; see the module doc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Every certificate in a PEM file; an empty file is an error naming it.
fn load_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {}", path.display(), pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: {}", path.display(), pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read: {e}"),
        rustls::pki_types::pem::Error::NoItemsFound => "nothing of the expected kind".to_string(),
        other => format!("malformed PEM: {other:?}"),
    }
}

/// Trust anchors from a PEM file of CA certificates.
fn load_roots(what: &str, path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(what, path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{what} {}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The listeners' TLS configuration from PEM files: a certificate chain, its private key
/// (PKCS#8, PKCS#1 or SEC1) and, for mutual TLS, the CA that client certificates must chain to.
/// Fails with a message naming the file when anything is missing, malformed or mismatched
/// (a key that does not belong to the certificate included).
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let certs = load_certs("tls.cert_file", cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        format!(
            "tls.key_file {}: {} (want a PEM private key)",
            key_file.display(),
            pem_error(e)
        )
    })?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match client_ca_file {
        Some(path) => {
            let roots = Arc::new(load_roots("tls.client_ca_file", path)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("tls.client_ca_file {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "tls.cert_file {} with tls.key_file {}: {e}",
            cert_file.display(),
            key_file.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener's TLS side: the configuration new handshakes use. A SIGHUP swaps it
/// ([`ServerTls::store`]); sessions already established keep the one they started with, so a
/// reload drops no connection.
pub struct ServerTls {
    config: ArcSwap<ServerConfig>,
}

impl ServerTls {
    pub fn new(config: Arc<ServerConfig>) -> Arc<ServerTls> {
        Arc::new(ServerTls {
            config: ArcSwap::new(config),
        })
    }

    /// New handshakes use `config` from now on.
    pub fn store(&self, config: Arc<ServerConfig>) {
        self.config.store(config);
    }

    /// A server session over an accepted socket (the handshake starts with the client's bytes),
    /// counting its handshake's outcome in `counters`.
    pub(super) fn accept(
        &self,
        tcp: mio::net::TcpStream,
        counters: Arc<HandshakeCounters>,
    ) -> io::Result<TlsStream> {
        let session = ServerConnection::new(self.config.load_full()).map_err(io::Error::other)?;
        Ok(TlsStream {
            tcp,
            session,
            handshake_started: None,
            eof: false,
            counters,
            counted: false,
        })
    }
}

/// A server-side TLS session over a non-blocking TCP socket. Reads hand out plaintext, writes
/// take plaintext; records that do not fit the socket wait in the session until
/// [`TlsStream::push`] (or `Write::flush`) gets them out.
pub struct TlsStream {
    tcp: mio::net::TcpStream,
    session: ServerConnection,
    /// When the first handshake byte arrived, while the handshake is not complete.
    handshake_started: Option<Instant>,
    /// The socket reported its end of stream.
    eof: bool,
    /// Where this listener counts handshakes.
    counters: Arc<HandshakeCounters>,
    /// The handshake's outcome has been counted (it is counted at most once).
    counted: bool,
}

impl TlsStream {
    /// The TCP socket under the session (socket options).
    pub fn tcp(&self) -> &mio::net::TcpStream {
        &self.tcp
    }

    /// The instant the first byte of a still unfinished handshake arrived.
    pub fn handshake_started(&self) -> Option<Instant> {
        self.handshake_started
    }

    /// Count a handshake that received bytes and then failed (once; later calls, and calls for
    /// a handshake that never started or already completed, count nothing).
    pub fn handshake_failed(&mut self, reason: HandshakeFailure) {
        if !self.counted && self.handshake_started.is_some() && self.session.is_handshaking() {
            self.counted = true;
            self.counters.failed(reason);
        }
    }

    /// Records are waiting for the socket.
    pub fn wants_write(&self) -> bool {
        self.session.wants_write()
    }

    /// Write waiting records until none is left (true) or the socket is full (false).
    pub fn push(&mut self) -> io::Result<bool> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// After a final response: `close_notify`, then the TCP FIN (best effort).
    pub fn shutdown_write(&mut self) {
        self.session.send_close_notify();
        let _ = self.push();
        let _ = self.tcp.shutdown(Shutdown::Write);
    }

    /// Plaintext into `buf`, filling it as far as the socket allows (see the module invariant).
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut filled = 0;
        loop {
            match self.session.reader().read(&mut buf[filled..]) {
                // A clean close_notify from the peer: end of stream.
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket ended without close_notify: an end of stream all the same (HTTP
                // framing, not TLS, tells a complete request from a cut one).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(filled);
            }
            match self.session.read_tls(&mut self.tcp) {
                Ok(0) => {
                    self.eof = true;
                    self.handshake_failed(HandshakeFailure::Eof);
                }
                Ok(_) => {
                    if self.session.is_handshaking() && self.handshake_started.is_none() {
                        self.handshake_started = Some(Instant::now());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Handshake records produced on the way must leave now: the peer waits for
                    // them, and no write of ours would push them.
                    self.push()?;
                    return if filled > 0 {
                        Ok(filled)
                    } else {
                        Err(io::ErrorKind::WouldBlock.into())
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // A reset mid-handshake: the peer went away.
                    self.handshake_failed(HandshakeFailure::Eof);
                    return Err(e);
                }
            }
            if let Err(e) = self.session.process_new_packets() {
                // Garbage, plaintext HTTP, a refused client certificate: send the alert rustls
                // queued (best effort) and end the connection.
                self.handshake_failed(HandshakeFailure::of(&e));
                let _ = self.push();
                log::debug!("msg=\"TLS session failed\" error={e}");
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if !self.session.is_handshaking() && !self.counted {
                self.counted = true;
                self.counters.completed.inc();
                self.handshake_started = None;
            }
            self.push()?;
        }
    }

    /// Plaintext in; `WouldBlock` while records of an earlier write still wait for the socket.
    fn write_plain(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.push()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.session.writer().write_vectored(bufs)?;
        // Out as far as the socket takes; the rest waits for `push`.
        self.push()?;
        Ok(n)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_plain(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_plain(&[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_plain(bufs)
    }
    /// Push waiting records; `WouldBlock` if some are still waiting for the socket.
    fn flush(&mut self) -> io::Result<()> {
        if self.push()? {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
}

impl mio::event::Source for TlsStream {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.tcp.register(registry, token, interests)
    }
    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.tcp.reregister(registry, token, interests)
    }
    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.tcp.deregister(registry)
    }
}

/// The client's TLS configuration: trust anchors from `cacert` (a PEM file of CA
/// certificates), else the system's; with `identity` (certificate chain file, key file) a
/// client certificate is offered for mutual TLS. ALPN `http/1.1`.
pub fn client_config(
    cacert: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, String> {
    let roots = match cacert {
        Some(path) => load_roots("--cacert", path)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no system CA certificates found; pass --cacert FILE (or RON_CACERT)"
                        .to_string(),
                );
            }
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert_file, key_file)) => {
            let certs = load_certs("client certificate", cert_file)?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| format!("client key {}: {}", key_file.display(), pem_error(e)))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate {}: {e}", cert_file.display()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The name a client checks the server's certificate against: the host of `host:port`
/// (brackets of an IPv6 literal removed). An IP address is checked as one (SAN `IP:`).
pub fn server_name(authority: &str) -> Result<ServerName<'static>, String> {
    let host = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))
}

/// An operator's sentence for a failed client handshake: which check failed and what to do.
pub fn explain_client_error(host: &str, e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer | C::BadSignature => format!(
                "TLS: the certificate of {host} is signed by an unknown CA \
                 (pass --cacert FILE with the CA that issued it): {e}"
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "TLS: the certificate presented by {host} is not valid for that name \
                 (wrong host, or the certificate lacks it in subjectAltName): {e}"
            ),
            C::Expired | C::ExpiredContext { .. } => format!(
                "TLS: the certificate of {host} has expired (the server must renew it): {e}"
            ),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("TLS: the certificate of {host} is not valid yet (check the clocks): {e}")
            }
            _ => format!("TLS: the certificate of {host} was refused: {e}"),
        },
        rustls::Error::AlertReceived(alert) => format!(
            "TLS: {host} refused the handshake ({alert:?}; a server that requires a client \
             certificate refuses a client without one)"
        ),
        rustls::Error::InvalidMessage(_) => {
            format!("TLS: {host} did not answer with TLS (is it an http:// listener?): {e}")
        }
        other => format!("TLS handshake with {host} failed: {other}"),
    }
}
