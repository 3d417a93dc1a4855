#!/usr/bin/env python3
"""Produce tests/vectors/pq.json with implementations independent of the Rust code.

Post-quantum approvals (docs/FORMATS.md, "Key algorithms"; issue 18): ML-DSA-65 with
`dilithium-py` (pure-Python FIPS 204, final: pure mode M' = 0x00 || len(ctx) || ctx || M, empty
context), ed25519 with pyca/cryptography (OpenSSL), hashes with hashlib. Keys come from fixed
seeds (ed25519 seed; FIPS 204 key-generation seed xi, `ML_DSA_65.key_derive`), so the file is
reproducible byte for byte:

- a 2-of-3 signer set with one key of each algorithm (`ed25519`, `ml-dsa-65`,
  `ed25519+ml-dsa-65`), its canonical bytes SS, signers_digest and genesis v2 hash;
- a proposal on it, its PAE and an approval by each key: ML-DSA signatures in the deterministic
  variant (rnd = 0^32) and one in the hedged variant with a fixed rnd (FIPS 204 Algorithm 2
  line 5; `_sign_internal` is dilithium-py's Algorithm 7, called with that rnd);
- the commit hash of version 1 when the ml-dsa-65 and hybrid keys approve;
- tampered approvals with the answer the server must give (400 or 403, never counted), and
  signer sets that must be refused.

Run:  python3 tests/vectors/pq_vectors.py [OUT]     (default: tests/vectors/pq.json)
tests/pq_vectors.rs reads the committed file; it re-runs this script and compares when
dilithium-py is installed (`pip install dilithium-py cryptography`), else says SKIPPED.
"""
import base64, hashlib, json, os, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization
from dilithium_py.ml_dsa import ML_DSA_65

PAYLOAD_TYPE = "application/vnd.svc-registry.proposal.v1+json"
REGISTRY_ID = "test-registry"
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "pq.json")
HEDGE_RND = bytes(range(32))


def b64(b):
    return base64.b64encode(b).decode()


def ed_key(seed_byte):
    sk = Ed25519PrivateKey.from_private_bytes(bytes([seed_byte]) * 32)
    pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sk, pk


def ml_key(seed_byte):
    pk, sk = ML_DSA_65.key_derive(bytes([seed_byte]) * 32)
    assert len(pk) == 1952
    return sk, pk


def ml_sign(sk, msg, rnd=None, ctx=b""):
    """FIPS 204 ML-DSA.Sign, pure mode: deterministic (rnd None) or hedged with a fixed rnd."""
    if rnd is None:
        sig = ML_DSA_65.sign(sk, msg, ctx=ctx, deterministic=True)
    else:
        sig = ML_DSA_65._sign_internal(sk, bytes([0, len(ctx)]) + ctx + msg, rnd)
    assert len(sig) == 3309
    return sig


def pae(payload):
    t = PAYLOAD_TYPE.encode()
    return (b"DSSEv1 " + str(len(t)).encode() + b" " + t + b" " + str(len(payload)).encode()
            + b" " + payload)


# keyid -> (alg, ed25519 seed byte, ML-DSA xi byte)
SPEC = {"ed": ("ed25519", 0xE1, None), "pq": ("ml-dsa-65", None, 0x51),
        "hy": ("ed25519+ml-dsa-65", 0xA7, 0x52)}
KEYS = {}
for keyid, (alg, ed_seed, ml_seed) in SPEC.items():
    ed = ed_key(ed_seed) if ed_seed is not None else None
    ml = ml_key(ml_seed) if ml_seed is not None else None
    parts = [p[1].hex() for p in (ed, ml) if p is not None]
    seeds = [(bytes([s]) * 32).hex() for s in (ed_seed, ml_seed) if s is not None]
    KEYS[keyid] = {"alg": alg, "ed": ed, "ml": ml, "public_key": ":".join(parts),
                   "seeds_hex": seeds}


def sign(keyid, msg, rnd=None):
    k = KEYS[keyid]
    halves = []
    if k["ed"] is not None:
        halves.append(b64(k["ed"][0].sign(msg)))
    if k["ml"] is not None:
        halves.append(b64(ml_sign(k["ml"][0], msg, rnd)))
    return ":".join(halves)


def key_json(keyid):
    return {"keyid": keyid, "alg": KEYS[keyid]["alg"], "public_key": KEYS[keyid]["public_key"]}


def ss(threshold, keys):
    lines = ["svc-registry/signers/v1", f"threshold {threshold}"]
    for k in sorted(keys, key=lambda k: k["keyid"].encode()):
        lines.append(f"key {k['keyid']} {k['alg']} {k['public_key']} - -")
    return "".join(line + "\n" for line in lines).encode()


keys = [key_json(k) for k in ("ed", "pq", "hy")]
ss_bytes = ss(2, keys)
digest = hashlib.sha256(ss_bytes).hexdigest()
genesis = hashlib.sha256(b"svc-registry/genesis/v2\n" + REGISTRY_ID.encode() + b"\n"
                         + digest.encode() + b"\n").hexdigest()

payload = json.dumps({"registry_id": REGISTRY_ID, "base_version": 0,
                      "ops": [{"op": "put", "kind": "node", "id": "pq-1",
                               "body": {"addr": "10.0.0.1:9000"}}],
                      "note": "post-quantum vector"}, separators=(",", ":")).encode()
proposal_id = hashlib.sha256(payload).hexdigest()
msg = pae(payload)

