//! Load generator for `perf/run.sh` and `perf/gate.sh`. Every subcommand prints one JSON object
//! on stdout.
//!
//! ```text
//! loadgen writes    --addr A [--metrics M] [--clients C] [--secs S] [--signers N] [--threshold K]
//!                   [--mode pipelined|contended] [--flow three-step|submit]
//!                   [--max-proposals P] [--registry-id ID] [--alg ed25519|ml-dsa-65|hybrid]
//! loadgen stream    --addr A --subscribers N [--commits K] [--interval-ms I] [--pid PID]
//! loadgen conncheck --addr A [--path P] [--conns N] [--secs S]
//! loadgen fill      --addr A --descriptors N [--ops K] [--threshold K] [--same-id 1]
//! loadgen synth     --dir DATA_DIR --versions N [--segment-bytes B]   (no server: see synth.rs)
//! loadgen etcd-puts --addr A [--pid ETCD_PID] [--clients C] [--secs S] [--value-bytes B]
//! loadgen coldstart --bin B --config C [--flags "..."] [--expect-version V] [--idle-ms MS]
//! loadgen verifyloop [--secs S]        verify_strict/s on one thread (the gate's yardstick)
//! loadgen signers N [--alg A]          [[signers.keys]] TOML for signers k1..kN (alg A)
//! ```

mod coldstart;
mod common;
mod conncheck;
mod etcd;
mod fill;
mod http;
mod stream;
mod synth;
mod writes;

use std::time::{Duration, Instant};

fn verifyloop(a: &common::Args) {
    let secs: f64 = a.num("secs", 1.0);
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let payload = writes::proposal("perf-registry", 1, "v");
    let pae = svc_registry::domain::dsse::pae(&payload);
    let sig = svc_registry::domain::signers::sign_payload(&key, &payload);
    let vk = key.verifying_key();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        for _ in 0..100 {
            assert!(svc_registry::domain::signers::verify_strict(
                &vk, &sig, &pae
            ));
        }
        n += 100;
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"verifies_per_s": common::round3(n as f64 / el),
                           "us_per_verify": common::round3(el / n as f64 * 1e6)})
    );
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first().cloned() else {
        eprintln!(
            "usage: loadgen writes|stream|conncheck|fill|synth|etcd-puts|verifyloop|signers ..."
        );
        std::process::exit(2);
    };
    if cmd == "signers" {
        let n: usize = argv.get(1).and_then(|v| v.parse().ok()).unwrap_or(3);
        let a = common::Args::parse(argv.get(2..).unwrap_or(&[]));
        let alg = common::parse_alg(&a.str("alg", "ed25519"));
        print!("{}", common::signer_toml(n, alg));
        return;
    }
    let a = common::Args::parse(&argv[1..]);
    match cmd.as_str() {
        "writes" => writes::run(&a),
        "stream" => stream::run(&a),
        "conncheck" => conncheck::run(&a),
        "fill" => fill::run(&a),
        "synth" => synth::run(&a),
        "etcd-puts" => etcd::run(&a),
        "verifyloop" => verifyloop(&a),
        "coldstart" => coldstart::run(&a),
        other => {
            eprintln!("unknown subcommand {other}");
            std::process::exit(2);
        }
    }
}
