//! Routes of the metrics listener (docs/API.md): health, readiness, metrics, and the operator's admin
//! routes (docs/OPERATIONS.md):
//!
//! | route | methods | what |
//! |---|---|---|
//! | `/healthz` | GET | 200 while the process lives |
//! | `/readyz` | GET | readiness with reasons |
//! | `/metrics` | GET | Prometheus text |
//! | `/admin/config` | GET | the running effective config as TOML, secrets redacted |
//! | `/admin/maintenance` | GET, POST | read-only mode on/off with a reason |
//! | `/admin/chaos` | GET, POST, DELETE | inject / clear faults (`[chaos] enabled` only) |
//! | `/admin/chaos/clear` | POST | same as DELETE `/admin/chaos` |
//! | `/admin/backup` | POST | hot backup into a new directory, on its own thread |
//!
//! With `[auth]` the `/admin/*` routes need a token whose scope allows `admin` (checked before
//! the body is read); `/healthz`, `/readyz` and `/metrics` stay open for probes and Prometheus.
//! Without `[auth]` they are open, and the metrics listener belongs on a loopback or private
//! interface. `POST /admin/backup` writes only under `[ops] backup_root` when it is set, and
//! with `[auth]` on it requires it. Every state change is logged with `audit=1`.

use super::{error_response, json_response};
use crate::error::{ApiError, Code};
use crate::http::{Handler, Method, Outcome, Replier, Request, Response};
use crate::ops::{BackupError, Backups, Chaos, ChaosError, Maintenance, WritePlane};
use arc_swap::ArcSwap;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct AdminApi {
    /// Readiness and why not (`/readyz`).
    pub plane: Arc<WritePlane>,
    pub maintenance: Arc<Maintenance>,
    pub chaos: Arc<Chaos>,
    pub backups: Arc<Backups>,
    /// The running effective config as TOML (secrets redacted), replaced by each reload.
    pub effective_config: Arc<ArcSwap<String>>,
    /// The capability check of the `/admin/*` routes.
    pub gate: Arc<crate::auth::Gate>,
    /// `[ops] backup_root` (replaced by each reload).
    pub backup_root: Arc<ArcSwap<Option<PathBuf>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Healthz,
    Readyz,
    Metrics,
    Config,
    Maintenance,
    Chaos,
    ChaosClear,
    Backup,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        Some(match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/admin/config" => Route::Config,
            "/admin/maintenance" => Route::Maintenance,
            "/admin/chaos" => Route::Chaos,
            "/admin/chaos/clear" => Route::ChaosClear,
            "/admin/backup" => Route::Backup,
            _ => return None,
        })
    }

    /// The operator's routes: everything but the probes and the scrape.
    fn is_admin(self) -> bool {
        !matches!(self, Route::Healthz | Route::Readyz | Route::Metrics)
    }

    fn template(self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Config => "/admin/config",
            Route::Maintenance => "/admin/maintenance",
            Route::Chaos => "/admin/chaos",
            Route::ChaosClear => "/admin/chaos/clear",
            Route::Backup => "/admin/backup",
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics | Route::Config => "GET, HEAD",
            Route::Maintenance => "GET, HEAD, POST",
            Route::Chaos => "GET, HEAD, POST, DELETE",
            Route::ChaosClear | Route::Backup => "POST",
        }
    }

    fn allows(self, method: Method) -> bool {
        let name = match method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Put | Method::Options | Method::Other => return false,
        };
        self.allow().split(", ").any(|m| m == name)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChaosBody {
    fault: String,
    #[serde(deserialize_with = "whole_u64")]
    ms: u64,
    #[serde(default, deserialize_with = "whole_u64_opt")]
    for_secs: Option<u64>,
}

/// A JSON integer field as JSON Schema's `integer` reads it: `1975` and `1975.0` alike (a
/// number with a zero fraction is an integer); `1975.5`, negatives and non-numbers are refused.
fn whole_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(u) = n.as_u64() {
        return Ok(u);
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(f as u64),
        _ => Err(serde::de::Error::custom(format!(
            "{n} is not a non-negative integer"
        ))),
    }
}

