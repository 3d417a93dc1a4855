//! The log key and what it signs: C2SP `signed-note` with Ed25519 (key id and text forms exactly
//! as Go's `golang.org/x/mod/sumdb/note`), and the C2SP `tlog-checkpoint` body it signs.
//!
//! Invariant: pure apart from [`LogKey::generate`] (which asks the OS for a seed). The private
//! key's text form never leaves [`LogKey::private_text`], whose only callers write it to a 0600
//! file; nothing logs or prints it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signature algorithm byte of Ed25519 in note keys.
const ALG_ED25519: u8 = 0x01;
/// The prefix of a signature line: an em dash and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// A note with more signature lines than this is refused (Go's note allows 100).
const SIGNATURES_MAX: usize = 100;

/// A key name is non-empty, has no `+` and no white space (Go's `isValidName`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

/// The 4-byte key id: the first bytes of SHA-256(name || "\n" || 0x01 || public key), as a
/// big-endian number.
pub fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// The log's Ed25519 signing key and its name (the origin).
pub struct LogKey {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the seed.
        write!(f, "LogKey({})", self.vkey())
    }
}

impl LogKey {
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<LogKey, String> {
        if !valid_name(name) {
            return Err(format!(
                "key name {name:?} must be non-empty, without '+' or white space"
            ));
        }
        Ok(LogKey {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// A new key from the OS's randomness.
    pub fn generate(name: &str) -> Result<LogKey, String> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| format!("no randomness for the key: {e}"))?;
        LogKey::from_seed(name, seed)
    }

    /// Parse Go note's private key form `PRIVATE+KEY+<name>+<hexid>+<base64(0x01||seed)>`.
    pub fn parse(text: &str) -> Result<LogKey, String> {
        let text = text.trim_end_matches(['\n', '\r']);
        let rest = text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or("a log key starts with PRIVATE+KEY+")?;
        // The base64 key may itself hold '+': split at the first two only (as Go's note does).
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("a log key is PRIVATE+KEY+<name>+<hex id>+<base64 key>".into());
        };
        let bytes = B64.decode(key).map_err(|_| "the key is not base64")?;
        let seed: [u8; 32] = match bytes.split_first() {
            Some((&ALG_ED25519, seed)) => {
                seed.try_into().map_err(|_| "an Ed25519 key is 32 bytes")?
            }
            _ => return Err("the key is not an Ed25519 (algorithm 1) key".into()),
        };
        let key = LogKey::from_seed(name, seed)?;
        if id.len() != 8 || u32::from_str_radix(id, 16).ok() != Some(key.id()) {
            return Err("the key id does not match the key".into());
        }
        Ok(key)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn id(&self) -> u32 {
        key_id(&self.name, &self.public())
    }

    /// The private key's text form (for a 0600 key file only).
    pub fn private_text(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id(),
            B64.encode(raw)
        )
    }

    /// The verifier key `<name>+<hexid>+<base64(0x01||public)>`.
    pub fn vkey(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.public());
        format!("{}+{:08x}+{}", self.name, self.id(), B64.encode(raw))
    }

    /// `text` (which ends in a newline) signed: the text, a blank line, one signature line.
    pub fn sign(&self, text: &str) -> String {
        assert!(text.ends_with('\n'), "a note's text ends with a newline");
        let sig = self.key.sign(text.as_bytes());
        let mut raw = self.id().to_be_bytes().to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        format!("{text}\n{SIG_PREFIX}{} {}\n", self.name, B64.encode(raw))
    }
}

/// A parsed verifier key.
#[derive(Clone, Debug)]
pub struct Vkey {
    pub name: String,
    pub id: u32,
    key: VerifyingKey,
}

impl Vkey {
    pub fn parse(text: &str) -> Result<Vkey, String> {
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("a verifier key is <name>+<hex id>+<base64 key>".into());
        };
        if !valid_name(name) {
            return Err(format!("bad key name {name:?}"));
        }
        let bytes = B64.decode(key).map_err(|_| "the key is not base64")?;
        let public: [u8; 32] = match bytes.split_first() {
            Some((&ALG_ED25519, p)) => p.try_into().map_err(|_| "an Ed25519 key is 32 bytes")?,
            _ => return Err("the key is not an Ed25519 (algorithm 1) key".into()),
        };
        let id_num = u32::from_str_radix(id, 16).map_err(|_| "the key id is not hex")?;
        if id.len() != 8 || id_num != key_id(name, &public) {
            return Err("the key id does not match the key".into());
        }
        let key = VerifyingKey::from_bytes(&public).map_err(|e| format!("bad key: {e}"))?;
        Ok(Vkey {
            name: name.to_string(),
            id: id_num,
            key,
        })
    }

    /// Open a signed note: its text if a signature line by this key verifies (other keys'
    /// lines, such as witnesses' cosignatures, are skipped).
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, String> {
        let split = note
            .rfind("\n\n")
            .ok_or("a signed note has a blank line before its signatures")?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        if !sigs.ends_with('\n') {
            return Err("a signed note ends with a newline".into());
        }
        let lines: Vec<&str> = sigs[..sigs.len() - 1].split('\n').collect();
        if lines.len() > SIGNATURES_MAX {
            return Err("too many signatures".into());
        }
        for line in lines {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or("a signature line starts with an em dash")?;
            let (name, sig) = rest.split_once(' ').ok_or("bad signature line")?;
            let raw = B64.decode(sig).map_err(|_| "a signature is not base64")?;
            if name != self.name || raw.len() < 4 || raw[..4] != self.id.to_be_bytes() {
                continue;
            }
            let sig = ed25519_dalek::Signature::from_slice(&raw[4..])
                .map_err(|_| "an Ed25519 signature is 64 bytes")?;
            return self
                .key
                .verify(text.as_bytes(), &sig)
                .map(|()| text)
                .map_err(|_| format!("the signature by {} does not verify", self.name));
        }
        Err(format!("no signature by {}+{:08x}", self.name, self.id))
    }
}

