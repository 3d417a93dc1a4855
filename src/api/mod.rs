//! The handler layer: routes, request validation and JSON answers for both listeners.
//!
//! Runs on HTTP worker threads. Reads come from the published snapshot (lock-free `ArcSwap`
//! load, never a wait on the writer); writes are handed to the writer over its bounded channel
//! with a typed [`crate::roles::reply::Reply`] built from the request's
//! [`crate::http::Replier`]
//! (src/api/replies.rs), so a worker never blocks on a commit.

mod admin;
pub mod cors;
mod registry;
pub mod replies;
mod tlog;

pub use admin::AdminApi;
pub use registry::RegistryApi;

use crate::error::ApiError;
use crate::http::Response;
use std::time::Duration;

/// The error response of docs/API.md for `e` (with `Retry-After` when it says when to retry).
pub fn error_response(e: &ApiError) -> Response {
    let mut r = Response::error(e.code.status(), e.code.as_str(), &e.message);
    if e.code == crate::error::Code::Unauthorized {
        // RFC 6750 §3: every 401 names the scheme the client should use.
        r = r.header(
            "WWW-Authenticate",
            "Bearer realm=\"svc-registry\"".to_string(),
        );
    }
    match e.retry_after_secs {
        Some(secs) => r.header("Retry-After", secs.to_string()),
        None => r,
    }
}

pub fn json_response(status: u16, value: &serde_json::Value) -> Response {
    Response::json(
        status,
        serde_json::to_vec(value).expect("JSON values serialize"),
    )
}

/// A record of history could not be read back intact (an I/O error, or bytes that changed on
/// disk): logged with the detail, counted, and answered 503 without the server's paths.
pub fn history_unreadable(version: u64, detail: &str) -> ApiError {
    log::error!("msg=\"history read failed\" version={version} error={detail:?}");
    crate::metrics::m()
        .registry_history_read_failures_total
        .inc();
    ApiError::unavailable(format!(
        "version {version} could not be read back from the log intact (see the server log)"
    ))
}

/// A thread's handles to the per-request series it has used, by (route's address, status):
/// `with_label_values` hashes the labels and takes the vector's lock on every call, and the
/// status needed a `String` — per request on the read path, with both workers on one lock.
/// Route names are `&'static str`, so the address is a stable key (one route named from two
/// places merely gets two entries for the same series).
type Handles = Vec<(usize, u16, prometheus::Histogram, prometheus::IntCounter)>;

thread_local! {
    static HANDLES: std::cell::RefCell<Handles> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How many (route, status) series a thread keeps handles to; past it, look-ups go to the vector
/// (bounded: routes and statuses are finite, but nothing here should grow without end).
const HANDLES_MAX: usize = 64;

/// Record one answered request in the metrics (both listeners).
pub fn observe(route: &'static str, status: u16, elapsed: Duration, corr_id: &str) {
    let m = crate::metrics::m();
    let key = route.as_ptr() as usize;
    let seconds = elapsed.as_secs_f64();
    let cached = HANDLES.with(|h| {
        let mut h = h.borrow_mut();
        if let Some((_, _, latency, count)) =
            h.iter().find(|(r, s, _, _)| *r == key && *s == status)
        {
            latency.observe(seconds);
            count.inc();
            return true;
        }
        if h.len() >= HANDLES_MAX {
            return false;
        }
        let latency = m.request_latency_seconds.with_label_values(&[route]);
        let count = m
            .http_requests_total
            .with_label_values(&[route, itoa_buf(status).as_str()]);
        latency.observe(seconds);
        count.inc();
        h.push((key, status, latency, count));
        true
    });
    if !cached {
        m.request_latency_seconds
            .with_label_values(&[route])
            .observe(seconds);
        m.http_requests_total
            .with_label_values(&[route, itoa_buf(status).as_str()])
            .inc();
    }
    // Audit: every refused approval (a signed request) and every refused commit, whatever
    // refused it (validation, quorum, CAS, maintenance, budget); the writer logs the detail
    // under the same corr_id where it has one.
    if status >= 400 && matches!(route, "/approve" | "/commit" | "/submit") {
        log::warn!(
            "msg=\"write rejected\" audit=1 corr_id={corr_id} route={route} status={status}"
        );
    }
    log::debug!(
        "msg=request corr_id={corr_id} route={route} status={status} elapsed_us={}",
        elapsed.as_micros()
    );
}

fn itoa_buf(n: u16) -> String {
    n.to_string()
}
