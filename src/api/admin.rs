//! Routes of the metrics listener (SPEC §6): health, readiness, metrics.

use super::{error_response, json_response, Readiness};
use crate::error::{ApiError, Code};
use crate::http::{Handler, Method, Outcome, Replier, Request, Response};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct AdminApi {
    pub readiness: Arc<Readiness>,
    pub read_only: Arc<AtomicBool>,
    pub poisoned: Arc<parking_lot::Mutex<Option<String>>>,
    /// Writes are enabled at start (not `--read-only`): then /readyz needs the write plane.
    pub writes_enabled: bool,
}

impl AdminApi {
    /// (ready, read, write, reasons)
    pub fn readiness(&self) -> (bool, bool, bool, Vec<String>) {
        let r = &self.readiness;
        let on = |f: &AtomicBool| f.load(Ordering::SeqCst);
        let mut reasons = Vec::new();
        if !on(&r.registry_bound) {
            reasons.push("registry listener not bound".to_string());
        }
        if !on(&r.state_restored) {
            match r.restore_error.lock().clone() {
                Some(e) => reasons.push(format!("state not restored: {e}")),
                None => reasons.push("state not restored yet".to_string()),
            }
        }
        if !on(&r.metrics_served) {
            reasons.push("metrics not served".to_string());
        }
        if on(&r.draining) {
            reasons.push("shutting down".to_string());
        }
        let read = reasons.is_empty();
        let mut write_reasons = Vec::new();
        if self.read_only.load(Ordering::SeqCst) {
            write_reasons.push("read-only (maintenance) mode".to_string());
        }
        if let Some(p) = self.poisoned.lock().clone() {
            write_reasons.push(format!("write plane stopped: {p}"));
        }
        if !on(&r.writer_ready) {
            write_reasons.push("writer not ready".to_string());
        }
        if !on(&r.storage_ready) {
            write_reasons.push("storage not ready".to_string());
        }
        let write = read && write_reasons.is_empty();
        let need_write = self.writes_enabled && !self.read_only.load(Ordering::SeqCst);
        let ready = read && (write || !need_write);
        if need_write || !write_reasons.iter().all(|r| r.starts_with("read-only")) {
            reasons.extend(write_reasons);
        }
        (ready, read, write, reasons)
    }
}

impl Handler for AdminApi {
    fn handle(&self, req: Request, _replier: Replier) -> Outcome {
        let (route, response) = match req.path.as_str() {
            "/healthz" => (
                "/healthz",
                Ok(json_response(200, &serde_json::json!({"status": "ok"}))),
            ),
            "/readyz" => {
                let (ready, read, write, reasons) = self.readiness();
                let body = serde_json::json!({
                    "ready": ready, "read": read, "write": write, "reasons": reasons,
                });
                (
                    "/readyz",
                    Ok(json_response(if ready { 200 } else { 503 }, &body)),
                )
            }
            "/metrics" => (
                "/metrics",
                Ok(Response::new(200, crate::metrics::m().render()).header(
                    "Content-Type",
                    "text/plain; version=0.0.4; charset=utf-8".to_string(),
                )),
            ),
            other => (
                "unmatched",
                Err(ApiError::not_found(format!("no route {other}"))),
            ),
        };
        let response = match response {
            Ok(r) if req.method != Method::Get && req.method != Method::Head => {
                drop(r);
                error_response(&ApiError::new(
                    Code::MethodNotAllowed,
                    format!("{route} allows GET, HEAD"),
                ))
                .header("Allow", "GET, HEAD".to_string())
            }
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        Outcome::Respond(response.route(route))
    }

    fn observe(&self, route: &'static str, status: u16, elapsed: Duration, corr_id: &str) {
        super::observe(route, status, elapsed, corr_id);
    }
}