/// A C2SP `tlog-checkpoint` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: [u8; 32],
}

impl Checkpoint {
    /// `<origin>\n<size>\n<base64 root>\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parse a checkpoint body (extension lines after the root are allowed and ignored).
    pub fn parse(text: &str) -> Result<Checkpoint, String> {
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or("no origin line")?;
        let size = lines.next().ok_or("no size line")?;
        if size.is_empty() || (size.len() > 1 && size.starts_with('0')) {
            return Err("the size is not canonical decimal".into());
        }
        let size: u64 = size.parse().map_err(|_| "the size is not a number")?;
        let root = B64
            .decode(lines.next().ok_or("no root line")?)
            .map_err(|_| "the root is not base64")?;
        let root: [u8; 32] = root.try_into().map_err(|_| "the root is not 32 bytes")?;
        if !text.ends_with('\n') {
            return Err("a checkpoint ends with a newline".into());
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_forms_round_trip() {
        let key = LogKey::from_seed("example.com/log", [7; 32]).unwrap();
        let again = LogKey::parse(&key.private_text()).unwrap();
        assert_eq!(again.vkey(), key.vkey());
        let vkey = Vkey::parse(&key.vkey()).unwrap();
        assert_eq!(vkey.id, key.id());
        assert!(key
            .private_text()
            .starts_with("PRIVATE+KEY+example.com/log+"));
        assert!(!format!("{key:?}").contains(&key.private_text()));
        assert!(LogKey::from_seed("a b", [1; 32]).is_err());
        assert!(LogKey::from_seed("a+b", [1; 32]).is_err());
        // A key whose id was edited is refused.
        let text = key.private_text();
        let mut parts: Vec<&str> = text.split('+').collect();
        parts[3] = "00000000";
        assert!(LogKey::parse(&parts.join("+")).is_err());
    }

    #[test]
    fn signed_notes_open_only_with_their_key() {
        let key = LogKey::from_seed("example.com/log", [7; 32]).unwrap();
        let vkey = Vkey::parse(&key.vkey()).unwrap();
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 3,
            root: [9; 32],
        };
        let note = key.sign(&cp.body());
        assert_eq!(vkey.open(&note).unwrap(), cp.body());
        assert_eq!(Checkpoint::parse(vkey.open(&note).unwrap()).unwrap(), cp);
        let tampered = note.replacen("\n3\n", "\n4\n", 1);
        assert!(vkey.open(&tampered).is_err());
        let other = LogKey::from_seed("example.com/log", [8; 32]).unwrap();
        assert!(Vkey::parse(&other.vkey()).unwrap().open(&note).is_err());
        // A witness's cosignature line beside the log's is skipped, not refused.
        let cosigned = format!("{note}\u{2014} witness AAAAAAAA\n");
        assert!(vkey.open(&cosigned).is_ok());
    }

    /// Go's note package output for the same key and text (tests/vectors/tlog.json, written by
    /// the Go program beside the interop test); skipped with a line when the file is absent.
    #[test]
    fn go_note_vectors() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/tlog.json");
        let Ok(text) = std::fs::read_to_string(path) else {
            // Through the Stderr handle, not eprintln!: visible even when the test passes.
            use std::io::Write;
            let _ = std::io::stderr()
                .write_all(format!("\nSKIPPED go_note_vectors: {path} is absent\n").as_bytes());
            return;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let note = &v["note"];
        let key = LogKey::parse(note["skey"].as_str().unwrap()).unwrap();
        assert_eq!(key.vkey(), note["vkey"].as_str().unwrap());
        // Ed25519 is deterministic: the same key and text give Go's bytes exactly.
        assert_eq!(
            key.sign(note["text"].as_str().unwrap()),
            note["signed"].as_str().unwrap()
        );
        let vkey = Vkey::parse(note["vkey"].as_str().unwrap()).unwrap();
        assert_eq!(
            vkey.open(note["signed"].as_str().unwrap()).unwrap(),
            note["text"].as_str().unwrap()
        );
    }
}
