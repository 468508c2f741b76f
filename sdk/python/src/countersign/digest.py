"""The digest a grant binds a call with: SHA-256 of the RFC 8785 canonical {"agent", "tool", "arguments"}.

The same function as Countersign's own (core.canonical): numbers are IEEE doubles, so 90 and 90.0 are one
call, and an integer no double holds exactly has no digest.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

MAX_SAFE_INTEGER = 2**53 - 1


def call_digest(*, agent: str, tool: str, arguments: Any) -> str:
    body = {"agent": agent, "tool": tool, "arguments": _as_doubles(arguments)}
    return hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def _as_doubles(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        as_double = float(value)
        if int(as_double) != value:
            raise ValueError(f"the integer {value} is not exactly a JSON number (an IEEE double)")
        return as_double
    if isinstance(value, dict):
        return {key: _as_doubles(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_doubles(item) for item in value]
    return value
