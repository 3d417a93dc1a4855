//! `fill`: grow a registry to N descriptors through the real HTTP API (propose → approve →
//! commit, `--ops` puts per proposal), for the start-up and footprint measurements. Run the
//! server with `fsync = "never"` for speed; the data directory is then shut down cleanly
//! (SIGTERM), which makes everything durable and writes a final checkpoint.
//!
//! `--same-id 1` puts every op on one descriptor (`node-00000000`, a new body each time): the
//! history-heavy shape of the memory measurements (state stays one descriptor, history grows by
//! one version per commit with `--ops 1`).

use crate::common::{self, signers, Args};
use crate::http::Conn;
use serde_json::json;
use std::time::Instant;

pub fn run(a: &Args) {
    let addr = a.req("addr");
    let registry_id = a.str("registry-id", "perf-registry");
    let threshold: usize = a.num("threshold", 1);
    let total: u64 = a.num("descriptors", 50_000);
    let per: u64 = a.num("ops", 1000);
    let same_id = a.num::<u8>("same-id", 0) == 1;
    let keys = signers(threshold);
    let mut c = Conn::new(&addr);
    let mut base = c.get("/registry/head").unwrap().json()["version"]
        .as_u64()
        .unwrap();
    let start = Instant::now();
    let mut done = 0u64;
    while done < total {
        let k = per.min(total - done);
        let ops: Vec<_> = (done..done + k)
            .map(|i| {
                let n = if same_id { 0 } else { i };
                json!({"op": "put", "kind": "node", "id": format!("node-{n:08}"),
                       "body": {"addr": format!("10.{}.{}.{}:9000", (i >> 16) & 255, (i >> 8) & 255, i & 255),
                                "zone": "eu-1", "weight": 10}})
            })
            .collect();
        let payload = serde_json::to_vec(
            &json!({"registry_id": registry_id, "base_version": base, "ops": ops}),
        )
        .unwrap();
        let id = common::sha256_hex(&payload);
        let r = c.post("/propose", &payload).expect("propose");
        assert_eq!(r.status, 202, "propose: {}", r.text());
        let sigs: Vec<_> = keys
            .iter()
            .map(|s| json!({"keyid": s.keyid, "sig": s.sign(&payload)}))
            .collect();
        let body = serde_json::to_vec(&json!({"proposal_id": id, "signatures": sigs})).unwrap();
        let r = c.post("/approve", &body).expect("approve");
        assert_eq!(r.status, 200, "approve: {}", r.text());
        let r = c
            .post("/commit", format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes())
            .expect("commit");
        assert_eq!(r.status, 200, "commit: {}", r.text());
        base = r.json()["version"].as_u64().unwrap();
        done += k;
    }
    let head = c.get("/registry/head").unwrap().json();
    println!(
        "{}",
        json!({"descriptors": head["descriptors"], "version": head["version"],
               "secs": common::round3(start.elapsed().as_secs_f64())})
    );
}
