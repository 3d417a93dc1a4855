//! First-party caveats of docs/OPERATIONS.md (`name = value` text) and the pure check of a verified
//! caveat list against one request. No I/O and no clock: the caller passes `now`.
//!
//! Invariant: every caveat must hold, and a caveat this module cannot read fails the token.
//! All caveats are parsed before any is checked, so an unknown or malformed caveat is reported as
//! such whatever the request, never hidden behind a denial by an earlier caveat.
//!
//! Decision table (first matching row wins, in caveat order):
//!
//! | caveat                  | holds when                                          | else  |
//! |-------------------------|-----------------------------------------------------|-------|
//! | not UTF-8 `name = value`, unknown name, bad value | never                      | 401   |
//! | `expires = T`           | `now < T` (T is RFC 3339)                           | 401   |
//! | `registry = X`          | the request's registry id is `X`                    | 403   |
//! | `scope = a,b`           | the action is one of the listed actions             | 403   |
//! | `kind = K`              | every op has kind `K`                               | 403   |
//! | `id_prefix = P`         | every op's id starts with `P`                       | 403   |
//!
//! An expired token is 401 (RFC 6750 `invalid_token`: the client must get a new one); the rows
//! marked 403 are a valid token that does not cover this request (`insufficient_scope`).
//! `kind` and `id_prefix` speak about ops. A request that carries none (`ops: None`) satisfies
//! them only if it is a `read` (reads are not split by kind); `admin` and any other op-less
//! request fail closed, so a token narrowed to `kind = node` cannot be used for `admin`.

use super::{AuthError, Denial};

/// What a request wants to do; the names are the `scope` caveat's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Propose,
    Approve,
    Commit,
    Admin,
    Read,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Propose,
        Action::Approve,
        Action::Commit,
        Action::Admin,
        Action::Read,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Propose => "propose",
            Action::Approve => "approve",
            Action::Commit => "commit",
            Action::Admin => "admin",
            Action::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The descriptor kinds a `kind` caveat may name.
pub const KINDS: [&str; 3] = ["node", "service", "region"];

/// One op of a proposal, as far as caveats care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpRef<'a> {
    pub kind: &'a str,
    pub id: &'a str,
}

/// The request a token is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub action: Action,
    pub registry_id: &'a str,
    /// Unix seconds, from the caller's clock.
    pub now_unix_s: i64,
    /// The ops the request touches (a proposal's), `None` for a request without ops.
    pub ops: Option<&'a [OpRef<'a>]>,
}

/// A caveat this module understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caveat {
    Registry(String),
    Scope(Vec<Action>),
    /// Unix seconds; the token is good strictly before.
    Expires(i64),
    Kind(String),
    IdPrefix(String),
}

/// Longest caveat value echoed in an error message: enough to recognise it, not a dump.
const ECHO_CHARS_MAX: usize = 64;

/// `s` made safe for a log line or an error body: escaped, and cut short.
pub(crate) fn echo(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(ECHO_CHARS_MAX)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().count() > ECHO_CHARS_MAX {
        out.push('…');
    }
    out
}

fn bad(why: String) -> AuthError {
    AuthError::BadCaveat(why)
}

/// Read one caveat: UTF-8 `name = value` (spaces around `=` optional), a known name and a value
/// of the right shape.
pub fn parse_caveat(bytes: &[u8]) -> Result<Caveat, AuthError> {
    let text = std::str::from_utf8(bytes).map_err(|_| bad("caveat is not UTF-8".into()))?;
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| bad(format!("caveat \"{}\" is not `name = value`", echo(text))))?;
    let (name, value) = (name.trim_matches(' '), value.trim_matches(' '));
    if value.is_empty() {
        return Err(bad(format!("caveat `{}` has an empty value", echo(name))));
    }
    match name {
        "registry" => Ok(Caveat::Registry(value.to_string())),
        "scope" => {
            let mut actions = Vec::new();
            for word in value.split(',').map(|w| w.trim_matches(' ')) {
                let action = Action::parse(word).ok_or_else(|| {
                    bad(format!(
                        "scope caveat names unknown action \"{}\"",
                        echo(word)
                    ))
                })?;
                actions.push(action);
            }
            Ok(Caveat::Scope(actions))
        }
        "expires" => {
            let at =
                time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        bad(format!(
                            "expires caveat \"{}\" is not RFC 3339",
                            echo(value)
                        ))
                    })?;
            Ok(Caveat::Expires(at.unix_timestamp()))
        }
        "kind" => {
            if !KINDS.contains(&value) {
                return Err(bad(format!(
                    "kind caveat \"{}\" is not node, service or region",
                    echo(value)
                )));
            }
            Ok(Caveat::Kind(value.to_string()))
        }
        "id_prefix" => Ok(Caveat::IdPrefix(value.to_string())),
        other => Err(bad(format!("unknown caveat \"{}\"", echo(other)))),
    }
}

