//! Routes of the registry listener (docs/API.md): the read plane and the write plane.
//!
//! Routing works on percent-decoded path segments (src/http/target.rs); a version segment must
//! be canonical decimal (`/registry/+1` and `/registry/01` are 400, not aliases of
//! `/registry/1`). `OPTIONS` answers every known route (and `*`) with `204` and `Allow`, plus
//! CORS preflight headers when `[http] cors_allow_origins` allows the origin (src/api/cors.rs).

use super::cors::Cors;
use super::replies::{self, reply};
use super::{error_response, json_response};
use crate::auth::{Action, Gate, PendingOps};
use crate::domain::descriptor::Kind;
use crate::domain::dsse;
use crate::domain::signers::Sig;
use crate::domain::state;
use crate::error::ApiError;
use crate::history::Read;
use crate::http::{Handler, Method, Outcome, Replier, Request, Response};
use crate::metrics::m;
use crate::ops::WritePlane;
use crate::roles::sse::{Since, SseHub};
use crate::roles::writer::WriteRequest;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use crossbeam_channel::{Sender, TrySendError};
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// Page sizes of listings: default and ceiling.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;
/// `/registry/log` pages stop adding records past this many bytes (docs/API.md).
const LOG_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Signatures in one `/approve` at most.
const APPROVE_SIGNATURES_MAX: usize = 64;

pub struct RegistryApi {
    /// The published snapshot (its signer history answers `/registry/signers`).
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub writer: Sender<WriteRequest>,
    /// Whether writes are accepted now (maintenance, poison, readiness, commit budget).
    pub plane: Arc<WritePlane>,
    /// The `/registry/stream` fan-out (docs/API.md: streams never pin a worker).
    pub stream: Option<Arc<SseHub>>,
    /// `[http] cors_allow_origins` (empty: CORS off).
    pub cors: Cors,
    /// The capability check (docs/ARCHITECTURE.md "Capabilities"): every route but `OPTIONS`.
    pub gate: Arc<Gate>,
    /// The writer's pending proposals' ops, for `kind` / `id_prefix` caveats on approve and
    /// commit.
    pub pending_ops: Arc<PendingOps>,
    /// The transparency log (None: `[log] enabled = false`; its routes answer 404).
    pub tlog: Option<Arc<crate::tlog::Tlog>>,
}

enum Route {
    Head,
    Version(String),
    Descriptor(String, String),
    Descriptors,
    Log,
    Signers,
    Stream,
    Propose,
    Approve,
    Commit,
    Proposal(String),
    Submit,
    Checkpoint,
    Vkey,
    /// The tile path after `tile/`.
    Tile(String),
    ProofInclusion,
    ProofConsistency,
}

