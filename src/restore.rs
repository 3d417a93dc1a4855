//! Rebuilding state at start-up from a checkpoint and the log's records.
//!
//! Decision: start-up reads and re-verifies only what follows the checkpoint (each record's
//! shape, hash link and proposal id, and its ops re-applied); the checkpoint is tied to the log
//! by its record's hash and the Lsn where the log continues. Re-hashing the whole chain from
//! genesis (two SHA-256s per record, ~2 s per million versions) would make start-up grow with
//! history, so it runs after readiness instead ([`verify_history`], the background check thread),
//! reporting a problem through a metric and `/readyz`. Signatures are not re-verified at start-up
//! (they were verified before the commit was acknowledged, and are covered by the hash chain);
//! the full offline check including every quorum signature is `ronctl registry verify`.
//!
//! The log starts with the genesis record (docs/FORMATS.md, genesis v2: it carries the initial signer
//! set, fixed into `hash_0`); a log that starts at version 1 was made with genesis v1 and is
//! refused, never reinterpreted. The signer history (which set judges which base version) comes
//! from the checkpoint when it carries one, else from the genesis record and every
//! `set_signers` record of the log.
//!
//! Pending frames (durable proposals and approvals, `domain::pending`) are set aside by the
//! caller and fetched through a [`PendingSource`] once the checkpoint is tied to the log: the
//! checkpoint's compacted frames and only the log's frames after its `log_end`, or (no
//! checkpoint, or one that does not carry them) every frame. They never touch the chain (the
//! history indexes commit records only).
//! A pending proposal is already committed when the record at its `base_version + 1` carries its
//! id (a proposal can only commit there), so no set of every committed id is held.
//!
//! Pure over its inputs: reads records through a [`History`], returns a snapshot or an error
//! naming where the problem is.

use crate::domain::descriptor::{self, Descriptor, Kind};
use crate::domain::pending::{self, PendingFrame, PendingFrames, RestoredPending};
use crate::domain::proposal::{self, ProposalLimits};
use crate::domain::quorum::SignerHistory;
use crate::domain::record::CommitRecord;
use crate::domain::signers::{SignerSet, SignerSetJson};
use crate::domain::state::{self, Descriptors};
use crate::history::{History, Loc, MemoryStore};
use crate::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;

/// Where a record came from, for error messages.
pub trait Located {
    fn location(&self) -> String;
    fn payload(&self) -> &[u8];
}

#[derive(Debug)]
pub struct RestoreError(pub String);

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A checkpoint payload as parsed at start-up. The descriptors are built straight into the
/// state as the parser meets them (no list of parsed descriptors in between, ids and bodies
/// borrowed from the payload): loading costs the payload plus the state, not twice the state.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointJson {
    registry_id: String,
    version: u64,
    hash: String,
    /// Where the log continues after record `version` (the Lsn just past it), so start-up can
    /// check the checkpoint against the log without re-hashing the chain. Absent in checkpoints
    /// written before it existed.
    #[serde(default)]
    log_end: Option<u64>,
    descriptors: CheckpointDescriptors,
    /// The signer history up to this version (docs/FORMATS.md). Absent in checkpoints written before
    /// §8: restore then rebuilds it from the log.
    #[serde(default)]
    signers: Option<Vec<CheckpointSigners>>,
    /// The pending frames gathered up to `log_end`, compacted (`PendingFrames::to_frames`), so
    /// start-up reads only the pending frames after `log_end`. Absent in checkpoints written
    /// before it existed (and with no `log_end`): start-up then reads every pending frame.
    #[serde(default)]
    pending: Option<Vec<PendingFrame>>,
}

/// A checkpoint payload parsed (its descriptors already built into a state), not yet tied to
/// the log: [`restore_history`] does that.
pub struct LoadedCheckpoint {
    seq: u64,
    json: CheckpointJson,
    /// The payload version it was read from (1: JSON; 2: [`checkpoint_payload`]'s binary state).
    payload_version: u8,
}

impl LoadedCheckpoint {
    /// A checkpoint read as a stream: its head, its descriptors, then its tail.
    fn from_parts(
        seq: u64,
        head: CheckpointHead,
        descriptors: Descriptors,
        tail: CheckpointTail,
        payload_version: u8,
    ) -> LoadedCheckpoint {
        LoadedCheckpoint {
            seq,
            json: CheckpointJson {
                registry_id: head.registry_id,
                version: head.version,
                hash: head.hash,
                log_end: head.log_end,
                descriptors: CheckpointDescriptors(descriptors),
                signers: tail.signers,
                pending: tail.pending,
            },
            payload_version,
        }
    }

    /// The version the checkpoint is of.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Where the log continues after the checkpoint's record, if it says.
    pub fn log_end(&self) -> Option<u64> {
        self.json.log_end
    }

    /// The payload version it was read from: 1 (JSON, [`checkpoint_bytes`]) or 2 (the binary
    /// state of [`checkpoint_payload`], what the server writes).
    pub fn payload_version(&self) -> u8 {
        self.payload_version
    }
}

/// Parse a checkpoint payload of version `seq` (checked against what the payload says).
/// Either payload version (a version-2 payload goes through the streamed reader, in one window).
pub fn parse_checkpoint(seq: u64, bytes: &[u8]) -> Result<LoadedCheckpoint, RestoreError> {
    if bytes.starts_with(PAYLOAD_V2_TAG) {
        return read_checkpoint_in(seq, &mut &bytes[..], bytes.len());
    }
    let json: CheckpointJson = serde_json::from_slice(bytes)
        .map_err(|e| RestoreError(format!("checkpoint {seq}: not valid: {e}")))?;
    Ok(LoadedCheckpoint {
        seq,
        json,
        payload_version: 1,
    })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointSigners {
    since_version: u64,
    set: SignerSetJson,
}

/// What a checkpoint payload holds before its `descriptors`, as `checkpoint_bytes` writes it
/// (read first when the payload is streamed: [`read_checkpoint`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointHead {
    registry_id: String,
    version: u64,
    hash: String,
    #[serde(default)]
    log_end: Option<u64>,
}

/// What a checkpoint payload holds after its `descriptors`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointTail {
    #[serde(default)]
    signers: Option<Vec<CheckpointSigners>>,
    #[serde(default)]
    pending: Option<Vec<PendingFrame>>,
}

/// How much of a streamed checkpoint is held at a time (more only for a larger element).
const CHECKPOINT_WINDOW: usize = 1 << 20;

/// A window over a streamed checkpoint payload: `buf[pos..]` is read but not yet parsed.
struct Window<'a> {
    r: &'a mut dyn std::io::Read,
    window: usize,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl Window<'_> {
    /// Drop what was parsed and read on: up to a window's worth, or twice what is held when
    /// one element is larger than that.
    fn more(&mut self) -> std::io::Result<()> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let want = self.window.max(self.buf.len() * 2);
        let mut filled = self.buf.len();
        self.buf.resize(want, 0);
        while filled < want {
            match self.r.read(&mut self.buf[filled..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.truncate(filled);
        Ok(())
    }

    /// The next byte that is not JSON whitespace (not consumed), reading on as needed.
    fn peek(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            match self.buf[self.pos..]
                .iter()
                .position(|b| !b" \t\r\n".contains(b))
            {
                Some(i) => {
                    self.pos += i;
                    return Ok(Some(self.buf[self.pos]));
                }
                None if self.eof => {
                    self.pos = self.buf.len();
                    return Ok(None);
                }
                None => {
                    self.pos = self.buf.len();
                    self.more()?;
                }
            }
        }
    }

    /// Whether `n` unparsed bytes are held (`buf[pos..pos + n]`), reading on as needed; false
    /// only when the payload ends first.
    fn need(&mut self, n: usize) -> std::io::Result<bool> {
        while self.buf.len() - self.pos < n {
            if self.eof {
                return Ok(false);
            }
            self.more()?;
        }
        Ok(true)
    }

    /// Everything not yet parsed, to the end of the payload.
    fn rest(mut self) -> std::io::Result<Vec<u8>> {
        self.buf.drain(..self.pos);
        self.r.read_to_end(&mut self.buf)?;
        Ok(self.buf)
    }
}

/// Parse a checkpoint payload read as a stream, holding a window of it at a time: its
/// descriptors are built into the state element by element (read in place in the window),
/// so the payload is never in memory whole beside the state. Version 2 ([`checkpoint_payload`],
/// tag `SVCRST02`): binary entries, the set built alongside ([`build_alongside`]). Version 1
/// (JSON): the layout `checkpoint_bytes` writes is expected (the head fields, then
/// `descriptors`, then the rest); a payload laid out otherwise is read whole and parsed as any
/// JSON object.
pub fn read_checkpoint(
    seq: u64,
    r: &mut dyn std::io::Read,
) -> Result<LoadedCheckpoint, RestoreError> {
    read_checkpoint_in(seq, r, CHECKPOINT_WINDOW)
}

