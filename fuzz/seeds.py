#!/usr/bin/env python3
"""Regenerate the committed seed corpora under fuzz/corpus/<target>/ (deterministic).

Seeds are small, valid-ish inputs of each target's input format, so the fuzzer starts deep
inside the code (valid frames with real CRC32C, real commit records with real hashes, requests
that reach the handler) instead of having to discover the formats. Run from anywhere:

    python3 fuzz/seeds.py
"""

import base64
import hashlib
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
REPO = os.path.dirname(HERE)

# --- CRC32C (Castagnoli), as the log frames and checkpoint files use it ----------------------
_POLY = 0x82F63B78
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def frame(payload, durable, marker=False):
    length = 0xFFFFFFFF if marker else len(payload)
    body = b"" if marker else payload
    crc = crc32c(struct.pack("<I", length) + struct.pack("<Q", durable) + body)
    return struct.pack("<IIQ", length, crc, durable) + body


# --- The fixed chain of fuzz_targets/common/mod.rs --------------------------------------------
REGISTRY = "fuzz"
SIGS = [("a", "c2lnLWE="), ("b", "c2lnLWI=")]


def proposal(v):
    if v == 4:
        ops = '[{"op":"delete","kind":"node","id":"n1"},{"op":"put","kind":"region","id":"eu-1","body":{"zone":"a"}}]'
    else:
        ops = (
            '[{"op":"put","kind":"node","id":"n%d","body":{"addr":"10.0.0.%d:9000"}},'
            '{"op":"put","kind":"service","id":"s%d","body":{}}]' % (v, v, v)
        )
    return ('{"registry_id":"%s","base_version":%d,"ops":%s,"note":"v%d"}' % (REGISTRY, v - 1, ops, v)).encode()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def genesis_hash(rid):
    return sha(b"svc-registry/genesis/v1\n" + rid.encode() + b"\n")


def commit_hash(rid, v, prev, pid, sigs):
    s = "".join("%s %s\n" % (k, sig) for k, sig in sorted(sigs))
    return sha(("svc-registry/commit/v1\n%s\n%d\n%s\n%s\n%s" % (rid, v, prev, pid, s)).encode())


def chain(n):
    """(record JSON bytes, hash, descriptors dict) per version 1..n."""
    prev = genesis_hash(REGISTRY)
    state = {}
    out = []
    for v in range(1, n + 1):
        p = proposal(v)
        for op in json.loads(p)["ops"]:
            key = (op["kind"], op["id"])
            if op["op"] == "put":
                state[key] = (v, op["body"])
            else:
                del state[key]
        pid = sha(p)
        h = commit_hash(REGISTRY, v, prev, pid, SIGS)
        ms = 1_767_225_600_000 + v
        rec = {
            "version": v,
            "hash": h,
            "prev_hash": prev,
            "committed_at": "2026-01-01T00:00:00.%03dZ" % (ms % 1000),
            "descriptors": len(state),
            "proposal_id": pid,
            "envelope": {
                "payloadType": "application/vnd.svc-registry.proposal.v1+json",
                "payload": base64.b64encode(p).decode(),
                "signatures": [{"keyid": k, "sig": s} for k, s in SIGS],
            },
        }
        out.append((json.dumps(rec, separators=(",", ":")).encode(), h, dict(state)))
        prev = h
    return out


KIND_ORDER = {"node": 0, "region": 1, "service": 2}


def checkpoint_payload(v, h, state):
    ds = [
        {"kind": k, "id": i, "version": ver, "body": body}
        for (k, i), (ver, body) in sorted(state.items(), key=lambda kv: (KIND_ORDER[kv[0][0]], kv[0][1]))
    ]
    return json.dumps({"registry_id": REGISTRY, "version": v, "hash": h, "descriptors": ds}, separators=(",", ":")).encode()


def checkpoint_file(seq, payload):
    head = b"SVCRCKP1" + struct.pack("<QQ", seq, len(payload)) + payload
    return head + struct.pack("<I", crc32c(head))


