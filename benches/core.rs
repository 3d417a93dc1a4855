//! Micro-benchmarks of the costs benchmarkers ask about: signature verification, PAE + SHA-256,
//! proposal parsing, snapshot publication at 1k / 100k / 1M descriptors, head encoding,
//! approvals/s through the verifier pool with 1 vs N threads, sign / verify / pool throughput
//! per key algorithm (ed25519, ML-DSA-65, the hybrid), and capability token verification
//! (`auth::authorize`, the per-request cost tokens add).
//!
//! Run: `cargo bench --bench core` (figures in docs/PERFORMANCE.md).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ed25519_dalek::SigningKey;
use std::sync::Arc;
use std::time::{Duration, Instant};
use svc_registry::domain::descriptor::Kind;
use svc_registry::domain::proposal::{self, Op, ProposalLimits};
use svc_registry::domain::record::CommitRecord;
use svc_registry::domain::signers::{KeyAlg, SecretKey};
use svc_registry::domain::{chain, dsse, sha256_hex, signers, state};
use svc_registry::history::Loc;
use svc_registry::snapshot::Snapshot;

const PROPOSAL: &[u8] = br#"{"registry_id":"bench","base_version":41,"ops":[{"op":"put","kind":"node","id":"node-7","body":{"addr":"10.0.0.7:9000","zone":"eu-1","weight":10}}],"note":"a typical single-op proposal of about three hundred bytes, padded with a note to look like the real thing"}"#;

fn limits() -> ProposalLimits {
    ProposalLimits {
        max_ops: 256,
        max_descriptor_bytes: 65536,
    }
}

fn crypto(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let pae = dsse::pae(PROPOSAL);
    let sig = signers::sign_payload(&key, PROPOSAL);
    let vk = key.verifying_key();
    c.bench_function("verify_strict", |b| {
        b.iter(|| {
            assert!(signers::verify_strict(
                black_box(&vk),
                black_box(&sig),
                black_box(&pae)
            ))
        })
    });
    c.bench_function("sign_dsse", |b| {
        b.iter(|| signers::sign_payload(&key, black_box(PROPOSAL)))
    });
    c.bench_function("pae_and_sha256", |b| {
        b.iter(|| {
            (
                dsse::pae(black_box(PROPOSAL)),
                sha256_hex(black_box(PROPOSAL)),
            )
        })
    });
    c.bench_function("proposal_parse_validate", |b| {
        b.iter(|| proposal::parse(black_box(PROPOSAL), "bench", &limits()).unwrap())
    });
    let sigs = vec![
        ("a".to_string(), dsse::encode_sig(&sig)),
        ("b".to_string(), dsse::encode_sig(&sig)),
    ];
    c.bench_function("commit_hash", |b| {
        b.iter(|| chain::commit_hash("bench", 42, chain::ZERO_HASH, "p", black_box(&sigs)))
    });
}

fn snapshot_of(n: usize) -> Snapshot {
    let body: Arc<serde_json::value::RawValue> = Arc::from(
        serde_json::value::RawValue::from_string(r#"{"addr":"10.0.0.1:9000"}"#.into()).unwrap(),
    );
    let ops: Vec<Op> = (0..n)
        .map(|i| Op::Put {
            kind: Kind::Node,
            id: format!("node-{i:08}").into(),
            body: body.clone(),
        })
        .collect();
    let descriptors = state::apply(&state::Descriptors::new(), &ops, 1).unwrap();
    let set = Arc::new(
        signers::SignerSet::new(
            1,
            vec![signers::SignerKey {
                keyid: "k".into(),
                public: ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                    .verifying_key()
                    .into(),
                not_before: None,
                not_after: None,
            }],
        )
        .unwrap(),
    );
    let genesis = Snapshot::genesis("bench", set.clone());
    let mut rec = CommitRecord::genesis("bench", set);
    rec.version = 1;
    rec.genesis_signers = None;
    rec.descriptors = n as u64;
    // The bench journal keeps nothing: the location only has to be well formed.
    let loc = Loc {
        end: 1_000,
        len: 700,
    };
    genesis.next(Arc::new(rec), descriptors, loc)
}

fn publish(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot_publish_one_op");
    g.sample_size(30);
    let p = proposal::parse(PROPOSAL, "bench", &limits()).unwrap();
    for n in [1_000usize, 100_000, 1_000_000] {
        let base = snapshot_of(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let d = state::apply(&base.descriptors, &p.ops, 2).unwrap();
                let mut rec = (*base.head).clone();
                rec.version = 2;
                rec.descriptors = d.len() as u64;
                let loc = Loc {
                    end: 2_000,
                    len: 700,
                };
                black_box(base.next(Arc::new(rec), d, loc))
            })
        });
    }
    g.finish();
    let snap = snapshot_of(10);
    c.bench_function("head_json_encode", |b| {
        b.iter(|| serde_json::to_vec(&black_box(&snap.head).head_json()).unwrap())
    });
}

/// A fixed key of `alg` (seeds 9, and 10 for a hybrid's ML-DSA half).
fn bench_key(alg: KeyAlg) -> SecretKey {
    let seeds: &[[u8; 32]] = match alg {
        KeyAlg::Ed25519MlDsa65 => &[[9; 32], [10; 32]],
        _ => &[[9; 32]],
    };
    SecretKey::from_seeds(alg, seeds).unwrap()
}