impl Route {
    fn template(&self) -> &'static str {
        match self {
            Route::Head => "/registry/head",
            Route::Version(_) => "/registry/{version}",
            Route::Descriptor(..) => "/registry/descriptors/{kind}/{id}",
            Route::Descriptors => "/registry/descriptors",
            Route::Log => "/registry/log",
            Route::Signers => "/registry/signers",
            Route::Stream => "/registry/stream",
            Route::Propose => "/propose",
            Route::Approve => "/approve",
            Route::Commit => "/commit",
            Route::Proposal(_) => "/proposals/{id}",
            Route::Submit => "/submit",
            Route::Checkpoint => "/registry/checkpoint",
            Route::Vkey => "/registry/vkey",
            Route::Tile(_) => "/registry/tile/{path}",
            Route::ProofInclusion => "/registry/proof/inclusion",
            Route::ProofConsistency => "/registry/proof/consistency",
        }
    }

    fn is_write(&self) -> bool {
        matches!(
            self,
            Route::Propose | Route::Approve | Route::Commit | Route::Submit
        )
    }

    /// The capability a request on this route needs (`GET /proposals/{id}` is a read).
    fn action(&self) -> Action {
        match self {
            Route::Propose => Action::Propose,
            Route::Approve => Action::Approve,
            Route::Commit => Action::Commit,
            // The precheck of a one-request write; `submit` then checks all three scopes
            // against the envelope's proposal.
            Route::Submit => Action::Propose,
            _ => Action::Read,
        }
    }

    /// The route's own methods, as a 405's `Allow` value; the `OPTIONS` answer (which every
    /// route takes) adds `OPTIONS`.
    fn allow(&self) -> &'static str {
        if self.is_write() {
            "POST"
        } else {
            "GET, HEAD"
        }
    }

    /// The route of decoded path `segments` (walked once, nothing collected); `Ok(None)`: no
    /// such route; `Err`: a segment that does not decode.
    fn parse<'a>(
        mut segments: impl Iterator<Item = Result<Cow<'a, str>, String>>,
    ) -> Result<Option<Route>, String> {
        let mut next = || segments.next().transpose();
        let (first, second, third, fourth, fifth) = (next()?, next()?, next()?, next()?, next()?);
        // Tile paths have a variable number of segments (C2SP tlog-tiles): the rest, joined.
        if let ("registry", Some("tile"), Some(tile)) = (
            first.as_deref().unwrap_or(""),
            second.as_deref(),
            third.as_deref(),
        ) {
            let mut path = tile.to_string();
            for rest in [fourth, fifth].into_iter().flatten() {
                path.push('/');
                path.push_str(&rest);
            }
            for rest in segments {
                path.push('/');
                path.push_str(&rest?);
            }
            return Ok(Some(Route::Tile(path)));
        }
        let more = fifth.is_some();
        // As when the segments were collected: any undecodable segment refuses the path.
        for rest in segments {
            rest?;
        }
        let Some(first) = first else {
            return Ok(None);
        };
        let route = match (
            first.as_ref(),
            second.as_deref(),
            third.as_deref(),
            fourth.as_deref(),
        ) {
            ("registry", Some("head"), None, _) => Route::Head,
            ("registry", Some("checkpoint"), None, _) => Route::Checkpoint,
            ("registry", Some("vkey"), None, _) => Route::Vkey,
            ("registry", Some("proof"), Some("inclusion"), None) => Route::ProofInclusion,
            ("registry", Some("proof"), Some("consistency"), None) => Route::ProofConsistency,
            ("registry", Some("signers"), None, _) => Route::Signers,
            ("registry", Some("log"), None, _) => Route::Log,
            ("registry", Some("stream"), None, _) => Route::Stream,
            ("registry", Some("descriptors"), None, _) => Route::Descriptors,
            ("registry", Some("descriptors"), Some(kind), Some(id)) => {
                Route::Descriptor(kind.to_string(), id.to_string())
            }
            ("registry", Some(v), None, _) if !v.is_empty() => Route::Version(v.to_string()),
            ("propose", None, _, _) => Route::Propose,
            ("approve", None, _, _) => Route::Approve,
            ("commit", None, _, _) => Route::Commit,
            ("proposals", Some(id), None, _) => Route::Proposal(id.to_string()),
            ("submit", None, _, _) => Route::Submit,
            _ => return Ok(None),
        };
        Ok((!more).then_some(route))
    }
}

impl Handler for RegistryApi {
    fn handle(&self, req: Request, replier: Replier) -> Outcome {
        if req.path == "*" {
            // `OPTIONS *` (the transport admits `*` for OPTIONS only): the server's methods.
            replier.dismiss();
            return Outcome::Respond(
                Response::new(204, Vec::new())
                    .header("Allow", "GET, HEAD, POST, OPTIONS".to_string())
                    .route("*"),
            );
        }
        let route = match req.segments_iter().and_then(Route::parse) {
            Ok(route) => route,
            Err(e) => {
                replier.dismiss();
                return Outcome::Respond(
                    error_response(&ApiError::bad_request(e)).route("unmatched"),
                );
            }
        };
        let Some(route) = route else {
            replier.dismiss();
            return Outcome::Respond(
                error_response(&ApiError::not_found(format!("no route {}", req.path)))
                    .route("unmatched"),
            );
        };
        let template = route.template();
        let write = route.is_write();
        if req.method == Method::Options {
            replier.dismiss();
            let allow = format!("{}, OPTIONS", route.allow());
            let r = self.cors.options(&req, &allow, write);
            return Outcome::Respond(r.route(template));
        }
        // CORS headers go on every answer of the route: immediate, streamed or deferred.
        let extra = self.cors.headers(&req, write);
        let replier = replier.with_headers(extra.clone());
        match self.route(route, req, replier) {
            Outcome::Respond(mut r) => {
                r.headers.extend(extra);
                Outcome::Respond(r)
            }
            Outcome::Stream { mut head, take } => {
                head.headers.extend(extra);
                Outcome::Stream { head, take }
            }
            Outcome::Deferred => Outcome::Deferred,
        }
    }

