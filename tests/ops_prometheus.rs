//! The shipped monitoring files against the real tools: `promtool check rules|config` and
//! `promtool test rules` on configs/prometheus/, and a real Prometheus (Debian's `prometheus` package, which `.ci/run`
//! installs) scraping the metrics listener, queried through its HTTP API. Without the binaries
//! these tests print why and pass: the CI script installs them.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn shipped(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn promtool_accepts_the_shipped_rules_and_scrape_config_and_the_rule_tests_pass() {
    if !have("promtool") {
        skip_notice(
            "promtool_accepts_the_shipped_rules_and_scrape_config_and_the_rule_tests_pass",
            "promtool is not installed (apt-get install prometheus; .ci/run does)",
        );
        return;
    }
    for args in [
        ["check", "rules", "configs/prometheus/alerts.yml"],
        ["check", "config", "configs/prometheus/prometheus.yml"],
        // The alerts fire (and stay quiet) as the runbook's thresholds say.
        ["test", "rules", "configs/prometheus/alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Kills the Prometheus it holds when dropped (also when an assertion fails).
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn query(prom: &str, path: &str) -> Option<serde_json::Value> {
    let r = svc_registry::http::client::request(
        &Target::Tcp(prom.to_string()),
        "GET",
        path,
        &[],
        None,
        Duration::from_secs(5),
    )
    .ok()?;
    (r.status == 200)
        .then(|| serde_json::from_slice(&r.body).ok())
        .flatten()
}

#[test]
fn a_real_prometheus_scrapes_the_metrics_listener_and_answers_promql() {
    if !have("prometheus") {
        skip_notice(
            "a_real_prometheus_scrapes_the_metrics_listener_and_answers_promql",
            "the prometheus binary is not installed (apt-get install prometheus; .ci/run does)",
        );
        return;
    }
    let s = TestServer::start(Setup::default());
    s.commit_ops(
        0,
        serde_json::json!([put("node", "n1", serde_json::json!({}))]),
    );
    for _ in 0..3 {
        s.get("/registry/head");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {:?}\nscrape_configs:\n  - job_name: svc-registry\n    static_configs:\n      - targets: [{:?}]\n",
            shipped("configs/prometheus/alerts.yml").display().to_string(),
            s.metrics
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let mut last = Vec::new();
    let series = poll(Duration::from_secs(60), || {
        last = query(&listen, "/api/v1/query?query=http_requests_total")
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default();
        last.iter()
            .any(|r| r["metric"]["route"] == "/registry/head")
            .then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("Prometheus returned no http_requests_total within 60 s: {last:?}"));
    assert!(series
        .iter()
        .all(|r| r["metric"]["job"] == "svc-registry" && r["value"][1].is_string()));
    // A runbook query over a histogram resolves too, and the shipped rules are loaded.
    let head = query(&listen, "/api/v1/query?query=registry_head_version").unwrap();
    assert_eq!(head["data"]["result"][0]["value"][1], "1");
    let rules = query(&listen, "/api/v1/rules").unwrap();
    let names: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&"RegistryNotReady"), "{names:?}");

    // The runbook's §5 "Quick PromQL", verbatim, is valid against this product's names.
    for promql in RUNBOOK_PROMQL {
        let v = query(
            &listen,
            &format!("/api/v1/query?query={}", percent_encode(promql)),
        )
        .unwrap_or_else(|| panic!("Prometheus refused {promql}"));
        assert_eq!(v["status"], "success", "{promql}: {v}");
    }
    // Every Grafana panel query is valid PromQL over metrics the server really exports.
    let exported = String::from_utf8(s.admin("GET", "/metrics", None).body).unwrap();
    for expr in dashboard_exprs() {
        for metric in selected_metrics(&expr) {
            assert!(
                exported.contains(&format!("\n{metric}")),
                "the dashboard queries {metric}, which /metrics does not export"
            );
        }
        let promql = expr.replace("$instance", ".*");
        let v = query(
            &listen,
            &format!("/api/v1/query?query={}", percent_encode(&promql)),
        )
        .unwrap_or_else(|| panic!("Prometheus refused {promql}"));
        assert_eq!(v["status"], "success", "{promql}: {v}");
    }
}

/// RUNBOOK-svc-registry §5, "Quick PromQL".
const RUNBOOK_PROMQL: &[&str] = &[
    r#"histogram_quantile(0.95, sum by (le) (rate(request_latency_seconds_bucket{route="/registry/head"}[5m])))"#,
    "histogram_quantile(0.95, sum by (le) (rate(commit_latency_seconds_bucket[5m])))",
    r#"sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))"#,
    "rate(bus_lagged_total[5m])",
    "max_over_time(registry_checkpoint_age_seconds[5m])",
];

/// Every `expr` of the shipped Grafana dashboard.
fn dashboard_exprs() -> Vec<String> {
    let d: serde_json::Value = serde_json::from_slice(
        &std::fs::read(shipped("configs/grafana/svc-registry.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 12);
    exprs
}

/// Metric names in an expression: the identifier before each `{` (every selector of the
/// dashboard carries the `$instance` matcher).
fn selected_metrics(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'{' {
            let start = bytes[..i]
                .iter()
                .rposition(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                .map_or(0, |p| p + 1);
            if start < i {
                names.push(expr[start..i].to_string());
            }
        }
    }
    assert!(!names.is_empty(), "no metric selector in {expr}");
    names
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_dashboard_parses_and_filters_every_selector_by_instance() {
    for expr in dashboard_exprs() {
        let selectors = expr.matches('{').count();
        assert_eq!(
            expr.matches("instance=~\"$instance\"").count(),
            selectors,
            "{expr}"
        );
    }
}