/// Sign (hedged, as ronctl does) and verify one approval, per key algorithm.
fn crypto_by_alg(c: &mut Criterion) {
    let pae = dsse::pae(PROPOSAL);
    let mut g = c.benchmark_group("approval");
    for alg in KeyAlg::ALL {
        let key = bench_key(alg);
        let public = key.public_key();
        let sig = key.sign(&pae, &[3; 32]).unwrap();
        g.bench_function(BenchmarkId::new("verify", alg.as_str()), |b| {
            b.iter(|| assert!(public.verify(black_box(&sig), black_box(&pae))))
        });
        g.bench_function(BenchmarkId::new("sign", alg.as_str()), |b| {
            b.iter(|| key.sign(black_box(&pae), &[3; 32]).unwrap())
        });
    }
    g.finish();
}

/// Approvals/s through the real verifier pool: `n` threads, a burst of `jobs` ed25519 signatures.
fn approvals_per_sec(threads: usize, jobs: usize) -> Duration {
    approvals_per_sec_alg(KeyAlg::Ed25519, threads, jobs)
}

/// Approvals/s through the real verifier pool for keys of `alg`.
fn approvals_per_sec_alg(alg: KeyAlg, threads: usize, jobs: usize) -> Duration {
    use svc_registry::roles::verifier::{start, Verified, VerifyJob};
    let key = bench_key(alg);
    let public = key.public_key();
    let pae: Arc<[u8]> = dsse::pae(PROPOSAL).into();
    let sig = key.sign(&pae, &[3; 32]).unwrap();
    let (jtx, jrx) = crossbeam_channel::bounded(jobs);
    let (dtx, drx) = crossbeam_channel::unbounded::<Verified>();
    let handles = start(threads, jrx, dtx, |v| v);
    let started = Instant::now();
    for i in 0..jobs {
        jtx.send(VerifyJob {
            key: public.clone(),
            sig: sig.clone(),
            pae: pae.clone(),
            request: i as u64,
            index: 0,
        })
        .unwrap();
    }
    for _ in 0..jobs {
        assert!(drx.recv().unwrap().ok);
    }
    let elapsed = started.elapsed();
    drop(jtx);
    for h in handles {
        h.join().unwrap();
    }
    elapsed
}

fn verifier_pool(c: &mut Criterion) {
    let mut g = c.benchmark_group("verifier_pool_approvals");
    g.sample_size(10);
    const JOBS: usize = 2_000;
    g.throughput(Throughput::Elements(JOBS as u64));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, cores.max(2)] {
        g.bench_with_input(BenchmarkId::from_parameter(threads), &threads, |b, &t| {
            b.iter_custom(|iters| (0..iters).map(|_| approvals_per_sec(t, JOBS)).sum())
        });
    }
    g.finish();
}

/// `auth::authorize` of a bearer token with three caveats (`registry`, `scope`, `expires`), the
/// shape an operator mints for a writer. First use: base64url decode, V2 parse, identifier and
/// key lookup, the HMAC-SHA256 chain (root key derivation plus one HMAC per caveat) and the
/// caveat checks — measured by cycling through 4,096 distinct tokens, more than a worker
/// remembers. Repeat: the same token again on the same thread, whose signature the worker
/// already verified under this ring: the lookup, the key's age and the caveat checks.
fn auth(c: &mut Criterion) {
    use svc_registry::auth::{authorize, Action, KeyRing, OpRef, Request, RootKey};
    let key = RootKey::new("k1", [9; 32], None).expect("a valid key id");
    let ring = KeyRing::from_keys(vec![key.clone()]).expect("one key");
    let tokens: Vec<String> = (0..4096u32)
        .map(|i| {
            let mut nonce = *b"0123456789abcdef";
            nonce[..4].copy_from_slice(&i.to_le_bytes());
            let mut m = key.mint(&nonce);
            for caveat in [
                &b"registry = bench"[..],
                b"scope = propose,approve,commit",
                b"expires = 2100-01-01T00:00:00Z",
            ] {
                m.add_first_party_caveat(caveat)
                    .expect("a caveat within bounds");
            }
            m.to_base64()
        })
        .collect();
    let ops = [OpRef {
        kind: "node",
        id: "node-7",
    }];
    let req = Request {
        action: Action::Propose,
        registry_id: "bench",
        now_unix_s: 1_767_225_600,
        ops: Some(&ops),
    };
    authorize(&tokens[0], &ring, &req).expect("the bench token authorizes the bench request");
    let mut g = c.benchmark_group("auth");
    g.throughput(Throughput::Elements(1));
    let mut next = 0usize;
    g.bench_function("authorize_3_caveats_first_use", |b| {
        b.iter(|| {
            next = (next + 1) % tokens.len();
            authorize(black_box(&tokens[next]), black_box(&ring), black_box(&req)).unwrap()
        })
    });
    g.bench_function("authorize_3_caveats_repeat", |b| {
        b.iter(|| authorize(black_box(&tokens[0]), black_box(&ring), black_box(&req)).unwrap())
    });
    g.finish();
}

/// The pool per algorithm on 1 and 2 threads (the runbook's "pre-provision CPU" figures).
fn verifier_pool_by_alg(c: &mut Criterion) {
    let mut g = c.benchmark_group("verifier_pool_by_alg");
    g.sample_size(10);
    const JOBS: usize = 400;
    g.throughput(Throughput::Elements(JOBS as u64));
    for alg in KeyAlg::ALL {
        for threads in [1, 2] {
            g.bench_with_input(
                BenchmarkId::new(alg.as_str(), threads),
                &threads,
                |b, &t| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| approvals_per_sec_alg(alg, t, JOBS))
                            .sum()
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    crypto,
    crypto_by_alg,
    publish,
    verifier_pool,
    verifier_pool_by_alg,
    auth
);
criterion_main!(benches);