    fn observe(&self, route: &'static str, status: u16, elapsed: Duration, corr_id: &str) {
        super::observe(route, status, elapsed, corr_id);
    }

    fn inflight(&self, now: usize) {
        m().inflight_requests.set(now as i64);
    }

    fn rejected_busy(&self) {
        m().rejected_total.with_label_values(&["busy"]).inc();
    }
}

impl RegistryApi {
    /// Answer a request on a known route (any method but OPTIONS). The caller adds the CORS
    /// headers: to an immediate answer or a stream head itself, to a deferred answer through
    /// the Replier it passed in.
    fn route(&self, route: Route, req: Request, replier: Replier) -> Outcome {
        let template = route.template();
        let want = if route.is_write() {
            Method::Post
        } else {
            Method::Get
        };
        let method_ok = req.method == want || (want == Method::Get && req.method == Method::Head);
        if !method_ok {
            replier.dismiss();
            let allow = route.allow();
            let e = ApiError::new(
                crate::error::Code::MethodNotAllowed,
                format!("{template} allows {allow}"),
            );
            return Outcome::Respond(
                error_response(&e)
                    .header("Allow", allow.to_string())
                    .route(template),
            );
        }
        // Before any work: a refused request reads no state and queues nothing. Approve and
        // commit are checked again against their proposal's ops once the body names it.
        if let Err(e) = self.gate.precheck(&req, route.action()) {
            replier.dismiss();
            return Outcome::Respond(error_response(&e).route(template));
        }
        let result = match route {
            Route::Head => Ok(self.head(&req)),
            Route::Version(v) => self.version(&v),
            Route::Descriptor(kind, id) => self.descriptor(&kind, &id),
            Route::Descriptors => self.descriptors(&req),
            Route::Log => self.log(&req),
            Route::Signers => self.signers(&req),
            Route::Checkpoint => super::tlog::checkpoint(self.tlog.as_deref()),
            Route::Vkey => super::tlog::vkey(self.tlog.as_deref()),
            Route::Tile(path) => super::tlog::tile(self.tlog.as_deref(), &path),
            Route::ProofInclusion => super::tlog::inclusion(self.tlog.as_deref(), &req),
            Route::ProofConsistency => super::tlog::consistency(self.tlog.as_deref(), &req),
            Route::Stream => match &self.stream {
                Some(hub) => return stream(hub, &req),
                None => Err(ApiError::unavailable("the stream is not running")),
            },
            Route::Propose | Route::Approve | Route::Commit | Route::Proposal(_) => {
                return self.write(route, req, replier)
            }
            Route::Submit => return self.submit(req, replier),
        };
        replier.dismiss();
        let response = result.unwrap_or_else(|e| error_response(&e));
        Outcome::Respond(response.route(template))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    proposal_id: String,
    signatures: Vec<SignatureBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureBody {
    keyid: String,
    sig: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    proposal_id: String,
}

/// The body of `POST /submit`: a DSSE envelope (docs/API.md).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeBody {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<SignatureBody>,
}

/// Where a stream resumes: `Last-Event-ID` (a reconnecting EventSource) or `?since=`. A value
/// that is not a version number is not refused: a 400 is fatal to an EventSource, which would
/// never reconnect; the stream starts from HEAD with an `event: reset` instead.
fn since(req: &Request) -> Since {
    let raw = req
        .header("last-event-id")
        .map(str::to_string)
        .or_else(|| req.query_param("since"));
    match raw {
        None => Since::Head,
        Some(s) => match s.trim().parse() {
            Ok(v) => Since::After(v),
            Err(_) => Since::Unknown,
        },
    }
}

/// `/registry/stream`: admit the subscriber, answer the head, hand the socket to the fan-out.
/// `HEAD` gets the same head and no body, and takes no subscriber slot.
fn stream(hub: &SseHub, req: &Request) -> Outcome {
    let route = "/registry/stream";
    let head = Response::new(200, Vec::new())
        .header("Content-Type", "text/event-stream".to_string())
        .header("Cache-Control", "no-cache".to_string())
        .header("X-Accel-Buffering", "no".to_string())
        .stream_head()
        .route(route);
    if req.method == Method::Head {
        return Outcome::Respond(head);
    }
    let admitted = match hub.subscribe(since(req)) {
        Ok(a) => a,
        Err(e) => return Outcome::Respond(error_response(&e).route(route)),
    };
    Outcome::Stream {
        head,
        take: Box::new(move |socket| admitted.attach(socket)),
    }
}

/// Decoded signatures of a request: (keyid, the signature of whichever algorithm its shape
/// names).
type Signatures = Vec<(String, Sig)>;

/// Decode a `/submit` body: the exact proposal bytes and the (keyid, signature) pairs. Checked
/// here: the JSON shape (unknown fields refused), the payloadType, base64 and signature length,
/// and the number of signatures (as `/approve`'s); the writer checks the rest.
fn envelope(body: &[u8]) -> Result<(Vec<u8>, Signatures), ApiError> {
    let env: EnvelopeBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("bad envelope: {e}")))?;
    if env.payload_type != dsse::PAYLOAD_TYPE {
        return Err(ApiError::bad_request(format!(
            "payloadType must be {:?}",
            dsse::PAYLOAD_TYPE
        )));
    }
    let bytes =
        dsse::unb64(&env.payload).ok_or_else(|| ApiError::bad_request("payload is not base64"))?;
    if env.signatures.len() > APPROVE_SIGNATURES_MAX {
        return Err(ApiError::too_large(format!(
            "at most {APPROVE_SIGNATURES_MAX} signatures per envelope"
        )));
    }
    let mut signatures = Vec::with_capacity(env.signatures.len());
    for (i, s) in env.signatures.into_iter().enumerate() {
        let sig = Sig::decode(&s.sig).ok_or_else(|| {
            ApiError::bad_request(format!(
                "signatures[{i}].sig is not base64 of 64 bytes (ed25519), of 3309 bytes \
                 (ml-dsa-65), or the two joined by \":\" (ed25519+ml-dsa-65)"
            ))
        })?;
        signatures.push((s.keyid, sig));
    }
    Ok((bytes, signatures))
}

