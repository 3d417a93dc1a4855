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
  ronctl registry submit --file proposal.json --signer configs/dev-keys/dev-a.key --yes
  ronctl --output json registry descriptors --kind node
  export RON_TOKEN=$(ronctl cap mint --keys-file auth-keys.toml --scope propose,read --expires 7d)
  ronctl cap rotate --keys-file /etc/ron/auth-keys.toml --grace 7d --data-dir /var/lib/ron/svc-registry
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
    /// Capability token (docs/OPERATIONS.md "Securing a registry"), sent as `Authorization:
    /// Bearer` on every request. Prefer RON_TOKEN: a flag is visible to other users in `ps`.
    #[arg(
        long,
        global = true,
        env = "RON_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
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
        /// The key's algorithm: ed25519, ml-dsa-65 (FIPS 204), or hybrid (ed25519+ml-dsa-65:
        /// an approval counts only if both halves verify).
        #[arg(long, value_enum, default_value_t = AlgArg::Ed25519)]
        alg: AlgArg,
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
    /// Capability tokens and root keys: mint, attenuate, inspect, rotate.
    #[command(subcommand)]
    Cap(CapCmd),
    /// Print a shell completion script for ronctl to stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print ronctl's man page (roff) to stdout, e.g. `ronctl manpage > ronctl.1`.
    Manpage,
    /// The transparency log's key (docs/OPERATIONS.md "Transparency log").
    #[command(subcommand)]
    Log(LogCmd),
}

