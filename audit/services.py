"""The one writer of the audit trail."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from audit.chain import GENESIS_HASH, canonical_row, chain_hash, to_json_value
from audit.context import current_request_id
from audit.models import ActorType, AuditCheckpoint, AuditEvent

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
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction."""
    if not transaction.get_connection().in_atomic_block:
        # Outside a transaction the event could commit without the change it
        # records, or the change without its event.
        raise RuntimeError("audit.record() must run inside the transaction of the change")
    who = actor_of(actor)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Serialises appends until COMMIT so two writers never fork the chain.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK_KEY])
    # On SQLite, IMMEDIATE transactions already serialise every writer.
    last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
    fields: dict[str, Any] = {
        "seq": seq,
        "created_at": timezone.now(),
        "actor_type": str(who.type),
        "actor_id": who.id,
        "actor_label": who.label,
        "event": event,
        "target_type": target._meta.label_lower if target is not None else "",
        "target_id": str(target.pk) if target is not None else "",
        "agent_id": agent_id,
        "before": to_json_value(before),
        "after": to_json_value(after),
        "request_id": current_request_id.get(),
        "prev_hash": prev_hash,
    }
    digest = chain_hash(prev_hash, canonical_row(**fields))
    return AuditEvent.objects.create(**fields, hash=digest)


def checkpoint_mac(seq: int, digest: str, created_at: datetime) -> str:
    key = (settings.AUDIT_CHECKPOINT_KEY or settings.SECRET_KEY).encode()
    return hmac.new(key, f"{seq}:{digest}:{created_at.isoformat()}".encode(), hashlib.sha256).hexdigest()


def checkpoint_take() -> AuditCheckpoint | None:
    """Seal the current head of the chain (and append it to the checkpoint file when configured)."""
    from audit.selectors import verify_chain

    report = verify_chain()
    if report.count == 0:
        return None
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK_KEY])
        head = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        if head is None:
            return None
        now = timezone.now()
        checkpoint = AuditCheckpoint.objects.create(
            seq=head[0], hash=head[1], created_at=now, mac=checkpoint_mac(head[0], head[1], now), chain_ok=report.ok
        )
    if settings.AUDIT_CHECKPOINT_FILE:
        # Outside the database: an attacker who can rewrite tables cannot reach it.
        line = {"seq": checkpoint.seq, "hash": checkpoint.hash, "at": now.isoformat(), "mac": checkpoint.mac}
        with open(settings.AUDIT_CHECKPOINT_FILE, "a") as sink:
            sink.write(json.dumps(line) + "\n")
    return checkpoint
