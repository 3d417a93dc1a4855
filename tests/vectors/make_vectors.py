#!/usr/bin/env python3
"""Produce tests/vectors/dsse_chain.json with an implementation independent of the Rust code.

Uses Python's `cryptography` (OpenSSL's Ed25519) and hashlib, following docs/FORMATS.md literally.
Run:  python3 tests/vectors/make_vectors.py > tests/vectors/dsse_chain.json
The Rust test tests/vectors.rs checks that svc-registry reproduces every byte.
"""
import base64, hashlib, json
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

PAYLOAD_TYPE = "application/vnd.svc-registry.proposal.v1+json"
REGISTRY_ID = "vector-registry"

def pae(payload: bytes) -> bytes:
    t = PAYLOAD_TYPE.encode()
    return b"DSSEv1 " + str(len(t)).encode() + b" " + t + b" " + str(len(payload)).encode() + b" " + payload

def raw_pub(sk):
    return sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

keys = {}
for keyid, seed_byte in [("k1", 0x01), ("k2", 0x02)]:
    seed = bytes([seed_byte]) * 32
    keys[keyid] = (seed, Ed25519PrivateKey.from_private_bytes(seed))

genesis = hashlib.sha256(b"svc-registry/genesis/v1\n" + REGISTRY_ID.encode() + b"\n").hexdigest()
proposals = [
    b'{"registry_id":"vector-registry","base_version":0,"ops":[{"op":"put","kind":"node","id":"node-1","body":{"addr":"10.0.0.1:9000"}}]}',
    b'{"registry_id": "vector-registry", "base_version": 1, "ops": [{"op": "put", "kind": "service", "id": "svc.api", "body": {"port": 443, "name": "\xc3\xa9t\xc3\xa9"}}], "note": "unicode body"}',
    b'{"registry_id":"vector-registry","base_version":2,"ops":[{"op":"delete","kind":"node","id":"node-1"}]}',
]
prev = genesis
versions = []
for i, payload in enumerate(proposals, start=1):
    proposal_id = hashlib.sha256(payload).hexdigest()
    msg = pae(payload)
    sigs = []
    for keyid in sorted(keys):
        sig = keys[keyid][1].sign(msg)
        sigs.append({"keyid": keyid, "sig": base64.b64encode(sig).decode()})
    s = "".join(f"{x['keyid']} {x['sig']}\n" for x in sigs)
    pre = f"svc-registry/commit/v1\n{REGISTRY_ID}\n{i}\n{prev}\n{proposal_id}\n{s}".encode()
    h = hashlib.sha256(pre).hexdigest()
    versions.append({
        "version": i,
        "payload_b64": base64.b64encode(payload).decode(),
        "pae_b64": base64.b64encode(msg).decode(),
        "proposal_id": proposal_id,
        "signatures": sigs,
        "prev_hash": prev,
        "hash": h,
    })
    prev = h

print(json.dumps({
    "produced_by": "python3 tests/vectors/make_vectors.py (pyca/cryptography Ed25519 + hashlib), independent of the Rust code",
    "registry_id": REGISTRY_ID,
    "payload_type": PAYLOAD_TYPE,
    "keys": [{"keyid": k, "seed_hex": v[0].hex(), "public_key": raw_pub(v[1]).hex()} for k, v in sorted(keys.items())],
    "genesis_hash": genesis,
    "versions": versions,
}, indent=2))
