//! `svc-registry`: the server binary. Thin glue: parse flags, hand over to [`svc_registry::app`].

use clap::Parser;
use std::path::PathBuf;
use svc_registry::config::{Config, Flags};

/// Authoritative, append-only registry of quorum-signed node / service / region descriptors.
///
/// Reads are served lock-free from an in-memory snapshot; writes are proposed, approved by M of
/// N ed25519 signers (DSSE), and committed durably. See docs/OPERATIONS.md.
#[derive(Parser, Debug)]
#[command(name = "svc-registry", version, about, long_about = None)]
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
    /// Validate the config, print the effective config (secrets redacted) and exit 0, or 2 if
    /// it is invalid.
    #[arg(long)]
    check_config: bool,
}

fn main() {
    let cli = Cli::parse();
    let flags = Flags {
        amnesia: cli.amnesia,
        uds_only: cli.uds_only,
        read_only: cli.read_only,
    };
    if cli.check_config {
        match Config::load(&cli.config, flags) {
            Ok(c) => {
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
