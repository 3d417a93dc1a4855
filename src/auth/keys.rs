//! The root keys file of docs/OPERATIONS.md: TOML `[[keys]]` with `id`, `secret` (64 hex digits) and an
//! optional `not_after` (RFC 3339), readable by its owner only.
//!
//! Invariant: a [`KeyRing`] holds at least one key, ids are unique and match [`valid_key_id`],
//! every secret is 32 bytes, and nothing in this module puts a secret (or a line of the file,
//! which may hold one) into an error message or a `Debug` output.

use super::caveats::echo;
use super::macaroon::Macaroon;
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest keys file read: a few hundred keys' worth, far more than overlapping rotation needs.
pub const KEYS_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Most keys in one file.
pub const KEYS_MAX: usize = 64;
/// Longest key id.
pub const KEY_ID_CHARS_MAX: usize = 64;

/// Key ids are `[A-Za-z0-9._-]{1,64}`: they sit between colons in a token identifier and go
/// into logs and metrics as they are.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= KEY_ID_CHARS_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One root key.
#[derive(Clone)]
pub struct RootKey {
    pub id: String,
    secret: [u8; 32],
    /// Unix seconds from which tokens of this key are refused; `None`: no end.
    pub not_after_unix_s: Option<i64>,
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("not_after_unix_s", &self.not_after_unix_s)
            .finish()
    }
}

impl RootKey {
    /// A key from its parts; `None` if the id is not a valid key id.
    pub fn new(id: &str, secret: [u8; 32], not_after_unix_s: Option<i64>) -> Option<RootKey> {
        valid_key_id(id).then(|| RootKey {
            id: id.to_string(),
            secret,
            not_after_unix_s,
        })
    }

    /// The 32 secret bytes: the `secret` libmacaroons and pymacaroons are given (raw bytes, not
    /// the hex text of the file).
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Whether tokens of this key are still accepted at `now_unix_s`.
    pub fn live_at(&self, now_unix_s: i64) -> bool {
        self.not_after_unix_s.is_none_or(|end| now_unix_s < end)
    }

    /// A token without caveats, identified `v1:<id>:<hex nonce>`. The nonce makes every token
    /// distinct; pass [`fresh_nonce`] (tests pass fixed ones).
    pub fn mint(&self, nonce: &[u8]) -> Macaroon {
        let identifier = format!("v1:{}:{}", self.id, hex::encode(nonce));
        Macaroon::mint(&self.secret, identifier.as_bytes())
    }
}

/// 16 bytes from the OS's random source, for [`RootKey::mint`].
pub fn fresh_nonce() -> std::io::Result<[u8; 16]> {
    let mut nonce = [0u8; 16];
    getrandom::getrandom(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(nonce)
}

/// The live root keys, in file order.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<RootKey>,
    /// Unique to the ring as built (a clone keeps it: same keys). The cache of verified tokens
    /// in [`super::authorize`] holds entries of one generation only, so a reload that removes or
    /// changes a key can never be answered from a verification made under the old keys.
    generation: u64,
}

/// The next [`KeyRing::generation`]: process-wide, never reused.
fn next_generation() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Why a keys file was refused. Messages name the file, the key id and the rule; never a secret.
#[derive(Debug)]
pub enum KeysError {
    Io {
        path: PathBuf,
        err: std::io::Error,
    },
    Permissions {
        path: PathBuf,
        mode: u32,
    },
    TooLarge {
        path: PathBuf,
    },
    Toml {
        line: Option<usize>,
        message: String,
    },
    NoKeys,
    TooManyKeys(usize),
    BadId(String),
    DuplicateId(String),
    BadSecret {
        id: String,
    },
    BadNotAfter {
        id: String,
    },
}

impl std::fmt::Display for KeysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeysError::Io { path, err } => write!(f, "keys file {}: {err}", path.display()),
            KeysError::Permissions { path, mode } => write!(
                f,
                "keys file {} has mode {mode:04o}: it holds secrets, so group and others must \
                 have no access (chmod 600)",
                path.display()
            ),
            KeysError::TooLarge { path } => {
                write!(
                    f,
                    "keys file {} is over {KEYS_FILE_BYTES_MAX} bytes",
                    path.display()
                )
            }
            KeysError::Toml {
                line: Some(line),
                message,
            } => {
                write!(f, "keys file, line {line}: {message}")
            }
            KeysError::Toml {
                line: None,
                message,
            } => write!(f, "keys file: {message}"),
            KeysError::NoKeys => write!(f, "keys file has no [[keys]]"),
            KeysError::TooManyKeys(n) => write!(f, "keys file has {n} keys, at most {KEYS_MAX}"),
            KeysError::BadId(id) => write!(
                f,
                "key id \"{}\" must be 1 to {KEY_ID_CHARS_MAX} of A-Z a-z 0-9 . _ -",
                echo(id)
            ),
            KeysError::DuplicateId(id) => write!(f, "key id \"{id}\" appears twice"),
            KeysError::BadSecret { id } => {
                write!(f, "secret of key \"{id}\" must be 64 hex digits (32 bytes)")
            }
            KeysError::BadNotAfter { id } => write!(
                f,
                "not_after of key \"{id}\" must be an RFC 3339 time with an offset"
            ),
        }
    }
}

