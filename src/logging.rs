//! logfmt log lines (`ts=… level=info msg=… key=value`) on stderr, filtered by `RUST_LOG` or the
//! config's `log_level`; the filter can be replaced at run time (SIGHUP).
//!
//! Each line is formatted once, straight into a per-thread buffer (no per-line `String`, no
//! ANSI stripping: logfmt never has colours), and leaves in one `write(2)`. A thread on the
//! write path (the writer) may *batch* its lines ([`batch_this_thread`]): they collect in its
//! buffer and leave together, in one `write(2)`, when the thread flushes ([`flush_thread`]).
//!
//! Invariant (the audit contract, docs/OPERATIONS.md "Audit"): a batched line is on stderr
//! before any answer the batching thread sends afterwards — [`crate::roles::reply::Reply::send`]
//! flushes the sending thread's batch first — and no batched line outlives its thread (the
//! batch guard flushes on drop, unwinding included) or waits while the thread is idle (the
//! writer flushes before it blocks). So a crash can lose only lines whose effects nobody was
//! told about yet.

use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;

static FILTER: OnceLock<parking_lot::RwLock<env_filter::Filter>> = OnceLock::new();

/// A batch flushes on its own once it holds this much, so a burst cannot grow it unbounded.
const BATCH_MAX: usize = 64 * 1024;

struct Local {
    /// Formatted lines not yet written.
    buf: Vec<u8>,
    /// Whether lines wait for [`flush_thread`] (true) or leave at once.
    batching: bool,
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local {
            buf: Vec::new(),
            batching: false,
        })
    };
}

/// Write `bytes` to stderr in one call (stderr's lock keeps lines of other threads whole).
fn emit(bytes: &[u8]) {
    // A failed stderr cannot be reported anywhere; the server keeps serving.
    let _ = std::io::stderr().lock().write_all(bytes);
}

/// Append one logfmt line for `record` to `buf`.
fn format_line(buf: &mut Vec<u8>, record: &log::Record) {
    let level = match record.level() {
        log::Level::Error => "error",
        log::Level::Warn => "warn",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    };
    // The prefix without `core::fmt` or a timestamp `String`: the writer logs a line per commit.
    buf.extend_from_slice(b"ts=");
    crate::clock::write_rfc3339_ms(buf, crate::clock::now_unix_ms());
    buf.extend_from_slice(b" level=");
    buf.extend_from_slice(level.as_bytes());
    buf.push(b' ');
    let start = buf.len();
    let _ = write!(buf, "{}", record.args());
    // Our own lines are already logfmt (their first word is a key=value); quote anything else
    // (a dependency's line) as one msg.
    let text = &buf[start..];
    let first = text.split(|&b| b == b' ').next().unwrap_or(&[]);
    if !first.contains(&b'=') {
        let text = String::from_utf8_lossy(&buf[start..]).into_owned();
        buf.truncate(start);
        let _ = write!(buf, "msg={text:?} target={}", record.target());
    }
    buf.push(b'\n');
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        FILTER.get().is_some_and(|f| f.read().enabled(metadata))
    }

    fn log(&self, record: &log::Record) {
        if !FILTER.get().is_some_and(|f| f.read().matches(record)) {
            return;
        }
        let written = LOCAL.try_with(|l| {
            // A line logged while this thread's buffer is being written (a `Display` that logs)
            // cannot borrow it: it leaves on its own below.
            let Ok(mut l) = l.try_borrow_mut() else {
                return false;
            };
            format_line(&mut l.buf, record);
            if !l.batching || l.buf.len() >= BATCH_MAX {
                emit(&l.buf);
                l.buf.clear();
            }
            true
        });
        if written != Ok(true) {
            // Thread-local storage gone (thread exit) or busy: format and write this one alone.
            let mut buf = Vec::with_capacity(160);
            format_line(&mut buf, record);
            emit(&buf);
        }
    }

    fn flush(&self) {
        flush_thread();
    }
}

/// Write this thread's batched lines now (one `write(2)`); nothing when there are none.
/// [`crate::roles::reply::Reply::send`] calls it before every answer.
pub fn flush_thread() {
    let _ = LOCAL.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            if !l.buf.is_empty() {
                emit(&l.buf);
                l.buf.clear();
            }
        }
    });
}

