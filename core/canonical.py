"""The canonical form of a JSON value (RFC 8785, JCS) and the digest that binds a grant to one call.

Any language can compute it: keys sorted by UTF-16 code units, no whitespace, strings as UTF-8, and
numbers as IEEE doubles printed the ECMAScript way (1.0 is 1, 1e20 is 100000000000000000000).
Because every JSON number is a double here, an integer is taken as the double it denotes; one that no
double holds exactly (2**53 + 1) has no canonical form, so it cannot be bound: send it as a string.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

MAX_SAFE_INTEGER = 2**53 - 1


class NotCanonical(ValueError):
    """A value RFC 8785 cannot write exactly (an integer beyond what a double holds)."""


def canonical_json(value: Any) -> bytes:
    """`value` in RFC 8785 canonical JSON (UTF-8); NotCanonical if a number cannot be written exactly."""
    try:
        return rfc8785.dumps(_as_doubles(value))
    except rfc8785.CanonicalizationError as exc:
        raise NotCanonical(str(exc)) from None


def call_digest(*, agent: str, tool: str, arguments: Any) -> str:
    """SHA-256 (hex) of the canonical {"agent", "tool", "arguments"}: what a grant is bound to."""
    return hashlib.sha256(canonical_json({"agent": agent, "tool": tool, "arguments": arguments})).hexdigest()


def _as_doubles(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        # PostgreSQL's jsonb reads 1e20 back as the integer 100000000000000000000: the same double.
        try:
            as_double = float(value)
        except OverflowError:
            as_double = None
        if as_double is None or int(as_double) != value:
            raise NotCanonical(f"the integer {value} is not exactly a JSON number (an IEEE double)")
        return as_double
    if isinstance(value, dict):
        return {key: _as_doubles(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_doubles(item) for item in value]
    return value
