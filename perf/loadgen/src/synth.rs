//! `synth`: write a data directory holding N single-op versions on one descriptor, directly
//! through the storage library (no server, no HTTP): every record is a real, signed commit
//! (signer k1 of `loadgen signers 1`, threshold 1) chained exactly as the writer chains it, then
//! made durable, with a checkpoint at the head. For measurements that need a long history
//! quickly (read-ready and memory with 1M versions): ≈ 40 µs per version instead of a full
//! propose/approve/commit round trip.

use crate::common::{self, signers, Args};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use svc_registry::domain::chain;
use svc_registry::domain::proposal::{self, ProposalLimits};
use svc_registry::domain::record::CommitRecord;
use svc_registry::domain::signers::{SignerKey, SignerSet};
use svc_registry::domain::state;
use svc_registry::history::Loc;
use svc_registry::log::{self as rlog, OsIo, StorageOptions};
use svc_registry::snapshot::Snapshot;

pub fn run(a: &Args) {
    let dir = a.req("dir");
    let n: u64 = a.num("versions", 1_000_000);
    let registry_id = a.str("registry-id", "perf-registry");
    let segment_bytes: u64 = a.num("segment-bytes", 64 << 20);
    let data = Path::new(&dir);
    let opts = StorageOptions {
        segment_bytes,
        checkpoints_kept: 2,
    };
    let mut opened = rlog::open(data, &opts, Arc::new(OsIo)).expect("open the data dir");
    assert!(
        opened.records.is_empty(),
        "synth writes into an empty data dir"
    );
    let signer = &signers(1)[0];
    // The genesis set is the one `loadgen signers 1` configures: k1, threshold 1. The log starts
    // with its genesis record, as a new data directory's does.
    let set = Arc::new(
        SignerSet::new(
            1,
            vec![SignerKey {
                keyid: signer.keyid.clone(),
                public: signer.key.verifying_key().into(),
                not_before: None,
                not_after: None,
            }],
        )
        .expect("a valid signer set"),
    );
    svc_registry::storage::write_genesis(&mut opened, data, &registry_id, &set)
        .expect("write the genesis record");
    let mut writer = opened.writer;
    let limits = ProposalLimits {
        max_ops: 1,
        max_descriptor_bytes: 4096,
    };
    let started = Instant::now();
    let mut snap = Arc::new(Snapshot::genesis(&registry_id, set.clone()));
    let mut end = 0;
    for v in 1..=n {
        let payload = serde_json::to_vec(&json!({
            "registry_id": registry_id, "base_version": v - 1,
            "ops": [{"op": "put", "kind": "node", "id": "node-00000000",
                     "body": {"addr": format!("10.{}.{}.{}:9000", (v >> 16) & 255, (v >> 8) & 255, v & 255),
                              "zone": "eu-1", "weight": 10}}]
        }))
        .unwrap();
        let p = proposal::parse(&payload, &registry_id, &limits).expect("a valid proposal");
        let descriptors = state::apply(&snap.descriptors, &p.ops, v).expect("applies");
        let proposal_id = common::sha256_hex(&payload);
        let sigs = vec![(signer.keyid.clone(), signer.sign(&payload))];
        let rec = CommitRecord {
            version: v,
            hash: chain::commit_hash(&registry_id, v, &snap.head.hash, &proposal_id, &sigs),
            prev_hash: snap.head.hash.clone(),
            committed_at_ms: 1_767_225_600_000 + v as i64,
            proposal_id,
            payload: payload.into(),
            signatures: sigs,
            descriptors: descriptors.len() as u64,
            genesis_signers: None,
        };
        let bytes = rec.to_json();
        end = writer.append(&bytes).expect("append");
        let loc = Loc {
            end,
            len: bytes.len() as u32,
        };
        snap = Arc::new(snap.next(Arc::new(rec), descriptors, loc));
    }
    opened.syncer.sync_to(end).expect("sync");
    // The payload version the server writes (2), so a start on this dir reads what it would.
    let cp = svc_registry::restore::checkpoint_payload(&snap, None);
    rlog::write_checkpoint(data, &OsIo, n, &cp, 2).expect("checkpoint");
    println!(
        "{}",
        json!({"versions": n, "log_end": end, "secs": common::round3(started.elapsed().as_secs_f64())})
    );
}