/// [`read_checkpoint`] with a window of `window` bytes.
fn read_checkpoint_in(
    seq: u64,
    r: &mut dyn std::io::Read,
    window: usize,
) -> Result<LoadedCheckpoint, RestoreError> {
    let fail = |why: String| RestoreError(format!("checkpoint {seq}: not valid: {why}"));
    let io_fail = |e: std::io::Error| RestoreError(format!("checkpoint {seq}: read: {e}"));
    let mut w = Window {
        r,
        window,
        buf: Vec::new(),
        pos: 0,
        eof: false,
    };
    w.more().map_err(io_fail)?;
    if w.need(PAYLOAD_V2_TAG.len()).map_err(io_fail)? && w.buf.starts_with(PAYLOAD_V2_TAG) {
        w.pos = PAYLOAD_V2_TAG.len();
        return read_v2(seq, w);
    }
    const KEY: &[u8] = b",\"descriptors\":[";
    let head = find(&w.buf, KEY).and_then(|k| {
        let mut head = w.buf[..k].to_vec();
        head.push(b'}');
        serde_json::from_slice::<CheckpointHead>(&head)
            .ok()
            .map(|h| (h, k + KEY.len()))
    });
    let Some((head, at)) = head else {
        return parse_checkpoint(seq, &w.rest().map_err(io_fail)?);
    };
    w.pos = at;
    let mut descriptors = Descriptors::new();
    if w.peek().map_err(io_fail)? == Some(b']') {
        w.pos += 1;
    } else {
        loop {
            // One element, parsed where it lies in the window; a window that ends inside it
            // is refilled and the element parsed again.
            let parsed = {
                let mut it = serde_json::Deserializer::from_slice(&w.buf[w.pos..])
                    .into_iter::<CheckpointDescriptor>();
                match it.next() {
                    Some(Ok(d)) => {
                        descriptors.insert(Descriptor::new(d.kind, &d.id, d.version, d.body.get()));
                        Ok(Some(it.byte_offset()))
                    }
                    Some(Err(e)) if !e.is_eof() || w.eof => Err(fail(e.to_string())),
                    None if w.eof => Err(fail("the payload ends inside descriptors".into())),
                    // Cut short by the window, not by the payload: read on and parse again.
                    _ => Ok(None),
                }
            };
            match parsed? {
                Some(used) => w.pos += used,
                None => {
                    w.more().map_err(io_fail)?;
                    continue;
                }
            }
            match w.peek().map_err(io_fail)? {
                Some(b',') => w.pos += 1,
                Some(b']') => {
                    w.pos += 1;
                    break;
                }
                other => {
                    return Err(fail(format!(
                        "expected , or ] after a descriptor, found {:?}",
                        other.map(char::from)
                    )))
                }
            }
        }
    }
    // The rest (the signer history and pending frames, small beside the descriptors) whole:
    // `,"signers":…}` made an object of its own, or the closing `}`.
    let mut tail = w.rest().map_err(io_fail)?;
    let start = tail
        .iter()
        .position(|b| !b" \t\r\n".contains(b))
        .ok_or_else(|| fail("the payload ends after descriptors".into()))?;
    if tail[start] == b',' {
        tail[start] = b'{';
    } else if tail[start] != b'}' {
        return Err(fail("expected , or } after descriptors".into()));
    }
    let tail: CheckpointTail = if tail[start] == b'}' {
        if tail[start + 1..].iter().any(|b| !b" \t\r\n".contains(b)) {
            return Err(fail("trailing characters after the payload".into()));
        }
        CheckpointTail {
            signers: None,
            pending: None,
        }
    } else {
        serde_json::from_slice(&tail[start..]).map_err(|e| fail(e.to_string()))?
    };
    Ok(LoadedCheckpoint::from_parts(
        seq,
        head,
        descriptors,
        tail,
        1,
    ))
}

/// How many descriptors go to the set-building thread at a time (and the fewest a checkpoint
/// must hold for that thread to be started at all).
const BUILD_BATCH: usize = 1024;

/// Run `decode`, which hands each descriptor it reads to its argument, while a second thread
/// inserts them into the set (start-up's two halves of a checkpoint overlap: reading, checking
/// and copying the entries on this thread, the B-tree inserts on the other; on a 2-core node
/// that halves the time to the state, and costs no more CPU). The descriptors cross in batches
/// over a bounded channel, so at most a few batches are in flight. Without a thread (one could
/// not be started) the set is built inline, as before.
fn build_alongside<T>(
    decode: impl FnOnce(&mut dyn FnMut(Descriptor)) -> Result<T, RestoreError>,
) -> Result<(T, Descriptors), RestoreError> {
    std::thread::scope(|s| {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<Descriptor>>(8);
        let builder = std::thread::Builder::new()
            .name("checkpoint-set".into())
            .spawn_scoped(s, move || {
                let mut set = Descriptors::new();
                for batch in rx {
                    for d in batch {
                        set.insert(d);
                    }
                }
                set
            });
        let handle = match builder {
            Ok(handle) => handle,
            Err(e) => {
                log::warn!("msg=\"cannot start a thread to build the state; building it inline\" error=\"{e}\"");
                let mut set = Descriptors::new();
                let decoded = decode(&mut |d| {
                    set.insert(d);
                })?;
                return Ok((decoded, set));
            }
        };
        let mut batch = Vec::with_capacity(BUILD_BATCH);
        let decoded = decode(&mut |d| {
            batch.push(d);
            if batch.len() == BUILD_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BUILD_BATCH));
                // A send fails only if the builder is gone (it panicked): `join` reports that.
                let _ = tx.send(full);
            }
        });
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
        // Closing the channel ends the builder's loop.
        drop(tx);
        let set = handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        decoded.map(|t| (t, set))
    })
}

/// The first bytes of a version-2 payload (docs/FORMATS.md §7). A version-1 payload is a JSON
/// object, so it starts with `{` (or whitespace) and never with these.
const PAYLOAD_V2_TAG: &[u8; 8] = b"SVCRST02";

/// The bytes of a descriptor's kind in a version-2 payload: the order kinds sort in.
fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::Node => 0,
        Kind::Region => 1,
        Kind::Service => 2,
    }
}

fn kind_of_byte(b: u8) -> Option<Kind> {
    match b {
        0 => Some(Kind::Node),
        1 => Some(Kind::Region),
        2 => Some(Kind::Service),
        _ => None,
    }
}

/// The fixed part of a version-2 descriptor entry: kind (1), id length (1), version (8), body
/// length (4).
const ENTRY_FIXED: usize = 14;

