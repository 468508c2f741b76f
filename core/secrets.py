"""Known secret values, and the one function that masks them in text.

Every secret Countersign holds or can reach is listed here: SECRET_KEY, the
audit chain key, database, Redis and e-mail passwords, every variable with the
secret prefix and every file under SECRETS_DIR (where provider keys and webhook
secrets are referenced from), and secrets resolved at run time. A value that
contains one of them has it replaced by REDACTED before it is stored, shown,
exported, logged or pushed (`core.inbound` applies this on the way in).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings

REDACTED = "[redacted]"
# Shorter values would mask ordinary words; no real key is this short.
MIN_SECRET_CHARS = 8
# Files under SECRETS_DIR and the environment are re-read this often.
REFRESH_SECONDS = 30.0
_MAX_SECRET_FILE_BYTES = 64 * 1024

_lock = threading.Lock()
_cache: tuple[float, tuple[str, ...]] = (0.0, ())
_resolved: set[str] = set()


def register_secret(value: str) -> None:
    """Add a secret resolved at run time (a provider key, a webhook secret)."""
    value = value.strip()
    if len(value) >= MIN_SECRET_CHARS and value not in _resolved:
        with _lock:
            _resolved.add(value)
            global _cache
            _cache = (0.0, ())


def _url_password(url: str) -> str:
    try:
        return unquote(urlsplit(url).password or "")
    except ValueError:
        return ""


def _configured() -> set[str]:
    found = {
        str(getattr(settings, "SECRET_KEY", "")),
        str(getattr(settings, "AUDIT_CHAIN_KEY", "")),
        str(getattr(settings, "EMAIL_HOST_PASSWORD", "")),
        _url_password(str(getattr(settings, "REDIS_URL", ""))),
        _url_password(str(getattr(settings, "DATABASE_URL", ""))),
    }
    for db in settings.DATABASES.values():
        found.add(str(db.get("PASSWORD") or ""))
    prefix = getattr(settings, "SECRET_ENV_PREFIX", "")
    if prefix:
        found |= {value for name, value in os.environ.items() if name.startswith(prefix)}
    secrets_dir = Path(getattr(settings, "SECRETS_DIR", "") or "/nonexistent")
    if secrets_dir.is_dir():
        for path in secrets_dir.rglob("*"):
            try:
                if path.is_file() and path.stat().st_size <= _MAX_SECRET_FILE_BYTES:
                    found.add(path.read_text(errors="ignore").strip())
            except OSError:
                continue
    return found


def known_secrets() -> tuple[str, ...]:
    """Every known secret value, longest first (so a longer one is masked whole)."""
    global _cache
    now = time.monotonic()
    at, values = _cache
    # `at` is 0.0 only when nothing is cached: an empty result is cached too, or a
    # deployment with no secret long enough to mask would re-read everything per call.
    if at and now - at < REFRESH_SECONDS:
        return values
    with _lock:
        found = {v.strip() for v in _configured() | _resolved if v}
        values = tuple(sorted((v for v in found if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True))
        _cache = (now, values)
    return values


def forget_cached() -> None:
    """Re-read settings, environment and files on the next use (tests change them)."""
    global _cache
    with _lock:
        _cache = (0.0, ())


def scrub_text(text: str) -> str:
    """`text` with every known secret value replaced by REDACTED."""
    for secret in known_secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