fn check_proposal_id(id: &str) -> Result<(), ApiError> {
    if crate::domain::is_hash_hex(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "proposal_id must be 64 lower-case hex digits",
        ))
    }
}

fn parse_u64(name: &str, v: Option<&str>, default: u64) -> Result<u64, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::bad_request(format!("{name} must be a non-negative integer"))),
    }
}

fn page_limit(v: Option<&str>) -> Result<usize, ApiError> {
    let n = parse_u64("limit", v, PAGE_DEFAULT as u64)?;
    if n == 0 || n > PAGE_MAX as u64 {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {PAGE_MAX}"
        )));
    }
    Ok(n as usize)
}

/// The served JSON of `version` from `snap`'s history: `None` past the head; `410 expired`
/// (naming the oldest retained version) below a retention window, including a read that raced
/// the drop; `503` if the journal could not be read back intact.
fn read_version(snap: &Snapshot, version: u64) -> Result<Option<Vec<u8>>, ApiError> {
    let expired = |oldest| {
        ApiError::new(
            crate::error::Code::Expired,
            crate::history::expired_message(version, oldest),
        )
    };
    match snap.history.read(version) {
        Ok(Read::Bytes(bytes)) => Ok(Some(bytes)),
        Ok(Read::Missing) => Ok(None),
        Ok(Read::Expired { oldest }) => Err(expired(oldest)),
        Err(e) => Err(super::history_unreadable(version, &e)),
    }
}