# --- Writing ---------------------------------------------------------------------------------
def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def log_recovery():
    recs = chain(4)
    # Raw mode (mode byte 0), segment 256 * ... : sb selector s gives 64 * (1 + s).
    sb = 64 * 16  # selector 15
    seg0 = b""
    pos = 0
    for rec, _, _ in recs[:1]:
        seg0 += frame(rec, pos)
        pos = len(seg0)
    write("log_recovery", "raw-one-record", bytes([15, 0]) + seg0.ljust(sb, b"\0"))
    small = [b"alpha", b"", b"gamma" * 10, b"delta"]
    img = b""
    for p in small:
        img += frame(p, len(img))
    write("log_recovery", "raw-small-records", bytes([3, 0]) + img.ljust(256, b"\0"))
    torn = bytearray(img.ljust(256, b"\0"))
    torn[len(img) - 3] ^= 0xFF
    write("log_recovery", "raw-torn-last-record", bytes([3, 0]) + bytes(torn))
    sealed = frame(b"x" * 40, 0) + frame(b"", 56, marker=True)
    seg1 = frame(b"next", 0)
    write("log_recovery", "raw-roll-marker", bytes([1, 0]) + sealed.ljust(128, b"\0") + seg1.ljust(128, b"\0"))
    # Structured programs (mode 1): op 0..3 record(len, payload, mark), 4 marker, 5 gap, 6 junk, 7 flip.
    write("log_recovery", "prog-records", bytes([3, 1, 0, 5]) + b"hello" + bytes([1, 1, 6]) + b"world!" + bytes([2, 2, 3]) + b"abc" + bytes([1]))
    write("log_recovery", "prog-roll", bytes([1, 1] + [0, 30] + [0x61] * 30 + [1] + [0, 30] + [0x62] * 30 + [2] + [4, 1] + [0, 10] + [0x63] * 10 + [1]))
    write("log_recovery", "prog-gap-then-vouching-record", bytes([3, 1, 0, 8]) + b"record-1" + bytes([1, 5, 40, 0, 8]) + b"record-2" + bytes([1]))
    write("log_recovery", "prog-invalid-mark", bytes([3, 1, 0, 4]) + b"good" + bytes([1, 0, 4]) + b"bad!" + bytes([6, 9]))
    write("log_recovery", "prog-short-last-segment", bytes([1, 1 | 0x08 | 0x60, 0, 30]) + b"z" * 30 + bytes([1, 4, 1, 0, 5]) + b"after" + bytes([1]))
    write("log_recovery", "prog-junk-and-flip", bytes([3, 1, 0, 6]) + b"record" + bytes([1, 6, 8]) + b"\xde\xad\xbe\xef\x01\x02\x03\x04" + bytes([7, 0, 0, 3, 5]))
    # Regression: a roll marker inside a damaged frame's payload ended rule D's voucher scan, so
    # a later record vouching for the damage was cut as a torn tail (recovery.rs find_voucher).
    write("log_recovery", "regression-marker-hides-voucher", bytes.fromhex(
        "030300050000008f21ddc20000000000000000616c70686100000000a34337c7150000000000000b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b7878787878787878787878787878787878787878787878ffffffff0897b2343800000000000000000000000000000000000000000000000000007365676d656e742d303030303030303030322e6c6f67000000000000000000000000000000000000000000000000616c7068610000000000300b0b1a0b000000fefefefefefefefefefefefefefefefefefefefe7365676d656e742d300000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000005b00000000000000000000000000000000005b00000000db0000001000000100000000000000"))
    write("log_recovery", "prog-other-configured-size", bytes([3, 1 | 0x10 | 0x40, 0, 3]) + b"abc" + bytes([1]))


