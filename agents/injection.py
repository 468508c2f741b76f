"""A cheap screen for prompt-injection attempts in untrusted text (tickets, tool results).

It is a tripwire, not a defence: a hit raises the call's risk and forces a
person to look; a miss proves nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

PATTERNS = [
    r"\bignore (all |any |the )?(previous|prior|above|earlier) (instructions|prompts?|rules)",
    r"\bdisregard (all |any |the )?(previous|prior|above|earlier|your) (instructions|prompts?|rules)",
    r"\b(reveal|print|show|repeat) (me )?(your|the) (system )?(prompt|instructions)",
    r"\byou are now (a|an|in) ",
    r"\b(new|updated) (system )?instructions\s*:",
    r"<\|?(im_start|im_end|system)\|?>",
    r"\[/?(INST|SYS)\]",
    r"\bdeveloper mode\b",
    r"\bjailbreak\b",
    r"\bact as (an? )?(admin|administrator|root|system)\b",
]
_SCREEN = re.compile("|".join(f"(?:{p})" for p in PATTERNS), re.IGNORECASE)


def strings_in(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)


def suspected_injection(*values: Any) -> str | None:
    """The first suspicious fragment found in any string inside `values`, or None."""
    for value in values:
        for text in strings_in(value):
            match = _SCREEN.search(text)
            if match:
                return match.group(0)
    return None
