"""The hash chain: how one audit row's hash is computed from the row and its predecessor."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

GENESIS_HASH = "0" * 64


def to_json_value(value: Any) -> Any:
    """Normalise a value to what a JSON column gives back (Decimal, datetime, UUID -> str)."""
    if value is None:
        return None
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


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
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical).hexdigest()
