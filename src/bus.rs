//! The bus: an in-process, lossy broadcast of typed events (commit, shutdown, reload,
//! write-plane shed/restored), and an optional local Unix socket serving them as
//! newline-delimited JSON.
//!
//! Lossy by design: each subscriber has a bounded queue, and an event that does not fit is
//! dropped for that subscriber and counted in `bus_lagged_total`. Consumers that need every commit
//! use `/registry/stream` (lossless resume by version) or reconcile with `/registry/head`.
//!
//! Threads: `bus-accept` (only with a socket) and one `bus-client` thread per socket client
//! (at most [`SOCKET_CLIENTS_MAX`]), each writing with a timeout.

use crate::metrics::m;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Socket clients at most; more are closed at accept.
pub const SOCKET_CLIENTS_MAX: usize = 64;
/// Events queued per subscriber before it starts losing them.
pub const QUEUE_EVENTS: usize = 1024;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Commit { version: u64, hash: String },
    Reload { ok: bool },
    WritePlane { ready: bool, reason: Option<String> },
    Shutdown,
}

#[derive(Default)]
pub struct Bus {
    subscribers: Mutex<Vec<Sender<Event>>>,
}

impl Bus {
    pub fn new() -> Arc<Bus> {
        Arc::new(Bus::default())
    }

    /// A new subscriber with a queue of `capacity` events.
    pub fn subscribe(&self, capacity: usize) -> Receiver<Event> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        self.subscribers.lock().push(tx);
        rx
    }

    /// Offer `event` to every subscriber without blocking; a full queue loses it (counted).
    pub fn publish(&self, event: Event) {
        self.subscribers
            .lock()
            .retain(|tx| match tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    m().bus_lagged_total.inc();
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.lock().len()
    }
}

/// The writer's publisher: one commit event per published version.
pub struct BusPublisher(pub Arc<Bus>);

impl crate::snapshot::Publisher for BusPublisher {
    fn published(
        &mut self,
        _: &Arc<crate::snapshot::Snapshot>,
        records: &[Arc<crate::domain::record::CommitRecord>],
    ) {
        for r in records {
            self.0.publish(Event::Commit {
                version: r.version,
                hash: r.hash.clone(),
            });
        }
    }

    fn shed(&mut self, reason: &str) {
        self.0.publish(Event::WritePlane {
            ready: false,
            reason: Some(reason.to_string()),
        });
    }
}

/// The local socket: accept clients and stream every bus event to each as one JSON line.
pub struct SocketServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl SocketServer {
    pub fn start(bus: Arc<Bus>, path: &Path) -> std::io::Result<SocketServer> {
        // Removes a stale socket from a crash; any other file at `path` is an error.
        let listener = crate::http::bind_unix_socket(path)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let clients = Arc::new(AtomicUsize::new(0));
        let accept = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("bus-accept".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                if clients.load(Ordering::SeqCst) >= SOCKET_CLIENTS_MAX {
                                    continue;
                                }
                                let _ = stream.set_nonblocking(false);
                                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                                let rx = bus.subscribe(QUEUE_EVENTS);
                                clients.fetch_add(1, Ordering::SeqCst);
                                let clients = clients.clone();
                                let stop = stop.clone();
                                let spawned = std::thread::Builder::new()
                                    .name("bus-client".into())
                                    .spawn(move || {
                                        serve_client(stream, rx, &stop);
                                        clients.fetch_sub(1, Ordering::SeqCst);
                                    });
                                if spawned.is_err() {
                                    log::warn!("msg=\"cannot start a bus client thread\"");
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            Err(e) => {
                                log::warn!("msg=\"bus socket accept failed\" error={e:?}");
                                std::thread::sleep(Duration::from_millis(200));
                            }
                        }
                    }
                })?
        };
        Ok(SocketServer {
            path: path.to_path_buf(),
            stop,
            accept: Some(accept),
        })
    }

    /// Stop accepting and remove the socket file. Client threads end after the shutdown event
    /// (or at their next write timeout).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_client(
    mut stream: std::os::unix::net::UnixStream,
    rx: Receiver<Event>,
    stop: &AtomicBool,
) {
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(event) => {
                let mut line = serde_json::to_vec(&event).expect("events serialize");
                line.push(b'\n');
                if stream.write_all(&line).is_err() {
                    // A client that cannot take a line within the write timeout is dropped.
                    return;
                }
                if event == Event::Shutdown {
                    return;
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if stop.load(Ordering::SeqCst) && rx.is_empty() {
                    return;
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_every_subscriber_and_a_full_queue_loses_them_counted() {
        let bus = Bus::new();
        let fast = bus.subscribe(8);
        let slow = bus.subscribe(1);
        let before = m().bus_lagged_total.get();
        for v in 1..=3 {
            bus.publish(Event::Commit {
                version: v,
                hash: "h".into(),
            });
        }
        assert_eq!(fast.try_iter().count(), 3);
        assert_eq!(slow.try_iter().count(), 1);
        assert!(m().bus_lagged_total.get() >= before + 2);
        drop(fast);
        bus.publish(Event::Shutdown);
        assert_eq!(bus.subscribers(), 1);
    }

    #[test]
    fn events_serialize_as_typed_json() {
        let e = Event::Commit {
            version: 7,
            hash: "ab".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"commit","version":7,"hash":"ab"}"#
        );
        assert_eq!(
            serde_json::to_string(&Event::Shutdown).unwrap(),
            r#"{"type":"shutdown"}"#
        );
    }

    #[test]
    fn the_socket_streams_json_lines_and_is_removed_at_stop() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.sock");
        // A regular file at the path is refused and left alone.
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(SocketServer::start(Bus::new(), &path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
        std::fs::remove_file(&path).unwrap();
        // A stale socket file (a crash left it behind) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let bus = Bus::new();
        let server = SocketServer::start(bus.clone(), &path).unwrap();
        let client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while bus.subscribers() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        bus.publish(Event::Commit {
            version: 1,
            hash: "x".into(),
        });
        bus.publish(Event::Shutdown);
        let lines: Vec<String> = std::io::BufReader::new(client)
            .lines()
            .map_while(Result::ok)
            .collect();
        assert_eq!(
            lines,
            [
                r#"{"type":"commit","version":1,"hash":"x"}"#,
                r#"{"type":"shutdown"}"#
            ]
        );
        server.stop();
        assert!(!path.exists());
    }
}
