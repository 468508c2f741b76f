"""Reads over the audit trail: verification, and the viewer's filtered pages."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from audit.anchors import anchors_read
from audit.chain import GENESIS_HASH, canonical_row, chain_hash, checkpoint_mac, verifying_keys
from audit.models import AuditCheckpoint, AuditEvent


@dataclass
class ChainReport:
    count: int = 0
    head_hash: str = GENESIS_HASH
    checkpoints_checked: int = 0
    anchors_checked: int = 0
    reanchored: int = 0
    problems: list[str] = field(default_factory=list)
    # Rows whose content no longer matches their hash (the problems name them too).
    mismatched: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


REANCHOR_EVENT = "audit.reanchored"


def restated_rows() -> dict[int, tuple[str, str]]:
    """seq -> (hash, restated hash) for rows an audited re-anchoring accepted (`audit_reanchor`)."""
    accepted: dict[int, tuple[str, str]] = {}
    for after in AuditEvent.objects.filter(event=REANCHOR_EVENT).values_list("after", flat=True):
        for item in (after or {}).get("accepted", []):
            accepted[int(item["seq"])] = (str(item["hash"]), str(item["restated"]))
    return accepted


def row_digest(row: AuditEvent, keys: dict[str, bytes]) -> str | None:
    """The hash `row` should carry given its content, None if its key is unknown."""
    key = None
    if row.key_id:
        key = keys.get(row.key_id)
        if key is None:
            return None
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
        key_id=row.key_id,
    )
    return chain_hash(row.prev_hash, canonical, key)


def verify_chain(*, max_problems: int = 20, after: tuple[int, str] | None = None) -> ChainReport:
    """Recompute every hash in order; report edits, deletions, reordering, gaps, forgeries and a cut-off tail.

    With `after=(seq, hash)` of a sealed, intact checkpoint, only the rows since
    it are checked (and no anchors): what the periodic checkpoint records.
    """
    report = ChainReport()
    # Anchors first: every row they name had committed before the chain is read.
    anchors = anchors_read() if after is None else []
    sealed = _checkpoints() if after is None else []
    keys = verifying_keys()
    restated = restated_rows()
    wanted = {seq for seq, _, _ in sealed} | {a.seq for a in anchors}
    seen: dict[int, str] = {}
    expected_seq, prev_hash = (after[0] + 1, after[1]) if after else (1, GENESIS_HASH)
    legacy_until = settings.AUDIT_LEGACY_UNTIL_SEQ
    rows = AuditEvent.objects.order_by("seq")
    if after is not None:
        rows = rows.filter(seq__gt=after[0])
    for row in rows.iterator(chunk_size=2000):
        if row.seq != expected_seq:
            report.problems.append(f"gap: expected seq {expected_seq}, found {row.seq}")
        if row.prev_hash != prev_hash:
            report.problems.append(f"seq {row.seq}: prev_hash does not match the previous row")
        if not row.key_id and row.seq > legacy_until:
            # Only rows of a chain written before it was keyed may be unkeyed, and how
            # many there were is configured outside the database.
            report.problems.append(f"seq {row.seq}: an unkeyed row past AUDIT_LEGACY_UNTIL_SEQ (forged)")
        digest = row_digest(row, keys)
        if digest is None:
            report.problems.append(f"seq {row.seq}: signed with an unknown key ({row.key_id})")
        elif digest != row.hash:
            if restated.get(row.seq) == (row.hash, digest):
                report.reanchored += 1
            else:
                report.mismatched.append(row.seq)
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
        _check_head(report, seen, seq, digest, source)
    for anchor in anchors:
        report.anchors_checked += 1
        if anchor.problem:
            report.problems.append(f"{anchor.where} {anchor.problem}")
        else:
            _check_head(report, seen, anchor.seq, anchor.hash, anchor.where)
    return report


def _check_head(report: ChainReport, seen: dict[int, str], seq: int, digest: str, source: str) -> None:
    if seq < 0:
        report.problems.append(source)
    elif seq not in seen:
        report.problems.append(f"{source} names seq {seq}, which is gone: the log was cut off or rows deleted")
    elif seen[seq] != digest:
        report.problems.append(f"{source} at seq {seq} has a different hash: the log was rewritten")


def last_intact_checkpoint() -> AuditCheckpoint | None:
    """The newest checkpoint that found the chain intact and whose seal is genuine."""
    keys = list(verifying_keys().values())
    for cp in AuditCheckpoint.objects.filter(chain_ok=True).order_by("-id")[:5]:
        if any(hmac.compare_digest(cp.mac, checkpoint_mac(cp.seq, cp.hash, cp.created_at, k)) for k in keys):
            return cp
    return None


def _checkpoints() -> list[tuple[int, str, str]]:
    """Every (seq, hash, where) the head was sealed at in the database, whose seal is genuine."""
    keys = list(verifying_keys().values())
    sealed: list[tuple[int, str, str]] = []
    for cp in AuditCheckpoint.objects.order_by("id"):
        if any(hmac.compare_digest(cp.mac, checkpoint_mac(cp.seq, cp.hash, cp.created_at, k)) for k in keys):
            sealed.append((cp.seq, cp.hash, f"checkpoint #{cp.pk}"))
        else:
            sealed.append((-1, "", f"checkpoint #{cp.pk} has an invalid seal (forged, or the key changed)"))
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


def _as_written_before_the_fix(value: Any, *, negative_zero: bool) -> Any:
    """Undo what jsonb did to numbers before canonical_value existed: 1e+16 came back as an integer, -0.0 as 0.0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) >= 10**16:
        as_float = float(value)
        if "e" in repr(as_float) and int(Decimal(repr(as_float))) == value:
            return as_float
        return value
    if negative_zero and isinstance(value, float) and value == 0.0:
        return -0.0
    if isinstance(value, dict):
        return {k: _as_written_before_the_fix(v, negative_zero=negative_zero) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_written_before_the_fix(v, negative_zero=negative_zero) for v in value]
    return value


def explained_by_number_forms(row: AuditEvent, keys: dict[str, bytes]) -> bool:
    """Whether `row` matches its hash once its numbers are written the way they were before the round trip."""
    for negative_zero in (False, True):
        candidate = AuditEvent(
            **{f.attname: getattr(row, f.attname) for f in AuditEvent._meta.concrete_fields},
        )
        candidate.before = _as_written_before_the_fix(row.before, negative_zero=negative_zero)
        candidate.after = _as_written_before_the_fix(row.after, negative_zero=negative_zero)
        if row_digest(candidate, keys) == row.hash:
            return True
    return False


@dataclass
class ReanchorPlan:
    explained: list[dict[str, Any]] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)


def reanchor_plan() -> ReanchorPlan:
    """Which broken rows an audited re-anchoring may accept: those only the number round trip changed."""
    plan = ReanchorPlan()
    keys = verifying_keys()
    restated = restated_rows()
    report = verify_chain(max_problems=10**9)
    content_broken = {
        int(p.split(":")[0].removeprefix("seq "))
        for p in report.problems
        if p.endswith("content does not match its hash")
    }
    plan.unexplained = [p for p in report.problems if not p.endswith("content does not match its hash")]
    for row in AuditEvent.objects.filter(seq__in=content_broken).order_by("seq"):
        digest = row_digest(row, keys)
        if digest is not None and row.seq not in restated and explained_by_number_forms(row, keys):
            plan.explained.append({"seq": row.seq, "hash": row.hash, "restated": digest})
        else:
            plan.unexplained.append(f"seq {row.seq}: content does not match its hash, and not because of number forms")
    return plan