/// The rest of a version-2 payload after its tag, read from `w`: the head (length-prefixed
/// JSON), the descriptors (binary, each built into the state where it lies in the window), then
/// the tail (JSON to the end of the payload).
///
/// No body is parsed as JSON again: each was validated when it was committed, and the payload
/// is covered by the file's CRC, which is checked before anything read here is kept. What is
/// checked is what keeps the state well-formed whatever the bytes: a known kind, a valid id
/// (so UTF-8), a UTF-8 body that is braced like the object it must be, and keys strictly
/// increasing (the set then holds exactly the entries written, in the order written).
fn read_v2(seq: u64, mut w: Window<'_>) -> Result<LoadedCheckpoint, RestoreError> {
    let fail = |why: String| RestoreError(format!("checkpoint {seq}: not valid: {why}"));
    let io_fail = |e: std::io::Error| RestoreError(format!("checkpoint {seq}: read: {e}"));
    let short = || fail("the payload ends early".into());
    if !w.need(4).map_err(io_fail)? {
        return Err(short());
    }
    let head_len =
        u32::from_le_bytes(w.buf[w.pos..w.pos + 4].try_into().expect("4 bytes")) as usize;
    w.pos += 4;
    if !w.need(head_len + 8).map_err(io_fail)? {
        return Err(short());
    }
    let head: CheckpointHead = serde_json::from_slice(&w.buf[w.pos..w.pos + head_len])
        .map_err(|e| fail(format!("head: {e}")))?;
    w.pos += head_len;
    let count = u64::from_le_bytes(w.buf[w.pos..w.pos + 8].try_into().expect("8 bytes"));
    w.pos += 8;
    let mut decode = |put: &mut dyn FnMut(Descriptor)| -> Result<(), RestoreError> {
        let mut prev: Option<Descriptor> = None;
        for i in 0..count {
            let bad = |why: &str| fail(format!("descriptor #{i}: {why}"));
            if !w.need(ENTRY_FIXED).map_err(io_fail)? {
                return Err(short());
            }
            let fixed = &w.buf[w.pos..w.pos + ENTRY_FIXED];
            let id_len = fixed[1] as usize;
            let body_len = u32::from_le_bytes(fixed[10..14].try_into().expect("4 bytes")) as usize;
            // Reading on may move what is held to the start of the window: `pos` is read after.
            if !w.need(ENTRY_FIXED + id_len + body_len).map_err(io_fail)? {
                return Err(short());
            }
            let e = &w.buf[w.pos..w.pos + ENTRY_FIXED + id_len + body_len];
            let kind = kind_of_byte(e[0]).ok_or_else(|| bad("unknown kind"))?;
            let version = u64::from_le_bytes(e[2..10].try_into().expect("8 bytes"));
            let id = std::str::from_utf8(&e[ENTRY_FIXED..ENTRY_FIXED + id_len])
                .ok()
                .filter(|id| descriptor::valid_id(id))
                .ok_or_else(|| bad("invalid id"))?;
            let body = std::str::from_utf8(&e[ENTRY_FIXED + id_len..])
                .ok()
                .filter(|b| b.starts_with('{') && b.ends_with('}'))
                .ok_or_else(|| bad("the body is not a JSON object's text"))?;
            let d = Descriptor::new(kind, id, version, body);
            if prev.as_ref().is_some_and(|p| p.key() >= d.key()) {
                return Err(bad(
                    "out of order (descriptors are sorted by kind, then id)",
                ));
            }
            prev = Some(d.clone());
            put(d);
            w.pos += ENTRY_FIXED + id_len + body_len;
        }
        Ok(())
    };
    let ((), descriptors) = if count >= BUILD_BATCH as u64 {
        build_alongside(decode)?
    } else {
        let mut set = Descriptors::new();
        decode(&mut |d| {
            set.insert(d);
        })?;
        ((), set)
    };
    let tail = w.rest().map_err(io_fail)?;
    let tail: CheckpointTail =
        serde_json::from_slice(&tail).map_err(|e| fail(format!("tail: {e}")))?;
    Ok(LoadedCheckpoint::from_parts(
        seq,
        head,
        descriptors,
        tail,
        2,
    ))
}

/// One element of a checkpoint's `descriptors`, borrowed from the payload where it can be (an
/// id with escapes cannot be borrowed; a valid id never has one).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointDescriptor<'a> {
    kind: Kind,
    #[serde(borrow)]
    id: Cow<'a, str>,
    version: u64,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// The `descriptors` of a checkpoint, deserialized into the state one element at a time.
struct CheckpointDescriptors(Descriptors);

impl<'de> Deserialize<'de> for CheckpointDescriptors {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = CheckpointDescriptors;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of descriptors")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CheckpointDescriptors, A::Error> {
                let mut out = Descriptors::new();
                while let Some(d) = seq.next_element::<CheckpointDescriptor>()? {
                    out.insert(Descriptor::new(d.kind, &d.id, d.version, d.body.get()));
                }
                Ok(CheckpointDescriptors(out))
            }
        }
        d.deserialize_seq(Visit)
    }
}

/// Serialize a snapshot's state as a version-1 checkpoint payload (docs/FORMATS.md §7): a JSON
/// object whose `descriptors` are each descriptor's served JSON, in (kind, id) order. Without
/// `pending` (a caller that does not know the pending frames): start-up then reads them all from
/// the log. The server writes version 2 ([`checkpoint_payload`]); version 1 is what earlier
/// builds wrote, kept as the encoder tools (`loadgen synth`), tests and fuzzing build from, and
/// still read by [`read_checkpoint`].
pub fn checkpoint_bytes(snap: &Snapshot) -> Vec<u8> {
    checkpoint_bytes_with(snap, None)
}

/// A checkpoint's head members (the same in both payload versions).
#[derive(Serialize)]
struct Head<'a> {
    registry_id: &'a str,
    version: u64,
    hash: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_end: Option<u64>,
}

fn head_of(snap: &Snapshot) -> Head<'_> {
    Head {
        registry_id: &snap.registry_id,
        version: snap.version(),
        hash: &snap.head.hash,
        log_end: snap.history.loc(snap.version()).map(|l| l.end),
    }
}

/// `"signers":[…]` then, only with a `log_end` (the pending frames only mean something relative
/// to it), `,"pending":[…]`: a payload's members after its descriptors, in both versions.
fn write_tail_members(
    out: &mut Vec<u8>,
    snap: &Snapshot,
    head: &Head<'_>,
    pending: Option<&[PendingFrame]>,
) {
    let signers: Vec<CheckpointSigners> = snap
        .signers
        .entries()
        .iter()
        .map(|(since_version, set)| CheckpointSigners {
            since_version: *since_version,
            set: set.to_json_form_as_listed(),
        })
        .collect();
    out.extend_from_slice(b"\"signers\":");
    serde_json::to_writer(&mut *out, &signers).expect("a signer set serializes");
    if let (Some(frames), Some(_)) = (pending, head.log_end) {
        out.extend_from_slice(b",\"pending\":");
        serde_json::to_writer(&mut *out, frames).expect("pending frames serialize");
    }
}

/// [`checkpoint_bytes`] with the pending frames gathered up to the snapshot's record (its
/// `log_end`), compacted: only given when the snapshot's record has a location (`log_end`).
pub fn checkpoint_bytes_with(snap: &Snapshot, pending: Option<&[PendingFrame]>) -> Vec<u8> {
    let head = head_of(snap);
    // The fields in the order the derived serializer wrote them before descriptors were compact
    // (`checkpoint_log_end` relies on `log_end` coming before `descriptors`). A descriptor's
    // served JSON is exactly its checkpoint element, so it is written as is.
    let mut out = serde_json::to_vec(&head).expect("a checkpoint head serializes");
    out.pop(); // the closing brace
    out.extend_from_slice(b",\"descriptors\":[");
    for (i, d) in snap.descriptors.values().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&d.to_json());
    }
    out.extend_from_slice(b"],");
    write_tail_members(&mut out, snap, &head, pending);
    out.push(b'}');
    out
}

