//! Configuration: raw TOML → validated [`Config`]. Every limit the service enforces is here.
//!
//! Unknown keys are rejected (the error names the key and the file). Environment variables
//! override the file (`REGISTRY_ADDR`, `METRICS_ADDR`, `RON_BUS_SOCK`); flags override both.

use crate::domain::signers::SignerSet;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file as written, before validation. Field names are the docs/OPERATIONS.md keys.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub registry_id: String,
    #[serde(default = "default_registry_addr")]
    pub registry_addr: String,
    #[serde(default = "default_metrics_addr")]
    pub metrics_addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uds_path: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// HTTP worker threads; 0 or absent = one per core.
    #[serde(default)]
    pub workers: usize,
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Log filter in `RUST_LOG` syntax; `RUST_LOG` overrides it. Changeable by SIGHUP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Required, except on a follower (`[follow]`), which learns its signer set from the log.
    #[serde(default, skip_serializing_if = "RawSigners::is_absent")]
    pub signers: RawSigners,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub proposals: ProposalsConfig,
    #[serde(default)]
    pub sse: SseConfig,
    #[serde(default)]
    pub bus: BusConfig,
    #[serde(default)]
    pub chaos: ChaosConfig,
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    /// TLS on the registry and metrics listeners (not the Unix socket). Absent: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Capabilities (docs/OPERATIONS.md "Securing a registry"). Absent: the server runs open
    /// and says so at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// Operator routes' limits.
    #[serde(default, skip_serializing_if = "OpsConfig::is_unset")]
    pub ops: OpsConfig,
    /// `[follow]`: run as a verifying follower of these upstreams (docs/OPERATIONS.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<FollowConfig>,
    /// `[log]`: the transparency log (SPEC §12, docs/OPERATIONS.md "Transparency log").
    #[serde(default)]
    pub log: LogConfig,
}

/// `[log]`: the transparency log's origin and key.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Whether the tree is kept and the checkpoint, tile and proof routes answer (false: they
    /// answer 404; for measuring the tree's cost, docs/PERFORMANCE.md). Unset: on, except with a
    /// retention window (`[storage] retain_versions`), which the tree cannot follow: it keeps a
    /// stored hash per version for proofs over the whole history. Resolved at load, so a loaded
    /// config always has `Some`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The checkpoint origin line and log key name; absent: `svc-registry/<registry_id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The log's private key in Go note's `PRIVATE+KEY+…` form. Absent: `tlog.key` in the data
    /// directory, generated (mode 0600) on first start; with --amnesia, generated in memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            enabled: None,
            origin: None,
            key_file: None,
        }
    }
}

impl LogConfig {
    /// Whether the transparency log runs (see `enabled`).
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    /// The origin in force for a registry named `registry_id`.
    pub fn origin_for(&self, registry_id: &str) -> String {
        self.origin
            .clone()
            .unwrap_or_else(|| format!("svc-registry/{registry_id}"))
    }
}

/// `[auth]`: where the root keys are and which actions need a token.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The root keys file (relative to the config file's directory), mode 0600 or stricter.
    pub keys_file: PathBuf,
    /// Actions that need a token: `propose`, `approve`, `commit`, `admin`, `read`.
    #[serde(default = "default_auth_require")]
    pub require: Vec<String>,
    /// DEV ONLY (configs/dev.toml): accept a keys file that group and others may read, because
    /// git checks files out 0644 and the committed dev keys are public anyway. A file anyone but
    /// its owner may write is still refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dev_insecure_permissions: bool,
}

/// The default of `[auth] require`: every write and admin action; reads stay open.
pub fn default_auth_require() -> Vec<String> {
    ["propose", "approve", "commit", "admin"]
        .map(String::from)
        .to_vec()
}

/// `[ops]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// `POST /admin/backup` writes only into directories under this one (absolute, or relative
    /// to the config file's directory). Unset: with `[auth]` the route is refused; without it
    /// any absolute target is taken, as before capabilities existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_root: Option<PathBuf>,
}

impl OpsConfig {
    fn is_unset(&self) -> bool {
        *self == OpsConfig::default()
    }
}

/// `[follow]` as written. `--follow URL` (repeatable) replaces `upstreams`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FollowConfig {
    /// `http://host:port` or `https://host:port`, tried in order.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// The trust anchor: the registry's genesis hash (64 lower-case hex digits).
    pub genesis_hash: String,
    /// `/readyz` is 200 while the follower is at most this many versions behind the newest
    /// upstream head it has seen.
    #[serde(default = "default_max_lag_versions")]
    pub max_lag_versions: u64,
    /// Every upstream request (connect, each read) gives up after this long; a stream is
    /// considered stalled after it passes without an event or heartbeat. Bounds failover.
    #[serde(default = "default_follow_timeout_ms")]
    pub timeout_ms: u64,
    /// The CAs (PEM) that `https://` upstreams are checked against; absent: the system's.
    /// Relative to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cacert: Option<PathBuf>,
}

fn default_max_lag_versions() -> u64 {
    16
}

fn default_follow_timeout_ms() -> u64 {
    5000
}

/// The validated follow mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Follow {
    pub upstreams: Vec<String>,
    pub genesis_hash: String,
    pub max_lag_versions: u64,
    pub timeout: Duration,
    /// `[follow] cacert`, resolved.
    pub cacert: Option<PathBuf>,
}

/// `[tls]`: PEM files, relative paths resolved against the config file's directory. The files
/// are re-read on SIGHUP (new handshakes use them; established sessions keep theirs).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Mutual TLS: clients must present a certificate issued by a CA in this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigners {
    pub threshold: usize,
    #[serde(default)]
    pub keys: Vec<RawKey>,
}

impl RawSigners {
    /// No `[signers]` table in the file (a follower's config).
    pub fn is_absent(&self) -> bool {
        self.threshold == 0 && self.keys.is_empty()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub keyid: String,
    /// docs/FORMATS.md's `alg`; absent means `ed25519` (configs from before §8 have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

/// Transport bounds (both listeners). Beyond the basic keys: they are this product's answer to
/// hostile clients, documented in docs/OPERATIONS.md.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub head_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub idle_timeout_secs: u64,
    pub write_timeout_ms: u64,
    /// SIGTERM: how long in-flight work may take before the process exits anyway.
    pub drain_timeout_secs: u64,
    /// Origins whose pages may read the registry listener's answers (CORS): exact origins
    /// (`scheme://host[:port]`), or `"*"` for every origin on read routes only. Empty: off.
    pub cors_allow_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            head_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_secs: 60,
            write_timeout_ms: 10_000,
            drain_timeout_secs: 5,
            cors_allow_origins: Vec::new(),
        }
    }
}

