"""API for an agent's own tokens: issued by whoever configures the agent."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from ninja import Router, Schema, Status
from pydantic import Field

from accounts.services import agent_token_issue
from agents.models import Agent
from agents.selectors import agent_perms_on
from core.api_contract import AgentSlug, ApiInput, responses
from core.requests import ApiRequest

router = Router(tags=["tokens"])


class AgentTokenIn(ApiInput):
    name: str = Field(default="", max_length=100, description="To recognise the token in lists.")


class AgentTokenOut(Schema):
    token: str = Field(description="Shown once; stored hashed. Use it as `Authorization: Bearer <token>`.")
    identity: str = Field(description="Who the token acts as: the agent itself (agent:<slug>).")


@router.post(
    "/agents/{slug}/tokens",
    response=responses(AgentTokenOut, 403, 404, status=201, body=True),
    summary="Issue a token whose identity is the agent: it operates that agent only (its MCP endpoint, its calls "
    "and grants), and cannot review",
)
def issue_agent_token(request: ApiRequest, slug: AgentSlug, payload: AgentTokenIn) -> Status[dict[str, Any]]:
    agent = Agent.objects.filter(slug=slug).first()
    if agent is None or not agent_perms_on(request.auth, agent):
        raise Http404
    raw, identity = agent_token_issue(agent=agent, actor=request.auth, name=payload.name)
    return Status(201, {"token": raw, "identity": identity.get_username()})
