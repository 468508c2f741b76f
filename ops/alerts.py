"""Alert rules evaluated periodically: fire once while the condition holds, resolve when it clears."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import datetime

import httpx
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import Agent, AgentDailyUsage, BreakerState, CircuitBreaker
from agents.secrets import SecretUnavailable, resolve_secret
from agents.selectors import agents_with_perm, users_with_agent_perm
from approvals.models import ActionRequest, ActionStatus, Notification
from audit.services import Actor, record
from live.push import OPS_CHANGED, push
from ops.models import Alert, AlertKind, AlertRule
from ops.selectors import escalation_spike, recent_and_baseline, runs_ended

logger = logging.getLogger(__name__)
SYSTEM = Actor.system("alerts")


def condition(
    rule: AlertRule, agent: Agent, now: datetime, counters: dict[int, dict[str, int]]
) -> tuple[bool, float, str]:
    """Whether the rule's condition holds for the agent now, the measured value, and a sentence."""
    c = counters.get(agent.pk)
    if rule.kind == AlertKind.ESCALATION_SPIKE:
        spike = escalation_spike(c, factor=rule.threshold) if c else None
        if spike is None:
            return False, 0.0, ""
        recent, base = spike
        return True, recent, f"{agent.slug}: {recent:.0%} of actions go to review (7-day baseline {base:.0%})"
    if rule.kind == AlertKind.FAILURE_RATE:
        if not c:
            return False, 0.0, ""
        finished = runs_ended(c, "r_")
        rate = (c["r_runs_failed"] + c["r_runs_halted"]) / finished if finished >= 5 else 0.0
        return rate >= rule.threshold, rate, f"{agent.slug}: {rate:.0%} of runs failed in the last 24 h"
    if rule.kind == AlertKind.COST_BURN:
        if agent.max_cost_per_day is None:
            return False, 0.0, ""
        usage = AgentDailyUsage.objects.filter(agent=agent, day=now.date()).first()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        fraction = max((now - midnight).total_seconds() / 86400, 1 / 96)
        projected = float(usage.cost if usage else 0) / fraction
        ratio = projected / float(agent.max_cost_per_day) if agent.max_cost_per_day else 0.0
        return (
            ratio >= rule.threshold,
            ratio,
            f"{agent.slug}: projected daily cost {projected:.4g} ({ratio:.0%} of budget)",
        )
    if rule.kind == AlertKind.SLA_BREACHES:
        late = ActionRequest.objects.filter(agent=agent, status=ActionStatus.PENDING, due_at__lte=now).count()
        return late >= max(rule.threshold, 1), float(late), f"{agent.slug}: {late} pending action(s) past their SLA"
    if rule.kind == AlertKind.BREAKER_OPEN:
        open_ = list(
            CircuitBreaker.objects.filter(agent=agent).exclude(state=BreakerState.CLOSED).values_list("tool", flat=True)
        )
        names = ", ".join(t or "model" for t in open_)
        return bool(open_), float(len(open_)), f"{agent.slug}: circuit breaker open ({names})"
    return False, 0.0, ""


def alerts_evaluate(*, now: datetime | None = None) -> dict[str, int]:
    """Fire, refresh or resolve every rule's alerts. Safe to run any time, twice."""
    now = now or timezone.now()
    counts = {"fired": 0, "still_firing": 0, "resolved": 0}
    rules = list(AlertRule.objects.filter(enabled=True).select_related("agent", "created_by"))
    if not rules:
        return counts
    agents = {a.pk: a for a in Agent.objects.all()}
    counters = recent_and_baseline(list(agents), now)
    open_alerts = {
        (a.rule_id, a.agent_id): a for a in Alert.objects.filter(resolved_at__isnull=True).select_related("rule")
    }
    operated: dict[int, set[int]] = {}
    for rule in rules:
        targets = [rule.agent] if rule.agent is not None else list(agents.values())
        creator = rule.created_by
        if rule.agent is None and creator is not None:
            # "All agents" is those its creator operates now: a rule must not watch (and
            # send webhooks about) agents its creator may not see.
            if creator.pk not in operated:
                operated[creator.pk] = set(agents_with_perm(creator, "operate_agent").values_list("pk", flat=True))
            targets = [a for a in targets if a.pk in operated[creator.pk]]
        for agent in targets:
            holds, value, message = condition(rule, agent, now, counters)
            open_alert = open_alerts.get((rule.pk, agent.pk))
            if holds and open_alert is None:
                if _fire(rule, agent, value, message, now):
                    counts["fired"] += 1
            elif holds and open_alert is not None:
                Alert.objects.filter(pk=open_alert.pk).update(last_seen_at=now, value=value)
                counts["still_firing"] += 1
            elif not holds and open_alert is not None:
                _resolve(open_alert, now)
                counts["resolved"] += 1
    return counts


