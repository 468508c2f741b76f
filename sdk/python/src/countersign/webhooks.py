"""Receiving Countersign's decision webhook: check that a POST is Countersign's, and recent, before acting on it."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from countersign.errors import CountersignError

TOLERANCE_SECONDS = 300


class InvalidSignature(CountersignError):
    """Not signed by Countersign with this secret, altered on the way, or too old (a replay)."""


def verify(
    secret: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """The event, if `body` is what Countersign signed with `secret` less than `tolerance` seconds ago.

    `headers` are the request's (any case). Receivers should also drop an event whose `id` they have
    already handled: delivery is at least once, and an operator may send an event again.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    stamp = lowered.get("countersign-timestamp", "")
    given = lowered.get("countersign-signature", "")
    if not stamp.isdigit() or not given.startswith("v1="):
        raise InvalidSignature("no Countersign signature", code="invalid_signature")
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        raise InvalidSignature("the signature's timestamp is too old or in the future", code="stale_signature")
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given[3:]):
        raise InvalidSignature("the signature does not match the body", code="invalid_signature")
    event: dict[str, Any] = json.loads(body)
    return event