#[derive(Subcommand, Debug)]
enum LogCmd {
    /// Generate a log key (Go note's PRIVATE+KEY+… form, mode 0600) for `[log] key_file`;
    /// prints its verifier key.
    Keygen {
        /// The key name: the log's origin (`[log] origin`, default svc-registry/<registry_id>).
        #[arg(long)]
        origin: String,
        /// Where to write the key file (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the verifier key (`<name>+<hex id>+<base64 key>`): of a key file, or the server's.
    Vkey {
        /// A log key file; without it, GET /registry/vkey from --url.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
}

/// `keygen --alg`: the key algorithms (docs/FORMATS.md), `hybrid` naming `ed25519+ml-dsa-65`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum AlgArg {
    Ed25519,
    #[value(name = "ml-dsa-65")]
    MlDsa65,
    /// ed25519+ml-dsa-65
    #[value(name = "hybrid", alias = "ed25519+ml-dsa-65")]
    Hybrid,
}

impl From<AlgArg> for svc_registry::domain::signers::KeyAlg {
    fn from(a: AlgArg) -> Self {
        use svc_registry::domain::signers::KeyAlg;
        match a {
            AlgArg::Ed25519 => KeyAlg::Ed25519,
            AlgArg::MlDsa65 => KeyAlg::MlDsa65,
            AlgArg::Hybrid => KeyAlg::Ed25519MlDsa65,
        }
    }
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
enum CapCmd {
    /// Mint a token from a root key of the keys file; prints the token (base64url) on stdout.
    Mint {
        /// The root keys file (the server's `[auth] keys_file`).
        #[arg(long, value_name = "FILE")]
        keys_file: PathBuf,
        /// The root key to mint with (default: the newest live key).
        #[arg(long, value_name = "ID")]
        key_id: Option<String>,
        /// Actions the token allows: propose, approve, commit, admin, read (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        scope: Vec<String>,
        /// Expiry: a duration from now (90s, 30m, 12h, 7d) or an RFC 3339 time.
        #[arg(long, value_name = "D")]
        expires: Option<String>,
        /// Only proposals whose every op has this kind (node, service, region).
        #[arg(long, value_name = "K")]
        kind: Option<String>,
        /// Only proposals whose every op's id starts with this.
        #[arg(long, value_name = "P")]
        id_prefix: Option<String>,
        /// Only this registry_id.
        #[arg(long, value_name = "R")]
        registry: Option<String>,
    },
    /// Add caveats to a token (no root key needed: caveats only narrow); prints the new token.
    Attenuate {
        /// The token, or `-` to read it from stdin (keeps it out of `ps`).
        token: String,
        /// A first-party caveat, `name = value` (repeatable), e.g. "expires = 2027-01-01T00:00:00Z".
        #[arg(long = "caveat", value_name = "CAVEAT", required = true)]
        caveats: Vec<String>,
    },
    /// Show a token's identifier, root key id and caveats (never its signature).
    Inspect {
        /// The token, or `-` to read it from stdin.
        token: String,
    },
    /// Rotate root keys: add a key with a fresh secret, end the old ones after --grace, write
    /// the file atomically (mode 0600), reload the server, say what to re-issue.
    Rotate {
        /// The root keys file (the server's `[auth] keys_file`).
        #[arg(long, value_name = "FILE")]
        keys_file: PathBuf,
        /// How long tokens of the old keys stay valid (90s, 30m, 12h, 7d).
        #[arg(long, default_value = "24h", value_name = "DURATION")]
        grace: String,
        /// Id of the new key (default: k<UTC timestamp>).
        #[arg(long, value_name = "ID")]
        new_id: Option<String>,
        /// Send SIGHUP to this server process afterwards.
        #[arg(long, value_name = "PID", conflicts_with = "data_dir")]
        pid: Option<i32>,
        /// Send SIGHUP to the server holding this data directory (the PID in its LOCK file).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
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
    /// Propose, approve and commit in one request (POST /submit); prints the new version,
    /// hash and proposal id. Either a ready DSSE envelope, or a proposal file signed here.
    Submit {
        /// A DSSE envelope ({"payloadType", "payload", "signatures"}), sent byte for byte.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["file", "signer"], required_unless_present = "file")]
        envelope: Option<PathBuf>,
        /// The proposal JSON to sign with every --signer and submit (its exact bytes).
        #[arg(long, value_name = "PROPOSAL", requires = "signer")]
        file: Option<PathBuf>,
        /// Private key file (from `ronctl keygen`); repeat for a quorum.
        #[arg(long, value_name = "KEYFILE")]
        signer: Vec<PathBuf>,
        /// Sign without asking for confirmation (needed when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
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
    /// Write a C2SP tlog-proof that VERSION is in the server's current signed checkpoint.
    Prove {
        /// The version to prove.
        version: u64,
        /// Insist on this tree size (the server signs only its current one).
        #[arg(long)]
        size: Option<u64>,
        /// Where to write the proof.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a tlog-proof offline against a pinned verifier key.
    CheckProof {
        /// The proof file (from `registry prove`).
        file: PathBuf,
        /// The log's verifier key, or a file holding it (from `ronctl log vkey`).
        #[arg(long)]
        vkey: String,
        /// The record hash (hash_V, 64 hex) the proof must be for; default: the one it carries.
        #[arg(long, value_name = "HEX")]
        record_hash: Option<String>,
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

/// A token argument, or stdin for `-`.
fn token_arg(arg: &str) -> Result<String, String> {
    if arg != "-" {
        return Ok(arg.to_string());
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|e| format!("reading the token from stdin: {e}"))?;
    Ok(text.trim().to_string())
}

fn cap(c: CapCmd, output: cli::Output) -> cli::CliResult {
    use svc_registry::auth::tool;
    match c {
        CapCmd::Mint {
            keys_file,
            key_id,
            scope,
            expires,
            kind,
            id_prefix,
            registry,
        } => {
            tool::check_scope(&scope)?;
            let token = tool::mint(
                &keys_file,
                &tool::MintOptions {
                    key_id,
                    scope,
                    expires,
                    kind,
                    id_prefix,
                    registry,
                },
            )?;
            cli::emit(output, &serde_json::json!({"token": token}), || {
                token.clone()
            });
            Ok(())
        }
        CapCmd::Attenuate { token, caveats } => {
            let token = tool::attenuate(&token_arg(&token)?, &caveats)?;
            cli::emit(output, &serde_json::json!({"token": token}), || {
                token.clone()
            });
            Ok(())
        }
        CapCmd::Inspect { token } => {
            let v = tool::inspect(&token_arg(&token)?)?;
            cli::emit(output, &v, || {
                let mut out = format!(
                    "identifier: {}\nkey_id: {}",
                    v["identifier"].as_str().unwrap_or("?"),
                    v["key_id"]
                        .as_str()
                        .unwrap_or("(not a v1:<key id>:<nonce> identifier)")
                );
                for c in v["caveats"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\ncaveat: {} ({})",
                        c["caveat"].as_str().unwrap_or("?"),
                        c["check"].as_str().unwrap_or("?")
                    ));
                }
                out
            });
            Ok(())
        }
        CapCmd::Rotate {
            keys_file,
            grace,
            new_id,
            pid,
            data_dir,
        } => {
            let grace_s = tool::parse_duration(&grace).map_err(|e| format!("--grace: {e}"))?;
            let rotated = tool::rotate(&keys_file, new_id.as_deref(), grace_s)?;
            let pid = match (pid, data_dir) {
                (Some(p), _) => Some(p),
                (None, Some(dir)) => Some(tool::server_pid(&dir)?),
                (None, None) => None,
            };
            let reloaded = match pid {
                Some(p) => {
                    tool::signal_reload(p)?;
                    Some(p)
                }
                None => None,
            };
            let report = tool::rotation_report(&rotated, &keys_file);
            let ending: Vec<serde_json::Value> = rotated
                .ending
                .iter()
                .map(|(id, t)| serde_json::json!({"key_id": id, "not_after_unix": t}))
                .collect();
            cli::emit(
                output,
                &serde_json::json!({
                    "new_key": rotated.new_key,
                    "ending": ending,
                    "dropped": rotated.dropped,
                    "reloaded_pid": reloaded,
                }),
                || {
                    match reloaded {
                    Some(p) => format!("{report}\nsent SIGHUP to {p}: check its log for msg=reloaded auth_keys=N"),
                    None => format!("{report}\nreload the server (SIGHUP, e.g. systemctl reload svc-registry) to put the new key in force"),
                }
                },
            );
            Ok(())
        }
    }
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
    // An empty RON_TOKEN (e.g. `RON_TOKEN= ronctl …`) means no token, not an empty one.
    conn.token = cli.conn.token.clone().filter(|t| !t.trim().is_empty());
    let result = match cli.cmd {
        Cmd::Keygen { out, keyid, alg } => {
            cli::keygen(&out, keyid.as_deref(), alg.into(), conn.output)
        }
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
            svc_registry::tail::tail_with_token(
                &conn.registry,
                &opts,
                conn.token.as_deref(),
                &mut std::io::stdout().lock(),
            )
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
        Cmd::Cap(c) => cap(c, conn.output),
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
            RegistryCmd::Submit {
                envelope,
                file,
                signer,
                yes,
            } => cli::submit(&conn, envelope.as_deref(), file.as_deref(), &signer, yes),
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
            RegistryCmd::Prove { version, size, out } => {
                svc_registry::tlog::tool::prove(&conn, version, size, &out)
            }
            RegistryCmd::CheckProof {
                file,
                vkey,
                record_hash,
            } => svc_registry::tlog::tool::check_proof(
                &file,
                &vkey,
                record_hash.as_deref(),
                conn.output,
            ),
        },
        Cmd::Log(LogCmd::Keygen { origin, out }) => {
            svc_registry::tlog::tool::keygen(&origin, &out, conn.output)
        }
        Cmd::Log(LogCmd::Vkey { key }) => svc_registry::tlog::tool::vkey(&conn, key.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
