"""The reviewer's live inbox socket. Thin: authenticate, join allowed groups, forward HTML."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from agents.selectors import agents_with_perm
from approvals.broadcast import agent_group, operator_group, user_group
from approvals.selectors import reviewable_groups


def _group_names(user: Any) -> set[str]:
    by_tier = reviewable_groups(user)
    names = {agent_group(agent_id, tier) for tier, ids in by_tier.items() for agent_id in ids}
    member_of = list(user.groups.values_list("pk", flat=True))
    names |= {agent_group(agent_id, 1, gid) for agent_id in by_tier[1] for gid in member_of}
    names |= {
        operator_group(agent_id) for agent_id in agents_with_perm(user, "operate_agent").values_list("pk", flat=True)
    }
    names.add(user_group(user.pk))
    return names


class InboxConsumer(AsyncWebsocketConsumer):
    groups_joined: set[str]

    async def connect(self) -> None:
        self.groups_joined = set()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.user_id = user.pk
        await self._join_allowed_groups()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = set()

    async def _join_allowed_groups(self) -> None:
        user = self.scope["user"]
        wanted = await database_sync_to_async(_group_names)(user)
        for group in wanted - self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        for group in self.groups_joined - wanted:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = wanted

    async def inbox_html(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["html"])

    async def permissions_changed(self, event: dict[str, Any]) -> None:
        # A grant or revoke: recompute the groups, then have the page refetch
        # the list so it holds only what the user may now see.
        await self._join_allowed_groups()
        await self.send(text_data='<div id="inbox-resync" hx-swap-oob="true" data-resync="1"></div>')
