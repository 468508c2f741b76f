"""The hash chain: how one audit row's hash is computed from the row and its predecessor.

Each row's hash is HMAC-SHA256, keyed with AUDIT_CHAIN_KEY (which is not in the
database), over the previous hash and the row's canonical JSON. Someone who can
INSERT or rewrite rows but does not hold the key cannot make a row that verifies.
Rows written before the chain was keyed (`key_id` empty) used plain SHA-256; they
are accepted only before the first keyed row.

The canonical JSON must read back byte-identical from every database:
PostgreSQL's jsonb gives 1e16 back as the integer 10000000000000000 and -0.0
as 0.0. So values are stored in the form jsonb returns (`canonical_value`):
an integral float becomes the integer it equals exactly, and what the input
boundary would not let in is repaired first.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder

from core.inbound import sanitise

GENESIS_HASH = "0" * 64


def canonical_value(value: Any) -> Any:
    """`value` as a JSON value that reads back identically from SQLite and PostgreSQL."""
    if value is None:
        return None
    plain = json.loads(json.dumps(value, cls=DjangoJSONEncoder))
    return _stable_numbers(sanitise(plain).value)


def _stable_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        # Exact: int(1e300) is the integer the float holds, which numeric stores digit for digit.
        return int(value)
    if isinstance(value, dict):
        return {k: _stable_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stable_numbers(v) for v in value]
    return value


def canonical_row(
    *,
    seq: int,
    created_at: datetime,
    actor_type: str,
    actor_id: int | None,
    actor_label: str,
    event: str,
    target_type: str,
    target_id: str,
    agent_id: int | None,
    before: Any,
    after: Any,
    request_id: str,
    prev_hash: str,
    key_id: str = "",
) -> bytes:
    row = {
        "seq": seq,
        "created_at": created_at.isoformat(),
        "actor_type": actor_type,
        "actor_id": actor_id,
        "actor_label": actor_label,
        "event": event,
        "target_type": target_type,
        "target_id": target_id,
        "agent_id": agent_id,
        "before": before,
        "after": after,
        "request_id": request_id,
        "prev_hash": prev_hash,
    }
    if key_id:
        # Legacy (unkeyed) rows were hashed without it; keyed rows bind their key.
        row["key_id"] = key_id
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, canonical: bytes, key: bytes | None = None) -> str:
    if key is None:
        return hashlib.sha256(prev_hash.encode() + canonical).hexdigest()
    return hmac.new(key, prev_hash.encode() + canonical, hashlib.sha256).hexdigest()


def key_id_of(key: bytes) -> str:
    """A short public name for a key, stored with each row so old keys still verify after rotation."""
    return hmac.new(key, b"countersign audit key id", hashlib.sha256).hexdigest()[:16]


def signing_key() -> tuple[str, bytes]:
    """The (key id, key) new rows are written with."""
    raw = settings.AUDIT_CHAIN_KEY
    if not raw:
        raise ImproperlyConfigured("AUDIT_CHAIN_KEY is not set")
    key = raw.encode()
    return key_id_of(key), key


def verifying_keys() -> dict[str, bytes]:
    """Every key rows may be signed with: the current one and AUDIT_CHAIN_OLD_KEYS."""
    keys = [k.encode() for k in [settings.AUDIT_CHAIN_KEY, *settings.AUDIT_CHAIN_OLD_KEYS] if k]
    return {key_id_of(k): k for k in keys}


def checkpoint_mac(seq: int, digest: str, created_at: datetime, key: bytes | None = None) -> str:
    """The seal of a checkpoint row: an HMAC of the chain key over what it names."""
    key = key if key is not None else signing_key()[1]
    return hmac.new(key, f"{seq}:{digest}:{created_at.isoformat()}".encode(), hashlib.sha256).hexdigest()
