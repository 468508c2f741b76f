"""Alert rules evaluated periodically: fire once while the condition holds, resolve when it clears."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent, AgentDailyUsage, BreakerState, CircuitBreaker
from agents.secrets import SecretUnavailable, resolve_secret
from agents.selectors import agents_with_perm, users_with_agent_perm
from approvals.models import ActionRequest, ActionStatus, Notification
from audit.services import Actor, record
from live.push import OPS_CHANGED, push
from ops.models import Alert, AlertKind, AlertRule
from ops.selectors import (
    DRIFT_BASELINE_DAYS,
    calibration_recent_and_baseline,
    escalation_spike,
    recent_and_baseline,
    runs_ended,
)

logger = logging.getLogger(__name__)
SYSTEM = Actor.system("alerts")


# --- drift ---------------------------------------------------------------------------

# A drift alert needs this many reviewed actions in the last day and in the baseline. The z
# statistics lean on the normal approximation of a binomial count, which is poor below a few
# dozen trials: with fewer than 20 recent reviews one decision moves a rate by more than five
# points and two or three unlucky ones cross any bound worth setting. The baseline must be
# larger still (50, over 30 days), or its own sampling noise dominates the standard error and
# a quiet agent would "drift" against a baseline that was never measured.
DRIFT_MIN_RECENT = 20
DRIFT_MIN_BASELINE = 50

AGREEMENT, EDITS, GAP = "agreement rate", "edit rate", "confidence gap"


@dataclass(frozen=True)
class Tally:
    """Reviewed actions of one window, all tools together, from the calibration buckets."""

    reviewed: int
    agreed: int
    edited: int
    confidence: float  # the sum of the stated confidence of those reviewed

    @classmethod
    def of(cls, counts: dict[str, Any], prefix: str) -> Tally:
        return cls(
            reviewed=int(counts[f"{prefix}reviewed"] or 0),
            agreed=int(counts[f"{prefix}agreed"] or 0),
            edited=int(counts[f"{prefix}edited"] or 0),
            confidence=float(counts[f"{prefix}confidence"] or 0.0),
        )


@dataclass(frozen=True)
class Shift:
    metric: str
    before: float
    after: float
    z: float

    def describe(self) -> str:
        def shown(v: float) -> str:
            return f"{v:+.2f}" if self.metric == GAP else f"{v:.0%}"

        moved = "rose" if self.after > self.before else "fell"
        return f"{self.metric} {moved} from {shown(self.before)} to {shown(self.after)} (z = {self.z:+.1f})"


def _z(difference: float, pooled: float, n_recent: int, n_base: int) -> float:
    # The pooled rate is kept half a count from 0 and 1: a window of all agreements has no
    # variance of its own, but one more action could disagree; without this a confidence
    # change alone, with every action agreed, would divide by zero.
    floor = 0.5 / (n_recent + n_base)
    p = min(max(pooled, floor), 1 - floor)
    return difference / math.sqrt(p * (1 - p) * (1 / n_recent + 1 / n_base))


def drift_shifts(recent: Tally, baseline: Tally) -> list[Shift]:
    """Agreement rate, edit rate and confidence gap (mean confidence minus agreement), each against the baseline.

    The rates by a two-proportion z statistic (pooled). The gap by its difference over the standard error of
    the agreement rates, each reviewed action a Bernoulli agreement and its stated confidence taken as given.
    Empty when either window has too few reviewed actions for any of them to mean something.
    """
    n1, n0 = recent.reviewed, baseline.reviewed
    if n1 < DRIFT_MIN_RECENT or n0 < DRIFT_MIN_BASELINE:
        return []
    agree1, agree0 = recent.agreed / n1, baseline.agreed / n0
    edit1, edit0 = recent.edited / n1, baseline.edited / n0
    gap1, gap0 = recent.confidence / n1 - agree1, baseline.confidence / n0 - agree0
    pooled_agreement = (recent.agreed + baseline.agreed) / (n1 + n0)
    pooled_edits = (recent.edited + baseline.edited) / (n1 + n0)
    return [
        Shift(AGREEMENT, agree0, agree1, _z(agree1 - agree0, pooled_agreement, n1, n0)),
        Shift(EDITS, edit0, edit1, _z(edit1 - edit0, pooled_edits, n1, n0)),
        Shift(GAP, gap0, gap1, _z(gap1 - gap0, pooled_agreement, n1, n0)),
    ]


def _drift(rule: AlertRule, agent: Agent, calibration: dict[int, dict[str, Any]] | None) -> tuple[bool, float, str]:
    c = (calibration or {}).get(agent.pk)
    if not c:
        return False, 0.0, ""
    moved = [s for s in drift_shifts(Tally.of(c, "r_"), Tally.of(c, "b_")) if abs(s.z) > rule.threshold]
    if not moved:
        return False, 0.0, ""
    moved.sort(key=lambda s: -abs(s.z))
    said = "; ".join(s.describe() for s in moved)
    return True, moved[0].z, f"{agent.slug}: {said}, in the last day against the {DRIFT_BASELINE_DAYS} days before"


def evidence_url(rule: AlertRule, agent: Agent) -> str:
    """Where an alert's evidence is: for drift, the agent's ops page over the window it fired on."""
    if rule.kind == AlertKind.DRIFT:
        return reverse("ops:agent", args=[agent.slug]) + "?window=24h"
    return reverse("ops:exceptions")


# --- evaluation ----------------------------------------------------------------------


def condition(
    rule: AlertRule,
    agent: Agent,
    now: datetime,
    counters: dict[int, dict[str, int]],
    calibration: dict[int, dict[str, Any]] | None = None,
) -> tuple[bool, float, str]:
    """Whether the rule's condition holds for the agent now, the measured value, and a sentence."""
    if rule.kind == AlertKind.DRIFT:
        return _drift(rule, agent, calibration)
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
    drifting = any(rule.kind == AlertKind.DRIFT for rule in rules)
    calibration = calibration_recent_and_baseline(list(agents), now) if drifting else {}
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
            holds, value, message = condition(rule, agent, now, counters, calibration)
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
                [Notification(user=u, text=f"Alert: {message}"[:500], url=evidence_url(rule, agent)) for u in operators]
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