/// `"*"` or a serialized origin as browsers send it: `http(s)://host[:port]`, nothing after.
fn valid_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some(rest) = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
        _ => (rest, None),
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    Batch,
    Always,
    Never,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub fsync: FsyncMode,
    pub fsync_batch_max_delay_ms: u64,
    pub checkpoint_every_commits: u64,
    pub checkpoint_interval_secs: u64,
    pub segment_bytes: u64,
    /// How many checkpoints to keep.
    pub checkpoints_kept: usize,
    /// `/commit` is shed (503, `Retry-After: 1`) while storage is slower than this: a log sync
    /// running or recently finished over it, or injected latency above it. 0 = no budget.
    /// Changeable by SIGHUP.
    pub commit_budget_ms: u64,
    /// Keep the records of only the newest N versions (SPEC §14); 0 = keep every record (an
    /// authority's log is the audit trail). Older whole sealed segments are dropped once a
    /// durable checkpoint covers them; state at HEAD is never affected.
    pub retain_versions: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            fsync: FsyncMode::Batch,
            fsync_batch_max_delay_ms: 0,
            checkpoint_every_commits: 10_000,
            checkpoint_interval_secs: 60,
            segment_bytes: 64 * 1024 * 1024,
            checkpoints_kept: 3,
            commit_budget_ms: 0,
            retain_versions: 0,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProposalsConfig {
    pub ttl_secs: u64,
    pub max_pending: usize,
    pub max_ops: usize,
    /// Bytes of one descriptor body at most.
    pub max_descriptor_bytes: usize,
    /// How long a commit whose base_version is ahead of HEAD waits for HEAD to reach it before
    /// its 409 (0: refused at once).
    pub commit_wait_ms: u64,
}

