"""An agent's decision webhook in the browser: its delivery log for operators (with Send again), its address for
whoever configures the agent."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from approvals import selectors, webhooks
from approvals.models import DecisionWebhook
from core.errors import Forbidden
from core.pages import act_and_redirect
from core.requests import AuthedRequest

PAGE_SIZE = 50


@require_GET
@login_required
def webhook_page(request: AuthedRequest, slug: str) -> HttpResponse:
    found = selectors.agent_for_webhook(request.user, slug)
    if found is None:
        raise Http404
    agent, perms = found
    raw = request.GET.get("before", "")
    before = int(raw) if raw.isdecimal() and len(raw) < 19 else None
    rows = selectors.webhook_deliveries(agent, before=before, limit=PAGE_SIZE + 1)
    return render(
        request,
        "approvals/webhook.html",
        {
            "agent": agent,
            "webhook": DecisionWebhook.objects.filter(agent=agent).first(),
            "deliveries": rows[:PAGE_SIZE],
            "next_before": rows[PAGE_SIZE - 1].pk if len(rows) > PAGE_SIZE else None,
            "can_configure": "configure_agent" in perms,
        },
    )


@require_POST
@login_required
def webhook_save(request: AuthedRequest, slug: str) -> HttpResponse:
    found = selectors.agent_for_webhook(request.user, slug)
    if found is None:
        raise Http404
    agent, perms = found
    page = reverse("approvals:webhook", args=[agent.slug])

    def save() -> str:
        if "configure_agent" not in perms:
            raise Forbidden("only whoever configures the agent sets its webhook")
        if request.POST.get("remove"):
            webhooks.webhook_remove(agent=agent, actor=request.user)
            return "The webhook is removed."
        webhooks.webhook_set(
            agent=agent,
            actor=request.user,
            url=request.POST.get("url", "").strip()[:500],
            secret_ref=request.POST.get("secret_ref", "").strip()[:300],
        )
        return "The webhook is saved: decisions are posted there from now on."

    return act_and_redirect(request, save, to=page)


@require_POST
@login_required
def delivery_redeliver(request: AuthedRequest, delivery_id: int) -> HttpResponse:
    delivery = selectors.delivery_operable_by(request.user, delivery_id)
    if delivery is None:
        raise Http404

    def again() -> str:
        sent = webhooks.webhook_redeliver(delivery=delivery, actor=request.user)
        return f"Event {delivery.event_id} is sent again (delivery {sent.pk})."

    return act_and_redirect(request, again, to=reverse("approvals:webhook", args=[delivery.webhook.agent.slug]))