impl RegistryApi {
    fn head(&self, req: &Request) -> Response {
        let snap = self.snapshot.load();
        // Built without `format!` (5 % of a head request in callgrind): `"V"`, or `"V-O"` when a
        // retention window has moved the oldest version O (the body's `oldest_version` changes
        // without a new version, so the validator must change with it).
        let mut etag = String::with_capacity(44);
        etag.push('"');
        crate::http::push_decimal(&mut etag, snap.version());
        let oldest = snap.oldest_version();
        if oldest > 0 {
            etag.push('-');
            crate::http::push_decimal(&mut etag, oldest);
        }
        etag.push('"');
        if req
            .header("if-none-match")
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        {
            return Response::new(304, Vec::new()).header("ETag", etag);
        }
        Response::json(200, snap.served_head())
            .header("ETag", etag)
            .header("Cache-Control", "no-cache".to_string())
    }

    fn version(&self, v: &str) -> Result<Response, ApiError> {
        let version: u64 = v
            .parse()
            .map_err(|_| ApiError::not_found(format!("no version {v:?}")))?;
        // `+1`, `01`: numbers to `u64::from_str`, but not the canonical name of a version.
        if version.to_string() != v {
            return Err(ApiError::bad_request(format!(
                "version {v:?} is not written in canonical decimal (no sign, no leading zero)"
            )));
        }
        let snap = self.snapshot.load();
        // The stored bytes are the served JSON: answered as read, never re-encoded.
        match read_version(&snap, version)? {
            Some(bytes) => Ok(Response::json(200, bytes)),
            None => Err(ApiError::not_found(format!(
                "no version {version} (HEAD is {})",
                snap.version()
            ))),
        }
    }

    fn descriptor(&self, kind: &str, id: &str) -> Result<Response, ApiError> {
        let kind = Kind::parse(kind).ok_or_else(|| {
            ApiError::bad_request(format!("kind {kind:?} is not node, service or region"))
        })?;
        if !crate::domain::descriptor::valid_id(id) {
            return Err(ApiError::bad_request(format!(
                "id {id:?} is not a valid id"
            )));
        }
        let snap = self.snapshot.load();
        let d = snap
            .descriptors
            .get(kind, id)
            .ok_or_else(|| ApiError::not_found(format!("no descriptor {}/{id}", kind.as_str())))?;
        Ok(Response::json(200, d.to_json()))
    }

    fn descriptors(&self, req: &Request) -> Result<Response, ApiError> {
        let kind = req
            .query_param("kind")
            .map(|k| {
                Kind::parse(&k).ok_or_else(|| {
                    ApiError::bad_request(format!("kind {k:?} is not node, service or region"))
                })
            })
            .transpose()?;
        let limit = page_limit(req.query_param("limit").as_deref())?;
        let snap = self.snapshot.load();
        // Without a kind the cursor is "kind/id"; with one it is the id alone. Decoded once by
        // the transport, so `node%2Fhx%3Ahost-22` and `node/hx:host-22` are the same cursor.
        let after = req.query_param("after");
        let (page, more) = match (kind, after.as_deref()) {
            (Some(k), a) => state::page(&snap.descriptors, Some(k), a, limit),
            (None, None) => state::page(&snap.descriptors, None, None, limit),
            (None, Some(cursor)) => {
                let (k, id) = cursor
                    .split_once('/')
                    .and_then(|(k, id)| Some((Kind::parse(k)?, id)))
                    .ok_or_else(|| {
                        ApiError::bad_request("after without kind must be a kind/id cursor")
                    })?;
                let (mut first, more_first) =
                    state::page(&snap.descriptors, Some(k), Some(id), limit);
                let mut more = more_first;
                // Continue into the following kinds.
                for next_kind in [Kind::Node, Kind::Region, Kind::Service] {
                    if next_kind <= k || first.len() == limit {
                        continue;
                    }
                    let (rest, m) = state::page(
                        &snap.descriptors,
                        Some(next_kind),
                        None,
                        limit - first.len(),
                    );
                    more = m;
                    first.extend(rest);
                }
                if first.len() == limit && !more {
                    more = snap
                        .descriptors
                        .any_after(first[limit - 1].kind(), first[limit - 1].id());
                }
                (first, more)
            }
        };
        let next = (more && !page.is_empty()).then(|| {
            let last = &page[page.len() - 1];
            if kind.is_some() {
                last.id().to_string()
            } else {
                format!("{}/{}", last.kind().as_str(), last.id())
            }
        });
        let items: Vec<serde_json::Value> = page.iter().map(|d| d.to_value()).collect();
        Ok(json_response(
            200,
            &serde_json::json!({"version": snap.version(), "descriptors": items, "next": next}),
        ))
    }