fn whole_u64_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => whole_u64(n).map(Some).map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    read_only: bool,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupBody {
    to: PathBuf,
}

fn parse_body<T: serde::de::DeserializeOwned>(req: &Request, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("bad {what}: {e}")))
}

impl AdminApi {
    /// (ready, read, write, reasons). `reasons` lists everything not fully available, also
    /// while ready: in maintenance the instance is ready (reads) and says why writes are off.
    pub fn readiness(&self) -> (bool, bool, bool, Vec<String>) {
        self.plane.report()
    }

    fn maintenance_json(&self) -> serde_json::Value {
        serde_json::json!({
            "read_only": self.maintenance.is_on(),
            "reason": self.maintenance.reason(),
        })
    }

    fn set_maintenance(&self, req: &Request) -> Result<Response, ApiError> {
        let body: MaintenanceBody = parse_body(req, "maintenance request")?;
        if let Some(reason) = &body.reason {
            crate::config::check_maintenance_reason(reason).map_err(ApiError::bad_request)?;
        }
        let changed = self
            .maintenance
            .set(body.read_only, body.reason, "admin", &req.corr_id);
        let mut v = self.maintenance_json();
        v["changed"] = changed.into();
        Ok(json_response(200, &v))
    }

    fn chaos_error(e: ChaosError) -> ApiError {
        match e {
            ChaosError::Disabled => ApiError::forbidden(
                "chaos is disabled: set [chaos] enabled = true (never in production) and reload",
            ),
            ChaosError::NoStorage => ApiError::bad_request(
                "storage-latency has no effect here: this server never syncs storage (--amnesia or fsync = \"never\")",
            ),
            ChaosError::Invalid(msg) => ApiError::bad_request(msg),
        }
    }

    fn inject(&self, req: &Request) -> Result<Response, ApiError> {
        if !self.chaos.enabled() {
            // Refused before the body is even read: nothing changes.
            return Err(Self::chaos_error(ChaosError::Disabled));
        }
        let body: ChaosBody = parse_body(req, "chaos request")?;
        let expires = self
            .chaos
            .inject(&body.fault, body.ms, body.for_secs)
            .map_err(Self::chaos_error)?;
        log::warn!(
            "msg=\"chaos injected\" audit=1 corr_id={} fault={} ms={} for_secs={}",
            req.corr_id,
            body.fault,
            body.ms,
            body.for_secs.map_or("none".to_string(), |s| s.to_string())
        );
        Ok(json_response(
            200,
            &serde_json::json!({
                "fault": body.fault,
                "ms": body.ms,
                "expires_at": expires.map(crate::clock::rfc3339_ms),
            }),
        ))
    }

    fn clear_chaos(&self, req: &Request) -> Result<Response, ApiError> {
        let was = self.chaos.clear().map_err(Self::chaos_error)?;
        log::warn!(
            "msg=\"chaos cleared\" audit=1 corr_id={} fault={} was_ms={was}",
            req.corr_id,
            crate::ops::FAULT_STORAGE_LATENCY
        );
        Ok(json_response(
            200,
            &serde_json::json!({"cleared": was > 0, "was_ms": was}),
        ))
    }

