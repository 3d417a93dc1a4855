//! Certificates for the TLS tests, made here with rcgen (a CA, then server and client
//! certificates it issues, each in the test's own directory), and raw rustls client connections
//! for what `client::request` does not show (keep-alive, the peer's certificate).
//!
//! Invariant: nothing here is shared between tests; every [`Pki`] is a new CA in a new
//! temporary directory, removed when it is dropped.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use svc_registry::http::client;

/// How long a raw connection waits for the server before failing the test.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The certificate files of one test, in their own directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Certificate,
    pub ca_key: KeyPair,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "svc-registry test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
            ca_key,
        };
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).unwrap();
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issue `{name}.pem` and `{name}.key` for `names`, valid from `from` to `until` days from
    /// now (negative: in the past), for server or client use.
    pub fn issue(&self, name: &str, names: &[&str], days: (i64, i64), client: bool) -> PathBuf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days.0);
        params.not_after = now + time::Duration::days(days.1);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
        self.path(&format!("{name}.pem"))
    }

    /// The `[tls]` table serving `{name}.pem`.
    pub fn table(&self, name: &str, client_ca: bool) -> String {
        let mut t = format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            self.path(&format!("{name}.pem")).display().to_string(),
            self.path(&format!("{name}.key")).display().to_string()
        );
        if client_ca {
            t.push_str(&format!(
                "client_ca_file = {:?}\n",
                self.path("ca.pem").display().to_string()
            ));
        }
        t
    }

    pub fn client(&self, identity: Option<&str>) -> Arc<rustls::ClientConfig> {
        let id = identity.map(|n| {
            (
                self.path(&format!("{n}.pem")),
                self.path(&format!("{n}.key")),
            )
        });
        svc_registry::http::tls::client_config(
            Some(&self.path("ca.pem")),
            id.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .unwrap()
    }
}

/// A raw TLS client connection (keep-alive), for what `client::request` does not show.
pub fn tls_connect(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> StreamOwned<ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut session = ClientConnection::new(config, name).unwrap();
    let mut tcp = tcp;
    while session.is_handshaking() {
        session.complete_io(&mut tcp).expect("handshake");
    }
    StreamOwned::new(session, tcp)
}

/// One keep-alive request on an open TLS connection: the response's status.
pub fn keepalive_get(stream: &mut StreamOwned<ClientConnection, TcpStream>, path: &str) -> u16 {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    stream.flush().unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let r = client::read_response(&mut reader, false).expect("a response");
    r.status
}