    /// `GET /registry/signers?version=V` (docs/FORMATS.md): the set in force for proposals on base V
    /// (default HEAD), with the version that put it in force and its digest.
    fn signers(&self, req: &Request) -> Result<Response, ApiError> {
        let snap = self.snapshot.load();
        let head = snap.version();
        let version = parse_u64("version", req.query_param("version").as_deref(), head)?;
        if version > head {
            return Err(ApiError::not_found(format!(
                "no version {version}; HEAD is {head}"
            )));
        }
        let (since, set) = snap.signers.in_force_at(version);
        // Served in the set's own key order; the canonical order is `SS`'s business, and the
        // digest is given beside.
        let form = set.to_json_form_as_listed();
        Ok(json_response(
            200,
            &serde_json::json!({
                "threshold": form.threshold,
                "keys": form.keys,
                "since_version": since,
                "signers_digest": set.digest(),
            }),
        ))
    }

    fn log(&self, req: &Request) -> Result<Response, ApiError> {
        let from = parse_u64("from", req.query_param("from").as_deref(), 0)?;
        let limit = page_limit(req.query_param("limit").as_deref())? as u64;
        let snap = self.snapshot.load();
        let head = snap.version();
        let end = from.saturating_add(limit).min(head.saturating_add(1));
        // The page is spliced from the stored records' bytes (each is one JSON object), so no
        // record is parsed or re-encoded; keys in the order serde_json writes them. It ends
        // early, at the first record that would take it past LOG_PAGE_BYTES_MAX (a page holds
        // at least one record), so one request never costs more than that much memory.
        let mut records = Vec::new();
        let mut v = from;
        while v < end {
            let bytes =
                read_version(&snap, v)?.expect("every version up to the head is in the history");
            if v > from && records.len() + bytes.len() + 1 > LOG_PAGE_BYTES_MAX {
                break;
            }
            if v > from {
                records.push(b',');
            }
            records.extend_from_slice(&bytes);
            v += 1;
        }
        let next = (v <= head).then_some(v);
        let mut body = format!(
            "{{\"head\":{head},\"next\":{},\"records\":[",
            next.map_or("null".to_string(), |n| n.to_string())
        )
        .into_bytes();
        body.extend_from_slice(&records);
        body.extend_from_slice(b"]}");
        Ok(Response::json(200, body))
    }

    /// `POST /submit`: propose, approve and commit in one request (docs/API.md). The envelope
    /// is decoded here; the writer checks everything else as one step and answers once durable.
    fn submit(&self, req: Request, replier: Replier) -> Outcome {
        let template = Route::Submit.template();
        let replier = replier.with_route(template);
        let respond = |e: ApiError| Outcome::Respond(error_response(&e).route(template));
        if let Some(e) = self.plane.refuse_write(true) {
            m().rejected_total.with_label_values(&["deps"]).inc();
            return respond(e);
        }
        let (bytes, signatures) = match envelope(&req.body) {
            Ok(decoded) => decoded,
            Err(e) => return respond(e),
        };
        // Capabilities: `/submit` needs every scope the three steps need — `propose`, `approve`
        // and `commit` — each against every op of the envelope's proposal (docs/API.md
        // "Tokens"); refused before the writer is asked.
        if let Err(e) = self.gate.proposal(
            &req,
            &[Action::Propose, Action::Approve, Action::Commit],
            &bytes,
        ) {
            return respond(e);
        }
        let request = WriteRequest::Submit {
            bytes,
            signatures,
            reply: reply(replier, replies::submitted),
        };
        self.send_to_writer(request)
    }

