"""Reads over the audit trail."""

from __future__ import annotations

from dataclasses import dataclass, field

from audit.chain import GENESIS_HASH, canonical_row, chain_hash
from audit.models import AuditEvent


@dataclass
class ChainReport:
    count: int = 0
    head_hash: str = GENESIS_HASH
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(*, max_problems: int = 20) -> ChainReport:
    """Recompute every hash in order; report edits, deletions, reordering and gaps."""
    report = ChainReport()
    expected_seq = 1
    prev_hash = GENESIS_HASH
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
        report.count += 1
        report.head_hash = row.hash
        prev_hash = row.hash
        expected_seq = row.seq + 1
        if len(report.problems) >= max_problems:
            report.problems.append("... stopped after too many problems")
            break
    return report
