#!/usr/bin/env python3
"""Recompute every worked example of docs/FORMATS.md without the Rust code.

Uses only Python 3's hashlib, base64, json and struct, plus pyca/cryptography for Ed25519
(`pip install cryptography`). CRC32C is computed here in pure Python (Castagnoli polynomial,
reflected 0x82F63B78), so no CRC library is trusted either.

    python3 docs/formats_examples.py              # print the examples
    python3 docs/formats_examples.py DATA_DIR [REGISTRY_ID]
        # also decode and check a real data directory (default registry_id: dev-registry):
        # every log frame's CRC, the hash chain and proposal ids, checkpoints, BACKUP.json

The signer keys are the DEV-ONLY keys committed in configs/dev-keys/ (public on purpose; never
use them anywhere that matters). Ed25519 signatures are deterministic, so the signatures and the
commit hash below are the same on every run and match what the server computes for the same
proposal bytes and approvals.
"""
import base64
import hashlib
import json
import os
import struct
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REGISTRY_ID = "dev-registry"
PAYLOAD_TYPE = "application/vnd.svc-registry.proposal.v1+json"
ZERO_HASH = "0" * 64
HERE = os.path.dirname(os.path.abspath(__file__))


# --- CRC32C (Castagnoli), table-driven, reflected -------------------------------------------
def _crc_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- §2-§4 of FORMATS.md: ids, DSSE, signatures, chain -------------------------------------
def sha256_hex(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def pae(payload: bytes) -> bytes:
    t = PAYLOAD_TYPE.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def genesis_hash(registry_id: str) -> str:
    return sha256_hex(b"svc-registry/genesis/v1\n" + registry_id.encode() + b"\n")


def s_string(signatures) -> str:
    """signatures: [(keyid, stored sig)]; sorted by keyid (byte order) here."""
    return "".join(f"{k} {s}\n" for k, s in sorted(signatures, key=lambda x: x[0].encode()))


def commit_preimage(registry_id, version, prev_hash, proposal_id, signatures) -> bytes:
    return (
        f"svc-registry/commit/v1\n{registry_id}\n{version}\n{prev_hash}\n{proposal_id}\n"
        + s_string(signatures)
    ).encode()


def stored_sig(text: str) -> str:
    """Any accepted input form (standard or URL-safe, padded or not) -> the stored form."""
    raw = base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4))
    assert len(raw) == 64, "a signature is 64 bytes"
    return base64.b64encode(raw).decode()


def dev_key(keyid: str) -> Ed25519PrivateKey:
    with open(os.path.join(HERE, "..", "configs", "dev-keys", f"{keyid}.key")) as f:
        k = json.load(f)
    sk = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(k["secret_key"]))
    pub = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert pub.hex() == k["public_key"], f"{keyid}: public key does not match its secret"
    return sk


# --- §6-§7: log frames and checkpoints -------------------------------------------------------
ROLL_MARKER_LEN = 0xFFFFFFFF


def frame(payload: bytes, durable: int) -> bytes:
    ln = struct.pack("<I", len(payload))
    dur = struct.pack("<Q", durable)
    crc = crc32c(payload, crc32c(dur, crc32c(ln)))
    return ln + struct.pack("<I", crc) + dur + payload


def roll_marker(durable: int) -> bytes:
    ln = struct.pack("<I", ROLL_MARKER_LEN)
    dur = struct.pack("<Q", durable)
    return ln + struct.pack("<I", crc32c(dur, crc32c(ln))) + dur


def checkpoint_file(seq: int, payload: bytes) -> bytes:
    body = b"SVCRCKP1" + struct.pack("<QQ", seq, len(payload)) + payload
    return body + struct.pack("<I", crc32c(body))


def show(title, value):
    print(f"{title}:\n  {value}")