    fn write(&self, route: Route, req: Request, replier: Replier) -> Outcome {
        let template = route.template();
        let replier = replier.with_route(template);
        let respond = |e: ApiError| Outcome::Respond(error_response(&e).route(template));
        if route.is_write() {
            if let Some(e) = self.plane.refuse_write(matches!(route, Route::Commit)) {
                m().rejected_total.with_label_values(&["deps"]).inc();
                return respond(e);
            }
        }
        let request = match route {
            Route::Propose => {
                if let Err(e) = self.gate.propose(&req, &req.body) {
                    return respond(e);
                }
                WriteRequest::Propose {
                    bytes: req.body,
                    reply: reply(replier, replies::accepted),
                }
            }
            Route::Proposal(id) => {
                if let Err(e) = check_proposal_id(&id) {
                    return respond(e);
                }
                WriteRequest::GetProposal {
                    id,
                    reply: reply(replier, replies::proposal),
                }
            }
            Route::Approve => {
                let body: ApproveBody = match serde_json::from_slice(&req.body) {
                    Ok(b) => b,
                    Err(e) => return respond(ApiError::bad_request(format!("bad approval: {e}"))),
                };
                if let Err(e) = check_proposal_id(&body.proposal_id) {
                    return respond(e);
                }
                if let Err(e) = self
                    .gate
                    .approve(&req, &body.proposal_id, &self.pending_ops)
                {
                    return respond(e);
                }
                if body.signatures.len() > APPROVE_SIGNATURES_MAX {
                    return respond(ApiError::too_large(format!(
                        "at most {APPROVE_SIGNATURES_MAX} signatures per approval"
                    )));
                }
                let mut signatures = Vec::with_capacity(body.signatures.len());
                for (i, s) in body.signatures.into_iter().enumerate() {
                    // The shape tells the algorithm; whether it is the keyid's is the writer's
                    // check (a mismatch does not verify: 403).
                    let Some(sig) = Sig::decode(&s.sig) else {
                        return respond(ApiError::bad_request(format!(
                            "signatures[{i}].sig is not base64 of 64 bytes (ed25519), of 3309 \
                             bytes (ml-dsa-65), or the two joined by \":\" (ed25519+ml-dsa-65)"
                        )));
                    };
                    signatures.push((s.keyid, sig));
                }
                WriteRequest::Approve {
                    proposal_id: body.proposal_id,
                    signatures,
                    reply: reply(replier, replies::approved),
                }
            }
            Route::Commit => {
                let body: CommitBody = match serde_json::from_slice(&req.body) {
                    Ok(b) => b,
                    Err(e) => return respond(ApiError::bad_request(format!("bad commit: {e}"))),
                };
                if let Err(e) = check_proposal_id(&body.proposal_id) {
                    return respond(e);
                }
                if let Err(e) = self.gate.commit(&req, &body.proposal_id, &self.pending_ops) {
                    return respond(e);
                }
                WriteRequest::Commit {
                    proposal_id: body.proposal_id,
                    reply: reply(replier, replies::committed),
                }
            }
            _ => unreachable!("write() is only called for write-plane routes"),
        };
        self.send_to_writer(request)
    }

    /// Queue `request` for the writer; a full queue is `429 busy`, a stopped writer `503`.
    fn send_to_writer(&self, request: WriteRequest) -> Outcome {
        match self.writer.try_send(request) {
            Ok(()) => Outcome::Deferred,
            Err(TrySendError::Full(r)) => {
                m().rejected_total.with_label_values(&["busy"]).inc();
                r.refuse(ApiError::busy("the writer queue is full").retry_after(1));
                Outcome::Deferred
            }
            Err(TrySendError::Disconnected(r)) => {
                m().rejected_total.with_label_values(&["deps"]).inc();
                r.refuse(ApiError::unavailable("the writer is not running"));
                Outcome::Deferred
            }
        }
    }
}