def checkpoint():
    # Payload version 1 (JSON) only, typed from the format. The version-2 seeds (and a version-1
    # file) come from the crate's own encoders and file writer, as `writer-*`:
    # `FUZZ_SEEDS_WRITE=1 cargo test --test fuzz_corpus`, which also checks them in every run.
    recs = chain(4)
    for v in (2, 4):
        _, h, state = recs[v - 1]
        p = checkpoint_payload(v, h, state)
        write("checkpoint", "payload-v%d" % v, bytes([0, v]) + p)
        # File mode, framed by the target (0x20) under the right name (0x40).
        write("checkpoint", "file-framed-v%d" % v, bytes([0x80 | 0x40 | 0x20, v]) + p)
        # File mode, raw bytes that are a whole valid checkpoint file.
        write("checkpoint", "file-raw-v%d" % v, bytes([0x80 | 0x40, v]) + checkpoint_file(v, p))
    _, h, state = recs[2]
    lying = checkpoint_payload(3, h, state).replace(b'"version":3,', b'"version":2,', 1)
    write("checkpoint", "payload-wrong-version", bytes([0, 3]) + lying)
    write("checkpoint", "payload-empty-descriptors", bytes([0, 1]) + json.dumps({"registry_id": REGISTRY, "version": 1, "hash": recs[0][1], "descriptors": []}).encode())
    write("checkpoint", "file-temp", bytes([0x80 | 0x40 | 0x20 | 0x10, 2]) + b"{}")
    # Regression: a length field near u64::MAX overflowed 24 + 4 + len (checkpoint.rs).
    huge = bytearray(checkpoint_file(2, b"{}"))
    huge[16:24] = struct.pack("<Q", 2**64 - 21)
    write("checkpoint", "regression-huge-length", bytes([0x80 | 0x40, 2]) + bytes(huge))


def commit_record():
    for v, (rec, _, _) in enumerate(chain(2), start=1):
        write("commit_record", "record-v%d" % v, rec)
    g = {"version": 0, "hash": genesis_hash("r"), "prev_hash": "0" * 64, "committed_at": "1970-01-01T00:00:00Z", "descriptors": 0}
    write("commit_record", "genesis", json.dumps(g).encode())
    rec = json.loads(chain(1)[0][0])
    rec["committed_at"] = "1969-12-31T23:59:59.9995+01:00"
    rec["envelope"]["payload"] = base64.urlsafe_b64encode(proposal(1)).decode().rstrip("=")
    write("commit_record", "odd-time-and-base64", json.dumps(rec).encode())


def proposal_seeds():
    write("proposal", "spec-example", b'{"registry_id": "fuzz", "base_version": 41, "ops": [{"op": "put", "kind": "node", "id": "node-7", "body": {"addr": "10.0.0.7:9000"}}, {"op": "delete", "kind": "service", "id": "svc-old"}], "note": "optional free text"}')
    for v in (1, 4):
        write("proposal", "chain-v%d" % v, proposal(v))
    write("proposal", "delete-present", b'{"registry_id":"fuzz","base_version":3,"ops":[{"op":"delete","kind":"node","id":"n2"}]}')
    write("proposal", "unicode-and-escapes", '{"registry_id":"fuzz","base_version":0,"ops":[{"op":"put","kind":"region","id":"r:1.a_b-c","body":{"k":"\\u00e9\\ud83d\\ude00","n":[1,2.5e3,null,true]}}]}'.encode())
    write("proposal", "duplicate-target", b'{"registry_id":"fuzz","base_version":0,"ops":[{"op":"put","kind":"node","id":"a","body":{}},{"op":"delete","kind":"node","id":"a"}]}')
    # Regression: a lone UTF-16 surrogate escape in a body was accepted (proposal.rs).
    write("proposal", "regression-lone-surrogate", b'{"registry_id":"fuzz","base_version":0,"ops":[{"op":"put","kind":"node","id":"a","body":{"k":"\\udc00"}}]}')
    write("proposal", "body-not-object", b'{"registry_id":"fuzz","base_version":0,"ops":[{"op":"put","kind":"node","id":"a","body":  [1]}]}')


