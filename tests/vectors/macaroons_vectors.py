#!/usr/bin/env python3
"""Produce tests/vectors/macaroons.json with pymacaroons, independently of the Rust code.

Every token is minted, attenuated, re-encoded or damaged here with pymacaroons (the reference
implementation besides libmacaroons) using fixed secrets and nonces, so the output is the same on
every run. Each token carries the outcome SPEC §10 asks of svc-registry for a set of requests:
"ok <key id>", "401 <reason>" or "403 <reason>" (reasons as in src/auth/mod.rs
`AuthError::reason`). The Rust test tests/macaroon_vectors.rs checks that our code parses,
verifies and refuses each one exactly so.

Run:  pip install pymacaroons
      python3 tests/vectors/macaroons_vectors.py > tests/vectors/macaroons.json
"""
import base64
import json
import sys

from pymacaroons import Macaroon, Verifier, MACAROON_V1, MACAROON_V2
from pymacaroons.serializers.binary_serializer import BinarySerializer
from pymacaroons.utils import generate_derived_key, hmac_digest

REGISTRY = "reg-vectors"
# 2026-01-01T00:00:00Z, 2026-06-01T00:00:00Z
T_NEWYEAR = 1767225600
T_JUNE = 1780272000

KEYS = [
    {"id": "k1", "secret": "11" * 32, "not_after": None},
    {"id": "k2", "secret": "22" * 32, "not_after": "2026-01-01T00:00:00Z"},
]
SECRET = {k["id"]: bytes.fromhex(k["secret"]) for k in KEYS}

# The derivation SPEC §10 relies on, checked against pymacaroons' own helper.
assert generate_derived_key(b"s") == hmac_digest(b"macaroons-key-generator", b"s")


def mint(key_id, nonce, secret=None, location=None, version=MACAROON_V2, identifier=None):
    return Macaroon(
        location=location,
        identifier=identifier or f"v1:{key_id}:{nonce}",
        key=secret if secret is not None else SECRET[key_id],
        version=version,
    )


