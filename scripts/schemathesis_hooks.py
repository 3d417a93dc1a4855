"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

What they are for: the parts of a valid svc-registry request that a schema cannot generate.
Invariant: a hook only ever completes a POSITIVE case (one whose body schemathesis generated as
schema-valid); negative cases go out exactly as generated, so negative_data_rejection still sees
every malformed body. Schemathesis re-validates a case after `before_call`, so a rewritten body is
classified by what is actually sent.

- POST /propose: `registry_id` must equal the server's (deployment config, docs/FORMATS.md) and ops may
  name each (kind, id) once; positive bodies get the server's id, their duplicate targets dropped
  and `base_version` set to the current HEAD, so the stateful phase's proposals can commit.
- POST /approve: a signature is ed25519 over the DSSE PAE of the proposal bytes (docs/FORMATS.md) by a
  configured key. For a proposal_id that a POST /propose answered in this run, the hook fetches
  GET /proposals/{id}, signs the payload with the first `threshold` dev keys
  (configs/dev-keys/, DEV ONLY) and puts those signatures in the body. Unknown ids keep their
  generated (non-verifying) signatures: those must get 403/404.
- POST /submit: a DSSE envelope. A positive body's payload is completed into a proposal of this
  registry on the current HEAD (decoded and completed like a /propose body when it is a JSON
  object, else a one-put proposal named after it) and signed by the first `threshold` dev keys,
  so the one-request path commits; negative bodies go out as generated (400/403/413).
- POST /admin/backup (metrics listener): `to` is an absolute path that the server creates as
  root; positive and negative bodies alike are confined under ST_BACKUP_ROOT (a temp directory
  the runner removes), so fuzzing never writes elsewhere on this host.

Environment (set by scripts/schemathesis.sh): ST_REGISTRY_URL, ST_REGISTRY_ID, ST_KEYS_DIR,
ST_BACKUP_ROOT.
"""

import base64
import json
import os
import threading
import urllib.request

import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from schemathesis.core.parameters import ParameterLocation

PAYLOAD_TYPE = "application/vnd.svc-registry.proposal.v1+json"

# proposal_ids answered 202 by POST /propose in this run (workers share the process).
_known_lock = threading.Lock()
_known: set = set()


def _env(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run through scripts/schemathesis.sh")
    return value


def _load_keys():
    """keyid -> private key, from the dev key files ({"keyid", "secret_key": hex seed})."""
    keys = {}
    directory = _env("ST_KEYS_DIR")
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".key"):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            doc = json.load(f)
        keys[doc["keyid"]] = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(doc["secret_key"]))
    return keys


_KEYS = None


def _keys():
    global _KEYS
    if _KEYS is None:
        _KEYS = _load_keys()
    return _KEYS


def pae(payload: bytes) -> bytes:
    """DSSE pre-authentication encoding (docs/FORMATS.md)."""
    t = PAYLOAD_TYPE.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (loopback only)
        return json.load(r)


def _op(ctx):
    op = ctx.operation
    return (op.method.upper(), op.path) if op is not None else (None, None)


def _positive_body(case):
    meta = case.meta
    return isinstance(case.body, dict) and not (
        meta is not None and meta.is_negative_at(ParameterLocation.BODY)
    )


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    method, path = _op(ctx)
    if (method, path) == ("POST", "/admin/backup"):
        _confine_backup(case)
    if not _positive_body(case):
        return
    if (method, path) == ("POST", "/propose"):
        _complete_proposal(case)
    elif (method, path) == ("POST", "/approve"):
        _sign_approval(case)
    elif (method, path) == ("POST", "/submit"):
        _complete_submit(case)


def _complete_submit(case):
    generated = case.body.get("payload")
    try:
        proposal = json.loads(base64.b64decode(generated + "=" * (-len(generated) % 4), altchars=b"-_"))
    except (ValueError, TypeError):
        proposal = None
    if not isinstance(proposal, dict):
        name = base64.b16encode(str(generated).encode()[:8]).decode().lower() or "empty"
        proposal = {"ops": [{"op": "put", "kind": "node", "id": f"st-{name}", "body": {}}]}
    completed = _completed(proposal)
    payload = json.dumps(completed).encode()
    message = pae(payload)
    keys = _keys()
    threshold = _get_json(_env("ST_REGISTRY_URL") + "/registry/signers")["threshold"]
    signatures = [
        {"keyid": k, "sig": base64.b64encode(keys[k].sign(message)).decode()}
        for k in sorted(keys)[: int(threshold)]
    ]
    case.body = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": signatures,
    }


def _complete_proposal(case):
    case.body = _completed(case.body)


def _completed(body):
    """A proposal body with the server's registry_id, base_version HEAD, ops each target once."""
    head = _get_json(_env("ST_REGISTRY_URL") + "/registry/head")["version"]
    ops, seen = [], set()
    generated = body.get("ops") if isinstance(body.get("ops"), list) else []
    signer_ops = [op for op in generated if isinstance(op, dict) and op.get("op") == "set_signers"]
    if signer_ops:
        # A set_signers must be the only op, with distinct non-empty keyids, valid (not weak)
        # public keys and 1 <= threshold <= N: rules JSON Schema cannot state. Complete it the
        # way a signer would write it: the dev keys, the generated threshold clamped into range.
        keys = _keys()
        wanted = signer_ops[0].get("threshold")
        threshold = min(max(wanted if isinstance(wanted, int) else 1, 1), len(keys))
        generated = [{
            "op": "set_signers",
            "threshold": threshold,
            "keys": [
                {
                    "keyid": keyid,
                    "alg": "ed25519",
                    "public_key": key.public_key().public_bytes_raw().hex(),
                }
                for keyid, key in sorted(keys.items())
            ],
        }]
    for op in generated:
        target = (op.get("kind"), op.get("id")) if isinstance(op, dict) else None
        if target in seen:
            continue
        seen.add(target)
        ops.append(op)
    return {**body, "registry_id": _env("ST_REGISTRY_ID"), "base_version": head, "ops": ops}


def _sign_approval(case):
    pid = case.body.get("proposal_id")
    with _known_lock:
        known = pid in _known
    if not known:
        return
    try:
        view = _get_json(f"{_env('ST_REGISTRY_URL')}/proposals/{pid}")
    except OSError:
        return  # 404/410/…: leave the generated signatures, the server must refuse them
    if view.get("state") != "pending":
        return
    message = pae(base64.b64decode(view["payload"]))
    keys = _keys()
    chosen = sorted(keys)[: int(view["threshold"])]
    signatures = [
        {"keyid": k, "sig": base64.b64encode(keys[k].sign(message)).decode()} for k in chosen
    ]
    case.body = {**case.body, "signatures": signatures}


def _confine_backup(case):
    if not isinstance(case.body, dict) or not isinstance(case.body.get("to"), str):
        return
    to = case.body["to"]
    # Keep what the server judges (absolute or not, `..` components, the name) but root it in
    # the sandbox: "/a/b" -> ROOT/a/b; a relative path stays relative (400 either way).
    if to.startswith("/"):
        case.body = {**case.body, "to": _env("ST_BACKUP_ROOT").rstrip("/") + to}


@schemathesis.hook
def after_call(ctx, case, response):
    method, path = _op(ctx)
    if (method, path) == ("POST", "/propose") and response.status_code == 202:
        try:
            pid = json.loads(response.content)["proposal_id"]
        except (ValueError, KeyError, TypeError):
            return
        with _known_lock:
            _known.add(pid)
