"""Group names: who a live message is for. Sockets join the groups their user may see."""

from __future__ import annotations

import hashlib


def agent_group(agent_id: int, tier: int = 1, reviewer_group_id: int | None = None) -> str:
    """The reviewers of one agent at one tier (tier 0: the admins who countersign changes)."""
    base = f"reviewers.agent.{agent_id}.tier.{tier}"
    # Items limited to a reviewer group go only to that group's members.
    return base if reviewer_group_id is None else f"{base}.group.{reviewer_group_id}"


def operator_group(agent_id: int) -> str:
    return f"operators.agent.{agent_id}"


def run_group(run_id: int) -> str:
    """The sockets of one open run page."""
    return f"run.{run_id}"


def user_group(user_id: int) -> str:
    """One user's sockets: badges, and control messages (re-check the session, the rights)."""
    return f"user.{user_id}"


def session_tag(session_key: str) -> str:
    # Messages name a session by a digest: the key itself is a credential and
    # should not travel through (or sit in) the outbox or the channel layer.
    return hashlib.sha256(session_key.encode()).hexdigest()