approvals = {k: sign(k, msg) for k in KEYS}
hedged = sign("pq", msg, HEDGE_RND)
# Independent self-check: every approval verifies with the Python implementations.
for keyid, sig in list(approvals.items()) + [("pq", hedged)]:
    k, halves = KEYS[keyid], sig.split(":")
    if k["ed"] is not None:
        k["ed"][0].public_key().verify(base64.b64decode(halves.pop(0)), msg)
    if k["ml"] is not None:
        assert ML_DSA_65.verify(k["ml"][1], msg, base64.b64decode(halves.pop(0)))

# Version 1 committed with the approvals of pq and hy (2 of 3): S sorted by keyid.
counted = sorted(["pq", "hy"], key=str.encode)
s = "".join(f"{k} {approvals[k]}\n" for k in counted)
commit = hashlib.sha256(f"svc-registry/commit/v1\n{REGISTRY_ID}\n1\n{genesis}\n{proposal_id}\n{s}"
                        .encode()).hexdigest()

# Tampered approvals: (name, keyid, sig, status). 400: not a signature of any algorithm's shape;
# 403: well-formed but does not verify under the keyid's key. None of them may count.
ed_half, ml_half = approvals["hy"].split(":")
ml_sig = base64.b64decode(approvals["pq"])
flipped = bytearray(ml_sig)
flipped[200] ^= 0x01
ml_hy = bytearray(base64.b64decode(ml_half))
ml_hy[3000] ^= 0x80
ed_hy = bytearray(base64.b64decode(ed_half))
ed_hy[5] ^= 0x04
tampered = [
    ("ml-dsa signature truncated by one byte", "pq", b64(ml_sig[:-1]), 400),
    ("ml-dsa signature truncated to half", "pq", b64(ml_sig[:1654]), 400),
    ("ml-dsa signature with one bit flipped", "pq", b64(bytes(flipped)), 403),
    ("ml-dsa signature over the raw payload, not the PAE", "pq",
     b64(ml_sign(KEYS["pq"]["ml"][0], payload)), 403),
    ("ml-dsa signature with a non-empty context", "pq",
     b64(ml_sign(KEYS["pq"]["ml"][0], msg, ctx=b"svc-registry")), 403),
    ("ml-dsa signature of another key (hy's half) under pq", "pq", ml_half, 403),
    ("hybrid with the ml-dsa half missing", "hy", ed_half + ":", 400),
    ("hybrid with the ed25519 half missing", "hy", ":" + ml_half, 400),
    ("hybrid given as its ed25519 half alone", "hy", ed_half, 403),
    ("hybrid given as its ml-dsa half alone", "hy", ml_half, 403),
    ("hybrid with the ml-dsa half invalid", "hy", ed_half + ":" + b64(bytes(ml_hy)), 403),
    ("hybrid with the ed25519 half invalid", "hy", b64(bytes(ed_hy)) + ":" + ml_half, 403),
    ("hybrid with its halves swapped", "hy", ml_half + ":" + ed_half, 400),
    ("hybrid with three halves", "hy", approvals["hy"] + ":" + ed_half, 400),
    ("hybrid signature under the ml-dsa-65 key", "pq", approvals["hy"], 403),
    ("ml-dsa-65 signature under the ed25519 key", "ed", approvals["pq"], 403),
]

# Signer sets that must be refused (400 in a set_signers, a config error at start).
pq_pk, hy_pk = KEYS["pq"]["public_key"], KEYS["hy"]["public_key"]
hy_ed, hy_ml = hy_pk.split(":")
bad_sets = [
    ("ml-dsa-65 key truncated", [dict(key_json("pq"), public_key=pq_pk[:-2])],
     "3904 lower-case hex digits"),
    ("hybrid key with its halves swapped", [dict(key_json("hy"), public_key=hy_ml + ":" + hy_ed)],
     "64 lower-case hex digits"),
    ("hybrid key without its ml-dsa half", [dict(key_json("hy"), public_key=hy_ed)],
     "the ed25519 hex"),
    ("the same ml-dsa-65 key under two keyids",
     [key_json("pq"), dict(key_json("pq"), keyid="pq2")], "same public_key"),
    ("an ml-dsa-65 key that is also a hybrid's half",
     [key_json("hy"), {"keyid": "pq2", "alg": "ml-dsa-65", "public_key": hy_ml}],
     "same public_key"),
    ("an ed25519 key that is also a hybrid's half",
     [key_json("hy"), {"keyid": "ed2", "alg": "ed25519", "public_key": hy_ed}],
     "same public_key"),
]

out = {
    "produced_by": "python3 tests/vectors/pq_vectors.py (dilithium-py ML-DSA-65, pyca/cryptography "
                   "Ed25519, hashlib), independent of the Rust code",
    "registry_id": REGISTRY_ID,
    "payload_type": PAYLOAD_TYPE,
    "keys": [dict(key_json(k), seeds_hex=KEYS[k]["seeds_hex"]) for k in KEYS],
    "set": {"threshold": 2, "keys": keys, "ss": ss_bytes.decode(), "signers_digest": digest},
    "genesis_v2_hash": genesis,
    "proposal": {
        "payload_b64": b64(payload),
        "pae_b64": b64(msg),
        "proposal_id": proposal_id,
        "approvals": [{"keyid": k, "sig": approvals[k], "rnd": "deterministic"} for k in KEYS],
        "hedged": {"keyid": "pq", "rnd_hex": HEDGE_RND.hex(), "sig": hedged},
        "commit": {"approved_by": counted, "signatures": [{"keyid": k, "sig": approvals[k]}
                                                         for k in counted],
                   "version": 1, "prev_hash": genesis, "hash": commit},
    },
    "tampered": [{"name": n, "keyid": k, "sig": sig, "status": st} for n, k, sig, st in tampered],
    "bad_sets": [{"name": n, "set": {"threshold": 1, "keys": ks}, "error": e}
                 for n, ks, e in bad_sets],
}
with open(OUT, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(f"wrote {OUT}")
