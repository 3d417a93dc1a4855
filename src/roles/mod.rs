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

/// Lower the calling thread's scheduling priority to nice 10 (or leave it where it is if it is
/// already lower): for background work (checkpoints) that must not take the cores from the
/// write path when they are contended. Under CFS a nice-10 thread still gets about a tenth of a
/// contended core's time, so it is slowed, never starved; on idle cores it runs as fast as
/// before. Raising a nice value needs no privilege; a failure is logged and changes nothing else.
pub fn background_priority(role: &str) {
    const NICE: libc::c_int = 10;
    // SAFETY: gettid takes nothing and cannot fail; getpriority and setpriority take plain
    // integers; errno is this thread's own.
    let result = unsafe {
        let tid = libc::gettid() as libc::id_t;
        // getpriority may return -1 as a nice value: errno tells a failure apart.
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if now == -1 && *libc::__errno_location() != 0 {
            Err(std::io::Error::last_os_error())
        } else if now >= NICE {
            Ok(())
        } else if libc::setpriority(libc::PRIO_PROCESS, tid, NICE) != 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    if let Err(e) = result {
        log::warn!(
            "msg=\"could not lower the thread's priority\" role={role} error={:?}",
            e.to_string()
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn background_priority_lowers_only_the_calling_thread() {
        // nice is field 19 of /proc/thread-self/stat (after the parenthesised name).
        let nice = || {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
            let after_name = &stat[stat.rfind(')').expect("name") + 2..];
            after_name
                .split(' ')
                .nth(16)
                .expect("field 19")
                .parse::<i32>()
                .expect("nice")
        };
        let before = nice();
        let in_thread = std::thread::spawn(move || {
            super::background_priority("test");
            nice()
        })
        .join()
        .expect("thread");
        assert_eq!(in_thread, before.max(10));
        assert_eq!(nice(), before, "the caller's thread is untouched");
    }

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
