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

/// Record one answered request in the metrics (both listeners).
pub fn observe(route: &'static str, status: u16, elapsed: Duration, corr_id: &str) {
    let m = crate::metrics::m();
    m.request_latency_seconds
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    let mut code = itoa_buf(status);
    m.http_requests_total
        .with_label_values(&[route, code.as_str()])
        .inc();
    code.clear();
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