impl std::error::Error for KeysError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    keys: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    secret: String,
    not_after: Option<RawTime>,
}

/// `not_after` written as a TOML datetime or as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawTime {
    Toml(toml::value::Datetime),
    Text(String),
}

impl KeyRing {
    /// Read and check the keys file at `path`. Refuses a file that group or others may access
    /// at all (mode & 0o077), checked on the opened file so the check and the read see the same
    /// inode.
    pub fn load(path: &Path) -> Result<KeyRing, KeysError> {
        KeyRing::load_masked(path, 0o077)
    }

    /// [`KeyRing::load`] for DEV ONLY files (`[auth] dev_insecure_permissions`): group and
    /// others may read the file (git checks it out 0644), but a file anyone but its owner may
    /// write is still refused: that would let them mint tokens.
    pub fn load_allowing_readable(path: &Path) -> Result<KeyRing, KeysError> {
        KeyRing::load_masked(path, 0o022)
    }

    fn load_masked(path: &Path, forbidden: u32) -> Result<KeyRing, KeysError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |err| KeysError::Io {
            path: path.to_path_buf(),
            err,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o7777;
        if mode & forbidden != 0 {
            return Err(KeysError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = String::new();
        file.take(KEYS_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > KEYS_FILE_BYTES_MAX {
            return Err(KeysError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        KeyRing::parse(&text)
    }

    /// Parse keys file text (no permission check: see [`KeyRing::load`]).
    pub fn parse(text: &str) -> Result<KeyRing, KeysError> {
        // toml's own Display quotes the offending line, which may be a secret: keep only its
        // short message and the line number.
        let raw: RawFile = toml::from_str(text).map_err(|e| KeysError::Toml {
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1)),
            message: e.message().to_string(),
        })?;
        if raw.keys.is_empty() {
            return Err(KeysError::NoKeys);
        }
        if raw.keys.len() > KEYS_MAX {
            return Err(KeysError::TooManyKeys(raw.keys.len()));
        }
        let mut keys: Vec<RootKey> = Vec::with_capacity(raw.keys.len());
        for k in raw.keys {
            if !valid_key_id(&k.id) {
                return Err(KeysError::BadId(k.id));
            }
            if keys.iter().any(|seen| seen.id == k.id) {
                return Err(KeysError::DuplicateId(k.id));
            }
            let mut secret = [0u8; 32];
            if k.secret.len() != 64 || hex::decode_to_slice(&k.secret, &mut secret).is_err() {
                return Err(KeysError::BadSecret { id: k.id });
            }
            let not_after_unix_s = match k.not_after {
                None => None,
                Some(t) => {
                    let text = match t {
                        RawTime::Toml(d) => d.to_string(),
                        RawTime::Text(s) => s,
                    };
                    let at = time::OffsetDateTime::parse(
                        &text,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .map_err(|_| KeysError::BadNotAfter { id: k.id.clone() })?;
                    Some(at.unix_timestamp())
                }
            };
            keys.push(RootKey {
                id: k.id,
                secret,
                not_after_unix_s,
            });
        }
        Ok(KeyRing {
            keys,
            generation: next_generation(),
        })
    }

    /// A ring of the given keys, for tests and for `ronctl` built-ins; ids must be unique.
    pub fn from_keys(keys: Vec<RootKey>) -> Result<KeyRing, KeysError> {
        if keys.is_empty() {
            return Err(KeysError::NoKeys);
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|seen| seen.id == k.id) {
                return Err(KeysError::DuplicateId(k.id.clone()));
            }
        }
        Ok(KeyRing {
            keys,
            generation: next_generation(),
        })
    }

    pub fn get(&self, id: &str) -> Option<&RootKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn keys(&self) -> &[RootKey] {
        &self.keys
    }

    /// Which ring this is (see the field's doc).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The key new tokens are minted with: the last one in the file still live at `now`
    /// (rotation appends the new key and gives the old ones a `not_after`).
    pub fn minting_key(&self, now_unix_s: i64) -> Option<&RootKey> {
        self.keys.iter().rev().find(|k| k.live_at(now_unix_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const S1: &str = "0101010101010101010101010101010101010101010101010101010101010101";
    const S2: &str = "a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2";

    fn parse_err(text: &str) -> String {
        KeyRing::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_several_keys_with_and_without_not_after() {
        let text = format!(
            "[[keys]]\nid = \"old\"\nsecret = \"{S1}\"\nnot_after = 2026-01-01T00:00:00Z\n\
             [[keys]]\nid = \"mid\"\nsecret = \"{S2}\"\nnot_after = \"2026-06-01T00:00:00+02:00\"\n\
             [[keys]]\nid = \"new\"\nsecret = \"{}\"\n",
            S2.to_uppercase()
        );
        let ring = KeyRing::parse(&text).unwrap();
        assert_eq!(ring.keys().len(), 3);
        let old = ring.get("old").unwrap();
        assert_eq!(old.secret(), &[1u8; 32]);
        assert_eq!(old.not_after_unix_s, Some(1_767_225_600));
        assert!(old.live_at(1_767_225_599) && !old.live_at(1_767_225_600));
        assert_eq!(
            ring.get("mid").unwrap().not_after_unix_s,
            Some(1_780_264_800)
        );
        assert_eq!(ring.get("new").unwrap().secret(), &[0xa2u8; 32]);
        assert_eq!(ring.minting_key(2_000_000_000).unwrap().id, "new");
        assert!(ring.get("nope").is_none());
    }

    #[test]
    fn refuses_bad_files_without_quoting_secrets() {
        let key =
            |id: &str, secret: &str| format!("[[keys]]\nid = \"{id}\"\nsecret = \"{secret}\"\n");
        assert!(parse_err("").contains("no [[keys]]"));
        let dup = format!("{}{}", key("a", S1), key("a", S2));
        assert!(parse_err(&dup).contains("appears twice"));
        assert!(parse_err(&key("a:b", S1)).contains("must be 1 to 64"));
        assert!(parse_err(&key("", S1)).contains("must be 1 to 64"));
        let unknown = format!("{}colour = \"blue\"\n", key("a", S1));
        assert!(
            parse_err(&unknown).contains("unknown field"),
            "{}",
            parse_err(&unknown)
        );
        let top = format!("extra = 1\n{}", key("a", S1));
        assert!(parse_err(&top).contains("unknown field"));
        let naive = format!("{}not_after = 2026-01-01T00:00:00\n", key("a", S1));
        assert!(parse_err(&naive).contains("RFC 3339"));
        // Secrets of the wrong length or alphabet; the message must not contain them.
        let short = &S1[..62];
        let not_hex = format!("{}zz", &S1[..62]);
        for secret in [short, &not_hex, &format!("{S1}00")] {
            let msg = parse_err(&key("a", secret));
            assert!(
                msg.contains("64 hex digits") && !msg.contains(secret),
                "{msg}"
            );
        }
        // A TOML syntax error on the secret's line: the line is not quoted back.
        let broken = format!("[[keys]]\nid = \"a\"\nsecret = \"{S1}\n");
        let msg = parse_err(&broken);
        assert!(!msg.contains(S1) && msg.contains("line"), "{msg}");
        let many: String = (0..=KEYS_MAX).map(|i| key(&format!("k{i}"), S1)).collect();
        assert!(parse_err(&many).contains("at most"));
    }

    #[test]
    fn load_refuses_a_file_group_or_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, format!("[[keys]]\nid = \"a\"\nsecret = \"{S1}\"\n")).unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
            (0o610, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match KeyRing::load(&path) {
                Ok(ring) => assert!(ok && ring.get("a").is_some(), "{mode:o}"),
                Err(e) => {
                    assert!(!ok, "{mode:o}: {e}");
                    assert!(e.to_string().contains("chmod 600"), "{e}");
                }
            }
        }
        let missing = KeyRing::load(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(missing, KeysError::Io { .. }));
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let k = RootKey::new("a", [0xab; 32], None).unwrap();
        let shown = format!("{:?}", KeyRing::from_keys(vec![k]).unwrap());
        assert!(!shown.contains("ab, ") && !shown.contains("171") && shown.contains("redacted"));
    }
}