def _fire(rule: AlertRule, agent: Agent, value: float, message: str, now: datetime) -> bool:
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                rule=rule, agent=agent, message=message[:500], value=value, fired_at=now, last_seen_at=now
            )
            record(
                actor=SYSTEM,
                event="alert.fired",
                target=alert,
                agent_id=agent.pk,
                after={"rule": rule.name, "kind": rule.kind, "value": value, "message": message},
            )
            operators = list(users_with_agent_perm(agent, "operate_agent"))
            Notification.objects.bulk_create(
                [Notification(user=u, text=f"Alert: {message}"[:500], url="/ops/") for u in operators]
            )
            emails = [u.email for u in operators if u.email]
            if rule.email and emails and settings.EMAIL_NOTIFICATIONS:
                transaction.on_commit(
                    lambda: send_mail(f"[Countersign] {message[:80]}", message, None, emails, fail_silently=True)
                )
            if rule.webhook_url:
                transaction.on_commit(lambda: _post_webhook(alert.pk, "firing"))
            push(OPS_CHANGED, agent_id=agent.pk)
    except IntegrityError:
        return False  # another evaluator fired it a moment ago (one open alert per rule and agent)
    return True


def _resolve(alert: Alert, now: datetime) -> None:
    with transaction.atomic():
        if not Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(resolved_at=now):
            return
        record(
            actor=SYSTEM,
            event="alert.resolved",
            target=alert,
            agent_id=alert.agent_id,
            before={"message": alert.message},
            after={"resolved_at": now},
        )
        if alert.rule.webhook_url:
            transaction.on_commit(lambda: _post_webhook(alert.pk, "resolved"))
        push(OPS_CHANGED, agent_id=alert.agent_id)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post_webhook(alert_id: int, state: str) -> None:
    alert = Alert.objects.select_related("rule", "agent").get(pk=alert_id)
    body = json.dumps(
        {
            "alert": alert.pk,
            "state": state,
            "rule": alert.rule.name,
            "kind": alert.rule.kind,
            "agent": alert.agent.slug,
            "value": alert.value,
            "message": alert.message,
            "fired_at": alert.fired_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        },
        sort_keys=True,
    ).encode()
    try:
        secret = resolve_secret(alert.rule.webhook_secret_ref)
        response = httpx.post(
            alert.rule.webhook_url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Countersign-Event": f"alert.{state}",
                "X-Countersign-Signature": sign(secret, body),
            },
            timeout=5.0,
        )
        status = f"{state}: HTTP {response.status_code}"
    except (httpx.HTTPError, SecretUnavailable) as exc:
        logger.warning("alert %s webhook failed: %s", alert_id, exc)
        status = f"{state}: {type(exc).__name__}"
    Alert.objects.filter(pk=alert_id).update(webhook_status=status[:100])


def alert_rule_switch(*, rule: AlertRule, actor: User, enabled: bool) -> bool:
    """Switch a rule on or off from the state its page showed; False if it changed meanwhile."""
    with transaction.atomic():
        # Compare-and-set: two people pressing "switch" on the same page flip it once, not twice.
        if not AlertRule.objects.filter(pk=rule.pk, enabled=not enabled).update(enabled=enabled):
            return False
        record(
            actor=actor,
            event="alert_rule.updated",
            target=rule,
            agent_id=rule.agent_id,
            before={"enabled": not enabled},
            after={"enabled": enabled},
        )
    return True
