//! `ronctl`: the operator and signer CLI. Thin over the library: talks HTTP to the server.

use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use svc_registry::cli;

/// Operator and signer CLI for svc-registry.
///
/// Reads the registry (head, versions, descriptors, the log, proposals), drives the
/// propose → approve → commit flow with signer keys (online or offline), verifies the signed
/// history, follows the commit stream, and runs the operator routes (maintenance, chaos, backup,
/// config) on the metrics listener. Talks HTTP to a running svc-registry; no curl needed.
#[derive(Parser, Debug)]
#[command(
    name = "ronctl",
    version,
    about = "Operator and signer CLI for svc-registry",
    long_about,
    after_help = "\
Examples:
  ronctl registry head
  ronctl registry propose --file proposal.json
  ronctl registry approve --id ID --signer configs/dev-keys/dev-a.key
  ronctl registry commit --id ID
  ronctl --output json registry descriptors --kind node
  ronctl completions bash > /etc/bash_completion.d/ronctl
  ronctl manpage > ronctl.1

Exit codes: 0 success, 1 the command failed (message on stderr), 2 usage error."
)]
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
    #[arg(long, global = true, default_value_t = 30, value_name = "SECS")]
    timeout: u64,
    /// For https:// URLs: trust the CA certificates in this PEM file (default: the system's).
    #[arg(long, global = true, env = "RON_CACERT", value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// For https:// URLs to a server that requires client certificates (mutual TLS): this
    /// client's certificate chain (PEM), with --client-key.
    #[arg(long, global = true, env = "RON_CLIENT_CERT", value_name = "FILE")]
    client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM).
    #[arg(long, global = true, env = "RON_CLIENT_KEY", value_name = "FILE")]
    client_key: Option<PathBuf>,
    /// Output format: `text` for people, `json` for scripts (one JSON document on stdout).
    #[arg(long, global = true, value_enum, default_value_t = cli::Output::Text)]
    output: cli::Output,
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
    /// The signer set on the log (docs/FORMATS.md): show it, propose a new one.
    #[command(subcommand)]
    Signers(SignersCmd),
    /// Sign a proposal payload offline (air-gapped signer); prints {"keyid","sig"}.
    Sign {
        /// The exact proposal bytes, as exported by `registry approve --export-payload`.
        #[arg(long, value_name = "FILE")]
        payload: PathBuf,
        /// Private key file (from `ronctl keygen`) to sign with.
        #[arg(long, value_name = "KEYFILE")]
        signer: PathBuf,
        /// Write the signature JSON here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Follow the commit stream (/registry/stream), reconnecting without gaps.
    Tail {
        /// Only `registry` exists (the runbook's `--topic registry`).
        #[arg(long, default_value = "registry", value_parser = ["registry"])]
        topic: String,
        /// Replay every commit after this version first.
        #[arg(long)]
        from: Option<u64>,
        /// Print each event's JSON data instead of a summary line.
        #[arg(long)]
        json: bool,
        /// Print heartbeats too.
        #[arg(long)]
        heartbeats: bool,
        /// Stop after this many commits.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Fault injection through the admin routes (needs `[chaos] enabled = true`).
    #[command(subcommand)]
    Chaos(ChaosCmd),
    /// Maintenance (read-only) mode, switched at run time.
    #[command(subcommand)]
    Maintenance(MaintenanceCmd),
    /// A follower's standing (verified head, upstream head, lag, refusals), from its listeners.
    #[command(subcommand)]
    Follow(FollowCmd),
    /// Hot backup: the server copies its data directory into DIR (on the server's host); a copy
    /// restores by pointing data_dir at it.
    Backup {
        /// A new or empty directory, outside the data directory.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Print a shell completion script for ronctl to stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print ronctl's man page (roff) to stdout, e.g. `ronctl manpage > ronctl.1`.
    Manpage,
}

#[derive(Subcommand, Debug)]
enum SignersCmd {
    /// The set in force for proposals on base VERSION (default HEAD), with the version that put
    /// it in force and its digest.
    Show {
        #[arg(long)]
        version: Option<u64>,
    },
    /// Propose a new signer set on HEAD from a TOML file (`threshold = M` and `[[keys]]` with
    /// keyid, public_key, optional alg, not_before, not_after: like the config's [signers]).
    /// It commits only with a quorum of the set in force and a quorum of the new set.
    Propose {
        #[arg(long)]
        file: PathBuf,
        /// The registry_id (default: read from the server's /admin/config).
        #[arg(long)]
        registry_id: Option<String>,
        /// Free text recorded in the proposal.
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ChaosCmd {
    /// Add latency before every storage sync (commits slow down; reads do not).
    Inject {
        /// Only `svc-registry` (the runbook's `--target`): ronctl talks to the one server at
        /// --admin-url.
        #[arg(long, default_value = "svc-registry", value_parser = ["svc-registry"])]
        target: String,
        /// The fault; only `storage-latency` exists.
        #[arg(long, value_parser = ["storage-latency"])]
        fault: String,
        /// Milliseconds added before each log sync.
        #[arg(long)]
        ms: u64,
        /// End the fault after this many seconds (default: until `chaos clear`).
        #[arg(long = "for", value_name = "SECS")]
        for_secs: Option<u64>,
    },
    /// Remove any injected fault.
    Clear,
    /// Show injected faults.
    Status,
}

#[derive(Subcommand, Debug)]
enum FollowCmd {
    /// Verified head, newest upstream head, lag, applied, refusals, reconnects, /readyz reasons.
    Status,
}

#[derive(Subcommand, Debug)]
enum MaintenanceCmd {
    /// Writes answer 503 until `maintenance off`; reads keep working; /readyz shows the reason.
    On {
        /// Why (shown by /readyz, `maintenance status` and the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Writes enabled again.
    Off,
    /// Show the mode and its reason.
    Status,
}

#[derive(Subcommand, Debug)]
enum RegistryCmd {
    /// Print HEAD.
    Head,
    /// Print the commit record at VERSION.
    Get {
        /// The version (0 is genesis).
        version: u64,
    },
    /// Submit a proposal file (its exact bytes); prints the proposal id.
    Propose {
        /// The proposal JSON ({"registry_id", "base_version", "ops"}); sent byte for byte.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Review a proposal's diff and approve it with a signer key (asks before signing).
    Approve {
        /// The proposal id (printed by `propose`).
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
        /// Sign without asking for confirmation (needed when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Commit an approved proposal; prints the new version and hash.
    Commit {
        /// The proposal id (printed by `propose`).
        #[arg(long)]
        id: String,
    },
    /// Print one descriptor.
    Descriptor {
        /// `node`, `service` or `region`.
        kind: String,
        /// The descriptor id.
        id: String,
    },
    /// List descriptors (every page, read at one version), optionally of one kind.
    Descriptors {
        /// Only this kind: `node`, `service` or `region`.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Print a page of commit records from the log.
    Log {
        /// The first version to print.
        #[arg(long, default_value_t = 0, value_name = "V")]
        from: u64,
        /// How many records (1..=1000).
        #[arg(long, default_value_t = 100, value_name = "N")]
        limit: u64,
    },
    /// Print a proposal as a signer reviews it (state, approvals, diff, exact payload).
    Proposal {
        /// The proposal id.
        id: String,
    },
    /// Download the log and check every hash and quorum signature offline; then replay the
    /// signed proposals and check that the served descriptors are exactly their result.
    Verify {
        /// Pinned genesis signer set: JSON as served by /registry/signers?version=0. Later sets
        /// are taken from the log, each verified by the quorums of the set before it.
        #[arg(long)]
        signers: Option<PathBuf>,
        /// Pinned genesis hash (docs/FORMATS.md): the one value an auditor needs. Without it or
        /// --signers, the downloaded genesis is trusted and its hash printed.
        #[arg(long)]
        genesis_hash: Option<String>,
        /// Verify records from this file (JSON: an array of records, or a /registry/log page)
        /// instead of downloading them (the served state is then not compared).
        #[arg(long)]
        log_file: Option<PathBuf>,
        /// The registry_id the records must belong to (default: the first payload's).
        #[arg(long)]
        registry_id: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Print the effective config as TOML, secrets redacted: with --config, what that file
    /// gives (file + environment); without, the running server's (file + environment + flags,
    /// from --admin-url).
    Print {
        /// Only `svc-registry` (the runbook's `ronctl config print svc-registry`).
        #[arg(value_parser = ["svc-registry"])]
        service: Option<String>,
        /// The config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let tls = svc_registry::http::client::TlsOptions {
        cacert: cli.conn.cacert.clone(),
        client_cert: cli.conn.client_cert.clone(),
        client_key: cli.conn.client_key.clone(),
    };
    let conn = cli::Conn::with_tls(
        &cli.conn.url,
        &cli.conn.admin_url,
        cli.conn.unix.clone(),
        &tls,
        std::time::Duration::from_secs(cli.conn.timeout),
    );
    let mut conn = match conn {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    conn.output = cli.conn.output;
    let result = match cli.cmd {
        Cmd::Keygen { out, keyid } => cli::keygen(&out, keyid.as_deref(), conn.output),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ronctl", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Manpage => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(|e| format!("writing the man page: {e}")),
        Cmd::Sign {
            payload,
            signer,
            out,
        } => cli::sign_offline(&payload, &signer, out.as_deref()),
        Cmd::Config(ConfigCmd::Print { service: _, config }) => {
            cli::config_print(&conn, config.as_deref())
        }
        Cmd::Tail {
            topic: _,
            from,
            json,
            heartbeats,
            limit,
        } => {
            let opts = svc_registry::tail::TailOptions {
                from,
                json: json || conn.output == cli::Output::Json,
                heartbeats,
                limit,
                // Reads must outlast the server's heartbeat period.
                timeout: std::time::Duration::from_secs(cli.conn.timeout.max(60)),
            };
            svc_registry::tail::tail(&conn.registry, &opts, &mut std::io::stdout().lock())
        }
        Cmd::Chaos(c) => match c {
            ChaosCmd::Inject {
                target: _,
                fault,
                ms,
                for_secs,
            } => cli::chaos_inject(&conn, &fault, ms, for_secs),
            ChaosCmd::Clear => cli::chaos_clear(&conn),
            ChaosCmd::Status => cli::chaos_status(&conn),
        },
        Cmd::Maintenance(c) => match c {
            MaintenanceCmd::On { reason } => cli::maintenance(&conn, Some(true), Some(&reason)),
            MaintenanceCmd::Off => cli::maintenance(&conn, Some(false), None),
            MaintenanceCmd::Status => cli::maintenance(&conn, None, None),
        },
        Cmd::Follow(FollowCmd::Status) => cli::follow_status(&conn),
        Cmd::Backup { to } => cli::backup(&conn, &to),
        Cmd::Signers(SignersCmd::Show { version }) => cli::signers_show(&conn, version),
        Cmd::Signers(SignersCmd::Propose {
            file,
            registry_id,
            note,
        }) => cli::signers_propose(&conn, &file, registry_id.as_deref(), note.as_deref()),
        Cmd::Registry(r) => match r {
            RegistryCmd::Head => cli::head(&conn),
            RegistryCmd::Get { version } => cli::get(&conn, version),
            RegistryCmd::Propose { file } => cli::propose(&conn, &file),
            RegistryCmd::Approve {
                id,
                signer,
                export_payload,
                import_sig,
                yes,
            } => cli::approve(
                &conn,
                &id,
                signer.as_deref(),
                export_payload.as_deref(),
                import_sig.as_deref(),
                yes,
            ),
            RegistryCmd::Commit { id } => cli::commit(&conn, &id),
            RegistryCmd::Descriptor { kind, id } => cli::descriptor(&conn, &kind, &id),
            RegistryCmd::Descriptors { kind } => cli::descriptors(&conn, kind.as_deref()),
            RegistryCmd::Log { from, limit } => cli::log_page(&conn, from, limit),
            RegistryCmd::Proposal { id } => cli::proposal(&conn, &id),
            RegistryCmd::Verify {
                signers,
                genesis_hash,
                log_file,
                registry_id,
            } => cli::verify(
                &conn,
                signers.as_deref(),
                genesis_hash.as_deref(),
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
