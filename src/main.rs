//! `svc-registry`: the server binary. Thin glue: parse flags, hand over to [`svc_registry::app`].

use clap::Parser;
use std::path::PathBuf;
use svc_registry::config::{Config, Flags};

/// Authoritative, append-only registry of quorum-signed node / service / region descriptors.
///
/// Reads are served lock-free from an in-memory snapshot; writes are proposed, approved by M of
/// N ed25519 signers (DSSE), and committed durably. See docs/OPERATIONS.md.
#[derive(Parser, Debug)]
#[command(
    name = "svc-registry",
    version,
    about,
    long_about = None,
    after_help = "\
Examples:
  svc-registry --config configs/dev.toml               # local development (DEV-ONLY keys)
  svc-registry --config /etc/ron/svc-registry.toml --check-config
  svc-registry --config node.toml --amnesia --read-only
  svc-registry --config replica.toml --follow http://10.0.0.1:9444   # verifying read replica

Environment (overrides the file):
  RON_CONFIG      config path when --config is absent
  REGISTRY_ADDR   registry listener, e.g. 0.0.0.0:9444 (port 0 = ephemeral; the ready line names it)
  METRICS_ADDR    metrics listener, e.g. 127.0.0.1:9909
  RON_BUS_SOCK    local bus socket path
  RUST_LOG        log filter, e.g. info,svc_registry=debug

Signals: SIGHUP reloads the config (invalid files are refused, the old config stays);
SIGTERM/SIGINT drain (finish in-flight requests, make acknowledged writes durable, end streams,
log shutdown_complete=1, exit 0); a second SIGTERM/SIGINT exits at once.

Exit codes: 0 clean shutdown, 1 start-up failure (bind, data dir in use), 2 invalid config.
Docs: docs/OPERATIONS.md (runbook), docs/API.md (routes)."
)]
struct Cli {
    /// Config file (TOML). Falls back to $RON_CONFIG.
    #[arg(long, env = "RON_CONFIG", value_name = "PATH")]
    config: PathBuf,
    /// Keep everything in memory; write nothing to disk (Micronode).
    #[arg(long)]
    amnesia: bool,
    /// Serve the registry API on `uds_path` only, no TCP listener.
    #[arg(long)]
    uds_only: bool,
    /// Maintenance: write endpoints answer 503, reads work.
    #[arg(long)]
    read_only: bool,
    /// Follow this upstream as a verifying read replica (repeatable; replaces `[follow]
    /// upstreams`; needs `[follow] genesis_hash`). With --amnesia: a Micronode.
    #[arg(long, value_name = "URL")]
    follow: Vec<String>,
    /// Validate the config, print the effective config (secrets redacted) and exit 0, or 2 if
    /// it is invalid.
    #[arg(long)]
    check_config: bool,
}

/// One glibc malloc arena per core (at least two) unless the operator set `MALLOC_ARENA_MAX`.
///
/// glibc gives each new thread its own arena, up to 8 per core; the server runs a dozen
/// threads, and memory freed in one arena is kept resident there for reuse by that arena
/// only, so the process's anonymous memory crept up with every commit although the live heap
/// grew by only the history index's 16 bytes per version (docs/PERFORMANCE.md, "What the soak's
/// RssAnon slope is made of"). On two cores at most two threads allocate at once, so two arenas
/// cost little contention. Must run before any thread is spawned.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator parameter; no thread allocates concurrently yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

fn main() {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let flags = Flags {
        amnesia: cli.amnesia,
        uds_only: cli.uds_only,
        read_only: cli.read_only,
        follow: cli.follow,
    };
    if cli.check_config {
        match Config::load(&cli.config, flags) {
            Ok(c) => {
                // The certificate files are part of the config: check they load together.
                if let Err(e) = svc_registry::app::tls_config(&c) {
                    eprintln!("error: {}: {e}", c.path.display());
                    std::process::exit(svc_registry::app::EXIT_CONFIG);
                }
                // So is the keys file of [auth] (its mode included).
                if let Some(auth) = &c.raw.auth {
                    if let Err(e) = svc_registry::auth::gate::load_keys(auth) {
                        eprintln!("error: {}: [auth] {e}", c.path.display());
                        std::process::exit(svc_registry::app::EXIT_CONFIG);
                    }
                }
                print!("{}", c.to_toml());
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(svc_registry::app::EXIT_CONFIG);
            }
        }
    }
    let code = svc_registry::app::run(svc_registry::app::Options {
        config_path: cli.config,
        flags,
    });
    std::process::exit(code);
}
