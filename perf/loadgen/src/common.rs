//! Shared pieces: argument parsing, signer keys, percentiles, server metrics and CPU probes.

use ed25519_dalek::SigningKey;
use std::collections::HashMap;
use std::time::Duration;
use svc_registry::domain::algs::{KeyAlg, SecretKey};

/// `--key value` pairs and bare `--flag`s.
pub struct Args(HashMap<String, String>);

impl Args {
    pub fn parse(raw: &[String]) -> Args {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < raw.len() {
            let k = raw[i].trim_start_matches("--").to_string();
            // `--flags` takes the next argument as is (it may itself start with `--`).
            if i + 1 < raw.len() && (k == "flags" || !raw[i + 1].starts_with("--")) {
                map.insert(k, raw[i + 1].clone());
                i += 2;
            } else {
                map.insert(k, "true".to_string());
                i += 1;
            }
        }
        Args(map)
    }
    pub fn str(&self, k: &str, default: &str) -> String {
        self.0
            .get(k)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }
    pub fn req(&self, k: &str) -> String {
        self.0
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("missing --{k}"))
    }
    pub fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> T {
        match self.0.get(k) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("--{k} {v:?} is not a number")),
            None => default,
        }
    }
}

/// Signer `i` (1-based) of a load-generator registry, keyid `k{i}`, with deterministic seeds so
/// that `loadgen signers` (the server's config) and every signing subcommand agree without
/// sharing files: the ed25519 seed is 32 bytes of `i` (as before `--alg` existed, so ed25519
/// configs are unchanged), the ML-DSA-65 seed 32 bytes of `0x80 + i`.
pub struct Signer {
    pub keyid: String,
    /// The ed25519 key of seed `i` (what `synth` writes into its records, whatever `alg` is).
    pub key: SigningKey,
    /// The key approvals are signed with, of the chosen algorithm.
    pub secret: SecretKey,
}

/// `--alg` names: ed25519, ml-dsa-65, hybrid (or its FORMATS.md name ed25519+ml-dsa-65).
pub fn parse_alg(name: &str) -> KeyAlg {
    match name {
        "hybrid" => KeyAlg::Ed25519MlDsa65,
        other => KeyAlg::parse(other).unwrap_or_else(|_| {
            eprintln!("--alg {other:?}: expected ed25519, ml-dsa-65 or hybrid");
            std::process::exit(2)
        }),
    }
}

pub fn signers(n: usize) -> Vec<Signer> {
    signers_alg(n, KeyAlg::Ed25519)
}

pub fn signers_alg(n: usize, alg: KeyAlg) -> Vec<Signer> {
    (1..=n)
        .map(|i| {
            let ed = [i as u8; 32];
            let ml = [0x80u8.wrapping_add(i as u8); 32];
            let seeds: Vec<[u8; 32]> = match alg {
                KeyAlg::Ed25519 => vec![ed],
                KeyAlg::MlDsa65 => vec![ml],
                KeyAlg::Ed25519MlDsa65 => vec![ed, ml],
            };
            Signer {
                keyid: format!("k{i}"),
                key: SigningKey::from_bytes(&ed),
                secret: SecretKey::from_seeds(alg, &seeds).expect("seed count matches alg"),
            }
        })
        .collect()
}

impl Signer {
    /// The DSSE signature text of `payload`. ML-DSA-65 signs deterministically (zero `rnd`), so
    /// runs are repeatable; the verifier's cost does not depend on the variant.
    pub fn sign(&self, payload: &[u8]) -> String {
        self.secret
            .sign_payload(payload, &[0; 32])
            .expect("signing with a generated key")
            .encode()
    }
}

/// TOML `[[signers.keys]]` blocks for signers 1..=n of `alg` (no `alg` line for ed25519, so
/// those configs read as they did before key algorithms existed).
pub fn signer_toml(n: usize, alg: KeyAlg) -> String {
    let mut s = String::new();
    for k in signers_alg(n, alg) {
        s.push_str(&format!("[[signers.keys]]\nkeyid = \"{}\"\n", k.keyid));
        if alg != KeyAlg::Ed25519 {
            s.push_str(&format!("alg = \"{}\"\n", alg.as_str()));
        }
        s.push_str(&format!(
            "public_key = \"{}\"\n",
            k.secret.public_key().to_text()
        ));
    }
    s
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Percentile (nearest rank) of sorted values.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summary_ms(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    serde_json::json!({
        "n": v.len(),
        "p50_ms": round3(pct(&v, 50.0)),
        "p95_ms": round3(pct(&v, 95.0)),
        "p99_ms": round3(pct(&v, 99.0)),
        "max_ms": round3(v.last().copied().unwrap_or(f64::NAN)),
    })
}

pub fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        x
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The samples of a Prometheus text exposition: series (name plus labels) → value.
pub fn scrape(addr: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let mut c = crate::http::Conn::new(addr);
    if let Ok(r) = c.get("/metrics") {
        for line in r.text().lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.rsplit_once(' ') {
                if let Ok(v) = v.parse::<f64>() {
                    // A labelled sample also counts towards its bare name, summed over the
                    // labels: `approval_verify_seconds_count` is the total over every `alg`.
                    if let Some((base, _)) = k.split_once('{') {
                        *out.entry(base.to_string()).or_insert(0.0) += v;
                    }
                    out.insert(k.to_string(), v);
                }
            }
        }
    }
    out
}

/// CPU nanoseconds of each thread of `pid`, by thread name (summed over equal names).
pub fn thread_cpu_ns(pid: u32) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let p = e.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let ns: u64 = std::fs::read_to_string(p.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0);
        *out.entry(comm.trim().to_string()).or_insert(0) += ns;
    }
    out
}

/// CPU nanoseconds this process (every thread, living or joined) has used so far: the client's
/// own cost, so that a run can say what the box spent per operation on both sides.
pub fn self_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_PROCESS_CPUTIME_ID exists on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// µs per operation of a CPU-nanosecond difference, rounded like every other figure.
pub fn us_per(ns: u64, ops: usize) -> f64 {
    round3(ns as f64 / ops.max(1) as f64 / 1000.0)
}

pub fn sum_cpu(m: &HashMap<String, u64>) -> u64 {
    m.values().sum()
}
