"""API keys for providers come from the environment or a file, never from the database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings


class SecretUnavailable(Exception):
    pass


def check_secret_ref(ref: str) -> None:
    """Refuse references outside the allow-list, so configuration cannot point at other secrets.

    Without it, anyone who may configure an agent could send, say, DATABASE_URL
    or the SECRET_KEY file to a model server of their choosing.
    """
    if not ref:
        return
    kind, _, where = ref.partition(":")
    prefix = settings.SECRET_ENV_PREFIX
    if kind == "env":
        if not where.startswith(prefix) or not where[len(prefix) :]:
            raise SecretUnavailable(f"secret variables must be named {prefix}<something>")
        return
    if kind == "file":
        base = Path(settings.SECRETS_DIR).resolve()
        try:
            Path(where).resolve().relative_to(base)
        except ValueError:
            raise SecretUnavailable(f"secret files must be under {base}") from None
        return
    raise SecretUnavailable("a secret reference looks like env:NAME or file:/path")


def resolve_secret(ref: str) -> str:
    """`env:NAME` reads the variable NAME; `file:/path` reads the file; empty means no key."""
    if not ref:
        return ""
    check_secret_ref(ref)
    kind, _, where = ref.partition(":")
    if kind == "env":
        value = os.environ.get(where)
        if value is None:
            raise SecretUnavailable(f"environment variable {where} is not set")
        return value.strip()
    if kind == "file":
        try:
            return Path(where).read_text().strip()
        except OSError as exc:
            raise SecretUnavailable(f"secret file {where} cannot be read: {exc.strerror}") from exc
    raise SecretUnavailable("api key reference must look like env:NAME or file:/path")


SECRET_KEYS = frozenset({"api_key", "authorization", "token", "password", "secret", "x-api-key"})


def redact(value: Any, *, secrets: tuple[str, ...] = ()) -> Any:
    """Copy `value` without secret-looking keys, and with any known secret string masked.

    Traces keep prompts and responses; they must never keep credentials.
    """
    if isinstance(value, dict):
        return {
            k: "[redacted]" if str(k).lower() in SECRET_KEYS else redact(v, secrets=secrets) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, secrets=secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret and len(secret) >= 6 and secret in value:
                value = value.replace(secret, "[redacted]")
        return value
    return value
