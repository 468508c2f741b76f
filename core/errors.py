"""Domain errors raised by services; views and the API turn them into responses."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    code = "error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details


class InvalidInput(DomainError):
    status = 400
    code = "invalid_input"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class Forbidden(DomainError):
    """The user may see the object but not do this to it (e.g. approve their own run's action)."""

    status = 403
    code = "forbidden"