def approve_request():
    pid = sha(b"x")
    sig = base64.b64encode(bytes(range(64))).decode()
    url = base64.urlsafe_b64encode(bytes(range(64))).decode().rstrip("=")
    write("approve_request", "approve-two", b"\x00" + json.dumps({"proposal_id": pid, "signatures": [{"keyid": "k1", "sig": sig}, {"keyid": "k2", "sig": url}]}).encode())
    write("approve_request", "approve-empty", b"\x00" + json.dumps({"proposal_id": pid, "signatures": []}).encode())
    write("approve_request", "approve-bad-id", b"\x00" + json.dumps({"proposal_id": pid.upper(), "signatures": [{"keyid": "k1", "sig": sig}]}).encode())
    write("approve_request", "approve-extra-field", b"\x00" + json.dumps({"proposal_id": pid, "signatures": [], "x": 1}).encode())
    write("approve_request", "commit", b"\xa0" + json.dumps({"proposal_id": pid}).encode())
    payload = base64.b64encode(b'{"registry_id":"fuzz","base_version":0,"ops":[{"op":"put","kind":"node","id":"a","body":{}}]}').decode()
    ptype = "application/vnd.svc-registry.proposal.v1+json"
    write("approve_request", "submit-two", b"\x80" + json.dumps({"payloadType": ptype, "payload": payload, "signatures": [{"keyid": "k1", "sig": sig}, {"keyid": "k2", "sig": url}]}).encode())
    write("approve_request", "submit-wrong-type", b"\x80" + json.dumps({"payloadType": "application/json", "payload": payload, "signatures": [{"keyid": "k1", "sig": sig}]}).encode())
    write("approve_request", "submit-extra-field", b"\x80" + json.dumps({"payloadType": ptype, "payload": payload, "signatures": [], "x": 1}).encode())
    write("approve_request", "get-proposal", b"\xf0" + pid.encode())


def http_head():
    reqs = [
        b"GET /registry/head HTTP/1.1\r\nHost: x\r\nX-Corr-Id: abc-123\r\n\r\n",
        b"POST /propose HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n",
        b"GET /a?x=1 HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
        b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        b"GET http://example.com/abs HTTP/1.0\r\n\r\n",
        b"\r\n\r\nGET /after-blank-lines HTTP/1.1\r\n\r\n",
        b"POST /big HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(20)) + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-tls-hello",
    ]
    for i, r in enumerate(reqs):
        write("http_head", "req-%02d" % i, b"\x04" + r)
    write("http_head", "byte-at-a-time", b"\x00" + reqs[0])
    # Regression: a partial head followed by the client's end of stream was held to the deadline.
    write("http_head", "regression-partial-then-eof", b"\x04GET /registry/head HTT")
    write("http_head", "regression-partial-body-then-eof", b"\x04POST /p HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")


def config():
    with open(os.path.join(REPO, "configs", "dev.toml"), "rb") as f:
        write("config", "dev-toml", b"\x00" + f.read())
    minimal = b'registry_id = "r"\ndata_dir = "/tmp/d"\n[signers]\nthreshold = 1\n[[signers.keys]]\nkeyid = "a"\npublic_key = "df9f1e972269e803b50f87d0c44460736797685552afe23f09d7935396419467"\n'
    write("config", "minimal", b"\x00" + minimal)
    write("config", "minimal-env-flags", b"\x0f" + minimal + b'uds_path = "/tmp/s.sock"\n')
    write("config", "tables", b"\x00" + minimal + b'[storage]\nsegment_bytes = 65536\nmax = 1\n[http]\nmax_header_bytes = 1024\n[maintenance]\nread_only = true\nreason = "r"\n')


if __name__ == "__main__":
    log_recovery()
    checkpoint()
    commit_record()
    proposal_seeds()
    approve_request()
    http_head()
    config()
    total = sum(len(fs) for _, _, fs in os.walk(CORPUS))
    print("wrote %d seed files under %s" % (total, CORPUS))
