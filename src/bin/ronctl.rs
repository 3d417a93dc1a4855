//! `ronctl`: the operator and signer CLI. Thin over the library: talks HTTP to the server.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use svc_registry::cli;

/// Operator and signer CLI for svc-registry.
#[derive(Parser, Debug)]
#[command(name = "ronctl", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
struct Conn {
    /// The registry listener.
    #[arg(
        long,
        global = true,
        env = "RON_REGISTRY_URL",
        default_value = "http://127.0.0.1:9444"
    )]
    url: String,
    /// The metrics listener (health, metrics and admin routes).
    #[arg(
        long,
        global = true,
        env = "RON_ADMIN_URL",
        default_value = "http://127.0.0.1:9909"
    )]
    admin_url: String,
    /// Talk to the registry API over this Unix socket instead of --url.
    #[arg(long, global = true, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Seconds to wait for an answer.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate a signer key: private key file (mode 0600) and its public key.
    Keygen {
        /// Where to write the private key file.
        #[arg(long)]
        out: PathBuf,
        /// The keyid to record in the file (the config's keyid for this key).
        #[arg(long)]
        keyid: Option<String>,
    },
    /// Registry reads and the propose → approve → commit flow.
    #[command(subcommand)]
    Registry(RegistryCmd),
    /// Sign a proposal payload offline (air-gapped signer); prints {"keyid","sig"}.
    Sign {
        /// The exact proposal bytes, as exported by `registry approve --export-payload`.
        #[arg(long)]
        payload: PathBuf,
        #[arg(long)]
        signer: PathBuf,
        /// Write the signature JSON here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Subcommand, Debug)]
enum RegistryCmd {
    /// Print HEAD.
    Head,
    /// Print the commit record at VERSION.
    Get { version: u64 },
    /// Submit a proposal file (its exact bytes); prints the proposal id.
    Propose {
        #[arg(long)]
        file: PathBuf,
    },
    /// Review a proposal's diff and approve it with a signer key.
    Approve {
        #[arg(long)]
        id: String,
        /// Private key file (from `ronctl keygen`).
        #[arg(long, required_unless_present_any = ["export_payload", "import_sig"])]
        signer: Option<PathBuf>,
        /// Only write the exact payload bytes to this file (for an offline signer) and stop.
        #[arg(long, conflicts_with_all = ["signer", "import_sig"])]
        export_payload: Option<PathBuf>,
        /// Submit a signature made offline by `ronctl sign` instead of signing here.
        #[arg(long, conflicts_with = "signer")]
        import_sig: Option<PathBuf>,
    },
    /// Commit an approved proposal; prints the new version and hash.
    Commit {
        #[arg(long)]
        id: String,
    },
    /// Download the log and check every hash and quorum signature offline.
    Verify {
        /// Pinned signer set: JSON as served by /registry/signers. Without it the server's own
        /// published set is used (with a warning: a compromised server could lie about it).
        #[arg(long)]
        signers: Option<PathBuf>,
        /// Verify records from this file (JSON: an array of records, or a /registry/log page)
        /// instead of downloading them.
        #[arg(long)]
        log_file: Option<PathBuf>,
        /// The registry_id the records must belong to (default: the first payload's).
        #[arg(long)]
        registry_id: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Print the effective config (file + environment) as TOML, secrets redacted.
    Print {
        /// The config file; default $RON_CONFIG.
        #[arg(long, env = "RON_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let conn = cli::Conn::new(
        &cli.conn.url,
        &cli.conn.admin_url,
        cli.conn.unix.clone(),
        std::time::Duration::from_secs(cli.conn.timeout),
    );
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.cmd {
        Cmd::Keygen { out, keyid } => cli::keygen(&out, keyid.as_deref()),
        Cmd::Sign {
            payload,
            signer,
            out,
        } => cli::sign_offline(&payload, &signer, out.as_deref()),
        Cmd::Config(ConfigCmd::Print { config }) => cli::config_print(&config),
        Cmd::Registry(r) => match r {
            RegistryCmd::Head => cli::head(&conn),
            RegistryCmd::Get { version } => cli::get(&conn, version),
            RegistryCmd::Propose { file } => cli::propose(&conn, &file),
            RegistryCmd::Approve {
                id,
                signer,
                export_payload,
                import_sig,
            } => cli::approve(
                &conn,
                &id,
                signer.as_deref(),
                export_payload.as_deref(),
                import_sig.as_deref(),
            ),
            RegistryCmd::Commit { id } => cli::commit(&conn, &id),
            RegistryCmd::Verify {
                signers,
                log_file,
                registry_id,
            } => cli::verify(
                &conn,
                signers.as_deref(),
                log_file.as_deref(),
                registry_id.as_deref(),
            ),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