def examples():
    print("== CRC32C check value (the standard one for this polynomial)")
    show('crc32c(b"123456789")', f"0x{crc32c(b'123456789'):08x}")

    print("\n== Genesis")
    show(f"hash_0 of {REGISTRY_ID!r}", genesis_hash(REGISTRY_ID))

    print("\n== Proposal, proposal_id, PAE")
    payload = (
        b'{"registry_id":"dev-registry","base_version":0,"ops":[{"op":"put","kind":"node",'
        b'"id":"node-7","body":{"addr":"10.0.0.7:9000"}}]}'
    )
    show("payload (exact bytes)", payload.decode())
    show("payload length", len(payload))
    pid = sha256_hex(payload)
    show("proposal_id", pid)
    msg = pae(payload)
    show("PAE prefix (before the payload)", repr(msg[: len(msg) - len(payload)].decode()))
    show("SHA-256 of the PAE", sha256_hex(msg))

    print("\n== Signatures by dev-a and dev-b (Ed25519 over the PAE)")
    sigs = []
    for keyid in ["dev-b", "dev-a"]:  # any order: the S string sorts by keyid
        raw = dev_key(keyid).sign(msg)
        std = base64.b64encode(raw).decode()
        url = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        assert stored_sig(url) == std
        dev_key(keyid).public_key().verify(raw, msg)
        sigs.append((keyid, std))
        show(f"{keyid} sig (stored: standard base64, padded)", std)
        show(f"{keyid} sig as URL-safe unpadded (accepted on input)", url)

    print("\n== Commit hash of version 1")
    prev = genesis_hash(REGISTRY_ID)
    pre = commit_preimage(REGISTRY_ID, 1, prev, pid, sigs)
    show("S string", repr(s_string(sigs)))
    show("preimage", repr(pre.decode()))
    h1 = sha256_hex(pre)
    show("hash_1", h1)

    print("\n== Approve body (what ronctl sends)")
    print("  " + json.dumps({"proposal_id": pid, "signatures": [{"keyid": k, "sig": s} for k, s in sorted(sigs)]}))

    print("\n== Log frame holding a record (first frame of a fresh log: durable = 0)")
    rec = b'{"version":1,"hash":"%s"}' % h1.encode()  # a short stand-in payload
    f = frame(rec, 0)
    show("payload", rec.decode())
    show("header (hex: len | crc32c | durable)", f[:16].hex(" ", 4))
    show("roll marker with durable = 4096 (hex)", roll_marker(4096).hex(" ", 4))
    show("an all-zero header is never valid: crc32c of 12 zero bytes", f"0x{crc32c(bytes(12)):08x}")

    print("\n== Checkpoint file")
    # The state after version 1 above: serde_json's compact form, fields in this order.
    cp = json.dumps(
        {
            "registry_id": REGISTRY_ID,
            "version": 1,
            "hash": h1,
            # The log position just past record 1: segment 0, a 16-byte header + 810 bytes (§5).
            "log_end": 826,
            "descriptors": [{"kind": "node", "id": "node-7", "version": 1, "body": {"addr": "10.0.0.7:9000"}}],
        },
        separators=(",", ":"),
    ).encode()
    c = checkpoint_file(1, cp)
    show("payload", cp.decode())
    show("checkpoint-00000000000000000001.ckpt, header (hex)", c[:24].hex(" ", 8))
    show("SHA-256 of the whole file", sha256_hex(c))
    show("trailing CRC32C (little-endian u32)", f"0x{struct.unpack('<I', c[-4:])[0]:08x}")
    show("file length", len(c))


# --- checking a real data directory ---------------------------------------------------------
def check_data_dir(data_dir, registry_id):
    print(f"\n== Checking {data_dir} (registry_id {registry_id!r})")
    log_dir = os.path.join(data_dir, "log")
    names = sorted(n for n in os.listdir(log_dir) if n.startswith("segment-") and n.endswith(".log"))
    prev = genesis_hash(registry_id)
    version = 0
    ends = {}  # version -> log position just past its frame (what a checkpoint's log_end names)
    for name in names:
        path = os.path.join(log_dir, name)
        seg = open(path, "rb").read()
        print(f"  {name}: {len(seg)} bytes on disk (preallocated)")
        off = 0
        while off + 16 <= len(seg):
            ln, crc, durable = struct.unpack_from("<IIQ", seg, off)
            if ln == ROLL_MARKER_LEN:
                assert crc == crc32c(seg[off + 8 : off + 16], crc32c(seg[off : off + 4])), "bad roll marker"
                print(f"    @{off}: roll marker, durable={durable}")
                break
            payload = seg[off + 16 : off + 16 + ln]
            want = crc32c(payload, crc32c(seg[off + 8 : off + 16], crc32c(seg[off : off + 4])))
            if ln == 0 and crc == 0 and durable == 0:
                print(f"    @{off}: zeros: end of the log")
                break
            assert crc == want, f"@{off}: CRC mismatch"
            r = json.loads(payload)
            version += 1
            assert r["version"] == version and r["prev_hash"] == prev
            env = r["envelope"]
            assert env["payloadType"] == PAYLOAD_TYPE, f"version {version}: foreign payloadType"
            body = base64.b64decode(env["payload"])
            assert sha256_hex(body) == r["proposal_id"]
            sigs = [(s["keyid"], s["sig"]) for s in env["signatures"]]
            h = sha256_hex(commit_preimage(registry_id, version, prev, r["proposal_id"], sigs))
            assert h == r["hash"], f"version {version}: hash mismatch"
            print(f"    @{off}: len={ln} crc=0x{crc:08x} durable={durable} version={version} hash={h} ok")
            prev = h
            off += 16 + ln
            ends[version] = int(name[len("segment-") : -len(".log")]) * len(seg) + off
    cdir = os.path.join(data_dir, "checkpoints")
    for name in sorted(os.listdir(cdir)) if os.path.isdir(cdir) else []:
        b = open(os.path.join(cdir, name), "rb").read()
        seq, n = struct.unpack_from("<QQ", b, 8)
        assert b[:8] == b"SVCRCKP1" and len(b) == 28 + n
        assert struct.unpack("<I", b[-4:])[0] == crc32c(b[:-4]), f"{name}: CRC mismatch"
        assert name == f"checkpoint-{seq:020d}.ckpt"
        cp = json.loads(b[24:-4])
        if "log_end" in cp:
            assert ends.get(cp["version"]) == cp["log_end"], f"{name}: log_end is not where record {cp['version']} ends"
        print(f"  {name}: seq={seq} payload={n} bytes, version={cp['version']} hash={cp['hash']} ok")
    manifest = os.path.join(data_dir, "BACKUP.json")
    if os.path.exists(manifest):
        print(f"  BACKUP.json: {json.load(open(manifest))}")


if __name__ == "__main__":
    examples()
    if len(sys.argv) > 1:
        check_data_dir(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else REGISTRY_ID)
