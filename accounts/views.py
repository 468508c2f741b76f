"""Access pages: roles, per-agent permissions, "who can approve X", "what can Y do"."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.contrib.auth.views import LoginView
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts import selectors, services, throttle
from accounts.access import require_global_perm
from accounts.models import Role
from agents.models import Agent
from agents.services import agent_permission_grant, agent_permission_revoke
from audit.services import Actor, record
from core.errors import DomainError
from core.requests import AuthedRequest


def _require_read(request: AuthedRequest) -> None:
    # Admins manage access; auditors may read it.
    if request.user.has_perm("accounts.manage_access"):
        return
    require_global_perm(request, "audit.view_auditevent")


@require_GET
@login_required
def access_overview(request: AuthedRequest) -> HttpResponse:
    _require_read(request)
    users = get_user_model().objects.filter(is_active=True).prefetch_related("groups").order_by("username")
    context = {
        "users": users,
        "agents": Agent.objects.order_by("slug"),
        "roles": [r.value for r in Role],
        "groups": Group.objects.order_by("name"),
        "perms": selectors.AGENT_PERMS,
        "can_manage": request.user.has_perm("accounts.manage_access"),
    }
    return render(request, "accounts/access.html", context)


@require_GET
@login_required
def agent_access(request: AuthedRequest, slug: str) -> HttpResponse:
    _require_read(request)
    agent = get_object_or_404(Agent, slug=slug)
    holders = selectors.holders_of(agent)
    rows = [(label, holders.get(codename, [])) for codename, label in selectors.AGENT_PERMS]
    return render(request, "accounts/agent_access.html", {"agent": agent, "rows": rows})


@require_GET
@login_required
def user_access(request: AuthedRequest, username: str) -> HttpResponse:
    _require_read(request)
    user = get_object_or_404(get_user_model(), username=username)
    return render(request, "accounts/user_access.html", selectors.rights_of(user))


@require_POST
@login_required
def role_change(request: AuthedRequest) -> HttpResponse:
    require_global_perm(request, "accounts.manage_access")
    user = get_object_or_404(get_user_model(), username=request.POST.get("username", ""))
    try:
        role = Role(request.POST.get("role", ""))
    except ValueError:
        messages.error(request, "Unknown role.")
        return redirect("accounts:access")
    if request.POST.get("action") == "remove":
        if user == request.user and role == Role.ADMIN:
            messages.error(request, "You cannot remove your own Admin role.")
            return redirect("accounts:access")
        services.role_remove(user=user, role=role, actor=request.user)
    else:
        services.role_assign(user=user, role=role, actor=request.user)
    messages.success(request, f"{user.get_username()}: role {role.value} updated.")
    return redirect("accounts:access")


@require_POST
@login_required
def grant_change(request: AuthedRequest) -> HttpResponse:
    require_global_perm(request, "accounts.manage_access")
    agent = get_object_or_404(Agent, slug=request.POST.get("agent", ""))
    holder_name = request.POST.get("holder", "")
    holder: Any
    if holder_name.startswith("group:"):
        holder = get_object_or_404(Group, name=holder_name.removeprefix("group:"))
    else:
        holder = get_object_or_404(get_user_model(), username=holder_name)
    perm = request.POST.get("perm", "")
    try:
        change = agent_permission_revoke if request.POST.get("action") == "revoke" else agent_permission_grant
        change(agent=agent, perm=perm, to=holder, actor=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("accounts:access")
    messages.success(request, f"{perm} on {agent.slug} updated for {holder_name}.")
    return redirect("accounts:agent_access", slug=agent.slug)


class ThrottledLoginView(LoginView):
    """Django's login, refusing a username/address pair after too many failures (429)."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = str(request.POST.get("username", ""))[:150]
        if throttle.is_locked(request, username):
            with transaction.atomic():
                record(actor=Actor.system("anonymous"), event="auth.login_throttled", after={"username": username})
            form = self.get_form()
            form.add_error(None, "Too many failed attempts. Wait a few minutes and try again.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)