    /// `POST /admin/backup`: validate, take the one backup slot, and answer from a `backup`
    /// thread when the copy is done (the worker is not held meanwhile).
    fn backup(&self, req: &Request, replier: Replier) -> Outcome {
        let template = Route::Backup.template();
        let respond = |e: ApiError| Outcome::Respond(error_response(&e).route(template));
        let body = match parse_body::<BackupBody>(req, "backup request") {
            // No file system takes a NUL inside a path: a bad request, not a storage failure.
            Ok(b) if b.to.as_os_str().as_encoded_bytes().contains(&0) => {
                return respond(ApiError::bad_request("\"to\" contains a NUL byte"))
            }
            Ok(b) => b,
            Err(e) => return respond(e),
        };
        match self.backup_root.load().as_deref() {
            Some(root) => {
                if let Err(why) = crate::ops::check_backup_root(&body.to, root) {
                    return respond(ApiError::forbidden(why));
                }
            }
            None if self.gate.enabled() => {
                return respond(ApiError::forbidden(
                    "backups are refused: set [ops] backup_root (the directory backups may be written under) and reload; it is required when [auth] is on",
                ))
            }
            None => {}
        }
        let (source, slot) = match self.backups.begin(&body.to) {
            Ok(x) => x,
            Err(BackupError::Busy) => {
                return Outcome::Respond(
                    error_response(&backup_error(&BackupError::Busy))
                        .header("Retry-After", "5".to_string())
                        .route(template),
                )
            }
            Err(e) => return respond(backup_error(&e)),
        };
        let replier = replier.with_route(template);
        let to = body.to;
        let corr_id = req.corr_id.clone();
        log::info!(
            "msg=\"backup started\" audit=1 corr_id={corr_id} to={:?}",
            to.display().to_string()
        );
        let spawned = std::thread::Builder::new()
            .name("backup".into())
            .spawn(move || {
                let result = Backups::run(&source, &to);
                // The slot is free before the answer goes out, so a client that starts the
                // next backup as soon as this one answers is not refused 429.
                drop(slot);
                match result {
                    Ok(done) => {
                        log::info!(
                            "msg=\"backup done\" audit=1 corr_id={corr_id} to={:?} lsn={} min_version={} elapsed_ms={}",
                            done.to,
                            done.lsn,
                            done.min_version,
                            done.elapsed_ms
                        );
                        let value = serde_json::to_value(&done).expect("serializes");
                        replier.send(json_response(200, &value));
                    }
                    Err(e) => {
                        log::error!(
                            "msg=\"backup failed\" audit=1 corr_id={corr_id} to={:?} error={:?}",
                            to.display().to_string(),
                            e.to_string()
                        );
                        replier.send(error_response(&backup_error(&e)));
                    }
                }
            });
        match spawned {
            Ok(_) => Outcome::Deferred,
            // The closure (and its Replier) was dropped: the client gets a 503.
            Err(e) => {
                log::error!("msg=\"cannot start a backup thread\" error={e:?}");
                Outcome::Deferred
            }
        }
    }
}

fn backup_error(e: &BackupError) -> ApiError {
    let message = e.to_string();
    match e {
        BackupError::Amnesia | BackupError::NotReady | BackupError::Failed(_) => {
            ApiError::unavailable(message)
        }
        BackupError::Busy => ApiError::busy(message),
        BackupError::BadTarget(_) => ApiError::bad_request(message),
        BackupError::NotEmpty(_) => ApiError::conflict(message),
        BackupError::NoSpace(_) => ApiError::new(Code::StorageFull, message),
    }
}

