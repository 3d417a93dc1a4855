//! Every metric the service exports, in one place (docs/API.md).
//!
//! One process-wide registry. Buckets resolve sub-millisecond work (a head read, one
//! `verify_strict`), the 50 ms read SLO and the 750 ms commit SLO of the runbook.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

/// 10 µs .. 10 s, dense around the SLO thresholds (0.05 s reads, 0.75 s commits).
const LATENCY_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
];

const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

pub struct Metrics {
    pub registry: Registry,
    pub request_latency_seconds: HistogramVec,
    pub http_requests_total: IntCounterVec,
    pub rejected_total: IntCounterVec,
    pub bus_lagged_total: IntCounter,
    pub registry_checkpoint_age_seconds: IntGauge,
    pub commit_latency_seconds: Histogram,
    /// By key `alg` (`ed25519`, `ml-dsa-65`, `ed25519+ml-dsa-65`).
    pub approval_verify_seconds: HistogramVec,
    pub fsync_seconds: Histogram,
    pub fsync_batch_size: Histogram,
    pub inflight_requests: IntGauge,
    pub registry_head_version: IntGauge,
    pub sse_subscribers: IntGauge,
    pub registry_pending_proposals: IntGauge,
    pub registry_commits_held: IntGauge,
    pub registry_cas_conflicts_total: IntCounter,
    pub registry_commits_total: IntCounter,
    pub registry_reload_success_total: IntCounter,
    pub registry_reload_fail_total: IntCounter,
    pub registry_write_plane_ready: IntGauge,
    pub registry_chaos_storage_latency_seconds: Gauge,
    pub registry_ready: IntGauge,
    pub registry_read_only: IntGauge,
    pub registry_history_read_failures_total: IntCounter,
    pub registry_background_verify_failures_total: IntCounter,
    /// Requests refused by the capability gate, by `AuthError::reason` (a fixed set).
    pub auth_failures_total: IntCounterVec,
    pub registry_tls_handshakes_total: IntCounterVec,
    pub registry_tls_handshake_failures_total: IntCounterVec,
    pub registry_follow_lag_versions: IntGauge,
    pub registry_follow_upstream_head_version: IntGauge,
    pub registry_follow_applied_total: IntCounter,
    pub registry_follow_verify_failures_total: IntCounter,
    pub registry_follow_reconnects_total: IntCounter,
    pub registry_follow_forks_total: IntCounter,
    pub registry_follower: IntGauge,
    pub registry_oldest_version: IntGauge,
    pub registry_log_bytes: IntGauge,
    pub registry_follow_upstreams_expired: IntGauge,
    /// The transparency log's served tree size (versions in the tree, HEAD+1 when caught up).
    pub registry_tlog_size: IntGauge,
    /// Times the start-up check found the tree file disagreeing with the log and rebuilt it.
    pub registry_tlog_rebuilds_total: IntCounter,
    /// Failed reads (of the log or the tree file) and tree-file writes the `tlog` thread retried.
    pub registry_tlog_read_errors_total: IntCounter,
    /// 1 while the `tlog` thread waits to retry a failed read (the tree is behind), else 0.
    pub registry_tlog_retrying: IntGauge,
    /// Log syncs the writer ran itself because the group-commit pipeline was idle (a subset of
    /// the syncs `fsync_seconds` counts).
    pub registry_fsync_inline_total: IntCounter,
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("static histogram options are valid")
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            request_latency_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "request_latency_seconds",
                    "HTTP request latency from first byte to response queued, by route template",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )
            .expect("valid"),
            http_requests_total: IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP responses by route template and status"),
                &["route", "code"],
            )
            .expect("valid"),
            rejected_total: IntCounterVec::new(
                Opts::new(
                    "rejected_total",
                    "Requests shed: busy (concurrency or queue cap), deps (write plane unavailable)",
                ),
                &["reason"],
            )
            .expect("valid"),
            bus_lagged_total: IntCounter::new(
                "bus_lagged_total",
                "Events dropped for slow stream or bus subscribers (lossy by design)",
            )
            .expect("valid"),
            registry_checkpoint_age_seconds: IntGauge::new(
                "registry_checkpoint_age_seconds",
                "Seconds since the last checkpoint was written (or since start if none)",
            )
            .expect("valid"),
            commit_latency_seconds: histogram(
                "commit_latency_seconds",
                "Commit request: received by the writer to durable and published",
                LATENCY_BUCKETS,
            ),
            approval_verify_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "approval_verify_seconds",
                    "One verification of an approval signature, by the key's algorithm",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["alg"],
            )
            .expect("valid"),
            fsync_seconds: histogram("fsync_seconds", "One log sync", LATENCY_BUCKETS),
            fsync_batch_size: histogram(
                "fsync_batch_size",
                "Commits made durable by one log sync",
                BATCH_BUCKETS,
            ),
            inflight_requests: IntGauge::new(
                "inflight_requests",
                "Requests being handled (dispatched, not yet answered)",
            )
            .expect("valid"),
            registry_head_version: IntGauge::new(
                "registry_head_version",
                "Published HEAD version",
            )
            .expect("valid"),
            sse_subscribers: IntGauge::new("sse_subscribers", "Open stream subscribers")
                .expect("valid"),
            registry_pending_proposals: IntGauge::new(
                "registry_pending_proposals",
                "Proposals waiting for approvals or commit",
            )
            .expect("valid"),
            registry_commits_held: IntGauge::new(
                "registry_commits_held",
                "Commits waiting for HEAD to reach their base_version (proposals.commit_wait_ms)",
            )
            .expect("valid"),
            registry_cas_conflicts_total: IntCounter::new(
                "registry_cas_conflicts_total",
                "Commits refused because base_version was not HEAD",
            )
            .expect("valid"),
            registry_commits_total: IntCounter::new(
                "registry_commits_total",
                "Commits made durable and published",
            )
            .expect("valid"),
            registry_reload_success_total: IntCounter::new(
                "registry_reload_success_total",
                "SIGHUP reloads applied",
            )
            .expect("valid"),
            registry_reload_fail_total: IntCounter::new(
                "registry_reload_fail_total",
                "SIGHUP reloads refused (invalid config; the old one stays)",
            )
            .expect("valid"),
            registry_write_plane_ready: IntGauge::new(
                "registry_write_plane_ready",
                "1 when the write plane accepts writes",
            )
            .expect("valid"),
            registry_chaos_storage_latency_seconds: Gauge::new(
                "registry_chaos_storage_latency_seconds",
                "Injected storage sync latency (chaos) in seconds, 0 when none",
            )
            .expect("valid"),
            registry_ready: IntGauge::new(
                "registry_ready",
                "1 when /readyz answers 200 (updated at each scrape)",
            )
            .expect("valid"),
            registry_read_only: IntGauge::new(
                "registry_read_only",
                "1 in maintenance (read-only) mode",
            )
            .expect("valid"),
            registry_history_read_failures_total: IntCounter::new(
                "registry_history_read_failures_total",
                "Records of history that could not be read back from the log intact",
            )
            .expect("valid"),
            registry_background_verify_failures_total: IntCounter::new(
                "registry_background_verify_failures_total",
                "Problems found by the start-up background re-hash of the whole chain",
            )
            .expect("valid"),
            auth_failures_total: IntCounterVec::new(
                Opts::new(
                    "auth_failures_total",
                    "Requests refused by the capability check (401 or 403), by reason",
                ),
                &["reason"],
            )
            .expect("valid"),
            registry_tls_handshakes_total: IntCounterVec::new(
                Opts::new(
                    "registry_tls_handshakes_total",
                    "TLS handshakes completed, by listener (registry, metrics)",
                ),
                &["listener"],
            )
            .expect("valid"),
            registry_tls_handshake_failures_total: IntCounterVec::new(
                Opts::new(
                    "registry_tls_handshake_failures_total",
                    "TLS handshakes that started and failed, by listener and reason: timeout \
                     (cut at head_timeout_ms), protocol (garbage, plaintext HTTP, no common \
                     version or cipher), certificate (a certificate refused by either side), \
                     eof (the peer closed or reset mid-handshake)",
                ),
                &["listener", "reason"],
            )
            .expect("valid"),
            registry_follow_lag_versions: IntGauge::new(
                "registry_follow_lag_versions",
                "Follower: versions between the newest upstream head seen and the verified head",
            )
            .expect("valid"),
            registry_follow_upstream_head_version: IntGauge::new(
                "registry_follow_upstream_head_version",
                "Follower: the newest upstream head version seen",
            )
            .expect("valid"),
            registry_follow_applied_total: IntCounter::new(
                "registry_follow_applied_total",
                "Follower: upstream versions verified, stored and published",
            )
            .expect("valid"),
            registry_follow_verify_failures_total: IntCounter::new(
                "registry_follow_verify_failures_total",
                "Follower: upstream records refused (verification failure or fork)",
            )
            .expect("valid"),
            registry_follow_reconnects_total: IntCounter::new(
                "registry_follow_reconnects_total",
                "Follower: upstream connections lost, stalled or switched",
            )
            .expect("valid"),
            registry_follow_forks_total: IntCounter::new(
                "registry_follow_forks_total",
                "Follower: upstreams refused for holding another record at a verified version",
            )
            .expect("valid"),
            registry_follower: IntGauge::new(
                "registry_follower",
                "1 on a follower (writes go to its upstream), 0 on an authority",
            )
            .expect("valid"),
            registry_oldest_version: IntGauge::new(
                "registry_oldest_version",
                "The oldest version whose record this node still serves (0: full history; above 0: a retention window dropped older records)",
            )
            .expect("valid"),
            registry_log_bytes: IntGauge::new(
                "registry_log_bytes",
                "Bytes the log occupies: its segment files on disk, or its in-memory journal with --amnesia",
            )
            .expect("valid"),
            registry_follow_upstreams_expired: IntGauge::new(
                "registry_follow_upstreams_expired",
                "Follower: upstreams that answered 410 for its next version (their retention window starts after it)",
            )
            .expect("valid"),
            registry_tlog_size: IntGauge::new(
                "registry_tlog_size",
                "Transparency log: the tree size served by checkpoints, tiles and proofs",
            )
            .expect("valid"),
            registry_tlog_rebuilds_total: IntCounter::new(
                "registry_tlog_rebuilds_total",
                "Transparency log: tree files found disagreeing with the log and rebuilt from it",
            )
            .expect("valid"),
            registry_tlog_read_errors_total: IntCounter::new(
                "registry_tlog_read_errors_total",
                "Transparency log: failed reads of the log or the tree file (and tree-file writes) that the tree retries",
            )
            .expect("valid"),
            registry_tlog_retrying: IntGauge::new(
                "registry_tlog_retrying",
                "Transparency log: 1 while the tree is behind, waiting to retry a failed read",
            )
            .expect("valid"),
            registry_fsync_inline_total: IntCounter::new(
                "registry_fsync_inline_total",
                "Log syncs run by the writer itself because the group-commit pipeline was idle (also counted in fsync_seconds)",
            )
            .expect("valid"),
        };
        // Every alg's series exists from the start (at zero), so dashboards and alerts see
        // the metric before the first approval of each algorithm.
        for alg in crate::domain::algs::KeyAlg::ALL {
            m.approval_verify_seconds.with_label_values(&[alg.as_str()]);
        }
        let r = &m.registry;
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.request_latency_seconds.clone()),
            Box::new(m.http_requests_total.clone()),
            Box::new(m.rejected_total.clone()),
            Box::new(m.bus_lagged_total.clone()),
            Box::new(m.registry_checkpoint_age_seconds.clone()),
            Box::new(m.commit_latency_seconds.clone()),
            Box::new(m.approval_verify_seconds.clone()),
            Box::new(m.fsync_seconds.clone()),
            Box::new(m.fsync_batch_size.clone()),
            Box::new(m.inflight_requests.clone()),
            Box::new(m.registry_head_version.clone()),
            Box::new(m.sse_subscribers.clone()),
            Box::new(m.registry_pending_proposals.clone()),
            Box::new(m.registry_commits_held.clone()),
            Box::new(m.registry_cas_conflicts_total.clone()),
            Box::new(m.registry_commits_total.clone()),
            Box::new(m.registry_reload_success_total.clone()),
            Box::new(m.registry_reload_fail_total.clone()),
            Box::new(m.registry_write_plane_ready.clone()),
            Box::new(m.registry_chaos_storage_latency_seconds.clone()),
            Box::new(m.registry_ready.clone()),
            Box::new(m.registry_read_only.clone()),
            Box::new(m.registry_history_read_failures_total.clone()),
            Box::new(m.registry_background_verify_failures_total.clone()),
            Box::new(m.auth_failures_total.clone()),
            Box::new(m.registry_tls_handshakes_total.clone()),
            Box::new(m.registry_tls_handshake_failures_total.clone()),
            Box::new(m.registry_follow_lag_versions.clone()),
            Box::new(m.registry_follow_upstream_head_version.clone()),
            Box::new(m.registry_follow_applied_total.clone()),
            Box::new(m.registry_follow_verify_failures_total.clone()),
            Box::new(m.registry_follow_reconnects_total.clone()),
            Box::new(m.registry_follow_forks_total.clone()),
            Box::new(m.registry_follower.clone()),
            Box::new(m.registry_oldest_version.clone()),
            Box::new(m.registry_log_bytes.clone()),
            Box::new(m.registry_follow_upstreams_expired.clone()),
            Box::new(m.registry_tlog_size.clone()),
            Box::new(m.registry_tlog_rebuilds_total.clone()),
            Box::new(m.registry_tlog_read_errors_total.clone()),
            Box::new(m.registry_tlog_retrying.clone()),
            Box::new(m.registry_fsync_inline_total.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            r.register(c).expect("metric names are unique");
        }
        // Labelled series exist from the start so dashboards and alerts see zeros, not gaps.
        for reason in ["busy", "deps"] {
            m.rejected_total.with_label_values(&[reason]);
        }
        for reason in crate::auth::gate::FAILURE_REASONS {
            m.auth_failures_total.with_label_values(&[reason]);
        }
        m
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        out
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Shorthand for the global metrics.
pub fn m() -> &'static Metrics {
    &METRICS
}
