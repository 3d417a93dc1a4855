//! Shared pieces: argument parsing, signer keys, percentiles, server metrics and CPU probes.

use ed25519_dalek::SigningKey;
use std::collections::HashMap;
use std::time::Duration;

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

/// Signer `i` (1-based) of a load-generator registry: seed byte `i`, keyid `k{i}`.
pub struct Signer {
    pub keyid: String,
    pub key: SigningKey,
}

pub fn signers(n: usize) -> Vec<Signer> {
    (1..=n)
        .map(|i| Signer {
            keyid: format!("k{i}"),
            key: SigningKey::from_bytes(&[i as u8; 32]),
        })
        .collect()
}

impl Signer {
    pub fn sign(&self, payload: &[u8]) -> String {
        svc_registry::domain::dsse::encode_sig(&svc_registry::domain::signers::sign_payload(
            &self.key, payload,
        ))
    }
}

/// TOML `[[signers.keys]]` blocks for signers 1..=n.
pub fn signer_toml(n: usize) -> String {
    let mut s = String::new();
    for k in signers(n) {
        s.push_str(&format!(
            "[[signers.keys]]\nkeyid = \"{}\"\npublic_key = \"{}\"\n",
            k.keyid,
            hex::encode(k.key.verifying_key().as_bytes())
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
                if let Ok(v) = v.parse() {
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

pub fn sum_cpu(m: &HashMap<String, u64>) -> u64 {
    m.values().sum()
}