impl Handler for AdminApi {
    fn handle(&self, req: Request, replier: Replier) -> Outcome {
        if req.path == "*" {
            // `OPTIONS *` (the transport admits `*` for OPTIONS only).
            return Outcome::Respond(
                Response::new(204, Vec::new())
                    .header("Allow", "GET, HEAD, POST, DELETE, OPTIONS".to_string())
                    .route("*"),
            );
        }
        // Routes are matched on the decoded path; a decoded `/` inside a segment matches none.
        let decoded = req
            .segments()
            .ok()
            .filter(|segs| segs.iter().all(|s| !s.contains('/')))
            .map(|segs| format!("/{}", segs.join("/")));
        let Some(route) = decoded.as_deref().and_then(Route::parse) else {
            return Outcome::Respond(
                error_response(&ApiError::not_found(format!("no route {}", req.path)))
                    .route("unmatched"),
            );
        };
        let template = route.template();
        if req.method == Method::Options {
            // OPTIONS is answered on every route by this generic answer; `Allow` lists it
            // here and, like every 405's `Allow`, the route's own methods.
            return Outcome::Respond(
                Response::new(204, Vec::new())
                    .header("Allow", format!("{}, OPTIONS", route.allow()))
                    .route(template),
            );
        }
        if !route.allows(req.method) {
            let e = ApiError::new(
                Code::MethodNotAllowed,
                format!("{template} allows {}", route.allow()),
            );
            return Outcome::Respond(
                error_response(&e)
                    .header("Allow", route.allow().to_string())
                    .route(template),
            );
        }
        if route.is_admin() {
            if let Err(e) = self.gate.admin(&req) {
                replier.dismiss();
                return Outcome::Respond(error_response(&e).route(template));
            }
        }
        let read = matches!(req.method, Method::Get | Method::Head);
        let result = match route {
            Route::Healthz => Ok(json_response(200, &serde_json::json!({"status": "ok"}))),
            Route::Readyz => {
                let (ready, read, write, reasons) = self.readiness();
                let body = serde_json::json!({
                    "ready": ready, "read": read, "write": write, "reasons": reasons,
                });
                Ok(json_response(if ready { 200 } else { 503 }, &body))
            }
            Route::Metrics => {
                let m = crate::metrics::m();
                m.registry_ready.set(self.readiness().0 as i64);
                Ok(Response::new(200, m.render()).header(
                    "Content-Type",
                    "text/plain; version=0.0.4; charset=utf-8".to_string(),
                ))
            }
            Route::Config => Ok(Response::new(
                200,
                self.effective_config.load().as_bytes().to_vec(),
            )
            .header("Content-Type", "text/plain; charset=utf-8".to_string())),
            Route::Maintenance if read => Ok(json_response(200, &self.maintenance_json())),
            Route::Maintenance => self.set_maintenance(&req),
            Route::Chaos if read => Ok(json_response(200, &self.chaos.state_json())),
            Route::Chaos if req.method == Method::Post => self.inject(&req),
            Route::Chaos | Route::ChaosClear => self.clear_chaos(&req),
            Route::Backup => return self.backup(&req, replier),
        };
        replier.dismiss();
        let response = result.unwrap_or_else(|e| error_response(&e));
        Outcome::Respond(response.route(template))
    }

