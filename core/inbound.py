"""The input boundary: every value from outside crosses here before it is stored, rendered, hashed or audited.

"Outside" is API bodies, form fields, query strings, websocket frames, and what
model providers and tools return. Two ways through:

- `refuse_*` (requests): a value outside the limits is refused with a
  field-level message and nothing is written (the caller answers 4xx);
- `sanitise` (model and tool output): the run cannot send it back, so the value
  is repaired and the repair is reported, for the trace, and the run goes on.

Both scrub known secret values (`core.secrets`). The limits, documented in
docs/security.md:
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from core.secrets import scrub_text

# Nesting of objects and arrays, counted from the top value (a flat object is depth 1).
MAX_DEPTH = 32
# Integers must fit a signed 64-bit column; beyond that no column, index or tool can hold them.
MAX_INT = 2**63 - 1
# One text value (a 200 KB ticket fits), one request body, one query string.
MAX_TEXT_CHARS = 500_000
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_QUERY_CHARS = 8_192
# Nodes (values, keys included) in one JSON document.
MAX_NODES = 50_000

# NUL, and UTF-16 surrogates that Python strings can carry but UTF-8 cannot encode.
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


@dataclass
class Problem:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class InputRefused(ValueError):
    """A value from outside broke a limit; `problems` say where and why."""

    def __init__(self, problems: list[Problem], *, code: str = "invalid_request") -> None:
        self.problems = problems
        self.code = code
        super().__init__("; ".join(f"{p.field or '(value)'}: {p.message}" for p in problems))


@dataclass
class _Walk:
    problems: list[Problem] = field(default_factory=list)
    nodes: int = 0

    def add(self, path: str, message: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(Problem(path, message))


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def text_problem(value: str) -> str | None:
    """Why `value` may not cross the boundary, or None."""
    if len(value) > MAX_TEXT_CHARS:
        return f"text longer than {MAX_TEXT_CHARS} characters"
    bad = _BAD_CHARS.search(value)
    if bad is None:
        return None
    return "text contains a NUL character" if bad.group() == "\x00" else "text contains an unpaired UTF-16 surrogate"


def number_problem(value: int | float) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -MAX_INT <= value <= MAX_INT else f"integer outside ±{MAX_INT}"
    if not math.isfinite(value):
        return "number is not finite (NaN and Infinity are not JSON numbers)"
    return None


def _check(value: Any, path: str, depth: int, walk: _Walk) -> None:
    walk.nodes += 1
    if walk.nodes > MAX_NODES:
        if walk.nodes == MAX_NODES + 1:
            walk.add(path, f"more than {MAX_NODES} values")
        return
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            walk.add(path, problem)
    elif isinstance(value, int | float):
        problem = number_problem(value)
        if problem:
            walk.add(path, problem)
    elif isinstance(value, _Unparsable):
        walk.add(path, value.reason)
    elif isinstance(value, dict | list | tuple):
        if depth >= MAX_DEPTH:
            walk.add(path, f"nested deeper than {MAX_DEPTH} levels")
            return
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                problem = text_problem(key)
                if problem:
                    walk.add(path, f"key: {problem}")
            _check(item, _join(path, key), depth + 1, walk)
    elif value is not None:
        walk.add(path, f"{type(value).__name__} is not a JSON value")


def refuse_invalid(value: Any, *, path: str = "") -> Any:
    """`value` with secrets scrubbed, or InputRefused naming every field past a limit."""
    walk = _Walk()
    _check(value, path, 0, walk)
    if walk.problems:
        raise InputRefused(walk.problems)
    return _scrub(value)


@dataclass(frozen=True)
class _Unparsable:
    """A token the parser met that no JSON value may be; reported with its path by the walk."""

    reason: str


def _reject_constant(name: str) -> Any:
    return _Unparsable(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int | _Unparsable:
    # int() of a million digits alone takes seconds: refuse by length first.
    if len(text.lstrip("-")) > 19:
        return _Unparsable(f"integer outside ±{MAX_INT}")
    return int(text)


def parse_json(raw: str | bytes, *, path: str = "") -> Any:
    """Parse JSON text from outside strictly, then apply `refuse_invalid`."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_BODY_BYTES:
            raise InputRefused([Problem(path, f"larger than {MAX_BODY_BYTES} bytes")])
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputRefused([Problem(path, "not valid UTF-8")]) from None
    try:
        value = json.loads(raw, parse_constant=_reject_constant, parse_int=_bounded_int)
    except RecursionError:
        raise InputRefused([Problem(path, f"nested deeper than {MAX_DEPTH} levels")]) from None
    except json.JSONDecodeError as exc:
        raise InputRefused([Problem(path, f"not valid JSON: {exc.msg}")], code="malformed_json") from None
    return refuse_invalid(value, path=path)


def refuse_text(value: str, *, path: str) -> str:
    """One text field (a form field or a query parameter): refused past the limits, secrets scrubbed."""
    problem = text_problem(value)
    if problem:
        raise InputRefused([Problem(path, problem)])
    return scrub_text(value)


@dataclass
class Sanitised:
    value: Any
    repairs: list[str]


def sanitise(value: Any, *, path: str = "") -> Sanitised:
    """Repair what a model or tool returned so it can be stored; say what was repaired."""
    repairs: list[str] = []
    cleaned = _repair(value, path, 0, repairs)
    return Sanitised(_scrub(cleaned, repairs=repairs, path=path), repairs)


def _repair(value: Any, path: str, depth: int, repairs: list[str]) -> Any:
    if isinstance(value, str):
        if len(value) > MAX_TEXT_CHARS:
            repairs.append(f"{path or '(value)'}: text cut to {MAX_TEXT_CHARS} characters")
            value = value[:MAX_TEXT_CHARS]
        if _BAD_CHARS.search(value):
            repairs.append(f"{path or '(value)'}: NUL or unpaired surrogate replaced with U+FFFD")
            value = _BAD_CHARS.sub(REPLACEMENT, value)
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        problem = number_problem(value)
        if problem:
            repairs.append(f"{path or '(value)'}: {problem}; kept as text")
            return str(value) if isinstance(value, int) else None
        return value
    if isinstance(value, dict | list | tuple):
        if depth >= MAX_DEPTH:
            repairs.append(f"{path or '(value)'}: nested deeper than {MAX_DEPTH} levels; dropped")
            return None
        if isinstance(value, dict):
            return {
                _repair(str(k), path, depth, repairs): _repair(v, _join(path, str(k)), depth + 1, repairs)
                for k, v in value.items()
            }
        return [_repair(v, _join(path, i), depth + 1, repairs) for i, v in enumerate(value)]
    repairs.append(f"{path or '(value)'}: {type(value).__name__} kept as text")
    return _repair(str(value), path, depth, repairs)


def _scrub(value: Any, *, repairs: list[str] | None = None, path: str = "") -> Any:
    if isinstance(value, str):
        scrubbed = scrub_text(value)
        if repairs is not None and scrubbed != value:
            repairs.append(f"{path or '(value)'}: a secret value was redacted")
        return scrubbed
    if isinstance(value, dict):
        return {scrub_text(k): _scrub(v, repairs=repairs, path=_join(path, k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, repairs=repairs, path=_join(path, i)) for i, v in enumerate(value)]
    return value
