"""Reads over the audit trail: verification, and the viewer's filtered pages."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from audit.chain import GENESIS_HASH, canonical_row, chain_hash
from audit.models import AuditCheckpoint, AuditEvent


@dataclass
class ChainReport:
    count: int = 0
    head_hash: str = GENESIS_HASH
    checkpoints_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(*, max_problems: int = 20) -> ChainReport:
    """Recompute every hash in order; report edits, deletions, reordering, gaps and a cut-off tail."""
    report = ChainReport()
    expected_seq = 1
    prev_hash = GENESIS_HASH
    sealed = _checkpoints()
    wanted = {seq for seq, _, _ in sealed}
    seen: dict[int, str] = {}
    for row in AuditEvent.objects.order_by("seq").iterator(chunk_size=2000):
        if row.seq != expected_seq:
            report.problems.append(f"gap: expected seq {expected_seq}, found {row.seq}")
        if row.prev_hash != prev_hash:
            report.problems.append(f"seq {row.seq}: prev_hash does not match the previous row")
        canonical = canonical_row(
            seq=row.seq,
            created_at=row.created_at,
            actor_type=row.actor_type,
            actor_id=row.actor_id,
            actor_label=row.actor_label,
            event=row.event,
            target_type=row.target_type,
            target_id=row.target_id,
            agent_id=row.agent_id,
            before=row.before,
            after=row.after,
            request_id=row.request_id,
            prev_hash=row.prev_hash,
        )
        if chain_hash(row.prev_hash, canonical) != row.hash:
            report.problems.append(f"seq {row.seq}: content does not match its hash")
        if row.seq in wanted:
            seen[row.seq] = row.hash
        report.count += 1
        report.head_hash = row.hash
        prev_hash = row.hash
        expected_seq = row.seq + 1
        if len(report.problems) >= max_problems:
            report.problems.append("... stopped after too many problems")
            return report
    for seq, digest, source in sealed:
        report.checkpoints_checked += 1
        if seq not in seen:
            report.problems.append(f"{source} names seq {seq}, which is gone: the log was cut off or rows deleted")
        elif seen[seq] != digest:
            report.problems.append(f"{source} at seq {seq} has a different hash: the log was rewritten")
    return report


def _checkpoints() -> list[tuple[int, str, str]]:
    """Every (seq, hash, where) the head was sealed at, whose seal is genuine."""
    from audit.services import checkpoint_mac

    sealed: list[tuple[int, str, str]] = []
    for cp in AuditCheckpoint.objects.order_by("id"):
        if hmac.compare_digest(cp.mac, checkpoint_mac(cp.seq, cp.hash, cp.created_at)):
            sealed.append((cp.seq, cp.hash, f"checkpoint #{cp.pk}"))
        else:
            sealed.append((-1, "", f"checkpoint #{cp.pk} has an invalid seal (forged, or the key changed)"))
    path = settings.AUDIT_CHECKPOINT_FILE
    if path and Path(path).exists():
        for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
            try:
                item = json.loads(line)
                sealed.append((int(item["seq"]), str(item["hash"]), f"checkpoint file line {number}"))
            except (ValueError, KeyError, TypeError):
                sealed.append((-1, "", f"checkpoint file line {number} is unreadable"))
    return sealed


@dataclass(frozen=True)
class AuditFilters:
    actor: str = ""
    agent_id: int | None = None
    event: str = ""
    since: datetime | None = None
    until: datetime | None = None


def audit_events(filters: AuditFilters) -> QuerySet[AuditEvent]:
    """Events matching the filters, newest first (keyset on seq)."""
    qs = AuditEvent.objects.all()
    if filters.actor:
        qs = qs.filter(actor_label=filters.actor)
    if filters.agent_id is not None:
        qs = qs.filter(agent_id=filters.agent_id)
    if filters.event:
        qs = qs.filter(event__startswith=filters.event)
    if filters.since is not None:
        qs = qs.filter(created_at__gte=filters.since)
    if filters.until is not None:
        qs = qs.filter(created_at__lt=filters.until)
    return qs.order_by("-seq")


def diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """Field-level changes between two JSON values (flat keys; whole values otherwise)."""
    if isinstance(before, dict) or isinstance(after, dict):
        b = before if isinstance(before, dict) else {}
        a = after if isinstance(after, dict) else {}
        return [
            {"field": key, "before": b.get(key), "after": a.get(key), "changed": b.get(key) != a.get(key)}
            for key in sorted(set(b) | set(a))
        ]
    if before is None and after is None:
        return []
    return [{"field": "", "before": before, "after": after, "changed": before != after}]