    fn observe(&self, route: &'static str, status: u16, elapsed: Duration, corr_id: &str) {
        super::observe(route, status, elapsed, corr_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;
    use std::time::Instant;

    fn request(method: Method, path: &str, body: &[u8]) -> Request {
        Request {
            method,
            path: path.to_string(),
            query: None,
            headers: Vec::new(),
            body: body.to_vec(),
            corr_id: "test".to_string(),
            started: Instant::now(),
        }
    }

    fn api(amnesia: bool) -> AdminApi {
        let plane = WritePlane::new();
        AdminApi {
            plane: plane.clone(),
            maintenance: Arc::new(Maintenance::new(false, None, plane, crate::bus::Bus::new())),
            chaos: Chaos::new(false, 100, true),
            backups: Backups::new(amnesia),
            effective_config: Arc::new(ArcSwap::from_pointee("x = 1\n".to_string())),
            gate: Arc::new(crate::auth::Gate::open("test")),
            backup_root: Arc::new(ArcSwap::from_pointee(None)),
        }
    }

    fn call(api: &AdminApi, method: Method, path: &str, body: &[u8]) -> Response {
        let (replier, rx) = Replier::detached("test");
        match api.handle(request(method, path, body), replier) {
            Outcome::Respond(r) => r,
            Outcome::Deferred => rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a deferred answer"),
            Outcome::Stream { .. } => panic!("no admin route streams"),
        }
    }

    #[test]
    fn wrong_methods_are_405_with_allow() {
        let api = api(false);
        let r = call(&api, Method::Post, "/readyz", b"");
        assert_eq!(r.status, 405);
        let r = call(&api, Method::Get, "/admin/backup", b"");
        assert_eq!(r.status, 405);
        assert!(r.headers.iter().any(|(n, v)| *n == "Allow" && v == "POST"));
        assert_eq!(call(&api, Method::Get, "/admin/nope", b"").status, 404);
    }

    #[test]
    fn a_second_backup_while_one_runs_is_429_and_amnesia_is_503() {
        let dir = tempfile::tempdir().unwrap();
        let opened = crate::log::open(
            &dir.path().join("data"),
            &crate::log::StorageOptions {
                segment_bytes: 1 << 20,
                checkpoints_kept: 2,
            },
            Arc::new(crate::log::OsIo),
        )
        .unwrap();
        let api = api(false);
        api.backups.set_source(crate::ops::BackupSource {
            syncer: opened.syncer.clone(),
            data_dir: dir.path().join("data"),
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::genesis(
                "r",
                crate::domain::signers::test_set(2, 1),
            ))),
            registry_id: "r".into(),
        });
        // Hold the slot as a running backup would.
        let (_, slot) = api.backups.begin(&dir.path().join("first")).unwrap();
        let body = format!(r#"{{"to": {:?}}}"#, dir.path().join("second").display());
        let r = call(&api, Method::Post, "/admin/backup", body.as_bytes());
        assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.headers.iter().any(|(n, _)| *n == "Retry-After"));
        assert!(!dir.path().join("second").exists(), "nothing was written");
        drop(slot);
        let r = call(&api, Method::Post, "/admin/backup", body.as_bytes());
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(dir.path().join("second").join("BACKUP.json").exists());
        // Not empty any more.
        let r = call(&api, Method::Post, "/admin/backup", body.as_bytes());
        assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
        // Inside the data dir, relative, or with ..: refused.
        for to in [
            dir.path().join("data").join("b").display().to_string(),
            "relative/dir".to_string(),
            format!("{}/x/../y", dir.path().display()),
        ] {
            let body = format!(r#"{{"to": {to:?}}}"#);
            let r = call(&api, Method::Post, "/admin/backup", body.as_bytes());
            assert_eq!(r.status, 400, "{to}: {}", String::from_utf8_lossy(&r.body));
        }
        drop(opened);

        let amnesic = self::api(true);
        let r = call(
            &amnesic,
            Method::Post,
            "/admin/backup",
            br#"{"to": "/tmp/x"}"#,
        );
        assert_eq!(r.status, 503);
        assert!(String::from_utf8_lossy(&r.body).contains("--amnesia"));
    }

    #[test]
    fn maintenance_shows_its_reason_in_readiness_and_keeps_reads_ready() {
        let api = api(false);
        for flag in [
            &api.plane.readiness.registry_bound,
            &api.plane.readiness.state_restored,
            &api.plane.readiness.metrics_served,
            &api.plane.readiness.writer_ready,
            &api.plane.readiness.storage_ready,
        ] {
            crate::ops::Readiness::set(flag, true);
        }
        assert_eq!(api.readiness(), (true, true, true, vec![]));
        let r = call(
            &api,
            Method::Post,
            "/admin/maintenance",
            br#"{"read_only": true, "reason": "disk swap"}"#,
        );
        assert_eq!(r.status, 200);
        let (ready, read, write, reasons) = api.readiness();
        assert!(ready && read && !write);
        assert_eq!(reasons, ["read-only (maintenance) mode: disk swap"]);
        let r = call(
            &api,
            Method::Post,
            "/admin/maintenance",
            br#"{"read_only": true, "reason": "a\nb"}"#,
        );
        assert_eq!(r.status, 400, "control characters are refused");
        call(
            &api,
            Method::Post,
            "/admin/maintenance",
            br#"{"read_only": false}"#,
        );
        assert_eq!(api.readiness(), (true, true, true, vec![]));
    }
}
