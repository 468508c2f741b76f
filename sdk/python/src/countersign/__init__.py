"""Countersign's Python SDK: ask before acting, act on exactly what was approved, say what happened."""

from __future__ import annotations

from countersign.client import AsyncCountersign, Countersign, verdict
from countersign.decorators import require_approval
from countersign.digest import call_digest
from countersign.errors import (
    Conflict,
    CountersignError,
    Denied,
    Expired,
    GrantMismatch,
    InvalidCall,
    NotApproved,
    NotFound,
    Rejected,
    StillPending,
    Unauthorized,
    Unavailable,
)
from countersign.models import Action, Approval, Grant
from countersign.webhooks import InvalidSignature, verify

__all__ = [
    "Action",
    "Approval",
    "AsyncCountersign",
    "Conflict",
    "Countersign",
    "CountersignError",
    "Denied",
    "Expired",
    "Grant",
    "GrantMismatch",
    "InvalidCall",
    "InvalidSignature",
    "NotApproved",
    "NotFound",
    "Rejected",
    "StillPending",
    "Unauthorized",
    "Unavailable",
    "call_digest",
    "require_approval",
    "verdict",
    "verify",
]
