//! `ronctl tail`: follow `/registry/stream`, print one line per event, and reconnect with the
//! last seen id after a drop, so no commit is ever missed.
//!
//! Invariant: once connected the tail always has a cursor. A stream started from HEAD opens
//! with a heartbeat carrying HEAD's version (or a reset carrying it as its id); that version is
//! the cursor until a commit moves it, so a reconnect resumes after it and replays whatever was
//! committed while the tail was away, even before it had seen a single commit.

use crate::http::client::{self, Target};
use crate::http::events::{next_event, Event};
use std::io::Write;
use std::time::Duration;

pub struct TailOptions {
    /// Start after this version (replays everything after it first); default: live from HEAD.
    pub from: Option<u64>,
    /// Print each event's data as one JSON line instead of a summary.
    pub json: bool,
    /// Print heartbeats too.
    pub heartbeats: bool,
    /// Stop after this many commit events (for scripts and tests).
    pub limit: Option<u64>,
    pub timeout: Duration,
}

/// The `version` of a heartbeat or shutdown event's data.
fn data_version(e: &Event) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(&e.data)
        .ok()?
        .get("version")?
        .as_u64()
}

fn summary(e: &Event) -> String {
    let v: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
    match e.event.as_str() {
        "commit" | "reset" => format!(
            "{} version={} hash={} committed_at={} descriptors={}",
            e.event,
            v["version"],
            v["hash"].as_str().unwrap_or("?"),
            v["committed_at"].as_str().unwrap_or("?"),
            v["descriptors"]
        ),
        _ => format!("{} {}", e.event, e.data),
    }
}

/// Follow the stream until `limit` commits were printed (or forever). Reconnects with the last
/// id after any drop, backing off up to 5 s.
pub fn tail(target: &Target, opts: &TailOptions, out: &mut dyn Write) -> Result<(), String> {
    tail_with_token(target, opts, None, out)
}

/// [`tail`] sending `token` as `Authorization: Bearer` (a registry with `read` required).
pub fn tail_with_token(
    target: &Target,
    opts: &TailOptions,
    token: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), String> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut last = opts.from;
    let mut printed = 0u64;
    let mut backoff = Duration::from_millis(100);
    loop {
        let id_text = last.map(|v| v.to_string());
        let mut headers: Vec<(&str, &str)> = match &id_text {
            Some(id) => vec![("Last-Event-ID", id.as_str())],
            None => vec![],
        };
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        // The read timeout must outlast heartbeats; the server sends one every heartbeat_secs.
        let opened = client::open_stream(target, "/registry/stream", &headers, opts.timeout);
        let mut reader = match opened {
            Ok((head, reader)) if head.status == 200 => reader,
            // A refused token stays refused: say so once instead of retrying forever.
            Ok((head, _)) if matches!(head.status, 401 | 403) => {
                return Err(format!(
                    "the stream answered {}: this registry requires a token with read scope (--token or RON_TOKEN)",
                    head.status
                ))
            }
            Ok((head, _)) => {
                eprintln!("tail: stream answered {}; retrying", head.status);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            // A refused certificate stays refused: say so once instead of retrying forever.
            Err(e) if client::TlsHandshakeError::is(&e) => return Err(e.to_string()),
            Err(e) => {
                eprintln!("tail: cannot connect ({e}); retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        while let Ok(Some(e)) = next_event(&mut *reader) {
            let show = match e.event.as_str() {
                "heartbeat" => opts.heartbeats,
                _ => true,
            };
            if show {
                let line = if opts.json {
                    e.data.clone()
                } else {
                    summary(&e)
                };
                writeln!(out, "{line}").map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
            }
            match e.event.as_str() {
                "commit" => {
                    last = e.id.or(last);
                    printed += 1;
                    if opts.limit.is_some_and(|l| printed >= l) {
                        return Ok(());
                    }
                }
                // Our id was beyond the server's HEAD (e.g. it was restored from an older
                // backup), or its retention window dropped what follows it (SPEC §14): the
                // reset carries the current head; continue from there, and say that what lay
                // in between was not shown (the client must re-read state), never a silent gap.
                "reset" => {
                    if let (Some(was), Some(now)) = (last, e.id) {
                        if now > was {
                            eprintln!(
                                "tail: the server cannot replay after version {was} (reset); \
                                 continuing from its head {now}: versions {}..={now} were not \
                                 shown, re-read state",
                                was + 1
                            );
                        }
                    }
                    last = e.id
                }
                // The opening heartbeat of a stream started from HEAD (no cursor yet): every
                // commit after it will be delivered, so it is where a reconnect resumes. Later
                // heartbeats never move a cursor that exists (a replaying stream's opening
                // heartbeat is ahead of the events still to come).
                "heartbeat" | "shutdown" if last.is_none() => last = data_version(&e),
                _ => {}
            }
        }
        eprintln!("tail: stream closed; reconnecting after version {last:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_across_blank_lines_and_retry_fields() {
        let text = "retry: 1000\n\nevent: heartbeat\ndata: {\"version\":0}\n\nevent: commit\nid: 1\ndata: {\"version\":1,\"hash\":\"ab\"}\n\n";
        let mut r = std::io::BufReader::new(text.as_bytes());
        let a = next_event(&mut r).unwrap().unwrap();
        assert_eq!((a.event.as_str(), a.id), ("heartbeat", None));
        let b = next_event(&mut r).unwrap().unwrap();
        assert_eq!((b.event.as_str(), b.id), ("commit", Some(1)));
        assert!(summary(&b).starts_with("commit version=1 hash=ab"));
        assert!(next_event(&mut r).unwrap().is_none());
    }
}
