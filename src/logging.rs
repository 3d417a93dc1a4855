//! logfmt log lines (`ts=… level=info msg=… key=value`) on stderr, filtered by `RUST_LOG` or the
//! config's `log_level`; the filter can be replaced at run time (SIGHUP).

use std::io::Write;
use std::sync::OnceLock;

static FILTER: OnceLock<parking_lot::RwLock<env_filter::Filter>> = OnceLock::new();

struct Logger {
    inner: env_logger::Logger,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        FILTER.get().is_some_and(|f| f.read().enabled(metadata))
    }

    fn log(&self, record: &log::Record) {
        if FILTER.get().is_some_and(|f| f.read().matches(record)) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
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
    let inner = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Trace)
        .format(|buf, record| {
            let ts = crate::clock::rfc3339_ms(crate::clock::now_unix_ms());
            let level = record.level().as_str().to_ascii_lowercase();
            let text = record.args().to_string();
            // Our own lines are already logfmt; quote anything else as one msg.
            let first = text.split(' ').next().unwrap_or("");
            if first.contains('=') {
                writeln!(buf, "ts={ts} level={level} {text}")
            } else {
                writeln!(
                    buf,
                    "ts={ts} level={level} msg={:?} target={}",
                    text,
                    record.target()
                )
            }
        })
        .build();
    if log::set_boxed_logger(Box::new(Logger { inner })).is_ok() {
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