/// Serialize a snapshot's state as a version-2 checkpoint payload (docs/FORMATS.md §7), what the
/// server writes: the tag `SVCRST02`, the head as length-prefixed JSON, the descriptors in
/// (kind, id) order as length-prefixed binary entries (each body the exact bytes committed, so
/// start-up copies them without parsing them as JSON again), then the tail as JSON to the end:
/// `{"signers":[…]}`, or `{"signers":[…],"pending":[…]}` with the pending frames gathered up to
/// the snapshot's record (only when it has a location, `log_end`).
pub fn checkpoint_payload(snap: &Snapshot, pending: Option<&[PendingFrame]>) -> Vec<u8> {
    let head = head_of(snap);
    let head_json = serde_json::to_vec(&head).expect("a checkpoint head serializes");
    let descriptor_bytes: usize = snap
        .descriptors
        .values()
        .map(|d| ENTRY_FIXED + d.id().len() + d.body().len())
        .sum();
    let mut out = Vec::with_capacity(64 + head_json.len() + descriptor_bytes);
    out.extend_from_slice(PAYLOAD_V2_TAG);
    let head_len = u32::try_from(head_json.len()).expect("a checkpoint head is small");
    out.extend_from_slice(&head_len.to_le_bytes());
    out.extend_from_slice(&head_json);
    out.extend_from_slice(&(snap.descriptors.len() as u64).to_le_bytes());
    for d in snap.descriptors.values() {
        let (id, body) = (d.id(), d.body());
        out.push(kind_byte(d.kind()));
        // A valid id is 1 to 128 bytes long; a body fits the log's frames (below 4 GiB).
        out.push(u8::try_from(id.len()).expect("an id is at most 128 bytes"));
        out.extend_from_slice(&d.version().to_le_bytes());
        let body_len = u32::try_from(body.len()).expect("a body is below 4 GiB");
        out.extend_from_slice(&body_len.to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(body.as_bytes());
    }
    out.push(b'{');
    write_tail_members(&mut out, snap, &head, pending);
    out.push(b'}');
    out
}

/// The `log_end` a checkpoint payload names (where the log continues after its record), if it
/// has one. Used before restore to decide which records recovery may check by header only;
/// restore then ties the checkpoint to the log (hash and `log_end`) or replays everything, so a
/// wrong answer here costs a full replay, never a wrong state. Read from the head of the payload
/// (version 2: its length-prefixed head; version 1: `checkpoint_bytes` writes `log_end` before
/// the descriptors), so a checkpoint of a million descriptors is not parsed twice.
pub fn checkpoint_log_end(payload: &[u8]) -> Option<u64> {
    if let Some(rest) = payload.strip_prefix(PAYLOAD_V2_TAG) {
        // Version 2: the head is length-prefixed JSON right after the tag.
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let head: CheckpointHead = serde_json::from_slice(rest.get(4..4 + len)?).ok()?;
        return head.log_end;
    }
    let head_end = find(payload, b"\"descriptors\":")?;
    let at = find(&payload[..head_end], b"\"log_end\":")? + b"\"log_end\":".len();
    let digits = payload[at..head_end]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether the record at `p`'s base_version + 1 carries `p`'s id (a proposal commits there or
/// nowhere). False when that record is not in `history` or cannot be read: restore then
/// decides, and reports a read failure.
pub fn committed_at_its_base(history: &History, p: &RestoredPending) -> bool {
    #[derive(Deserialize)]
    struct Base {
        base_version: u64,
    }
    #[derive(Deserialize)]
    struct Id {
        proposal_id: Option<String>,
    }
    let Ok(base) = serde_json::from_slice::<Base>(&p.payload) else {
        return false;
    };
    match history.bytes(base.base_version.saturating_add(1)) {
        Ok(Some(bytes)) => serde_json::from_slice::<Id>(&bytes)
            .is_ok_and(|r| r.proposal_id.as_deref() == Some(p.proposal_id.as_str())),
        _ => false,
    }
}

/// What a restore produced.
pub struct Restored {
    pub snapshot: Snapshot,
    /// (proposal_id, version) of the most recent commits, oldest first.
    pub recent_commits: Vec<(String, u64)>,
    /// The checkpoint version used (0 = none).
    pub from_checkpoint: u64,
    /// Pending proposals with their approvals, from the log's pending frames, minus those a
    /// commit record carries (expiry is the writer's to judge: it holds the clock).
    pub pending: Vec<RestoredPending>,
    /// The same proposals as gathered frames (what the checkpoint thread carries on from the
    /// log's end, to write into later checkpoints).
    pub pending_frames: PendingFrames,
    /// Whether the checkpoint used carried the pending frames up to it (false: none was used,
    /// or one written before checkpoints carried them, and every pending frame was read).
    pub carried_pending: bool,
    /// Whether the checkpoint used is of an earlier payload version (1, JSON) than the server
    /// writes (2): it is then rewritten at once, so the next start reads the cheaper one.
    pub outdated_checkpoint: bool,
}

/// Where restore gets the pending frames from: given the frames a checkpoint carries and the
/// `log_end` they were gathered up to (when a checkpoint carrying them was tied to the log),
/// those frames replayed, then the log's pending frames after `log_end`; given None, every
/// pending frame of the log.
pub type PendingSource<'a> =
    dyn FnMut(Option<(u64, Vec<PendingFrame>)>) -> Result<PendingFrames, RestoreError> + 'a;

/// Replay `carried` (a checkpoint's compacted frames) into a new [`PendingFrames`].
pub fn replay_carried(seq: u64, carried: Vec<PendingFrame>) -> Result<PendingFrames, RestoreError> {
    let mut frames = PendingFrames::default();
    for f in carried {
        frames
            .add(f)
            .map_err(|e| RestoreError(format!("checkpoint {seq}: pending: {e}")))?;
    }
    Ok(frames)
}

/// The refusal for a data directory made before the signer set was on the log (its log starts at version 1: genesis
/// v1 was never written down). Nothing is reinterpreted: the operator decides.
pub fn genesis_v1_refusal(location: &str) -> String {
    format!(
        "{location}: this data directory was created with genesis v1 (before the signer set was \
         fixed into the log, docs/FORMATS.md); this version only opens genesis v2 data directories and \
         does not migrate them. Start a new data directory (the [signers] of the config become \
         its genesis set) and re-submit the registry's content there, or keep running the \
         previous release on this one"
    )
}

/// The genesis record a log starts with (docs/FORMATS.md: genesis v2 carries its signer set), checked
/// against `registry_id`.
pub fn genesis_from_frame<R: Located>(
    registry_id: &str,
    first: &R,
) -> Result<CommitRecord, RestoreError> {
    let rec = CommitRecord::from_json(first.payload()).map_err(|e| {
        RestoreError(format!(
            "{}: the first record is not valid: {}",
            first.location(),
            e.message
        ))
    })?;
    if rec.version != 0 {
        return Err(RestoreError(genesis_v1_refusal(&first.location())));
    }
    if rec.genesis_signers.is_none() {
        return Err(RestoreError(genesis_v1_refusal(&first.location())));
    }
    if !rec.verify_link(registry_id, "") {
        return Err(RestoreError(format!(
            "{}: the genesis record does not belong to registry {registry_id:?} \
             (its hash does not match its registry_id and signer set)",
            first.location()
        )));
    }
    Ok(rec)
}

/// How many recent proposal ids a restore hands the writer (its "already committed" memory).
const RECENT_COMMITS: u64 = 16_384;

/// Rebuild the snapshot from records held in memory (`ronctl`'s replay of fetched history,
/// tests): they are written to an in-memory journal and restored by [`restore_history`], the
/// same code start-up runs on the log.
pub fn restore<R: Located>(
    registry_id: &str,
    checkpoint: Option<(u64, &[u8])>,
    records: &[R],
) -> Result<Restored, RestoreError> {
    let Some((first, records)) = records.split_first() else {
        return Err(RestoreError("the log holds no genesis record".to_string()));
    };
    let genesis = Arc::new(genesis_from_frame(registry_id, first)?);
    let store =
        Arc::new(MemoryStore::new().map_err(|e| RestoreError(format!("in-memory journal: {e}")))?);
    let mut history = History::new(genesis, store.clone());
    let mut end = 0u64;
    let mut where_ = Vec::with_capacity(records.len());
    // Pending frames (proposals and approvals awaiting commit) are set aside; the chain is
    // made of the commit records alone.
    let mut frames = PendingFrames::default();
    for r in records {
        if pending::is_pending_frame(r.payload()) {
            PendingFrame::from_bytes(r.payload())
                .and_then(|f| frames.add(f))
                .map_err(|e| RestoreError(format!("{}: {e}", r.location())))?;
            continue;
        }
        let payload = r.payload();
        store
            .write_at(end, payload)
            .map_err(|e| RestoreError(format!("in-memory journal: {e}")))?;
        end += payload.len() as u64;
        let len = u32::try_from(payload.len())
            .map_err(|_| RestoreError(format!("{}: record too large", r.location())))?;
        history.push(Loc { end, len });
        where_.push(r.location());
    }
    let checkpoint = match checkpoint {
        Some((seq, bytes)) => Some(parse_checkpoint(seq, bytes)?),
        None => None,
    };
    // Every pending frame is at hand here: replaying them all is what the carried frames
    // stand for, so they are not used.
    let mut frames = Some(frames);
    restore_history(
        registry_id,
        checkpoint,
        history,
        &mut |_| Ok(frames.take().unwrap_or_default()),
        &|v| {
            where_
                .get(v as usize - 1)
                .cloned()
                .unwrap_or_else(|| format!("version {v}"))
        },
    )
}

/// Rebuild the snapshot over `history` (every record's location, genesis to the log's end).
///
/// With a checkpoint at version C: its record C must be in the history with the checkpoint's
/// hash (and, when the checkpoint says where the log continues, end exactly there); the state is
/// the checkpoint's and only versions after C are read, re-verified (shape, hash link, proposal
/// id) and re-applied. Without one, every version is. Versions up to C are not re-hashed here:
/// the background check (`verify_history`) does that after start-up without holding readiness.
/// `location` names where a version's record is, for error messages.
pub fn restore_history(
    registry_id: &str,
    checkpoint: Option<LoadedCheckpoint>,
    history: History,
    frames: &mut PendingSource<'_>,
    location: &dyn Fn(u64) -> String,
) -> Result<Restored, RestoreError> {
    let records = history.len() - 1;
    let mut outdated_checkpoint = false;
    let mut cp = match checkpoint {
        Some(LoadedCheckpoint {
            seq,
            json: cp,
            payload_version,
        }) => {
            outdated_checkpoint = payload_version < 2;
            if cp.registry_id != registry_id || cp.version != seq {
                return Err(RestoreError(format!(
                    "checkpoint {seq}: belongs to {:?} version {}, not {registry_id:?} version {seq}",
                    cp.registry_id, cp.version
                )));
            }
            Some(cp)
        }
        None => None,
    };
    let cp_version = cp.as_ref().map_or(0, |c| c.version);
    // A log that starts after genesis (a retention window dropped its oldest segments) can only
    // be rebuilt from a checkpoint at or after its first record: anything else is a missing
    // piece of history, never skipped.
    let oldest = history.oldest_version();
    if oldest > 0 && (cp.is_none() || cp_version < oldest) {
        return Err(RestoreError(format!(
            "the log starts at version {oldest} (older segments were dropped by the retention \
             window, storage.retain_versions) but {}: the state cannot be rebuilt; restore a \
             backup, or (a follower) start from an empty data directory",
            match &cp {
                Some(_) => format!("the newest usable checkpoint is at version {cp_version}"),
                None => "no usable checkpoint covers the dropped versions".to_string(),
            }
        )));
    }
    if cp_version > records {
        return Err(RestoreError(format!(
            "checkpoint is at version {cp_version} but the log holds only {records} records"
        )));
    }
    let read = |v: u64| -> Result<CommitRecord, RestoreError> {
        match history.record(v) {
            Ok(Some(rec)) => Ok(rec),
            Ok(None) => Err(RestoreError(format!(
                "{}: version {v} is missing",
                location(v)
            ))),
            Err(e) => Err(RestoreError(format!("{}: {e}", location(v)))),
        }
    };
    let mut descriptors = Descriptors::new();
    let mut head = history.genesis().clone();
    if let Some(cp) = &mut cp {
        if cp_version > 0 {
            head = Arc::new(read(cp_version)?);
            if cp.hash != head.hash {
                return Err(RestoreError(format!(
                    "checkpoint {cp_version}: its hash does not match the log's record {cp_version}"
                )));
            }
            if let (Some(want), Some(loc)) = (cp.log_end, history.loc(cp_version)) {
                if want != loc.end {
                    return Err(RestoreError(format!(
                        "checkpoint {cp_version}: says the log continues at {want}, but record \
                         {cp_version} ends at {}",
                        loc.end
                    )));
                }
            }
        }
        // Built while parsing (`CheckpointDescriptors`); taken here so the state is held once.
        descriptors = std::mem::take(&mut cp.descriptors.0);
        if head.descriptors != descriptors.len() as u64 {
            return Err(RestoreError(format!(
                "checkpoint {cp_version}: holds {} descriptors, the record says {}",
                descriptors.len(),
                head.descriptors
            )));
        }
    }
    let limits = ProposalLimits {
        max_ops: usize::MAX,
        max_descriptor_bytes: usize::MAX,
    };
    let genesis_set = history
        .genesis()
        .genesis_signers
        .clone()
        .ok_or_else(|| RestoreError(genesis_v1_refusal("the genesis record")))?;
    let parse = |rec: &CommitRecord| {
        proposal::parse(&rec.payload, registry_id, &limits).map_err(|e| {
            RestoreError(format!(
                "{}: version {} payload: {}",
                location(rec.version),
                rec.version,
                e.message
            ))
        })
    };
    // The checkpoint's signer history, when it carries one; older checkpoints do not: then the
    // history up to the checkpoint is rebuilt from the log's set_signers records (reading
    // every record below it, once), and past it like everything else.
    let mut signers = match cp.as_ref().and_then(|c| c.signers.as_ref()) {
        Some(entries) => checkpoint_history(cp_version, entries, &genesis_set)?,
        None => {
            let mut h = SignerHistory::genesis(genesis_set.clone());
            for v in 1..=cp_version {
                let rec = read(v)?;
                if let Some(set) = parse(&rec)?.new_signers() {
                    h.record(v, set.clone())
                        .map_err(|e| RestoreError(format!("{}: version {v}: {e}", location(v))))?;
                }
            }
            h
        }
    };
    let recent_from = records
        .saturating_sub(RECENT_COMMITS - 1)
        .max(1)
        .max(oldest);
    let mut recent = Vec::new();
    // Proposal ids of recent versions the replay below does not read: only the id is parsed
    // (the bytes are still read through the CRC-checking journal reader).
    for v in recent_from..=cp_version {
        let bytes = match history.bytes(v) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err(RestoreError(format!(
                    "{}: version {v} is missing",
                    location(v)
                )))
            }
            Err(e) => return Err(RestoreError(format!("{}: {e}", location(v)))),
        };
        let id = record_id(&bytes)
            .map_err(|e| RestoreError(format!("{}: record is not valid: {e}", location(v))))?;
        match id.proposal_id {
            Some(pid) if id.version == v => recent.push((pid, v)),
            _ => {
                return Err(RestoreError(format!(
                    "{}: expected version {v} with a proposal id, found version {}",
                    location(v),
                    id.version
                )))
            }
        }
    }
    for v in cp_version + 1..=records {
        let rec = read(v)?;
        let where_ = || location(v);
        if !rec.verify_link(registry_id, &head.hash) {
            return Err(RestoreError(format!(
                "{}: broken hash chain at version {}",
                where_(),
                rec.version
            )));
        }
        let p = parse(&rec)?;
        if let Some(set) = p.new_signers() {
            signers
                .record(rec.version, set.clone())
                .map_err(|e| RestoreError(format!("{}: version {}: {e}", where_(), rec.version)))?;
        }
        descriptors = state::apply(&descriptors, &p.ops, rec.version).map_err(|e| {
            RestoreError(format!(
                "{}: version {} does not apply: {}",
                where_(),
                rec.version,
                e.message
            ))
        })?;
        if rec.descriptors != descriptors.len() as u64 {
            return Err(RestoreError(format!(
                "{}: version {} says {} descriptors, replay gives {}",
                where_(),
                rec.version,
                rec.descriptors,
                descriptors.len()
            )));
        }
        if v >= recent_from {
            recent.push((rec.proposal_id.clone(), v));
        }
        head = Arc::new(rec);
    }
    // A pending proposal is committed when the record at its base_version + 1 carries its id
    // (the writer's compare-and-swap commits a proposal nowhere else).
    #[derive(Deserialize)]
    struct Base {
        base_version: u64,
    }
    // The checkpoint's frames stand for every pending frame up to its `log_end` only if it
    // says where that is, and it was tied to the log above (its record ends there).
    let carried = cp
        .as_mut()
        .and_then(|c| match (c.log_end, c.pending.take()) {
            (Some(end), Some(frames)) if history.loc(cp_version).map(|l| l.end) == Some(end) => {
                Some((end, frames))
            }
            _ => None,
        });
    let carried_pending = carried.is_some();
    let mut frames = frames(carried)?;
    let mut read_failure = None;
    frames.retain(|p| {
        let committed = match serde_json::from_slice::<Base>(&p.payload) {
            // A base below the window can never commit again (HEAD is past it): pending.
            Ok(b) if b.base_version < records && b.base_version + 1 >= oldest => {
                match read(b.base_version + 1) {
                    Ok(rec) => rec.proposal_id == p.proposal_id,
                    Err(e) => {
                        read_failure.get_or_insert(e);
                        true
                    }
                }
            }
            _ => false,
        };
        !committed
    });
    if let Some(e) = read_failure {
        return Err(e);
    }
    let pending = frames.clone().all();
    Ok(Restored {
        snapshot: Snapshot::new(
            registry_id.into(),
            head,
            descriptors,
            history,
            Arc::new(signers),
        ),
        recent_commits: recent,
        from_checkpoint: cp_version,
        pending,
        pending_frames: frames,
        carried_pending,
        outdated_checkpoint,
    })
}

/// A stored record's `version` and `proposal_id`.
#[derive(Deserialize, Debug, PartialEq)]
struct IdOnly {
    version: u64,
    proposal_id: Option<String>,
}

/// How far into a stored record its `proposal_id` is looked for before parsing it whole.
const RECORD_HEAD_BYTES: usize = 512;

/// The `version` and `proposal_id` of a stored record (bytes already CRC-checked). Read from
/// its head where `CommitRecord::to_json` writes them, before the envelope (which is nearly all
/// of a large record: a 1,000-op proposal is ~200 KB that a full parse would scan for nothing);
/// a record laid out otherwise is parsed whole.
fn record_id(bytes: &[u8]) -> Result<IdOnly, serde_json::Error> {
    let head = &bytes[..bytes.len().min(RECORD_HEAD_BYTES)];
    let quick = || -> Option<IdOnly> {
        let rest = head.strip_prefix(b"{\"version\":")?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || rest.get(digits) != Some(&b',') {
            return None;
        }
        let version = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        const KEY: &[u8] = b",\"proposal_id\":\"";
        let at = find(head, KEY)? + KEY.len();
        let len = head[at..].iter().position(|&b| b == b'"')?;
        let id = &head[at..at + len];
        // A proposal id is lower-case hex: nothing to unescape.
        if !id.iter().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(IdOnly {
            version,
            proposal_id: Some(String::from_utf8(id.to_vec()).ok()?),
        })
    };
    match quick() {
        Some(id) => Ok(id),
        None => serde_json::from_slice(bytes),
    }
}

/// The signer history a checkpoint carries: it must start with the log's genesis set and hold
/// no set newer than the checkpoint.
fn checkpoint_history(
    cp_version: u64,
    entries: &[CheckpointSigners],
    genesis: &Arc<SignerSet>,
) -> Result<SignerHistory, RestoreError> {
    let fail = |why: String| RestoreError(format!("checkpoint {cp_version}: signers: {why}"));
    let sets = entries
        .iter()
        .map(|e| {
            SignerSet::from_json_form(&e.set)
                .map(|s| (e.since_version, Arc::new(s)))
                .map_err(|err| fail(format!("the set since version {}: {err}", e.since_version)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let history = SignerHistory::from_entries(sets).map_err(|e| fail(e.to_string()))?;
    if history.entries()[0].1 != *genesis {
        return Err(fail("its genesis set is not the log's".to_string()));
    }
    if history.current().0 > cp_version {
        return Err(fail(format!(
            "holds a set from version {}, after the checkpoint",
            history.current().0
        )));
    }
    Ok(history)
}

/// The full check of a restored history, from genesis: every record's shape, version, hash
/// link and proposal id, ending at `head_hash`. Start-up skips this for versions a checkpoint
/// covers; the background check thread runs it after readiness (and `ronctl registry verify`
/// does more: signatures too). Returns the first problem found.
pub fn verify_history(
    registry_id: &str,
    history: &History,
    head_hash: &str,
) -> Result<u64, String> {
    let mut prev = history.genesis().hash.clone();
    let last = history.len() - 1;
    // With a retention window the chain is re-hashed from the oldest retained record (its own
    // hash checked, its link to the dropped record taken as it says), and restarted there if
    // the window moves on while this runs.
    let mut v = history.oldest_version().max(1);
    let mut linked = v == 1;
    while v <= last {
        let rec = match history.read(v)? {
            crate::history::Read::Bytes(bytes) => CommitRecord::from_json(&bytes)
                .map_err(|e| format!("version {v}: stored record is not valid: {}", e.message))?,
            crate::history::Read::Missing => return Err(format!("version {v} is missing")),
            crate::history::Read::Expired { oldest } => {
                v = oldest;
                linked = false;
                continue;
            }
        };
        if rec.version != v {
            return Err(format!(
                "version {v}: the log holds version {} at its place",
                rec.version
            ));
        }
        if !linked {
            prev = rec.prev_hash.clone();
            linked = true;
        }
        if !rec.verify_link(registry_id, &prev) {
            return Err(format!("broken hash chain at version {v}"));
        }
        prev = rec.hash;
        v += 1;
    }
    if prev != head_hash {
        return Err(format!(
            "the chain re-hashed from genesis ends at {prev}, the served head is {head_hash}"
        ));
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{chain, sha256_hex};

    struct Rec(Vec<u8>, usize);
    impl Located for Rec {
        fn location(&self) -> String {
            format!("record #{}", self.1)
        }
        fn payload(&self) -> &[u8] {
            &self.0
        }
    }

    fn set(seeds: &[u8], threshold: usize) -> Arc<SignerSet> {
        let keys = seeds
            .iter()
            .map(|&seed| crate::domain::signers::SignerKey {
                keyid: format!("k{seed}"),
                public: ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
                    .verifying_key()
                    .into(),
                not_before: None,
                not_after: None,
            })
            .collect();
        Arc::new(SignerSet::new(threshold, keys).unwrap())
    }

    /// A chain of `n` commits, each putting one node; returns the records (genesis first) and
    /// the snapshots.
    fn chain_of(n: u64) -> (Vec<Rec>, Vec<Snapshot>) {
        let mut snaps = vec![Snapshot::genesis("r", set(&[1, 2], 1))];
        let mut recs = vec![Rec(snaps[0].head.to_json(), 0)];
        // Locations as `restore` lays the commit records out in its in-memory journal.
        let mut end = 0u64;
        for v in 1..=n {
            let prev = snaps.last().unwrap();
            let payload = format!(
                r#"{{"registry_id":"r","base_version":{},"ops":[{{"op":"put","kind":"node","id":"n{v}","body":{{"v":{v}}}}}]}}"#,
                v - 1
            );
            let p = proposal::parse(
                payload.as_bytes(),
                "r",
                &ProposalLimits {
                    max_ops: 9,
                    max_descriptor_bytes: 99,
                },
            )
            .unwrap();
            let descriptors = state::apply(&prev.descriptors, &p.ops, v).unwrap();
            let pid = sha256_hex(payload.as_bytes());
            let sigs = vec![("k".to_string(), "c2ln".to_string())];
            let rec = Arc::new(CommitRecord {
                version: v,
                hash: chain::commit_hash("r", v, &prev.head.hash, &pid, &sigs),
                prev_hash: prev.head.hash.clone(),
                committed_at_ms: 1_000 * v as i64,
                proposal_id: pid,
                payload: payload.into_bytes().into(),
                signatures: sigs,
                descriptors: descriptors.len() as u64,
                genesis_signers: None,
            });
            let json = rec.to_json();
            end += json.len() as u64;
            let loc = Loc {
                end,
                len: json.len() as u32,
            };
            recs.push(Rec(json, v as usize));
            snaps.push(prev.next(rec, descriptors, loc));
        }
        (recs, snaps)
    }

    #[test]
    fn replay_from_genesis_and_from_a_checkpoint_agree() {
        let (recs, snaps) = chain_of(5);
        let full = restore("r", None, &recs).unwrap();
        assert_eq!(full.snapshot.version(), 5);
        assert_eq!(full.snapshot.head_json, snaps[5].head_json);
        assert_eq!(full.snapshot.descriptors.len(), 5);
        let cp = checkpoint_bytes(&snaps[3]);
        let from_cp = restore("r", Some((3, &cp)), &recs).unwrap();
        assert_eq!(from_cp.from_checkpoint, 3);
        assert_eq!(from_cp.snapshot.head_json, full.snapshot.head_json);
        let a: Vec<Vec<u8>> = full
            .snapshot
            .descriptors
            .values()
            .map(|d| d.to_json())
            .collect();
        let b: Vec<Vec<u8>> = from_cp
            .snapshot
            .descriptors
            .values()
            .map(|d| d.to_json())
            .collect();
        assert_eq!(a, b);
        assert_eq!(full.recent_commits.len(), 5);
    }

    #[test]
    fn a_broken_chain_or_a_foreign_checkpoint_refuses_with_its_location() {
        let (mut recs, snaps) = chain_of(3);
        let mut v: serde_json::Value = serde_json::from_slice(&recs[2].0).unwrap();
        v["hash"] = serde_json::json!("0".repeat(64));
        recs[2].0 = serde_json::to_vec(&v).unwrap();
        let err = restore("r", None, &recs).err().unwrap().0;
        assert!(
            err.contains("record #2") && err.contains("broken hash chain"),
            "{err}"
        );

        let (recs, _) = chain_of(3);
        let cp = checkpoint_bytes(&snaps[2]);
        let foreign = String::from_utf8(cp.clone())
            .unwrap()
            .replace("\"registry_id\":\"r\"", "\"registry_id\":\"x\"");
        assert!(restore("r", Some((2, foreign.as_bytes())), &recs).is_err());
        assert!(restore("r", Some((7, &cp)), &recs).is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&cp).unwrap();
        v["hash"] = serde_json::json!("f".repeat(64));
        let err = restore("r", Some((2, &serde_json::to_vec(&v).unwrap())), &recs)
            .err()
            .unwrap()
            .0;
        assert!(err.contains("does not match"), "{err}");
        assert!(restore("other", None, &recs).is_err());
    }

    #[test]
    fn a_log_without_a_v2_genesis_is_refused_as_genesis_v1() {
        let (recs, _) = chain_of(2);
        // What a v1 data directory holds: commits from version 1, no genesis record.
        let err = restore("r", None, &recs[1..]).err().unwrap().0;
        assert!(
            err.contains("genesis v1") && err.contains("record #1"),
            "{err}"
        );
        // A genesis record without its signer set is v1 too.
        let mut v: serde_json::Value = serde_json::from_slice(&recs[0].0).unwrap();
        v.as_object_mut().unwrap().remove("signers");
        let mut v1 = chain_of(2).0;
        v1[0].0 = serde_json::to_vec(&v).unwrap();
        assert!(restore("r", None, &v1)
            .err()
            .unwrap()
            .0
            .contains("genesis v1"));
        assert!(restore("r", None, &Vec::<Rec>::new()).is_err());
    }

    /// Genesis, one put, a set_signers, one put: the history comes back from the log alone,
    /// from a checkpoint that carries it, and from an old checkpoint without it.
    #[test]
    fn the_signer_history_is_rebuilt_from_the_log_and_from_checkpoints() {
        let (mut recs, mut snaps) = chain_of(1);
        let new_set = set(&[3, 4, 5], 2);
        let form = serde_json::to_string(&new_set.to_json_form()).unwrap();
        let payload = format!(
            r#"{{"registry_id":"r","base_version":1,"ops":[{{"op":"set_signers",{}}}]}}"#,
            &form[1..form.len() - 1]
        );
        let prev = snaps.last().unwrap();
        let pid = sha256_hex(payload.as_bytes());
        let sigs = vec![("k1".to_string(), "c2ln".to_string())];
        let rec = Arc::new(CommitRecord {
            version: 2,
            hash: chain::commit_hash("r", 2, &prev.head.hash, &pid, &sigs),
            prev_hash: prev.head.hash.clone(),
            committed_at_ms: 2_000,
            proposal_id: pid,
            payload: payload.into_bytes().into(),
            signatures: sigs,
            descriptors: 1,
            genesis_signers: None,
        });
        let json = rec.to_json();
        // Where `restore` lays it out in its in-memory journal: after the commits before it.
        let loc = Loc {
            end: recs[1..].iter().map(|r| r.0.len() as u64).sum::<u64>() + json.len() as u64,
            len: json.len() as u32,
        };
        recs.push(Rec(json, 2));
        let next = prev.next_with(rec, prev.descriptors.clone(), loc, Some(new_set.clone()));
        snaps.push(next);
        let full = restore("r", None, &recs).unwrap();
        let h = &full.snapshot.signers;
        assert_eq!(h.entries().len(), 2);
        assert_eq!(**h.set_at(1), *set(&[1, 2], 1));
        assert_eq!(h.in_force_at(2), (2, &new_set));

        let cp = checkpoint_bytes(&snaps[2]);
        let from_cp = restore("r", Some((2, &cp)), &recs).unwrap();
        assert_eq!(from_cp.snapshot.signers.entries().len(), 2);
        assert_eq!(**from_cp.snapshot.signers.set_at(5), *new_set);

        let mut old: serde_json::Value = serde_json::from_slice(&cp).unwrap();
        old.as_object_mut().unwrap().remove("signers");
        let old = serde_json::to_vec(&old).unwrap();
        let from_old = restore("r", Some((2, &old)), &recs).unwrap();
        assert_eq!(**from_old.snapshot.signers.set_at(2), *new_set);

        // A checkpoint whose genesis set is not the log's is refused.
        let mut bad: serde_json::Value = serde_json::from_slice(&cp).unwrap();
        bad["signers"][0]["set"]["threshold"] = serde_json::json!(2);
        let err = restore("r", Some((2, &serde_json::to_vec(&bad).unwrap())), &recs)
            .err()
            .unwrap()
            .0;
        assert!(err.contains("signers"), "{err}");
    }

    #[test]
    fn a_checkpoint_must_say_where_the_log_continues_and_history_verifies_in_full() {
        let (recs, snaps) = chain_of(4);
        let cp = checkpoint_bytes(&snaps[2]);
        let mut v: serde_json::Value = serde_json::from_slice(&cp).unwrap();
        let end = v["log_end"]
            .as_u64()
            .expect("a checkpoint says where the log continues");
        v["log_end"] = serde_json::json!(end + 1);
        let err = restore("r", Some((2, &serde_json::to_vec(&v).unwrap())), &recs)
            .err()
            .unwrap()
            .0;
        assert!(err.contains("continues at"), "{err}");
        assert_eq!(checkpoint_log_end(&cp), Some(end));
        // An older checkpoint without the field still restores.
        v.as_object_mut().unwrap().remove("log_end");
        let old = restore("r", Some((2, &serde_json::to_vec(&v).unwrap())), &recs).unwrap();
        assert_eq!(old.snapshot.head_json, snaps[4].head_json);
        assert_eq!(old.recent_commits.len(), 4, "ids before the checkpoint too");

        let full = restore("r", None, &recs).unwrap();
        let head = full.snapshot.head.hash.clone();
        assert_eq!(verify_history("r", &full.snapshot.history, &head), Ok(4));
        let err = verify_history("r", &full.snapshot.history, &"0".repeat(64)).unwrap_err();
        assert!(err.contains("served head"), "{err}");
        // A record read back through the history is byte for byte what was stored.
        assert_eq!(full.snapshot.record_bytes(3).unwrap().unwrap(), recs[3].0);
    }

    /// Reads at most `step` bytes per call, so a streamed parse meets every boundary.
    struct Trickle<'a>(&'a [u8], usize);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn one_pending_proposal() -> Vec<PendingFrame> {
        let payload = br#"{"registry_id":"r","base_version":4,"ops":[]}"#;
        let id = sha256_hex(payload);
        vec![
            PendingFrame::Proposal {
                proposal_id: id.clone(),
                payload: crate::domain::dsse::b64(payload),
                expires_at: 1_000,
            },
            PendingFrame::Approvals {
                proposal_id: id,
                approvals: vec![crate::domain::pending::PendingApproval {
                    keyid: "k1".into(),
                    public_key: hex::encode([7u8; 32]),
                    sig: crate::domain::dsse::encode_sig(&[9u8; 64]),
                }],
            },
        ]
    }

    /// What a loaded checkpoint holds, comparable.
    fn contents(cp: &LoadedCheckpoint) -> String {
        let j = &cp.json;
        let descriptors: Vec<String> = j
            .descriptors
            .0
            .values()
            .map(|d| String::from_utf8(d.to_json()).unwrap())
            .collect();
        format!(
            "{} {} {} {:?} {descriptors:?} {} {:?}",
            j.registry_id,
            j.version,
            j.hash,
            j.log_end,
            serde_json::to_string(&j.signers).unwrap(),
            j.pending
        )
    }

    /// issue 14: a checkpoint streamed through a small window (every element split across
    /// refills, one element larger than the window) loads exactly what the whole payload
    /// parses to; a payload laid out otherwise is parsed whole; damage is refused.
    #[test]
    fn a_streamed_checkpoint_loads_what_the_whole_payload_does() {
        let (_, snaps) = chain_of(6);
        let frames = one_pending_proposal();
        for cp in [
            checkpoint_bytes(&snaps[5]),
            checkpoint_bytes_with(&snaps[5], Some(&frames)),
            checkpoint_bytes_with(&snaps[0], Some(&frames)),
        ] {
            let whole = contents(&parse_checkpoint(5, &cp).unwrap());
            for window in [1, 2, 7, 40, 1 << 20] {
                for step in [1, 3, 1 << 20] {
                    let streamed = read_checkpoint_in(5, &mut Trickle(&cp, step), window).unwrap();
                    assert_eq!(contents(&streamed), whole, "window {window} step {step}");
                }
            }
        }
        let cp = checkpoint_bytes_with(&snaps[5], Some(&frames));
        assert!(contents(&read_checkpoint(5, &mut &cp[..]).unwrap()).contains("Proposal"));
        // Another layout (keys sorted, whitespace): read whole, same contents.
        let v: serde_json::Value = serde_json::from_slice(&cp).unwrap();
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        assert_eq!(
            contents(&read_checkpoint_in(5, &mut &pretty[..], 16).unwrap()),
            contents(&parse_checkpoint(5, &pretty).unwrap())
        );
        // Cut short anywhere, or with a damaged element, or with bytes after it: refused.
        for cut in [10, cp.len() / 2, cp.len() - 1] {
            assert!(
                read_checkpoint_in(5, &mut &cp[..cut], 8).is_err(),
                "cut at {cut}"
            );
        }
        let bad =
            String::from_utf8(cp.clone())
                .unwrap()
                .replacen("\"kind\":\"node\"", "\"kind\":7", 1);
        assert!(read_checkpoint_in(5, &mut bad.as_bytes(), 8).is_err());
        let mut extra = cp.clone();
        extra.extend_from_slice(b"{}");
        assert!(read_checkpoint_in(5, &mut &extra[..], 8).is_err());
    }

    /// issue 14: restore hands the pending source what the checkpoint carries only when it has
    /// them and they are tied to the log (its record ends at `log_end`); an old checkpoint
    /// without them gets every pending frame read.
    #[test]
    fn carried_pending_frames_are_used_only_from_a_checkpoint_tied_to_the_log() {
        let (recs, snaps) = chain_of(5);
        let full = restore("r", None, &recs).unwrap();
        let history = full.snapshot.history.clone();
        let frames = one_pending_proposal();
        let asked = |cp: Vec<u8>| {
            let mut got = None;
            let r = restore_history(
                "r",
                Some(parse_checkpoint(3, &cp).unwrap()),
                history.clone(),
                &mut |carried| {
                    got = Some(carried.clone());
                    match carried {
                        Some((end, f)) => replay_carried(end, f),
                        None => Ok(PendingFrames::default()),
                    }
                },
                &|v| format!("version {v}"),
            );
            (r.map(|r| (r.carried_pending, r.pending.len())), got)
        };
        let (r, got) = asked(checkpoint_bytes(&snaps[3]));
        assert_eq!(r.unwrap(), (false, 0));
        assert_eq!(got, Some(None), "an old checkpoint: every frame is read");
        let (r, got) = asked(checkpoint_bytes_with(&snaps[3], Some(&frames)));
        assert_eq!(
            r.unwrap(),
            (true, 1),
            "the carried proposal (base 4) is pending"
        );
        let end = history.loc(3).unwrap().end;
        assert_eq!(got, Some(Some((end, frames.clone()))));
        // A checkpoint whose log_end is not where its record ends is refused before any
        // pending frame is asked for.
        let mut v: serde_json::Value =
            serde_json::from_slice(&checkpoint_bytes_with(&snaps[3], Some(&frames))).unwrap();
        v["log_end"] = serde_json::json!(end + 1);
        let (r, got) = asked(serde_json::to_vec(&v).unwrap());
        assert!(r.is_err());
        assert_eq!(got, None);
    }

    /// The server's payload (version 2, binary descriptors) loads exactly what the previous
    /// encoder's JSON payload (version 1, still read) of the same state does, whole or streamed
    /// through any window; restore from either gives the full replay's state; only version 1 is
    /// marked for a rewrite.
    #[test]
    fn a_version_2_checkpoint_loads_what_version_1_does() {
        let (recs, snaps) = chain_of(6);
        let frames = one_pending_proposal();
        for (snap, pending) in [
            (&snaps[5], None),
            (&snaps[5], Some(&frames[..])),
            (&snaps[0], Some(&frames[..])),
        ] {
            let v1 = checkpoint_bytes_with(snap, pending);
            let v2 = checkpoint_payload(snap, pending);
            assert!(v2.starts_with(b"SVCRST02") && v1.starts_with(b"{"));
            let old = parse_checkpoint(5, &v1).unwrap();
            assert_eq!(old.payload_version(), 1);
            let whole = parse_checkpoint(5, &v2).unwrap();
            assert_eq!(whole.payload_version(), 2);
            assert_eq!(contents(&whole), contents(&old));
            assert_eq!(checkpoint_log_end(&v2), checkpoint_log_end(&v1));
            for window in [1, 2, 7, 40, 1 << 20] {
                for step in [1, 3, 1 << 20] {
                    let streamed = read_checkpoint_in(5, &mut Trickle(&v2, step), window).unwrap();
                    assert_eq!(
                        contents(&streamed),
                        contents(&old),
                        "window {window} step {step}"
                    );
                }
            }
        }
        let full = restore("r", None, &recs).unwrap();
        for (cp, outdated) in [
            (checkpoint_payload(&snaps[4], None), false),
            (checkpoint_bytes(&snaps[4]), true),
        ] {
            let r = restore("r", Some((4, &cp)), &recs).unwrap();
            assert_eq!(r.from_checkpoint, 4);
            assert_eq!(r.outdated_checkpoint, outdated);
            assert_eq!(r.snapshot.head_json, full.snapshot.head_json);
            assert_eq!(
                format!("{:?}", r.snapshot.descriptors),
                format!("{:?}", full.snapshot.descriptors)
            );
        }
        assert!(
            !full.outdated_checkpoint,
            "no checkpoint: nothing to rewrite"
        );
    }

    /// A version-2 payload that is cut short, has bytes after its tail, or holds an entry that
    /// could not have been written (unknown kind, invalid id, a body that is no object's text,
    /// keys out of order or repeated) is refused, whatever the window.
    #[test]
    fn a_damaged_version_2_checkpoint_is_refused() {
        let (_, snaps) = chain_of(3);
        let cp = checkpoint_payload(&snaps[3], Some(&one_pending_proposal()));
        for cut in 0..cp.len() {
            assert!(
                read_checkpoint_in(3, &mut &cp[..cut], 5).is_err(),
                "cut at {cut}"
            );
        }
        let mut extra = cp.clone();
        extra.extend_from_slice(b"{}");
        assert!(parse_checkpoint(3, &extra).is_err());
        // The first entry: after the tag, the head's length and the head, and the count.
        let head_len = u32::from_le_bytes(cp[8..12].try_into().unwrap()) as usize;
        let first = 12 + head_len + 8;
        assert_eq!(&cp[first + ENTRY_FIXED..first + ENTRY_FIXED + 2], b"n1");
        let entry_len = ENTRY_FIXED + 2 + br#"{"v":1}"#.len();
        let damaged = |at: usize, to: &[u8]| {
            let mut bad = cp.clone();
            bad[at..at + to.len()].copy_from_slice(to);
            parse_checkpoint(3, &bad)
                .err()
                .map(|e| e.0)
                .unwrap_or_default()
        };
        assert!(damaged(first, &[3]).contains("unknown kind"));
        assert!(damaged(first + ENTRY_FIXED, b"n/").contains("invalid id"));
        assert!(damaged(first + entry_len - 1, b"]").contains("JSON object"));
        // The second entry's id made the first's (a repeat), then one that sorts before it.
        let second_id = first + entry_len + ENTRY_FIXED;
        assert!(damaged(second_id, b"n1").contains("out of order"));
        assert!(damaged(second_id, b"n0").contains("out of order"));
        // A descriptor count that is not the entries': the tail is read from inside them.
        let mut count = cp.clone();
        count[first - 8] = 2;
        assert!(parse_checkpoint(3, &count).is_err());
    }

    /// Enough descriptors for the set to be built on its own thread (several batches, every
    /// kind): the state comes back entry for entry; an entry damaged after some batches went
    /// across is refused (and the thread is joined, not left behind).
    #[test]
    fn a_large_version_2_checkpoint_builds_its_set_alongside() {
        let (_, snaps) = chain_of(1);
        let mut set = Descriptors::new();
        for i in 0..3 * BUILD_BATCH + 17 {
            let kind = [Kind::Node, Kind::Region, Kind::Service][i % 3];
            set.insert(Descriptor::new(
                kind,
                &format!("id-{i:05}"),
                i as u64,
                &format!("{{\"i\":{i}}}"),
            ));
        }
        let s = &snaps[1];
        let snap = Snapshot {
            registry_id: s.registry_id.clone(),
            head: s.head.clone(),
            head_json: s.head_json.clone(),
            descriptors: set,
            history: s.history.clone(),
            signers: s.signers.clone(),
        };
        let cp = checkpoint_payload(&snap, None);
        let loaded = read_checkpoint_in(1, &mut Trickle(&cp, 4096), 1 << 16).unwrap();
        let want: Vec<Vec<u8>> = snap.descriptors.values().map(|d| d.to_json()).collect();
        let got: Vec<Vec<u8>> = loaded
            .json
            .descriptors
            .0
            .values()
            .map(|d| d.to_json())
            .collect();
        assert_eq!(got, want);
        let mut bad = cp.clone();
        let at = cp.len() / 2;
        let id = bad[at..].windows(3).position(|w| w == b"id-").unwrap() + at;
        bad[id] = b'/';
        let err = read_checkpoint_in(1, &mut &bad[..], 1 << 16)
            .err()
            .unwrap()
            .0;
        assert!(err.contains("invalid id"), "{err}");
    }

    /// The quick read of a record's id agrees with a full parse on every record shape.
    #[test]
    fn a_records_id_is_read_from_its_head() {
        let (recs, _) = chain_of(3);
        for r in &recs[1..] {
            let full: IdOnly = serde_json::from_slice(&r.0).unwrap();
            assert_eq!(record_id(&r.0).unwrap(), full);
            assert!(full.proposal_id.is_some());
            // Laid out otherwise (keys sorted): parsed whole, same answer.
            let v: serde_json::Value = serde_json::from_slice(&r.0).unwrap();
            let sorted = serde_json::to_vec(&v).unwrap();
            assert_eq!(record_id(&sorted).unwrap(), full);
        }
        assert_eq!(
            record_id(&recs[0].0).unwrap().proposal_id,
            None,
            "genesis has none"
        );
        assert!(record_id(b"{\"version\":1,").is_err());
    }
}
