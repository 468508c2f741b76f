"""The shapes Countersign answers with (a subset of the API's ActionOut), read-only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Statuses after which nothing more happens to a call from the agent's side.
DECIDED = frozenset({"approved", "auto_approved", "rejected", "denied", "expired", "cancelled"})


@dataclass(frozen=True)
class Grant:
    token: str
    digest: str
    status: str
    expires_at: str
    report_due_at: str | None = None


@dataclass(frozen=True)
class Action:
    id: int
    agent: str
    tool: str
    status: str
    arguments: dict[str, Any]
    proposed_arguments: dict[str, Any]
    route: str = ""
    route_reason: str = ""
    caller_executes: bool = False
    grant: Grant | None = None
    decision: dict[str, Any] | None = None
    result: Any = None
    error: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> Action:
        grant = body.get("grant")
        return cls(
            id=int(body["id"]),
            agent=str(body["agent"]),
            tool=str(body["tool"]),
            status=str(body["status"]),
            arguments=dict(body.get("arguments") or {}),
            proposed_arguments=dict(body.get("proposed_arguments") or {}),
            route=str(body.get("route", "")),
            route_reason=str(body.get("route_reason", "")),
            caller_executes=bool(body.get("caller_executes", False)),
            grant=None
            if not grant
            else Grant(
                token=grant["token"],
                digest=grant["digest"],
                status=grant["status"],
                expires_at=grant["expires_at"],
                report_due_at=grant.get("report_due_at"),
            ),
            decision=body.get("decision"),
            result=body.get("result"),
            error=str(body.get("error", "")),
            raw=body,
        )

    @property
    def edited(self) -> bool:
        return self.arguments != self.proposed_arguments


@dataclass(frozen=True)
class Approval:
    """A call that may run: with exactly `arguments` (a reviewer's edit included), under `action.grant`."""

    action: Action

    @property
    def arguments(self) -> dict[str, Any]:
        return self.action.arguments

    @property
    def edited(self) -> bool:
        return self.action.edited

    @property
    def comment(self) -> str:
        return str((self.action.decision or {}).get("comment", ""))
