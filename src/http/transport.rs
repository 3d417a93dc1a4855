//! The connection's byte stream: the one seam between an accepted socket and the HTTP
//! connection that speaks over it.
//!
//! Invariant: `connection.rs` never touches a [`Socket`] directly. Every byte it reads or writes,
//! the interest it is registered with, the "is anything still buffered for the peer" question
//! and the half-close after a final response all go through [`Transport`].
//!
//! TLS lives behind this seam: a `Transport` over a [`Socket::Tls`] reads by pulling TLS records
//! from the socket and handing out plaintext, `write` encrypts into the session's buffer,
//! [`Transport::wants_write`] reports records not yet on the wire, [`Transport::flush_pending`]
//! pushes them (a response counts as written only once it returns true), and
//! [`Transport::shutdown_write`] sends `close_notify` before the FIN. The handshake needs no
//! phase of its own: the connection is always registered for both directions (see
//! [`Transport::interest`]), a `read` that only advanced the handshake returns `WouldBlock` like
//! an empty socket, and [`Transport::handshake_started`] lets the worker's sweep bound its time.
//! The stream hand-off ([`Transport::into_socket`]) gives the session away with the socket.

use super::Socket;
use mio::{Interest, Registry, Token};
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

/// The byte stream a connection owns: a plain TCP or Unix-domain socket, or TCP with TLS.
pub(super) struct Transport {
    socket: Socket,
}

impl Transport {
    /// A transport over `socket`: bytes pass through unchanged, or through its TLS session.
    pub(super) fn new(socket: Socket) -> Transport {
        Transport { socket }
    }

    /// The readiness a connection is registered for, once, for its whole life: both directions,
    /// edge-triggered, so an interest not needed at the moment costs at most one spurious
    /// wake-up per state change, never a busy loop, and the worker never re-registers.
    pub(super) fn interest(&self) -> Interest {
        Interest::READABLE | Interest::WRITABLE
    }

    pub(super) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = self.interest();
        registry.register(&mut self.socket, token, interest)
    }

    /// Plaintext from the peer; `Ok(0)` is its end of stream, `WouldBlock` means "wait for the
    /// next readable edge".
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.read(buf)
    }

    pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf)
    }

    pub(super) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.socket.write_vectored(bufs)
    }

    /// Bytes accepted by `write` but still held here rather than on the wire. A plain socket
    /// holds none: its `write` goes straight to the kernel.
    pub(super) fn wants_write(&self) -> bool {
        match &self.socket {
            Socket::Tls(s) => s.wants_write(),
            Socket::Tcp(_) | Socket::Unix(_) => false,
        }
    }

    /// Push bytes held by the transport itself; true once none remain, false if the socket is
    /// full (wait for the next writable edge).
    pub(super) fn flush_pending(&mut self) -> io::Result<bool> {
        match &mut self.socket {
            Socket::Tls(s) => s.push(),
            Socket::Tcp(_) | Socket::Unix(_) => Ok(true),
        }
    }

    /// When the first byte of a TLS handshake that has not completed arrived (None for a plain
    /// socket, or once the handshake is done): the worker bounds it like a request head.
    pub(super) fn handshake_started(&self) -> Option<std::time::Instant> {
        match &self.socket {
            Socket::Tls(s) => s.handshake_started(),
            Socket::Tcp(_) | Socket::Unix(_) => None,
        }
    }

    /// The worker's sweep cut an unfinished TLS handshake at its deadline: count it (a plain
    /// socket has no handshake; nothing to count).
    pub(super) fn handshake_timed_out(&mut self) {
        if let Socket::Tls(s) = &mut self.socket {
            s.handshake_failed(super::tls::HandshakeFailure::Timeout);
        }
    }

    /// Shut the write side after a final response (errors ignored: the peer may be gone).
    pub(super) fn shutdown_write(&mut self) {
        let _ = match &mut self.socket {
            Socket::Tcp(s) => s.shutdown(Shutdown::Write),
            Socket::Unix(s) => s.shutdown(Shutdown::Write),
            Socket::Tls(s) => {
                s.shutdown_write();
                Ok(())
            }
        };
    }

    /// Take the socket out of `registry` and give it away (`Outcome::Stream`).
    pub(super) fn into_socket(mut self, registry: &Registry) -> io::Result<Socket> {
        registry.deregister(&mut self.socket)?;
        Ok(self.socket)
    }
}
