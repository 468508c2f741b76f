"""What can go wrong when an agent asks Countersign, as exceptions that say why."""

from __future__ import annotations

from typing import Any


class CountersignError(Exception):
    """An answer from Countersign that is not the one asked for. `code` is the API's stable error code."""

    def __init__(self, detail: str, *, code: str = "error", status: int | None = None, body: Any = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.status = status
        self.body = body


class InvalidCall(CountersignError):
    """400: the call was refused before anyone saw it (unknown tool, arguments that do not fit its schema, ...)."""


class NotFound(CountersignError):
    """404: no such agent or action, or this token may not see it."""


class Unauthorized(CountersignError):
    """401 or 403: the token is missing, wrong, or may not do this."""


class Conflict(CountersignError):
    """409: the state does not allow it (the grant was used, expired, the outcome was already reported, ...)."""


class Unavailable(CountersignError):
    """Countersign could not be reached, or answered 5xx: nothing is known to have changed. Safe to retry."""


class NotApproved(CountersignError):
    """The call may not run. `reason` is what the reviewer or policy said, for the agent to act on."""

    def __init__(self, reason: str, *, action: Any, code: str) -> None:
        super().__init__(reason, code=code)
        self.reason = reason
        self.action = action


class Rejected(NotApproved):
    """A person rejected the call; `reviewer` is who, `reason` why."""

    def __init__(self, reason: str, *, action: Any, reviewer: str) -> None:
        super().__init__(reason, action=action, code="rejected")
        self.reviewer = reviewer


class Denied(NotApproved):
    """Policy denied the call (a limit, an open breaker, a denied tool)."""


class Expired(NotApproved):
    """Nobody decided in time, or the grant was not used in time."""


class StillPending(CountersignError):
    """No decision yet within the time the caller was willing to wait; `action` can be waited on again."""

    def __init__(self, detail: str, *, action: Any) -> None:
        super().__init__(detail, code="pending")
        self.action = action


class GrantMismatch(CountersignError):
    """The grant is not for the approved call as it arrived here: do not execute it."""
