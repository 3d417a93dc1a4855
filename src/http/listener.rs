//! Listening sockets: binding TCP and Unix-domain listeners, and accepting from them once they
//! are non-blocking. Also the crate's one Unix-socket bind helper ([`bind_unix_socket`]), used
//! by the HTTP listeners and by the bus socket (`src/bus.rs`).
//!
//! Invariant: binding never destroys anything but a stale socket. A file at a socket path that
//! is not a socket (a regular file, a directory, a symlink) is an error, never removed.

use super::Socket;
use std::io;
use std::net::ToSocketAddrs;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Listen backlog.
const BACKLOG: i32 = 1024;

/// A bound listening socket, TCP or Unix-domain.
pub enum Listener {
    Tcp(std::net::TcpListener),
    /// The listener and the path of its socket file (removed at shutdown).
    Unix(UnixListener, PathBuf),
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

    /// Bind a Unix-domain listener at `path` (see [`bind_unix_socket`]).
    pub fn bind_unix(path: &Path) -> io::Result<Listener> {
        let listener = bind_unix_socket(path)?;
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

/// Bind a Unix-domain listening socket at `path` and make it `0660`. A stale socket file (left by
/// a crash) is removed first; any other kind of file at `path` is an `AlreadyExists` error and is
/// left alone, so a mistyped path can never delete someone's data.
pub(crate) fn bind_unix_socket(path: &Path) -> io::Result<UnixListener> {
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
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// The listener as the acceptor polls it.
pub(super) enum MioListener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

impl MioListener {
    /// Make `listener` non-blocking for the acceptor's poll; also returns the socket file to
    /// remove at shutdown (Unix only).
    pub(super) fn new(listener: Listener) -> io::Result<(MioListener, Option<PathBuf>)> {
        Ok(match listener {
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
        })
    }

    /// One pending connection, or `WouldBlock` when none is left.
    pub(super) fn accept(&self) -> io::Result<Socket> {
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

    pub(super) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            MioListener::Tcp(l) => l,
            MioListener::Unix(l) => l,
        }
    }
}
