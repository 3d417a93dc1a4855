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


def genesis_hash_v1(registry_id: str) -> str:
    """Genesis v1 (before the signer set was on the log): only to recognise old data directories."""
    return sha256_hex(b"svc-registry/genesis/v1\n" + registry_id.encode() + b"\n")


# --- docs/FORMATS.md: signer sets, genesis v2 -------------------------------------------------------
def dev_signer_set():
    """[signers] of configs/dev.toml: (threshold, [(keyid, public_key hex)]) as configured."""
    import tomllib

    with open(os.path.join(HERE, "..", "configs", "dev.toml"), "rb") as f:
        cfg = tomllib.load(f)["signers"]
    return cfg["threshold"], [(k["keyid"], k["public_key"]) for k in cfg["keys"]]


def ss_bytes(threshold, keys) -> bytes:
    """Canonical signer-set bytes SS (no validity windows here: '-')."""
    lines = ["svc-registry/signers/v1", f"threshold {threshold}"]
    for keyid, pub in sorted(keys, key=lambda k: k[0].encode()):
        lines.append(f"key {keyid} ed25519 {pub} - -")
    return ("\n".join(lines) + "\n").encode()


def signers_json(threshold, keys):
    return {
        "threshold": threshold,
        "keys": [
            {"keyid": k, "alg": "ed25519", "public_key": p, "not_before": None, "not_after": None}
            for k, p in keys
        ],
    }


def genesis_hash(registry_id: str, signers_digest: str) -> str:
    return sha256_hex(
        b"svc-registry/genesis/v2\n" + registry_id.encode() + b"\n" + signers_digest.encode() + b"\n"
    )


def compact(v) -> bytes:
    return json.dumps(v, separators=(",", ":")).encode()


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

    print("\n== Signer set of configs/dev.toml, genesis v2")
    threshold, keys = dev_signer_set()
    ss = ss_bytes(threshold, keys)
    show("SS (canonical signer-set bytes)", repr(ss.decode()))
    digest = sha256_hex(ss)
    show("signers_digest", digest)
    h0 = genesis_hash(REGISTRY_ID, digest)
    show(f"hash_0 of {REGISTRY_ID!r} (genesis v2)", h0)
    show("(genesis v1, refused at start)", genesis_hash_v1(REGISTRY_ID))
    genesis = compact(
        {
            "version": 0,
            "hash": h0,
            "prev_hash": ZERO_HASH,
            "committed_at": "1970-01-01T00:00:00Z",
            "descriptors": 0,
            "signers": signers_json(threshold, keys),
        }
    )
    show("genesis record (the first log frame)", genesis.decode())

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
    prev = h0
    pre = commit_preimage(REGISTRY_ID, 1, prev, pid, sigs)
    show("S string", repr(s_string(sigs)))
    show("preimage", repr(pre.decode()))
    h1 = sha256_hex(pre)
    show("hash_1", h1)

    print("\n== Approve body (what ronctl sends)")
    print("  " + json.dumps({"proposal_id": pid, "signatures": [{"keyid": k, "sig": s} for k, s in sorted(sigs)]}))

    print("\n== The genesis frame: the first frame of a fresh log (durable = 0)")
    g = frame(genesis, 0)
    show("genesis payload length", len(genesis))
    show("header (hex: len | crc32c | durable)", g[:16].hex(" ", 4))

    print("\n== A pending frame: the proposal above, accepted (202) with this expiry")
    pending = compact(
        {
            "pending": "proposal",
            "proposal_id": pid,
            "payload": base64.b64encode(payload).decode(),
            "expires_at": 1798761600,
        }
    )
    show("payload", pending.decode())
    show("header when 4096 bytes were durable (hex)", frame(pending, 4096)[:16].hex(" ", 4))
    approvals = compact(
        {
            "pending": "approvals",
            "proposal_id": pid,
            "approvals": [
                {"keyid": "dev-a", "public_key": dict(keys)["dev-a"], "sig": dict(sigs)["dev-a"]}
            ],
        }
    )
    show("an approvals frame's payload", approvals.decode())

    print("\n== Log frame holding a record (stand-in payload, first frame of a log: durable = 0)")
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
            # The log position just past record 1 (§5) when its frame (a 16-byte header + the 810
            # bytes a dev server wrote) directly follows the genesis frame in segment 0; a real
            # server's pending frames for the proposal sit between them and move it.
            "log_end": 16 + len(genesis) + 16 + 810,
            "descriptors": [{"kind": "node", "id": "node-7", "version": 1, "body": {"addr": "10.0.0.7:9000"}}],
            "signers": [{"since_version": 0, "set": signers_json(threshold, keys)}],
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
    prev = None
    version = -1
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
            if "pending" in r:
                print(f"    @{off}: len={ln} crc=0x{crc:08x} durable={durable} pending {r['pending']} of {r['proposal_id'][:8]}… ok")
                off += 16 + ln
                continue
            version += 1
            if version == 0:
                s = r["signers"]
                keys = [(k["keyid"], k["public_key"]) for k in s["keys"]]
                assert all(k["not_before"] is None and k["not_after"] is None for k in s["keys"])
                h = genesis_hash(registry_id, sha256_hex(ss_bytes(s["threshold"], keys)))
                assert r["hash"] == h and r["prev_hash"] == ZERO_HASH, "genesis v2 mismatch"
                print(f"    @{off}: len={ln} crc=0x{crc:08x} durable={durable} genesis v2 hash={h} ok")
                prev = h
                off += 16 + ln
                continue
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
