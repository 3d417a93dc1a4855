#!/usr/bin/env python3
"""Produce tests/vectors/signers.json with an implementation independent of the Rust code.

Follows docs/FORMATS.md literally, with Python's hashlib and `cryptography` (OpenSSL's
Ed25519): canonical signer-set bytes SS and signers_digest for a 2-of-3 set (with and without
validity windows), the genesis v2 hash, and a set_signers proposal rotating 2-of-3 to 3-of-4
(one key removed, two added) with its proposal_id, PAE, signatures by old and new keys, the
signature list S (every signature that counted for either quorum, sorted by keyid) and the
commit hash of version 1.

Run:  python3 tests/vectors/signers_vectors.py     (writes tests/vectors/signers.json)
The Rust test tests/signer_vectors.rs checks that svc-registry reproduces every byte.
"""
import base64, datetime, hashlib, json, os
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

PAYLOAD_TYPE = "application/vnd.svc-registry.proposal.v1+json"
REGISTRY_ID = "dev-registry"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "signers.json")

# keyid -> seed byte. "Bob" is capitalised on purpose: byte order puts it before "alice".
SEEDS = {"alice": 0xA1, "Bob": 0xB0, "carol": 0xC1, "dave": 0xD1, "erin": 0xE1}
KEYS = {k: Ed25519PrivateKey.from_private_bytes(bytes([b]) * 32) for k, b in SEEDS.items()}


def pub_hex(keyid):
    return KEYS[keyid].public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def canon_time(text):
    """RFC 3339 (any offset) -> UTC, 'Z', whole seconds; None -> '-'."""
    if text is None:
        return "-"
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert t.microsecond == 0
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ss(threshold, keys):
    """docs/FORMATS.md canonical signer-set bytes, keys sorted by keyid in byte order."""
    lines = ["svc-registry/signers/v1", f"threshold {threshold}"]
    for k in sorted(keys, key=lambda k: k["keyid"].encode()):
        lines.append(" ".join(["key", k["keyid"], k["alg"], k["public_key"],
                               canon_time(k.get("not_before")), canon_time(k.get("not_after"))]))
    return ("".join(line + "\n" for line in lines)).encode()


def json_form(threshold, keys):
    """The genesis record / GET /registry/signers form: keys sorted by keyid, absent times null."""
    out = []
    for k in sorted(keys, key=lambda k: k["keyid"].encode()):
        nb, na = k.get("not_before"), k.get("not_after")
        out.append({"keyid": k["keyid"], "alg": k["alg"], "public_key": k["public_key"],
                    "not_before": None if nb is None else canon_time(nb),
                    "not_after": None if na is None else canon_time(na)})
    return {"threshold": threshold, "keys": out}


def key(keyid, **times):
    return dict({"keyid": keyid, "alg": "ed25519", "public_key": pub_hex(keyid)}, **times)


def set_vector(name, threshold, keys):
    b = ss(threshold, keys)
    return {"name": name, "input": {"threshold": threshold, "keys": keys},
            "json_form": json_form(threshold, keys),
            "ss": b.decode(), "signers_digest": hashlib.sha256(b).hexdigest()}


def pae(payload):
    t = PAYLOAD_TYPE.encode()
    return b"DSSEv1 " + str(len(t)).encode() + b" " + t + b" " + str(len(payload)).encode() + b" " + payload


# The 2-of-3 set, keys given out of keyid order.
old_keys = [key("carol"), key("alice"), key("Bob")]
plain = set_vector("2-of-3", 2, old_keys)
windowed = set_vector("2-of-3 with validity windows", 2, [
    key("carol", not_after="2027-06-30T12:00:00Z"),
    # An offset is accepted on input and normalised to UTC in SS and the JSON form.
    key("alice", not_before="2026-01-01T01:00:00+01:00"),
    key("Bob", not_before="2025-12-31T23:59:59Z", not_after="2030-01-01T00:00:00Z"),
])

genesis = hashlib.sha256(b"svc-registry/genesis/v2\n" + REGISTRY_ID.encode() + b"\n"
                         + plain["signers_digest"].encode() + b"\n").hexdigest()

# set_signers: 2-of-3 -> 3-of-4, carol removed, dave and erin added (erin from a future date).
new_keys = [key("dave"), key("alice"), key("erin", not_before="2026-12-01T00:00:00Z"), key("Bob")]
op = {"op": "set_signers", "threshold": 3, "keys": new_keys}
payload = json.dumps({"registry_id": REGISTRY_ID, "base_version": 0, "ops": [op],
                      "note": "rotate: retire carol, add dave and erin"},
                     separators=(",", ":")).encode()
new_set = set_vector("3-of-4 after rotation", 3, new_keys)
proposal_id = hashlib.sha256(payload).hexdigest()
msg = pae(payload)

# Approvals: alice and Bob (in both sets), carol (old set only), dave (new set only). erin does
# not sign. Old quorum: alice, Bob, carol = 3 >= 2. New quorum: alice, Bob, dave = 3 >= 3.
signers = ["alice", "Bob", "carol", "dave"]
approvals = []
for keyid in signers:
    sig = KEYS[keyid].sign(msg)
    KEYS[keyid].public_key().verify(sig, msg)
    approvals.append({"keyid": keyid, "public_key": pub_hex(keyid),
                      "sig": base64.b64encode(sig).decode()})
old_ids = {k["keyid"] for k in old_keys}
new_ids = {k["keyid"] for k in new_keys}
counted_old = [a for a in approvals if a["keyid"] in old_ids]
counted_new = [a for a in approvals if a["keyid"] in new_ids]
assert len(counted_old) >= 2 and len(counted_new) >= 3
s_list = sorted({(a["keyid"], a["sig"]) for a in counted_old + counted_new},
                key=lambda x: x[0].encode())
s = "".join(f"{k} {sig}\n" for k, sig in s_list)
commit = hashlib.sha256(f"svc-registry/commit/v1\n{REGISTRY_ID}\n1\n{genesis}\n{proposal_id}\n{s}"
                        .encode()).hexdigest()

out = {
    "produced_by": "python3 tests/vectors/signers_vectors.py (pyca/cryptography Ed25519 + hashlib), independent of the Rust code",
    "registry_id": REGISTRY_ID,
    "payload_type": PAYLOAD_TYPE,
    "keys": [{"keyid": k, "seed_hex": (bytes([b]) * 32).hex(), "public_key": pub_hex(k)}
             for k, b in SEEDS.items()],
    "sets": [plain, windowed],
    "genesis_v2": {"signers": plain["name"], "hash": genesis},
    "set_signers": {
        "base_version": 0,
        "payload_b64": base64.b64encode(payload).decode(),
        "pae_b64": base64.b64encode(msg).decode(),
        "proposal_id": proposal_id,
        "new_set": new_set,
        "approvals": approvals,
        "counted_in_force": len(counted_old),
        "counted_new": len(counted_new),
        "signatures": [{"keyid": k, "sig": sig} for k, sig in s_list],
        "version": 1,
        "prev_hash": genesis,
        "hash": commit,
    },
}
with open(OUT, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