impl Default for ProposalsConfig {
    fn default() -> Self {
        ProposalsConfig {
            ttl_secs: 3600,
            max_pending: 1024,
            max_ops: 256,
            max_descriptor_bytes: 64 * 1024,
            commit_wait_ms: 50,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SseConfig {
    pub max_subscribers: usize,
    pub buffer_events: usize,
    pub heartbeat_secs: u64,
}

impl Default for SseConfig {
    fn default() -> Self {
        SseConfig {
            max_subscribers: 1024,
            buffer_events: 256,
            heartbeat_secs: 15,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosConfig {
    /// The admin routes `/admin/chaos` work only when this is true. Changeable by SIGHUP
    /// (switching it off clears any injected fault).
    pub enabled: bool,
    /// The largest storage latency an injection may ask for.
    pub max_latency_ms: u64,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            enabled: false,
            max_latency_ms: 5_000,
        }
    }
}

/// Maintenance (read-only) mode from the file. `--read-only` and `POST /admin/maintenance`
/// switch it too; a SIGHUP applies this table only when it differs from the previous file's,
/// so a reload for another reason never undoes a switch made through the admin route.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    pub read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Bytes of a maintenance reason at most (it is shown in /readyz and logged).
pub const MAINTENANCE_REASON_BYTES_MAX: usize = 256;
/// Ceiling of `proposals.commit_wait_ms`: a held commit holds its client's request open.
const MAX_COMMIT_WAIT_MS: u64 = 10_000;
/// Ceiling of `chaos.max_latency_ms`.
const CHAOS_LATENCY_MS_CEILING: u64 = 60_000;

/// Check a maintenance reason: at most [`MAINTENANCE_REASON_BYTES_MAX`] bytes, no control
/// characters.
pub fn check_maintenance_reason(reason: &str) -> Result<(), String> {
    if reason.len() > MAINTENANCE_REASON_BYTES_MAX {
        return Err(format!(
            "reason is {} bytes; at most {MAINTENANCE_REASON_BYTES_MAX}",
            reason.len()
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err("reason must not contain control characters".to_string());
    }
    Ok(())
}

fn default_registry_addr() -> String {
    "127.0.0.1:9444".to_string()
}
fn default_metrics_addr() -> String {
    "127.0.0.1:9909".to_string()
}
fn default_max_inflight() -> usize {
    1024
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}

/// Command-line switches that shape the config (docs/OPERATIONS.md).
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub amnesia: bool,
    pub uds_only: bool,
    pub read_only: bool,
    /// `--follow URL`, repeatable: replaces `[follow] upstreams`.
    pub follow: Vec<String>,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub raw: RawConfig,
    /// The bootstrap signer set (`[signers]`); `None` only on a follower without one.
    pub signers: Option<SignerSet>,
    /// Follow mode (`[follow]` and `--follow`), validated.
    pub follow: Option<Follow>,
    pub workers: usize,
    pub flags: Flags,
}

/// A configuration that cannot be used, with a message naming the file and the problem.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The directory relative paths in the config file at `path` are resolved from: the file's own
/// directory, made absolute against the working directory at load time.
fn config_dir(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

/// `p` if absolute, else `base/p`.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Upper bounds that keep a typo from turning a limit into no limit.
const MAX_WORKERS: usize = 256;
const MAX_BODY_BYTES_CEILING: usize = 64 * 1024 * 1024;

impl Config {
    /// Read, apply the environment, and validate.
    pub fn load(path: &Path, flags: Flags) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Self::from_toml(&text, path, flags, &|name| std::env::var(name).ok())
    }

    /// Parse `text` (from `path`, for messages) with `env` as the environment.
    pub fn from_toml(
        text: &str,
        path: &Path,
        flags: Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| {
            ConfigError(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        // Paths in the file mean the same thing whatever directory the process starts in:
        // otherwise a relative data_dir silently opens (or creates) another, empty registry.
        // The environment's paths below are the caller's own and stay as given.
        let base = config_dir(path);
        raw.data_dir = resolve(&base, &raw.data_dir);
        raw.uds_path = raw.uds_path.map(|p| resolve(&base, &p));
        raw.bus.socket = raw.bus.socket.map(|p| resolve(&base, &p));
        raw.log.key_file = raw.log.key_file.map(|p| resolve(&base, &p));
        if let Some(follow) = &mut raw.follow {
            follow.cacert = follow.cacert.take().map(|p| resolve(&base, &p));
        }
        if let Some(tls) = &mut raw.tls {
            // An empty path stays empty, for `validate` to refuse by name.
            for file in [&mut tls.cert_file, &mut tls.key_file]
                .into_iter()
                .chain(tls.client_ca_file.as_mut())
                .filter(|f| !f.as_os_str().is_empty())
            {
                *file = resolve(&base, file);
            }
        }
        if let Some(auth) = &mut raw.auth {
            if !auth.keys_file.as_os_str().is_empty() {
                auth.keys_file = resolve(&base, &auth.keys_file);
            }
        }
        raw.ops.backup_root = raw.ops.backup_root.map(|p| resolve(&base, &p));
        if let Some(v) = env("REGISTRY_ADDR") {
            raw.registry_addr = v;
        }
        if let Some(v) = env("METRICS_ADDR") {
            raw.metrics_addr = v;
        }
        if let Some(v) = env("RON_BUS_SOCK") {
            raw.bus.socket = Some(PathBuf::from(v));
        }
        Self::validate(raw, path, flags)
    }

    pub fn validate(mut raw: RawConfig, path: &Path, flags: Flags) -> Result<Config, ConfigError> {
        let fail = |msg: String| ConfigError(format!("{}: {msg}", path.display()));
        let id_ok = !raw.registry_id.is_empty()
            && raw.registry_id.len() <= 128
            && raw
                .registry_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !id_ok {
            return Err(fail(format!(
                "registry_id {:?} must match [A-Za-z0-9._:-]{{1,128}}",
                raw.registry_id
            )));
        }
        for (key, addr) in [
            ("registry_addr", &raw.registry_addr),
            ("metrics_addr", &raw.metrics_addr),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(fail(format!("{key} {addr:?} is not an IP:port address")));
            }
        }
        let origin = raw.log.origin_for(&raw.registry_id);
        if !crate::tlog::note::valid_name(&origin) {
            return Err(fail(format!(
                "[log] origin {origin:?} must be non-empty, without '+' or white space"
            )));
        }
        if flags.uds_only && raw.uds_path.is_none() {
            return Err(fail("--uds-only needs uds_path to be set".to_string()));
        }
        let workers = match raw.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n if n <= MAX_WORKERS => n,
            n => return Err(fail(format!("workers = {n} is above {MAX_WORKERS}"))),
        };
        let positive: [(&str, u64); 14] = [
            ("max_inflight", raw.max_inflight as u64),
            ("max_body_bytes", raw.max_body_bytes as u64),
            ("http.max_connections", raw.http.max_connections as u64),
            ("http.max_header_bytes", raw.http.max_header_bytes as u64),
            ("http.max_headers", raw.http.max_headers as u64),
            ("http.head_timeout_ms", raw.http.head_timeout_ms),
            ("http.write_timeout_ms", raw.http.write_timeout_ms),
            ("http.idle_timeout_secs", raw.http.idle_timeout_secs),
            ("proposals.ttl_secs", raw.proposals.ttl_secs),
            ("proposals.max_pending", raw.proposals.max_pending as u64),
            ("proposals.max_ops", raw.proposals.max_ops as u64),
            ("sse.max_subscribers", raw.sse.max_subscribers as u64),
            ("sse.buffer_events", raw.sse.buffer_events as u64),
            ("sse.heartbeat_secs", raw.sse.heartbeat_secs),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(fail(format!("{key} must be greater than 0")));
            }
        }
        if raw.max_body_bytes > MAX_BODY_BYTES_CEILING {
            return Err(fail(format!(
                "max_body_bytes = {} is above {MAX_BODY_BYTES_CEILING}",
                raw.max_body_bytes
            )));
        }
        if let Some(bad) = raw
            .http
            .cors_allow_origins
            .iter()
            .find(|o| !valid_origin(o))
        {
            return Err(fail(format!(
                "http.cors_allow_origins: {bad:?} is neither \"*\" nor an origin like \"https://host:port\" (no path, no trailing slash)"
            )));
        }
        if raw.http.max_header_bytes < 1024 {
            return Err(fail(
                "http.max_header_bytes must be at least 1024".to_string(),
            ));
        }
        if raw.storage.segment_bytes < 64 * 1024 || raw.storage.segment_bytes > (1 << 40) {
            return Err(fail(format!(
                "storage.segment_bytes = {} must be between 65536 and 2^40",
                raw.storage.segment_bytes
            )));
        }
        // A record holds the proposal base64-encoded (4/3) plus signatures and framing.
        if raw.storage.segment_bytes < raw.max_body_bytes as u64 * 2 + 65536 {
            return Err(fail(format!(
                "storage.segment_bytes = {} must be at least 2 x max_body_bytes + 65536 = {} \
                 (one record holds a whole proposal, base64-encoded)",
                raw.storage.segment_bytes,
                raw.max_body_bytes as u64 * 2 + 65536
            )));
        }
        if raw.storage.checkpoints_kept == 0 {
            return Err(fail(
                "storage.checkpoints_kept must be at least 1".to_string(),
            ));
        }
        // Records are dropped only once a checkpoint covers them, and checkpoints come every
        // `checkpoint_every_commits` versions: a smaller window could never be honoured (the
        // node would keep up to that many versions anyway), so it is refused rather than
        // silently meaning something else.
        if raw.storage.retain_versions > 0
            && raw.storage.retain_versions < raw.storage.checkpoint_every_commits
        {
            return Err(fail(format!(
                "storage.retain_versions = {} is smaller than storage.checkpoint_every_commits = {}: \
                 old records are dropped only once a checkpoint covers them, so the window must \
                 hold at least one checkpoint interval (raise retain_versions or lower \
                 checkpoint_every_commits)",
                raw.storage.retain_versions, raw.storage.checkpoint_every_commits
            )));
        }
        // The transparency log keeps every version's stored hashes (on disk, or in memory with
        // --amnesia) so that it can prove inclusion from genesis: a windowed node cannot keep it
        // and stay small, and its start-up check needs the dropped records. Proofs come from the
        // nodes that keep the full history (docs/OPERATIONS.md, "Retention window").
        match (raw.log.enabled, raw.storage.retain_versions > 0) {
            (Some(true), true) => {
                return Err(fail(format!(
                    "[log] enabled = true cannot be combined with storage.retain_versions = {}: \
                     the transparency log proves inclusion from genesis and keeps a hash per \
                     version, which a retention window drops; serve proofs from a node with the \
                     full history",
                    raw.storage.retain_versions
                )));
            }
            (None, windowed) => raw.log.enabled = Some(!windowed),
            (Some(_), _) => {}
        }
        if raw.proposals.commit_wait_ms > MAX_COMMIT_WAIT_MS {
            return Err(fail(format!(
                "proposals.commit_wait_ms = {} is above {MAX_COMMIT_WAIT_MS}",
                raw.proposals.commit_wait_ms
            )));
        }
        if raw.proposals.max_descriptor_bytes == 0
            || raw.proposals.max_descriptor_bytes > raw.max_body_bytes
        {
            return Err(fail(
                "proposals.max_descriptor_bytes must be between 1 and max_body_bytes".to_string(),
            ));
        }
        if raw.chaos.max_latency_ms == 0 || raw.chaos.max_latency_ms > CHAOS_LATENCY_MS_CEILING {
            return Err(fail(format!(
                "chaos.max_latency_ms = {} must be between 1 and {CHAOS_LATENCY_MS_CEILING}",
                raw.chaos.max_latency_ms
            )));
        }
        if raw.storage.commit_budget_ms != 0 && raw.storage.commit_budget_ms < 10 {
            return Err(fail(format!(
                "storage.commit_budget_ms = {} must be 0 (no budget) or at least 10",
                raw.storage.commit_budget_ms
            )));
        }
        if let Some(tls) = &raw.tls {
            let files = [&tls.cert_file, &tls.key_file];
            if files
                .into_iter()
                .chain(tls.client_ca_file.as_ref())
                .any(|f| f.as_os_str().is_empty())
            {
                return Err(fail("tls: a file path is empty".to_string()));
            }
        }
        if let Some(auth) = &raw.auth {
            if auth.keys_file.as_os_str().is_empty() {
                return Err(fail("auth.keys_file is empty".to_string()));
            }
            for word in &auth.require {
                if crate::auth::Action::parse(word).is_none() {
                    return Err(fail(format!(
                        "auth.require: {word:?} is not one of propose, approve, commit, admin, read"
                    )));
                }
            }
        }
        if raw
            .ops
            .backup_root
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(fail("ops.backup_root is empty".to_string()));
        }
        if let Some(reason) = &raw.maintenance.reason {
            check_maintenance_reason(reason).map_err(|e| fail(format!("maintenance.{e}")))?;
        }
        let follow = validate_follow(raw.follow.as_ref(), &flags).map_err(fail)?;
        // A follower learns its signer set from the log (docs/OPERATIONS.md): `[signers]` is
        // optional there, and checked if given.
        let signers = if follow.is_some() && raw.signers.is_absent() {
            None
        } else {
            Some(parse_signers(&raw.signers).map_err(|e| {
                if raw.signers.is_absent() {
                    "[signers] is missing: an authority needs its bootstrap signer set (only a \
                     follower, with [follow], runs without one)"
                        .to_string()
                } else {
                    e
                }
            }).map_err(fail)?)
        };
        Ok(Config {
            path: path.to_path_buf(),
            raw,
            signers,
            follow,
            workers,
            flags,
        })
    }

    /// The effective config as TOML. There are no secret fields (signer keys are public), so
    /// nothing needs redacting; the function exists so that a secret added later is redacted
    /// here, in one place.
    pub fn to_toml(&self) -> String {
        let mut raw = self.raw.clone();
        raw.workers = self.workers;
        toml::to_string(&raw).expect("a validated config serializes")
    }

    pub fn http_limits(&self) -> crate::http::Limits {
        let h = &self.raw.http;
        crate::http::Limits {
            workers: self.workers,
            max_connections: h.max_connections,
            max_inflight: self.raw.max_inflight,
            max_header_bytes: h.max_header_bytes,
            max_headers: h.max_headers,
            max_body_bytes: self.raw.max_body_bytes,
            head_timeout: Duration::from_millis(h.head_timeout_ms),
            body_timeout: Duration::from_millis(h.body_timeout_ms.max(1)),
            idle_timeout: Duration::from_secs(h.idle_timeout_secs),
            write_timeout: Duration::from_millis(h.write_timeout_ms),
        }
    }

    pub fn proposal_limits(&self) -> crate::domain::proposal::ProposalLimits {
        crate::domain::proposal::ProposalLimits {
            max_ops: self.raw.proposals.max_ops,
            max_descriptor_bytes: self.raw.proposals.max_descriptor_bytes,
        }
    }
}

/// Keys a SIGHUP applies to the running process (a table name covers all its keys). Every
/// other key needs a restart: a reload reports it and keeps the running value, so nothing is
/// half-applied (a key added later is restart-only until it is listed here).
pub const LIVE_KEYS: &[&str] = &[
    "log_level",
    "signers",
    "proposals",
    "sse",
    "chaos",
    "maintenance",
    "storage.commit_budget_ms",
];

/// Keys a SIGHUP applies that have no default value, so a config may lack them entirely
/// (kept apart from [`LIVE_KEYS`], every one of which a default config holds).
pub const LIVE_OPTIONAL_KEYS: &[&str] = &["ops.backup_root"];

/// Tables whose keys a SIGHUP applies only while the table is present both before and after:
/// `[tls]` certificate files are re-read by every reload, but adding or removing the table
/// would switch a listener between plaintext and TLS, which needs a restart.
pub const LIVE_WHILE_PRESENT: &[&str] = &["tls", "auth"];

/// Whether `key` (dotted path) is applied by a SIGHUP.
pub fn is_live_key(key: &str) -> bool {
    LIVE_KEYS.iter().chain(LIVE_OPTIONAL_KEYS).any(|live| {
        key == *live
            || key
                .strip_prefix(live)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// What a SIGHUP does with a new file: the config to run with from now on and what changed.
#[derive(Debug)]
pub struct ReloadPlan {
    /// The new file's live settings over the running restart-only settings.
    pub effective: Config,
    /// Changed keys that are applied now (dotted paths, sorted).
    pub applied: Vec<String>,
    /// Changed keys that need a restart; their running values stay (dotted paths, sorted).
    pub restart_needed: Vec<String>,
}

impl Config {
    /// Plan a reload from the running config `self` to the freshly loaded `new`. Refused (the
    /// running config stays) if `registry_id` differs — a file of another registry must never
    /// lend this one its signer set — or if the new live settings do not fit the running
    /// restart-only ones (e.g. `proposals.max_descriptor_bytes` above the running
    /// `max_body_bytes`).
    pub fn plan_reload(&self, new: Config) -> Result<ReloadPlan, ConfigError> {
        let fail = |msg: String| ConfigError(format!("{}: {msg}", new.path.display()));
        if new.raw.registry_id != self.raw.registry_id {
            return Err(fail(format!(
                "registry_id {:?} differs from the running {:?}; it names the registry in every \
                 hash and cannot change (is this another registry's file?)",
                new.raw.registry_id, self.raw.registry_id
            )));
        }
        let old_tree = toml::Value::try_from(&self.raw).expect("a validated config serializes");
        let new_tree = toml::Value::try_from(&new.raw).expect("a validated config serializes");
        let (mut old_leaves, mut new_leaves) = (Vec::new(), Vec::new());
        flatten("", &old_tree, &mut old_leaves);
        flatten("", &new_tree, &mut new_leaves);
        let old_map: std::collections::BTreeMap<_, _> = old_leaves.into_iter().collect();
        let new_map: std::collections::BTreeMap<_, _> = new_leaves.into_iter().collect();
        let keys: std::collections::BTreeSet<&String> =
            old_map.keys().chain(new_map.keys()).collect();
        let mut effective_tree = new_tree.clone();
        // TLS switched on or off: that needs a restart, so the running table stays whole.
        let tls_switched = self.raw.tls.is_some() != new.raw.tls.is_some();
        if tls_switched {
            let running = old_tree.get("tls").cloned();
            if let toml::Value::Table(table) = &mut effective_tree {
                match running {
                    Some(tls) => table.insert("tls".to_string(), tls),
                    None => table.remove("tls"),
                };
            }
        }
        // Capabilities switched on or off: a restart too, so a SIGHUP never opens a registry
        // that was started closed (nor closes one mid-flight for clients without tokens).
        let auth_switched = self.raw.auth.is_some() != new.raw.auth.is_some();
        if auth_switched {
            let running = old_tree.get("auth").cloned();
            if let toml::Value::Table(table) = &mut effective_tree {
                match running {
                    Some(auth) => table.insert("auth".to_string(), auth),
                    None => table.remove("auth"),
                };
            }
        }
        let (mut applied, mut restart_needed) = (Vec::new(), Vec::new());
        for key in keys {
            let (before, after) = (old_map.get(key), new_map.get(key));
            if before == after {
                continue;
            }
            let live_while_present = LIVE_WHILE_PRESENT.iter().any(|t| {
                key.strip_prefix(t)
                    .is_some_and(|rest| rest.starts_with('.'))
            });
            let switched = if key.starts_with("auth.") {
                auth_switched
            } else {
                tls_switched
            };
            let live = is_live_key(key) || (live_while_present && !switched);
            if live {
                applied.push(key.clone());
            } else {
                restart_needed.push(key.clone());
                if !key.starts_with("tls.") && !key.starts_with("auth.") {
                    set_path(&mut effective_tree, key, before.cloned());
                }
            }
        }
        let raw: RawConfig = effective_tree
            .try_into()
            .map_err(|e| fail(format!("cannot merge with the running config: {e}")))?;
        let effective = Config::validate(raw, &new.path, new.flags.clone()).map_err(|e| {
            ConfigError(format!(
                "the new live settings do not fit the running settings that need a restart: {e}"
            ))
        })?;
        Ok(ReloadPlan {
            effective,
            applied,
            restart_needed,
        })
    }
}

/// Leaves of a TOML tree as (dotted path, value); arrays are leaves.
fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        leaf => out.push((prefix.to_string(), leaf.clone())),
    }
}

/// Set (or with `None` remove) the leaf at dotted `path`, creating tables on the way.
fn set_path(tree: &mut toml::Value, path: &str, value: Option<toml::Value>) {
    let mut node = tree;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let toml::Value::Table(table) = node else {
            return;
        };
        if parts.peek().is_none() {
            match value {
                Some(v) => {
                    table.insert(part.to_string(), v);
                }
                None => {
                    table.remove(part);
                }
            }
            return;
        }
        node = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::map::Map::new()));
    }
}

/// `[follow]` and `--follow` as one validated follow mode (`None`: an authority).
fn validate_follow(raw: Option<&FollowConfig>, flags: &Flags) -> Result<Option<Follow>, String> {
    let Some(raw) = raw else {
        if flags.follow.is_empty() {
            return Ok(None);
        }
        return Err(
            "--follow needs the trust anchor: add [follow] genesis_hash = \"<64 hex>\" to the config"
                .to_string(),
        );
    };
    let upstreams = if flags.follow.is_empty() {
        raw.upstreams.clone()
    } else {
        flags.follow.clone()
    };
    if upstreams.is_empty() {
        return Err(
            "follow: no upstreams (set [follow] upstreams or pass --follow URL)".to_string(),
        );
    }
    for url in &upstreams {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "follow: upstream {url:?} must be an http:// or https:// URL"
            ));
        }
        crate::http::client::Target::parse_with_cacert(url, raw.cacert.as_deref())
            .map_err(|e| format!("follow: upstream {url:?}: {e}"))?;
    }
    if !crate::domain::is_hash_hex(&raw.genesis_hash) {
        return Err("follow.genesis_hash must be 64 lower-case hex digits".to_string());
    }
    if raw.timeout_ms < 100 {
        return Err(format!(
            "follow.timeout_ms = {} must be at least 100",
            raw.timeout_ms
        ));
    }
    Ok(Some(Follow {
        upstreams,
        genesis_hash: raw.genesis_hash.clone(),
        max_lag_versions: raw.max_lag_versions,
        timeout: Duration::from_millis(raw.timeout_ms),
        cacert: raw.cacert.clone(),
    }))
}