/// Check the (signature-verified) caveats of a token against `req`; see the module's table.
pub fn check(caveats: &[Vec<u8>], req: &Request<'_>) -> Result<(), AuthError> {
    check_parsed(&parse_all(caveats)?, req)
}

/// Every caveat of a token read ([`parse_caveat`]), or the first that does not read.
pub fn parse_all(caveats: &[Vec<u8>]) -> Result<Vec<Caveat>, AuthError> {
    caveats.iter().map(|c| parse_caveat(c)).collect()
}

/// [`check`] of caveats already read: the first that does not hold, in token order.
pub fn check_parsed(caveats: &[Caveat], req: &Request<'_>) -> Result<(), AuthError> {
    for caveat in caveats {
        check_one(caveat, req)?;
    }
    Ok(())
}

fn check_one(caveat: &Caveat, req: &Request<'_>) -> Result<(), AuthError> {
    let ops_or_closed = |what: &'static str| match req.ops {
        Some(ops) => Ok(ops),
        None if req.action == Action::Read => Ok(&[][..]),
        None => Err(AuthError::Forbidden(Denial::NoOps {
            caveat: what,
            action: req.action,
        })),
    };
    match caveat {
        Caveat::Expires(at) => {
            if req.now_unix_s < *at {
                Ok(())
            } else {
                Err(AuthError::Expired)
            }
        }
        Caveat::Registry(want) => {
            if req.registry_id == want {
                Ok(())
            } else {
                Err(AuthError::Forbidden(Denial::Registry {
                    allowed: echo(want),
                }))
            }
        }
        Caveat::Scope(actions) => {
            if actions.contains(&req.action) {
                Ok(())
            } else {
                Err(AuthError::Forbidden(Denial::Scope { action: req.action }))
            }
        }
        Caveat::Kind(kind) => match ops_or_closed("kind")?.iter().find(|op| op.kind != kind) {
            None => Ok(()),
            Some(op) => Err(AuthError::Forbidden(Denial::Kind {
                allowed: kind.clone(),
                op_id: echo(op.id),
            })),
        },
        Caveat::IdPrefix(prefix) => {
            match ops_or_closed("id_prefix")?
                .iter()
                .find(|op| !op.id.starts_with(prefix.as_str()))
            {
                None => Ok(()),
                Some(op) => Err(AuthError::Forbidden(Denial::IdPrefix {
                    allowed: echo(prefix),
                    op_id: echo(op.id),
                })),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    /// Check `caveats` against a request and return "ok" or the error's reason label.
    fn run(caveats: &[&str], action: Action, ops: Option<&[OpRef<'_>]>, now: i64) -> String {
        let caveats: Vec<Vec<u8>> = caveats.iter().map(|c| c.as_bytes().to_vec()).collect();
        let req = Request {
            action,
            registry_id: "reg-a",
            now_unix_s: now,
            ops,
        };
        match check(&caveats, &req) {
            Ok(()) => "ok".into(),
            Err(e) => format!("{} {}", e.status(), e.reason()),
        }
    }

    fn node(id: &str) -> OpRef<'_> {
        OpRef { kind: "node", id }
    }

    #[test]
    fn no_caveats_allow_everything() {
        for action in Action::ALL {
            assert_eq!(run(&[], action, None, NOW), "ok");
        }
    }

    #[test]
    fn every_scope_caveat_must_allow_the_action() {
        let c = ["scope = propose,read", "scope=read , admin"];
        assert_eq!(run(&c, Action::Read, None, NOW), "ok");
        assert_eq!(run(&c, Action::Propose, Some(&[]), NOW), "403 scope");
        assert_eq!(run(&c, Action::Admin, None, NOW), "403 scope");
        assert_eq!(run(&c[..1], Action::Propose, Some(&[]), NOW), "ok");
    }

    #[test]
    fn registry_and_expiry() {
        assert_eq!(run(&["registry = reg-a"], Action::Read, None, NOW), "ok");
        assert_eq!(
            run(&["registry = reg-b"], Action::Read, None, NOW),
            "403 registry"
        );
        let exp = ["expires = 2026-01-01T00:00:00Z"];
        assert_eq!(run(&exp, Action::Read, None, NOW - 1), "ok");
        assert_eq!(run(&exp, Action::Read, None, NOW), "401 expired");
        // An offset is honoured: 01:00+01:00 is midnight UTC.
        assert_eq!(
            run(
                &["expires = 2026-01-01T01:00:00+01:00"],
                Action::Read,
                None,
                NOW
            ),
            "401 expired"
        );
    }

    #[test]
    fn kind_and_id_prefix_hold_for_every_op() {
        let ops = [node("eu-1"), node("eu-2")];
        assert_eq!(
            run(
                &["kind = node", "id_prefix = eu-"],
                Action::Propose,
                Some(&ops),
                NOW
            ),
            "ok"
        );
        let mixed = [
            node("eu-1"),
            OpRef {
                kind: "service",
                id: "eu-svc",
            },
        ];
        assert_eq!(
            run(&["kind = node"], Action::Propose, Some(&mixed), NOW),
            "403 kind"
        );
        let other = [node("eu-1"), node("us-1")];
        assert_eq!(
            run(&["id_prefix = eu-"], Action::Approve, Some(&other), NOW),
            "403 id_prefix"
        );
    }

    #[test]
    fn op_caveats_fail_closed_without_ops_except_for_reads() {
        assert_eq!(run(&["kind = node"], Action::Read, None, NOW), "ok");
        assert_eq!(run(&["id_prefix = eu-"], Action::Read, None, NOW), "ok");
        assert_eq!(
            run(&["kind = node"], Action::Admin, None, NOW),
            "403 no_ops"
        );
        assert_eq!(
            run(&["id_prefix = eu-"], Action::Commit, None, NOW),
            "403 no_ops"
        );
    }

    #[test]
    fn unknown_and_malformed_caveats_fail_whatever_the_request() {
        for c in [
            "colour = blue",
            "scope",
            "scope = ",
            "scope = read,,admin",
            "scope = delete",
            "expires = tomorrow",
            "expires = 2026-01-01 00:00:00",
            "kind = planet",
            "= read",
            "registry =",
        ] {
            // Placed after a caveat that denies, the bad one is still what is reported.
            assert_eq!(
                run(&["scope = admin", c], Action::Read, None, NOW),
                "401 bad_caveat",
                "{c}"
            );
        }
        let not_utf8 = vec![b"scope = read".to_vec(), vec![0xff, b'=', b'x']];
        let req = Request {
            action: Action::Read,
            registry_id: "r",
            now_unix_s: NOW,
            ops: None,
        };
        assert_eq!(check(&not_utf8, &req).unwrap_err().reason(), "bad_caveat");
    }

    #[test]
    fn messages_escape_and_shorten_echoed_values() {
        let long = format!("registry = {}\n", "x".repeat(500));
        let req = Request {
            action: Action::Read,
            registry_id: "r",
            now_unix_s: NOW,
            ops: None,
        };
        let msg = check(&[long.into_bytes()], &req).unwrap_err().to_string();
        assert!(msg.len() < 200 && !msg.contains('\n'), "{msg}");
    }
}
