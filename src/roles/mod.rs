//! One module per thread role. Each opens by saying which thread runs it, which channels go in
//! and out (all bounded but the writer's `internal` channel, argued in app.rs), which state it
//! owns alone, and how it shuts down. `reply` is the typed answer handle of the writer;
//! [`recv_parked`] is how a thread fed once per batch waits for its input (no spin-yield).

pub mod checkpoint;
pub mod follower;
pub mod fsync;
pub mod reply;
pub mod retention;
pub mod sse;
pub mod tlog;
pub mod verifier;
pub mod writer;

use crossbeam_channel::{Receiver, RecvError, RecvTimeoutError, Select, TryRecvError};
use std::time::Duration;

/// Receive from `rx`, parking at once when it is empty. `Receiver::recv` (and `select!` with one
/// case, which the macro turns into `recv`) first spins and then calls `sched_yield(2)` four
/// times before it parks (crossbeam's `Backoff::snooze`); a thread fed once per group commit
/// (fsync, checkpoint, tlog) rarely finds a message in that window, so the spin
/// was only syscalls and a core handed to whoever else was runnable (docs/PERFORMANCE.md,
/// issue 20, syscalls per write). A [`Select`] registers and parks with no backoff.
pub fn recv_parked<T>(rx: &Receiver<T>) -> Result<T, RecvError> {
    match rx.try_recv() {
        Ok(msg) => return Ok(msg),
        Err(TryRecvError::Disconnected) => return Err(RecvError),
        Err(TryRecvError::Empty) => {}
    }
    let mut sel = Select::new();
    sel.recv(rx);
    sel.select().recv(rx)
}

/// [`recv_parked`] with a timeout, like `Receiver::recv_timeout`.
pub fn recv_parked_timeout<T>(rx: &Receiver<T>, timeout: Duration) -> Result<T, RecvTimeoutError> {
    match rx.try_recv() {
        Ok(msg) => return Ok(msg),
        Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
        Err(TryRecvError::Empty) => {}
    }
    let mut sel = Select::new();
    sel.recv(rx);
    match sel.select_timeout(timeout) {
        Ok(op) => op.recv(rx).map_err(|_| RecvTimeoutError::Disconnected),
        Err(_) => Err(RecvTimeoutError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recv_parked_takes_a_message_then_sees_the_channel_close() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sender = std::thread::spawn(move || {
            tx.send(7u32).unwrap();
        });
        assert_eq!(recv_parked(&rx), Ok(7));
        sender.join().unwrap();
        assert_eq!(recv_parked(&rx), Err(RecvError));
    }

    #[test]
    fn recv_parked_timeout_times_out_takes_and_reports_a_close() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let began = std::time::Instant::now();
        assert_eq!(
            recv_parked_timeout(&rx, Duration::from_millis(20)),
            Err(RecvTimeoutError::Timeout)
        );
        assert!(began.elapsed() >= Duration::from_millis(20));
        tx.send(3u32).unwrap();
        assert_eq!(recv_parked_timeout(&rx, Duration::from_secs(5)), Ok(3));
        drop(tx);
        assert_eq!(
            recv_parked_timeout(&rx, Duration::from_secs(5)),
            Err(RecvTimeoutError::Disconnected)
        );
    }
}