/// Parse and validate `[signers]`.
pub fn parse_signers(raw: &RawSigners) -> Result<SignerSet, String> {
    let keys = raw
        .keys
        .iter()
        .enumerate()
        .map(|(index, k)| {
            crate::domain::signers::parse_key(
                &k.keyid,
                k.alg.as_deref().unwrap_or("ed25519"),
                &k.public_key,
                k.not_before.as_deref(),
                k.not_after.as_deref(),
            )
            .map_err(|error| {
                crate::domain::signers::SignerSetError::Key {
                    index,
                    keyid: k.keyid.clone(),
                    error,
                }
                .to_string()
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    SignerSet::new(raw.threshold, keys).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const KEY_B: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

    fn config(extra: &str, keys: &str) -> Result<Config, String> {
        let text =
            format!("registry_id = \"r\"\ndata_dir = \"/tmp/x\"\n{extra}\n[signers]\n{keys}");
        Config::from_toml(&text, Path::new("test.toml"), Flags::default(), &|_| None)
            .map_err(|e| e.0)
    }

    fn two_keys(threshold: usize) -> String {
        format!(
            "threshold = {threshold}\n[[signers.keys]]\nkeyid = \"a\"\npublic_key = \"{KEY_A}\"\n[[signers.keys]]\nkeyid = \"b\"\npublic_key = \"{KEY_B}\"\n"
        )
    }

    #[test]
    fn a_minimal_config_gets_defaults() {
        let c = config("", &two_keys(2)).unwrap();
        assert_eq!(c.raw.registry_addr, "127.0.0.1:9444");
        assert_eq!(c.raw.storage.fsync, FsyncMode::Batch);
        assert_eq!(c.signers.as_ref().unwrap().threshold, 2);
        assert!(c.workers >= 1);
    }

    #[test]
    fn unknown_keys_are_named_with_the_file() {
        let err = config("colour = 1", &two_keys(1)).unwrap_err();
        assert!(err.contains("test.toml") && err.contains("colour"), "{err}");
        let err = config("[storage]\nfsyncc = \"batch\"", &two_keys(1)).unwrap_err();
        assert!(err.contains("fsyncc"), "{err}");
    }

    #[test]
    fn bad_signer_sets_are_refused_with_the_reason() {
        for (keys, needle) in [
            (two_keys(0), "threshold"),
            (two_keys(3), "threshold"),
            (two_keys(2).replace(KEY_B, KEY_A), "same public_key"),
            (two_keys(2).replace(KEY_B, "zz"), "hex"),
            (
                two_keys(2).replace(KEY_B, &KEY_B.to_uppercase()),
                "lower-case",
            ),
            (
                two_keys(2).replace(
                    KEY_B,
                    "0100000000000000000000000000000000000000000000000000000000000000",
                ),
                "weak",
            ),
            (
                two_keys(2).replace("keyid = \"b\"", "keyid = \"a\""),
                "twice",
            ),
            (
                two_keys(1).replace("keyid = \"b\"", "keyid = \"b\"\nnot_before = \"soon\""),
                "RFC 3339",
            ),
        ] {
            let err = config("", &keys).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let text = format!(
            "registry_id = \"r\"\ndata_dir = \"d\"\n[signers]\n{}",
            two_keys(1)
        );
        let env = |k: &str| (k == "REGISTRY_ADDR").then(|| "127.0.0.1:0".to_string());
        let c = Config::from_toml(&text, Path::new("t"), Flags::default(), &env).unwrap();
        assert_eq!(c.raw.registry_addr, "127.0.0.1:0");
    }

    #[test]
    fn relative_paths_are_resolved_from_the_config_files_directory() {
        let text = format!(
            "registry_id = \"r\"\ndata_dir = \"d\"\nuds_path = \"/run/x.sock\"\n[bus]\nsocket = \"b.sock\"\n[signers]\n{}",
            two_keys(1)
        );
        let c = Config::from_toml(
            &text,
            Path::new("/etc/ron/r.toml"),
            Flags::default(),
            &|_| None,
        )
        .unwrap();
        assert_eq!(c.raw.data_dir, Path::new("/etc/ron/d"));
        assert_eq!(c.raw.uds_path.as_deref(), Some(Path::new("/run/x.sock")));
        assert_eq!(
            c.raw.bus.socket.as_deref(),
            Some(Path::new("/etc/ron/b.sock"))
        );
        // A config named relative to the working directory resolves against it.
        let c = Config::from_toml(&text, Path::new("r.toml"), Flags::default(), &|_| None).unwrap();
        assert_eq!(c.raw.data_dir, std::env::current_dir().unwrap().join("d"));
    }

    #[test]
    fn new_operator_keys_are_validated() {
        let c = config("", &two_keys(2)).unwrap();
        assert_eq!(c.raw.chaos.max_latency_ms, 5_000);
        assert_eq!(c.raw.storage.commit_budget_ms, 0);
        assert!(!c.raw.maintenance.read_only);
        for (extra, needle) in [
            ("[chaos]\nmax_latency_ms = 0", "chaos.max_latency_ms"),
            ("[chaos]\nmax_latency_ms = 60001", "chaos.max_latency_ms"),
            ("[storage]\ncommit_budget_ms = 5", "commit_budget_ms"),
            (
                "[maintenance]\nread_only = true\nreason = \"a\\u0007b\"",
                "maintenance.reason",
            ),
            ("[maintenance]\nreadonly = true", "readonly"),
        ] {
            let err = config(extra, &two_keys(2)).unwrap_err();
            assert!(err.contains(needle), "{extra}: {err}");
        }
        let long = format!(
            "[maintenance]\nread_only = true\nreason = \"{}\"",
            "x".repeat(MAINTENANCE_REASON_BYTES_MAX + 1)
        );
        assert!(config(&long, &two_keys(2)).is_err());
        let c = config(
            "[maintenance]\nread_only = true\nreason = \"disk swap\"\n[storage]\ncommit_budget_ms = 750",
            &two_keys(2),
        )
        .unwrap();
        assert_eq!(c.raw.maintenance.reason.as_deref(), Some("disk swap"));
        assert_eq!(c.raw.storage.commit_budget_ms, 750);
    }

    #[test]
    fn a_retention_window_must_hold_a_checkpoint_interval() {
        let c = config("", &two_keys(2)).unwrap();
        assert_eq!(
            c.raw.storage.retain_versions, 0,
            "keep everything by default"
        );
        let err = config(
            "[storage]\nretain_versions = 50\ncheckpoint_every_commits = 100",
            &two_keys(2),
        )
        .unwrap_err();
        assert!(
            err.contains("retain_versions = 50") && err.contains("checkpoint"),
            "{err}"
        );
        let c = config(
            "[storage]\nretain_versions = 100\ncheckpoint_every_commits = 100",
            &two_keys(2),
        )
        .unwrap();
        assert_eq!(c.raw.storage.retain_versions, 100);
    }

    #[test]
    fn tls_paths_resolve_against_the_config_directory_and_unknown_keys_are_refused() {
        let text = |tls: &str| {
            format!(
                "registry_id = \"r\"\ndata_dir = \"/tmp/x\"\n[tls]\n{tls}\n[signers]\n{}",
                two_keys(1)
            )
        };
        let load = |tls: &str| {
            Config::from_toml(
                &text(tls),
                Path::new("/etc/ron/registry.toml"),
                Flags::default(),
                &|_| None,
            )
            .map_err(|e| e.0)
        };
        let c = load(
            "cert_file = \"tls/r.pem\"\nkey_file = \"/abs/r.key\"\nclient_ca_file = \"ca.pem\"",
        )
        .unwrap();
        let tls = c.raw.tls.as_ref().unwrap();
        assert_eq!(tls.cert_file, Path::new("/etc/ron/tls/r.pem"));
        assert_eq!(tls.key_file, Path::new("/abs/r.key"));
        assert_eq!(
            tls.client_ca_file.as_deref(),
            Some(Path::new("/etc/ron/ca.pem"))
        );
        // The effective config shows the resolved paths.
        assert!(c.to_toml().contains("/etc/ron/tls/r.pem"));
        let e = load("cert_file = \"a\"\nkey_file = \"b\"\nca_file = \"c\"").unwrap_err();
        assert!(e.contains("unknown field `ca_file`"), "{e}");
        let e = load("cert_file = \"a\"").unwrap_err();
        assert!(e.contains("missing field `key_file`"), "{e}");
        let e = load("cert_file = \"\"\nkey_file = \"b\"").unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn a_reload_applies_tls_files_but_not_switching_tls_on_or_off() {
        let plain = config("", &two_keys(1)).unwrap();
        let tls = |cert: &str| {
            config(
                &format!("[tls]\ncert_file = \"/{cert}\"\nkey_file = \"/k\""),
                &two_keys(1),
            )
            .unwrap()
        };
        let plan = tls("a").plan_reload(tls("b")).unwrap();
        assert_eq!(plan.applied, ["tls.cert_file"]);
        assert_eq!(plan.effective.raw.tls.unwrap().cert_file, Path::new("/b"));
        let plan = plain.plan_reload(tls("a")).unwrap();
        assert!(plan.applied.is_empty(), "{:?}", plan.applied);
        assert_eq!(plan.restart_needed, ["tls.cert_file", "tls.key_file"]);
        assert!(plan.effective.raw.tls.is_none());
        let plan = tls("a").plan_reload(plain).unwrap();
        assert_eq!(plan.restart_needed, ["tls.cert_file", "tls.key_file"]);
        assert_eq!(plan.effective.raw.tls.unwrap().cert_file, Path::new("/a"));
    }

    #[test]
    fn a_reload_applies_live_keys_and_keeps_restart_only_ones() {
        let old = config("", &two_keys(1)).unwrap();
        let new = config(
            "registry_addr = \"127.0.0.1:1\"\nlog_level = \"debug\"\n[http]\nmax_connections = 7\n[storage]\ncommit_budget_ms = 100\nfsync = \"always\"\n[proposals]\nmax_ops = 3\n[chaos]\nenabled = true",
            &two_keys(2),
        )
        .unwrap();
        let plan = old.plan_reload(new).unwrap();
        assert_eq!(
            plan.applied,
            [
                "chaos.enabled",
                "log_level",
                "proposals.max_ops",
                "signers.threshold",
                "storage.commit_budget_ms"
            ]
        );
        assert_eq!(
            plan.restart_needed,
            ["http.max_connections", "registry_addr", "storage.fsync"]
        );
        let e = &plan.effective;
        assert_eq!(e.signers.as_ref().unwrap().threshold, 2);
        assert_eq!(e.raw.proposals.max_ops, 3);
        assert_eq!(e.raw.log_level.as_deref(), Some("debug"));
        assert_eq!(e.raw.storage.commit_budget_ms, 100);
        // Not half-applied: the running values stay.
        assert_eq!(e.raw.registry_addr, old.raw.registry_addr);
        assert_eq!(e.raw.http.max_connections, old.raw.http.max_connections);
        assert_eq!(e.raw.storage.fsync, FsyncMode::Batch);
        // A key removed from the file that needs a restart keeps its running value too.
        let with_uds = config("uds_path = \"/run/x.sock\"", &two_keys(1)).unwrap();
        let plan = with_uds
            .plan_reload(config("", &two_keys(1)).unwrap())
            .unwrap();
        assert_eq!(plan.restart_needed, ["uds_path"]);
        assert_eq!(
            plan.effective.raw.uds_path.as_deref(),
            Some(Path::new("/run/x.sock"))
        );
    }

    #[test]
    fn a_reload_is_refused_for_another_registry_or_a_misfit_with_running_settings() {
        let old = config("max_body_bytes = 65536", &two_keys(1)).unwrap();
        let other = Config::from_toml(
            &format!(
                "registry_id = \"other\"\ndata_dir = \"/tmp/x\"\n[signers]\n{}",
                two_keys(1)
            ),
            Path::new("test.toml"),
            Flags::default(),
            &|_| None,
        )
        .unwrap();
        let err = old.plan_reload(other).unwrap_err().0;
        assert!(err.contains("registry_id"), "{err}");
        // Valid alone, but its live max_descriptor_bytes exceeds the running max_body_bytes.
        let bigger = config(
            "max_body_bytes = 1048576\n[proposals]\nmax_descriptor_bytes = 500000",
            &two_keys(1),
        )
        .unwrap();
        let err = old.plan_reload(bigger).unwrap_err().0;
        assert!(err.contains("max_descriptor_bytes"), "{err}");
    }

    #[test]
    fn every_live_key_names_a_real_key() {
        let c = config("log_level = \"info\"", &two_keys(1)).unwrap();
        let tree = toml::Value::try_from(&c.raw).unwrap();
        let mut leaves = Vec::new();
        flatten("", &tree, &mut leaves);
        for live in LIVE_KEYS {
            assert!(
                leaves
                    .iter()
                    .any(|(k, _)| is_live_key(k) && k.starts_with(live)),
                "{live} matches no key"
            );
        }
        assert!(!is_live_key("signers_extra") && is_live_key("signers.keys"));
    }

    #[test]
    fn effective_config_round_trips_through_toml() {
        let c = config("", &two_keys(2)).unwrap();
        let again =
            Config::from_toml(&c.to_toml(), Path::new("t"), Flags::default(), &|_| None).unwrap();
        assert_eq!(again.to_toml(), c.to_toml());
    }

    #[test]
    fn auth_and_ops_resolve_paths_check_words_and_reload_like_tls() {
        let auth = |extra: &str| {
            Config::from_toml(
                &format!(
                    "registry_id = \"r\"\ndata_dir = \"/tmp/x\"\n{extra}\n[signers]\n{}",
                    two_keys(1)
                ),
                Path::new("/etc/ron/r.toml"),
                Flags::default(),
                &|_| None,
            )
            .map_err(|e| e.0)
        };
        let c = auth("[auth]\nkeys_file = \"keys.toml\"\n[ops]\nbackup_root = \"b\"").unwrap();
        let a = c.raw.auth.as_ref().unwrap();
        assert_eq!(a.keys_file, Path::new("/etc/ron/keys.toml"));
        assert_eq!(a.require, ["propose", "approve", "commit", "admin"]);
        assert!(!a.dev_insecure_permissions);
        assert_eq!(
            c.raw.ops.backup_root.as_deref(),
            Some(Path::new("/etc/ron/b"))
        );
        assert!(!c.to_toml().contains("dev_insecure_permissions"));
        let err = auth("[auth]\nkeys_file = \"k\"\nrequire = [\"write\"]").unwrap_err();
        assert!(err.contains("\"write\" is not one of"), "{err}");
        let err = auth("[auth]\nkeys_file = \"k\"\ncolour = 1").unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
        assert!(auth("[auth]\nkeys_file = \"\"")
            .unwrap_err()
            .contains("empty"));
        assert!(auth("[auth]\nrequire = []")
            .unwrap_err()
            .contains("keys_file"));
        // Reload: keys_file, require and backup_root apply live; switching [auth] on or off
        // needs a restart and the running table stays.
        let plain = auth("").unwrap();
        let on = auth("[auth]\nkeys_file = \"k1\"\n[ops]\nbackup_root = \"/b\"").unwrap();
        let moved = auth("[auth]\nkeys_file = \"k2\"\nrequire = [\"admin\"]").unwrap();
        let plan = on.plan_reload(moved).unwrap();
        assert_eq!(
            plan.applied,
            ["auth.keys_file", "auth.require", "ops.backup_root"]
        );
        assert!(plan.restart_needed.is_empty());
        let plan = on.plan_reload(plain.clone()).unwrap();
        assert_eq!(plan.restart_needed, ["auth.keys_file", "auth.require"]);
        assert!(plan.effective.raw.auth.is_some());
        let plan = plain.plan_reload(on).unwrap();
        assert!(plan.effective.raw.auth.is_none());
        assert_eq!(plan.applied, ["ops.backup_root"]);
    }

    fn follower_config(text: &str, follow: &[&str]) -> Result<Config, String> {
        let flags = Flags {
            follow: follow.iter().map(|u| u.to_string()).collect(),
            ..Flags::default()
        };
        Config::from_toml(text, Path::new("test.toml"), flags, &|_| None).map_err(|e| e.0)
    }

    #[test]
    fn a_follower_needs_no_signers_but_a_pinned_genesis() {
        let g = "ab".repeat(32);
        let base = "registry_id = \"r\"\ndata_dir = \"/tmp/x\"\n";
        let c = follower_config(
            &format!(
                "{base}[follow]\nupstreams = [\"http://10.0.0.1:9444\"]\ngenesis_hash = \"{g}\"\n"
            ),
            &[],
        )
        .unwrap();
        assert!(c.signers.is_none());
        let f = c.follow.clone().unwrap();
        assert_eq!(f.upstreams, ["http://10.0.0.1:9444"]);
        assert_eq!(
            (f.max_lag_versions, f.timeout),
            (16, Duration::from_secs(5))
        );
        // The effective config round-trips without a [signers] table.
        assert!(!c.to_toml().contains("[signers]"), "{}", c.to_toml());
        // --follow replaces the file's upstreams.
        let c = follower_config(
            &format!(
                "{base}[follow]\nupstreams = [\"http://10.0.0.1:9444\"]\ngenesis_hash = \"{g}\"\n"
            ),
            &["http://10.0.0.2:9444", "http://10.0.0.3:9444"],
        )
        .unwrap();
        assert_eq!(
            c.follow.unwrap().upstreams,
            ["http://10.0.0.2:9444", "http://10.0.0.3:9444"]
        );
        // An authority still needs [signers]; --follow needs the anchor; the anchor is checked;
        // unknown keys are refused; an upstream needs a scheme.
        let e = follower_config(base, &[]).unwrap_err();
        assert!(e.contains("[signers] is missing"), "{e}");
        let e = follower_config(base, &["http://10.0.0.2:9444"]).unwrap_err();
        assert!(e.contains("genesis_hash"), "{e}");
        let e = follower_config(
            &format!("{base}[follow]\nupstreams = [\"http://h:1\"]\ngenesis_hash = \"AB\"\n"),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("follow.genesis_hash"), "{e}");
        let e = follower_config(
            &format!(
                "{base}[follow]\nupstreams = [\"http://h:1\"]\ngenesis_hash = \"{g}\"\nlag = 3\n"
            ),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("unknown field `lag`"), "{e}");
        let e = follower_config(
            &format!("{base}[follow]\nupstreams = [\"h:1\"]\ngenesis_hash = \"{g}\"\n"),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("http://"), "{e}");
        let e =
            follower_config(&format!("{base}[follow]\ngenesis_hash = \"{g}\"\n"), &[]).unwrap_err();
        assert!(e.contains("no upstreams"), "{e}");
    }

    #[test]
    fn the_log_table_defaults_resolves_its_key_path_and_refuses_a_bad_origin() {
        let base = format!(
            "registry_id = \"r\"\ndata_dir = \"d\"\n[signers]\n{}",
            two_keys(1)
        );
        let load = |extra: &str| {
            Config::from_toml(
                &format!("{base}{extra}"),
                Path::new("/etc/ron/r.toml"),
                Flags::default(),
                &|_| None,
            )
        };
        let c = load("").unwrap();
        assert!(c.raw.log.is_enabled());
        assert_eq!(c.raw.log.origin_for("r"), "svc-registry/r");
        assert!(
            c.to_toml().contains("[log]\nenabled = true"),
            "{}",
            c.to_toml()
        );
        let c = load("[log]\norigin = \"example.com/r\"\nkey_file = \"tlog.key\"\n").unwrap();
        assert_eq!(c.raw.log.origin_for("r"), "example.com/r");
        assert_eq!(
            c.raw.log.key_file.as_deref(),
            Some(Path::new("/etc/ron/tlog.key"))
        );
        // The path is shown, never the key (config print reads no key file).
        assert!(c.to_toml().contains("key_file = \"/etc/ron/tlog.key\""));
        // A retention window turns the tree off unless asked for, and refuses it when asked.
        let windowed = "[storage]\nretain_versions = 20000\n";
        let c = load(windowed).unwrap();
        assert!(!c.raw.log.is_enabled());
        assert!(
            c.to_toml().contains("[log]\nenabled = false"),
            "{}",
            c.to_toml()
        );
        let e = load(&format!("{windowed}[log]\nenabled = true\n")).unwrap_err();
        assert!(e.0.contains("retain_versions = 20000"), "{}", e.0);
        assert!(load(&format!("{windowed}[log]\nenabled = false\n")).is_ok());
        for bad in ["a b", "a+b", ""] {
            let e = load(&format!("[log]\norigin = {bad:?}\n")).unwrap_err();
            assert!(e.0.contains("[log] origin"), "{}", e.0);
        }
    }
}
