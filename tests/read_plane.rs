//! The read plane at genesis and after commits, through HTTP against the real binary.

#![allow(clippy::field_reassign_with_default)]

mod common;
use common::*;
use svc_registry::domain::chain::{genesis_hash_v2, ZERO_HASH};

/// The ids of a descriptor listing page, in order.
fn ids_of(page: &serde_json::Value) -> Vec<String> {
    page["descriptors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

/// docs/FORMATS.md genesis v2 of a test server's config, spelled out from the spec text (`SS` lines),
/// not through the code's signer-set types.
fn genesis_of(setup: &Setup) -> String {
    let mut keys: Vec<&Signer> = setup.signers.iter().collect();
    keys.sort_by(|a, b| a.keyid.cmp(&b.keyid));
    let mut ss = format!("svc-registry/signers/v1\nthreshold {}\n", setup.threshold);
    for k in keys {
        ss.push_str(&format!("key {} ed25519 {} - -\n", k.keyid, k.public_hex()));
    }
    let digest = svc_registry::domain::sha256_hex(ss.as_bytes());
    genesis_hash_v2(&setup.registry_id, &digest)
}

#[test]
fn head_at_genesis_has_version_zero_and_the_spec_genesis_hash() {
    let s = TestServer::start(Setup::default());
    let r = s.get("/registry/head");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let h = json(&r);
    assert_eq!(h["version"], 0);
    assert_eq!(h["hash"], genesis_of(&Setup::default()));
    assert_eq!(h["prev_hash"], ZERO_HASH);
    assert_eq!(h["descriptors"], 0);
    assert!(h["committed_at"].is_string());
}

#[test]
fn head_etag_answers_if_none_match_with_304() {
    let s = TestServer::start(Setup::default());
    let r = s.get("/registry/head");
    assert_eq!(r.header("etag"), Some("\"0\""));
    let r = s.request("GET", "/registry/head", &[("If-None-Match", "\"0\"")], None);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    s.commit_ops(
        0,
        serde_json::json!([put("node", "n1", serde_json::json!({}))]),
    );
    let r = s.request("GET", "/registry/head", &[("If-None-Match", "\"0\"")], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some("\"1\""));
}

#[test]
fn version_zero_is_the_genesis_record_and_unknown_versions_are_404() {
    let s = TestServer::start(Setup::default());
    let g = json(&s.get("/registry/0"));
    assert_eq!(g["version"], 0);
    assert_eq!(g["hash"], genesis_of(&Setup::default()));
    // Genesis v2 carries the signer set fixed into its hash (docs/FORMATS.md).
    assert_eq!(g["signers"]["threshold"], 2);
    assert_eq!(g["signers"]["keys"][0]["alg"], "ed25519");
    assert_eq!(
        g["signers"]["keys"][0]["not_before"],
        serde_json::Value::Null
    );
    assert!(g.get("envelope").is_none());
    for path in [
        "/registry/1",
        "/registry/18446744073709551615",
        "/registry/abc",
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(json(&r)["error"], "not_found");
    }
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405_with_the_error_contract() {
    let s = TestServer::start(Setup::default());
    let r = s.get("/nope");
    assert_eq!(r.status, 404);
    let e = json(&r);
    assert_eq!(e["error"], "not_found");
    assert!(e["message"].is_string());
    let r = s.post("/registry/head", b"{}");
    assert_eq!(r.status, 405);
    assert_eq!(json(&r)["error"], "method_not_allowed");
    let r = s.get("/propose");
    assert_eq!(r.status, 405);
    let r = s.request("DELETE", "/registry/0", &[], None);
    assert_eq!(r.status, 405);
}

#[test]
fn descriptors_are_served_single_and_paged_by_kind_then_id() {
    let s = TestServer::start(Setup::default());
    let ops: Vec<_> = ["b", "a", "c"]
        .iter()
        .map(|id| put("service", id, serde_json::json!({"port": 1})))
        .chain([put("node", "n1", serde_json::json!({"addr": "10.0.0.1:1"}))])
        .collect();
    s.commit_ops(0, serde_json::Value::Array(ops));
    let d = json(&s.get("/registry/descriptors/node/n1"));
    assert_eq!(
        d,
        serde_json::json!({"kind": "node", "id": "n1", "version": 1, "body": {"addr": "10.0.0.1:1"}})
    );
    assert_eq!(s.get("/registry/descriptors/node/zz").status, 404);
    assert_eq!(s.get("/registry/descriptors/pod/n1").status, 400);
    let p = json(&s.get("/registry/descriptors?kind=service&limit=2"));
    let ids = ids_of(&p);
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(p["next"], "b");
    let p = json(&s.get("/registry/descriptors?kind=service&after=b&limit=2"));
    assert_eq!(p["descriptors"].as_array().unwrap().len(), 1);
    assert!(p["next"].is_null());
    // Without a kind: node first, then service; the cursor carries the kind.
    let p = json(&s.get("/registry/descriptors?limit=2"));
    assert_eq!(p["descriptors"][0]["kind"], "node");
    assert_eq!(p["next"], "service/a");
    let p = json(&s.get("/registry/descriptors?limit=5&after=service/a"));
    let ids = ids_of(&p);
    assert_eq!(ids, ["b", "c"]);
    assert_eq!(s.get("/registry/descriptors?limit=0").status, 400);
    assert_eq!(s.get("/registry/descriptors?limit=100000").status, 400);
}

#[test]
fn log_pages_records_in_order_and_signers_are_published() {
    let s = TestServer::start(Setup::default());
    for v in 0..3 {
        s.commit_ops(
            v,
            serde_json::json!([put("region", &format!("r{v}"), serde_json::json!({}))]),
        );
    }
    let page = json(&s.get("/registry/log?from=0&limit=2"));
    let recs = page["records"].as_array().unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["version"], 0);
    assert_eq!(recs[1]["version"], 1);
    assert_eq!(recs[1]["prev_hash"], recs[0]["hash"]);
    assert_eq!(page["next"], 2);
    let page = json(&s.get("/registry/log?from=2&limit=10"));
    assert_eq!(page["records"].as_array().unwrap().len(), 2);
    assert!(page["next"].is_null());
    assert_eq!(s.get("/registry/log?from=x").status, 400);
    let signers = json(&s.get("/registry/signers"));
    assert_eq!(signers["threshold"], 2);
    assert_eq!(signers["keys"].as_array().unwrap().len(), 3);
    assert_eq!(signers["keys"][0]["keyid"], "a");
    assert_eq!(
        signers["keys"][0]["public_key"],
        s.setup.signers[0].public_hex()
    );
}

#[test]
fn corr_id_is_echoed_or_generated_and_logged_for_writes() {
    let s = TestServer::start(Setup::default());
    let r = s.request(
        "GET",
        "/registry/head",
        &[("X-Corr-Id", "trace-abc-123")],
        None,
    );
    assert_eq!(r.header("x-corr-id"), Some("trace-abc-123"));
    let r = s.get("/registry/head");
    let generated = r
        .header("x-corr-id")
        .expect("a generated corr id")
        .to_string();
    assert!(!generated.is_empty());
    assert_ne!(
        generated,
        s.get("/registry/head").header("x-corr-id").unwrap()
    );
    let payload = br#"{"registry_id":"test-registry","base_version":0,"ops":[{"op":"delete","kind":"node","id":"x"}]}"#;
    let r = s.request(
        "POST",
        "/propose",
        &[("X-Corr-Id", "write-corr-77")],
        Some(payload),
    );
    assert_eq!(r.status, 202);
    assert_eq!(r.header("x-corr-id"), Some("write-corr-77"));
    assert!(s.wait_log("corr_id=write-corr-77", TIMEOUT), "{}", s.logs());
}

#[test]
fn health_readiness_and_metrics_are_served_on_the_metrics_listener() {
    let s = TestServer::start(Setup::default());
    assert_eq!(s.admin("GET", "/healthz", None).status, 200);
    let r = s.admin("GET", "/readyz", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json(&r);
    assert_eq!(v["ready"], true);
    assert_eq!(v["read"], true);
    assert_eq!(v["write"], true);
    assert_eq!(v["reasons"], serde_json::json!([]));
    s.get("/registry/head");
    s.get("/registry/7");
    // A request is observed once its response is written: the scrape may race the worker.
    let text = eventually_some(
        std::time::Duration::from_secs(5),
        "the head request's latency and the 404 of /registry/7 are both observed",
        || {
            let text = s.admin("GET", "/metrics", None).text();
            // Each on its own worker: the second's count does not imply the first's.
            (text.contains(r#"request_latency_seconds_bucket{route="/registry/head""#)
                && text.contains(r#"code="404",route="/registry/{version}""#))
            .then_some(text)
        },
    );
    for name in [
        "request_latency_seconds_bucket",
        "http_requests_total",
        "rejected_total",
        "bus_lagged_total",
        "registry_checkpoint_age_seconds",
        "commit_latency_seconds_bucket",
        "approval_verify_seconds_bucket",
        "fsync_seconds_bucket",
        "fsync_batch_size_bucket",
        "inflight_requests",
        "registry_head_version",
        "sse_subscribers",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
    assert!(
        text.contains(r#"request_latency_seconds_bucket{route="/registry/head",le="0.0001"}"#),
        "sub-ms bucket"
    );
    assert!(
        text.contains(r#"http_requests_total{code="404",route="/registry/{version}"}"#),
        "route templates"
    );
    assert!(text.contains(r#"rejected_total{reason="busy"} 0"#));
}

#[test]
fn read_only_mode_sheds_writes_with_503_and_keeps_reads_and_readiness() {
    let mut setup = Setup::default();
    setup.flags.push("--read-only".into());
    let s = TestServer::start(setup);
    let r = s.post("/propose", b"{}");
    assert_eq!(r.status, 503);
    assert_eq!(json(&r)["error"], "unavailable");
    assert_eq!(s.get("/registry/head").status, 200);
    let r = s.admin("GET", "/readyz", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["write"], false);
    assert_eq!(s.metric(r#"rejected_total{reason="deps"}"#), 1.0);
    assert!(!s.logs().contains("role=write-plane"));
}

#[test]
fn requests_over_max_inflight_get_429_busy_with_retry_after() {
    let mut setup = Setup::default();
    setup.top = "max_inflight = 2\n".into();
    setup.tables = "[chaos]\nenabled = true\n".into();
    let s = std::sync::Arc::new(TestServer::start(setup));
    // Slow every sync so that commits stay in flight (deferred) for a while.
    let r = s.admin(
        "POST",
        "/admin/chaos",
        Some(br#"{"fault": "storage-latency", "ms": 600}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Two approved proposals: version 1 on base 0, version 2 on base 1.
    let ids: Vec<String> = (0..2u64)
        .map(|base| {
            let payload = serde_json::to_vec(&serde_json::json!({
                "registry_id": "test-registry", "base_version": base,
                "ops": [put("node", &format!("n{base}"), serde_json::json!({}))]}))
            .unwrap();
            let id = json(&s.post("/propose", &payload))["proposal_id"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(
                s.post("/approve", &s.setup.approve_body(&id, &payload))
                    .status,
                200
            );
            id
        })
        .collect();
    // Both commits wait on their slowed sync: two requests in flight.
    let committers: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let s = s.clone();
            std::thread::spawn(move || {
                s.post("/commit", format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes())
                    .status
            })
        })
        .collect();
    eventually(TIMEOUT, "both commits in flight", || {
        s.metric("inflight_requests") == 2.0
    });
    let r = s.get("/registry/head");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(json(&r)["error"], "busy");
    assert_eq!(r.header("retry-after"), Some("1"));
    let statuses: Vec<u16> = committers.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses, [200, 200]);
    // Once they are answered, reads are served again.
    assert_eq!(s.get("/registry/head").status, 200);
    assert!(s.metric(r#"rejected_total{reason="busy"}"#) >= 1.0);
    assert_eq!(s.metric("inflight_requests"), 0.0);
}
