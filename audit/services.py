"""The one writer of the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from audit.anchors import anchor_append
from audit.chain import GENESIS_HASH, canonical_row, canonical_value, chain_hash, checkpoint_mac, signing_key
from audit.context import current_request_id
from audit.models import CHAIN_FIELDS, ActorType, AuditCheckpoint, AuditEvent
from audit.selectors import REANCHOR_EVENT, ReanchorPlan, last_intact_checkpoint, reanchor_plan, verify_chain
from core.secrets import scrub_text
from core.transactions import AUDIT, defer, register_flusher

# pg_advisory_xact_lock key for appends: one chain, one writer at a time.
AUDIT_LOCK_KEY = 0x0C0_5161_A0D1


@dataclass(frozen=True)
class Actor:
    type: str
    id: int | None
    label: str

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(ActorType.SYSTEM, None, label)

    @classmethod
    def agent(cls, agent: Any) -> Actor:
        return cls(ActorType.AGENT, agent.pk, f"agent:{agent.slug}")

    @classmethod
    def user(cls, user: AbstractBaseUser) -> Actor:
        return cls(ActorType.USER, user.pk, user.get_username())


def actor_of(actor: Actor | AbstractBaseUser | None) -> Actor:
    if actor is None:
        return Actor.system()
    if isinstance(actor, Actor):
        return actor
    return Actor.user(actor)


def record(
    *,
    actor: Actor | AbstractBaseUser | None,
    event: str,
    target: Any = None,
    agent_id: int | None = None,
    before: Any = None,
    after: Any = None,
) -> None:
    """Append one event to the chain when the caller's transaction commits.

    The row is written just before COMMIT, after every other write of the
    transaction (core.transactions): the global append lock is always the last
    lock taken and is held only until COMMIT, so it cannot deadlock with the
    domain rows or counters a transaction locks.
    """
    if not transaction.get_connection().in_atomic_block:
        # Outside a transaction the event could commit without the change it
        # records, or the change without its event.
        raise RuntimeError("audit.record() must run inside the transaction of the change")
    who = actor_of(actor)
    fields: dict[str, Any] = {
        "actor_type": str(who.type),
        "actor_id": who.id,
        "actor_label": scrub_text(who.label)[:150],
        "event": event,
        "target_type": target._meta.label_lower if target is not None else "",
        "target_id": str(target.pk) if target is not None else "",
        "agent_id": agent_id,
        "before": canonical_value(before),
        "after": canonical_value(after),
        "request_id": current_request_id.get(),
    }
    defer(AUDIT, fields)


def _lock_chain(connection: Any) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Serialises appends until COMMIT so two writers never fork the chain.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK_KEY])
    # On SQLite, IMMEDIATE transactions already serialise every writer.


def _flush_events(connection: Any, items: list[dict[str, Any]]) -> Callable[[], None]:
    """Write this transaction's events at the head of the chain (runs just before COMMIT)."""
    key_id, key = signing_key()
    _lock_chain(connection)
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    by_name = {f.name: f for f in AuditEvent._meta.concrete_fields}
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1")  # noqa: S608
        last = cursor.fetchone()
        seq, prev_hash = (last[0], last[1]) if last else (0, GENESIS_HASH)
        now = timezone.now()
        rows = []
        for item in items:
            seq += 1
            fields = {**item, "seq": seq, "created_at": now, "prev_hash": prev_hash, "key_id": key_id}
            fields["hash"] = chain_hash(prev_hash, canonical_row(**fields), key)
            prev_hash = fields["hash"]
            rows.append([by_name[name].get_db_prep_save(fields[name], connection) for name in CHAIN_FIELDS])
        columns = ", ".join(connection.ops.quote_name(by_name[n].column) for n in CHAIN_FIELDS)
        placeholders = ", ".join(["%s"] * len(CHAIN_FIELDS))
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", rows)  # noqa: S608
    head_seq, head_hash = seq, prev_hash
    return lambda: anchor_append(head_seq, head_hash)


register_flusher(AUDIT, _flush_events)


def checkpoint_take() -> AuditCheckpoint | None:
    """Seal the current head of the chain in the database, and anchor it outside.

    Whether the chain is intact is checked from the last intact checkpoint on,
    not from the first row: the job runs every minute and the chain grows forever.
    """
    since = last_intact_checkpoint()
    report = verify_chain(after=(since.seq, since.hash) if since else None)
    if report.count == 0 and since is None:
        return None
    with transaction.atomic():
        _lock_chain(connection)
        head = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        if head is None:
            return None
        now = timezone.now()
        checkpoint = AuditCheckpoint.objects.create(
            seq=head[0], hash=head[1], created_at=now, mac=checkpoint_mac(head[0], head[1], now), chain_ok=report.ok
        )
    anchor_append(checkpoint.seq, checkpoint.hash)
    return checkpoint


def chain_reanchor(*, reason: str, actor: Actor | AbstractBaseUser | None) -> ReanchorPlan:
    """Accept, in an audited event, rows broken only by how the database gave their numbers back.

    Rows written before canonical_value existed were hashed over 1e+16 and read
    back as 10000000000000000, so they no longer match. The re-anchoring event
    names each such row with its original and its restated hash; audit_verify
    then accepts exactly that content for exactly that row. Any other problem
    refuses the whole re-anchoring.
    """
    plan = reanchor_plan()
    if plan.unexplained or not plan.explained:
        return plan
    with transaction.atomic():
        record(
            actor=actor or Actor.system("audit_reanchor"),
            event=REANCHOR_EVENT,
            after={"reason": reason, "accepted": plan.explained},
        )
    return plan