/// Batches this thread's lines until it is dropped; see the module doc for when they leave.
pub struct BatchGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        flush_thread();
        let _ = LOCAL.try_with(|l| {
            if let Ok(mut l) = l.try_borrow_mut() {
                l.batching = false;
            }
        });
    }
}

/// Batch this thread's log lines (they leave at [`flush_thread`], at a reply, or when the
/// guard drops) instead of one `write(2)` per line.
pub fn batch_this_thread() -> BatchGuard {
    LOCAL.with(|l| l.borrow_mut().batching = true);
    BatchGuard {
        _not_send: std::marker::PhantomData,
    }
}

/// Tests: queue `line` in this thread's buffer as a logged line would be.
#[cfg(test)]
pub(crate) fn queue_for_test(line: &[u8]) {
    LOCAL.with(|l| l.borrow_mut().buf.extend_from_slice(line));
}

/// Tests: bytes waiting in this thread's buffer.
#[cfg(test)]
pub(crate) fn batched_len() -> usize {
    LOCAL.with(|l| l.borrow().buf.len())
}

fn build_filter(spec: &str) -> env_filter::Filter {
    env_filter::Builder::new().parse(spec).build()
}

/// Install the logger. `RUST_LOG` wins over `config_level`; default `info`.
pub fn init(config_level: Option<&str>) {
    let spec = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| config_level.map(str::to_string))
        .unwrap_or_else(|| "info".to_string());
    let filter = build_filter(&spec);
    let max = filter.filter();
    let _ = FILTER.set(parking_lot::RwLock::new(filter));
    if log::set_boxed_logger(Box::new(Logger)).is_ok() {
        // The static max level lets disabled lines cost one comparison on hot paths.
        log::set_max_level(max);
    }
}

/// Replace the filter (SIGHUP). `RUST_LOG` still wins if set: then nothing changes and this
/// returns `false`, so the caller never reports a level it did not apply.
pub fn set_level(config_level: Option<&str>) -> bool {
    if std::env::var_os("RUST_LOG").is_some() {
        return false;
    }
    match FILTER.get() {
        Some(f) => {
            let filter = build_filter(config_level.unwrap_or("info"));
            log::set_max_level(filter.filter());
            *f.write() = filter;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: log::Level, target: &str, args: std::fmt::Arguments) -> String {
        let mut buf = Vec::new();
        format_line(
            &mut buf,
            &log::Record::builder()
                .level(level)
                .target(target)
                .args(args)
                .build(),
        );
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn own_lines_stay_logfmt_and_foreign_lines_are_quoted_as_one_msg() {
        let own = line(
            log::Level::Info,
            "svc_registry",
            format_args!("msg=committed audit=1 version={}", 7),
        );
        let (ts, rest) = own.split_once(' ').unwrap();
        assert!(ts.starts_with("ts=") && ts.ends_with('Z'), "{own}");
        assert_eq!(rest, "level=info msg=committed audit=1 version=7\n");

        let foreign = line(
            log::Level::Warn,
            "mio::poll",
            format_args!("a \"quoted\" thing"),
        );
        let rest = foreign.split_once(' ').unwrap().1;
        assert_eq!(
            rest,
            "level=warn msg=\"a \\\"quoted\\\" thing\" target=mio::poll\n"
        );
    }

    #[test]
    fn a_batch_holds_lines_until_flushed_and_the_guard_ends_batching() {
        // Lines are formatted here by hand (the global logger may not be installed in unit
        // tests); the batch state is what is under test.
        let guard = batch_this_thread();
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            assert!(l.batching);
            l.buf.extend_from_slice(b"ts=x level=info msg=held\n");
        });
        flush_thread();
        LOCAL.with(|l| assert!(l.borrow().buf.is_empty()));
        LOCAL.with(|l| {
            l.borrow_mut()
                .buf
                .extend_from_slice(b"ts=x level=info msg=tail\n")
        });
        drop(guard);
        LOCAL.with(|l| {
            let l = l.borrow();
            assert!(l.buf.is_empty() && !l.batching);
        });
    }
}