def b64url(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def check(action, now=T_NEWYEAR, ops=None, registry=REGISTRY, expect="ok k1"):
    return {"action": action, "now": now, "ops": ops, "registry": registry, "expect": expect}


def describe(m):
    return {
        "identifier": m.identifier_bytes.decode(),
        "caveats": [c.caveat_id_bytes.decode() for c in m.caveats],
        "signature": m.signature,
    }


vectors = []


def add(name, token, checks, parsed=None, story=""):
    vectors.append({"name": name, "story": story, "token": token, "parsed": parsed, "checks": checks})


def add_macaroon(name, m, checks, story=""):
    token = m.serialize()
    # Every token handed out here must round-trip through pymacaroons itself.
    assert Macaroon.deserialize(token).signature == m.signature
    add(name, token, checks, describe(m), story)


ALL_ACTIONS = ["propose", "approve", "commit", "admin", "read"]

bare = mint("k1", "00000000000000000000000000000001")
v = Verifier()
assert v.verify(bare, SECRET["k1"])
add_macaroon(
    "bare", bare,
    [check(a, ops=[] if a == "propose" else None) for a in ALL_ACTIONS]
    + [check("read", registry="another-registry")],
    "no caveats: every action, any registry",
)

scoped = mint("k1", "00000000000000000000000000000002")
for c in ["scope = propose,read", f"registry = {REGISTRY}", "expires = 2026-06-01T00:00:00Z"]:
    scoped.add_first_party_caveat(c)
add_macaroon("scoped", scoped, [
    check("propose", ops=[["node", "n-1"]]),
    check("read"),
    check("read", now=T_JUNE - 1),
    check("read", now=T_JUNE, expect="401 expired"),
    check("approve", ops=[["node", "n-1"]], expect="403 scope"),
    check("admin", expect="403 scope"),
    check("read", registry="reg-other", expect="403 registry"),
], "scope, registry and expiry caveats added by the minter")

# A holder attenuates the serialized token without the root key.
attenuated = Macaroon.deserialize(scoped.serialize())
attenuated.add_first_party_caveat("kind = node")
attenuated.add_first_party_caveat("id_prefix=eu-")
add_macaroon("attenuated", attenuated, [
    check("propose", ops=[["node", "eu-1"], ["node", "eu-2"]]),
    check("propose", ops=[["node", "eu-1"], ["service", "eu-svc"]], expect="403 kind"),
    check("propose", ops=[["node", "eu-1"], ["node", "us-1"]], expect="403 id_prefix"),
    check("read"),
    check("approve", ops=[["node", "eu-1"]], expect="403 scope"),
    check("propose", now=T_JUNE, ops=[["node", "eu-1"]], expect="401 expired"),
], "scoped, then narrowed by its holder to eu- nodes")

narrowed_scope = Macaroon.deserialize(bare.serialize())
narrowed_scope.add_first_party_caveat("scope = propose,approve,commit,admin")
narrowed_scope.add_first_party_caveat("scope = approve , read")
add_macaroon("two_scopes", narrowed_scope, [
    check("approve", ops=[["region", "r-1"]]),
    check("read", expect="403 scope"),
    check("propose", ops=[], expect="403 scope"),
], "every scope caveat must allow the action")

kind_only = mint("k1", "00000000000000000000000000000003")
kind_only.add_first_party_caveat("kind = service")
add_macaroon("kind_without_ops", kind_only, [
    check("read"),
    check("admin", expect="403 no_ops"),
    check("commit", ops=[["service", "s"]]),
], "kind/id_prefix caveats fail closed on requests without ops, reads excepted")

located = mint("k1", "00000000000000000000000000000004", location="https://registry.example/")
located.add_first_party_caveat("scope = read")
add_macaroon("with_location", located, [check("read"), check("admin", expect="403 scope")],
             "a header location (not signed) is allowed and ignored")

old = mint("k2", "00000000000000000000000000000005")
add_macaroon("retired_key", old, [
    check("read", now=T_NEWYEAR - 1, expect="ok k2"),
    check("read", now=T_NEWYEAR, expect="401 key_retired"),
], "k2 has not_after = 2026-01-01T00:00:00Z")

raw = BinarySerializer().serialize_raw(scoped)
add("std_base64_padded", base64.standard_b64encode(raw).decode(), [check("read")], describe(scoped),
    "standard alphabet with padding, as libmacaroons' base64 writes it")
add("url_padded", base64.urlsafe_b64encode(raw).decode(), [check("read")], describe(scoped),
    "base64url with padding")

# Damaged tokens.
sig_flipped = bytearray(raw)
sig_flipped[-1] ^= 0x01
add("tampered_signature", b64url(bytes(sig_flipped)),
    [check("read", expect="401 bad_signature")], story="last signature byte flipped")

widened = Macaroon.deserialize(scoped.serialize())
widened.caveats[0].caveat_id = "scope = propose,admin"  # same signature, wider caveat
add("tampered_caveat", widened.serialize(),
    [check("admin", expect="401 bad_signature"), check("read", expect="401 bad_signature")],
    describe(widened), "caveat text widened, signature kept")

dropped = Macaroon.deserialize(attenuated.serialize())
dropped.caveats.pop()
add("dropped_caveat", dropped.serialize(), [check("read", expect="401 bad_signature")],
    describe(dropped), "the holder's last caveat removed")

add("truncated", b64url(raw[:-5]), [check("read", expect="401 malformed")], story="5 bytes cut")
add("trailing_byte", b64url(raw + b"\x00"), [check("read", expect="401 malformed")])
add("not_base64", "!!" + b64url(raw), [check("read", expect="401 malformed")])
add("empty", "", [check("read", expect="401 malformed")])

wrong = mint("k1", "00000000000000000000000000000006", secret=b"\x33" * 32)
add_macaroon("wrong_key", wrong, [check("read", expect="401 bad_signature")],
             "names k1 but signed with another secret")
add_macaroon("unknown_key", mint("k9", "00000000000000000000000000000007", secret=b"\x11" * 32),
             [check("read", expect="401 unknown_key")])
add_macaroon("bad_identifier", mint("k1", "", identifier="k1-without-version"),
             [check("read", expect="401 bad_identifier")])

third = mint("k1", "00000000000000000000000000000008")
third.add_first_party_caveat("scope = read")
third.add_third_party_caveat("https://auth.example/", b"\x44" * 32, "discharge-me", nonce=b"\x55" * 24)
add("third_party", third.serialize(), [check("read", expect="401 malformed")],
    story="third-party caveats are refused")

unknown_caveat = mint("k1", "00000000000000000000000000000009")
unknown_caveat.add_first_party_caveat("colour = blue")
add_macaroon("unknown_caveat", unknown_caveat, [check("read", expect="401 bad_caveat")])

bad_expiry = mint("k1", "0000000000000000000000000000000a")
bad_expiry.add_first_party_caveat("expires = next tuesday")
add_macaroon("malformed_caveat", bad_expiry, [check("read", expect="401 bad_caveat")])

add("v1_format", mint("k1", "0000000000000000000000000000000b", version=MACAROON_V1).serialize(),
    [check("read", expect="401 malformed")], story="libmacaroons V1 text packets are not V2")

too_many = mint("k1", "0000000000000000000000000000000c")
for i in range(33):
    too_many.add_first_party_caveat("scope = read")
add("too_many_caveats", too_many.serialize(), [check("read", expect="401 malformed")],
    story="33 caveats: one past the bound")

huge = mint("k1", "0000000000000000000000000000000d")
huge.add_first_party_caveat("id_prefix = " + "x" * 3100)
add("too_long", huge.serialize(), [check("read", expect="401 malformed")],
    story="over 4096 base64 characters")

json.dump({
    "generator": "tests/vectors/macaroons_vectors.py (pymacaroons)",
    "registry_id": REGISTRY,
    "keys": KEYS,
    "vectors": vectors,
}, sys.stdout, indent=1)
sys.stdout.write("\n")
