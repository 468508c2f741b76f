"""The reviewer's live inbox socket. Thin: authenticate, join allowed groups, forward HTML.

A socket follows the session it was opened with: it closes when the session ends
(logout, expiry), the user is deactivated or changes password, or the user no
longer holds any right the socket serves. Signals ask for a re-check at once
(approvals.signals, permissions_changed); a timer re-checks at the session's expiry
and every SOCKET_RECHECK_SECONDS for changes that send no signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from accounts.selectors import SessionCheck, session_still_valid
from agents.selectors import agents_with_perm
from approvals.broadcast import agent_group, operator_group, session_tag, user_group
from approvals.selectors import reviewable_groups

logger = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 4401  # not (or no longer) authenticated: the page reloads and HTTP decides
CLOSE_NO_RIGHTS = 4403  # authenticated, but nothing left to review, configure or operate

# The session row's expiry is compared with "now" in the database: wake just after it.
EXPIRY_MARGIN_SECONDS = 0.05


def _group_names(user_id: int) -> set[str]:
    # A fresh row each time: the user in the scope is as of the handshake (is_superuser may have changed).
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    if user is None:
        return set()
    by_tier = reviewable_groups(user)
    names = {agent_group(agent_id, tier) for tier, ids in by_tier.items() for agent_id in ids}
    member_of = list(user.groups.values_list("pk", flat=True))
    names |= {agent_group(agent_id, 1, gid) for agent_id in by_tier[1] for gid in member_of}
    names |= {
        operator_group(agent_id) for agent_id in agents_with_perm(user, "operate_agent").values_list("pk", flat=True)
    }
    names.add(user_group(user.pk))
    return names


def _has_rights(names: set[str]) -> bool:
    # The personal group alone serves nothing: every right is some agent's group.
    return any(name.startswith(("reviewers.agent.", "operators.agent.")) for name in names)


class InboxConsumer(AsyncWebsocketConsumer):
    groups_joined: set[str]
    recheck_lock: asyncio.Lock
    session_key: str = ""
    auth_hash: str = ""
    watcher: asyncio.Task[None] | None = None
    ended: bool = False

    async def connect(self) -> None:
        self.groups_joined = set()
        self.recheck_lock = asyncio.Lock()
        user = self.scope.get("user")
        session = self.scope.get("session")
        if user is None or not user.is_authenticated or session is None or not session.session_key:
            await self._end(CLOSE_SESSION_ENDED)
            return
        self.user_id = user.pk
        self.session_key = session.session_key
        # AuthMiddleware has just checked the session's hash against this one.
        self.auth_hash = user.get_session_auth_hash()
        check = await self._recheck()
        if check is None:
            return
        await self.accept()
        self.watcher = asyncio.create_task(self._watch(check.expires_at))

    async def disconnect(self, code: int) -> None:
        self.ended = True
        self._stop_watching()
        await self._leave_groups()

    async def _recheck(self) -> SessionCheck | None:
        """Validate the session and recompute the groups; close and return None if the socket must end."""
        # The timer and the message handlers run concurrently: one re-check at a time,
        # or an older read could re-join a group a newer one has just left.
        async with self.recheck_lock:
            return await self._recheck_now()

    async def _recheck_now(self) -> SessionCheck | None:
        check = await database_sync_to_async(session_still_valid)(
            session_key=self.session_key, user_id=self.user_id, auth_hash=self.auth_hash
        )
        if not check.ok:
            await self._end(CLOSE_SESSION_ENDED)
            return None
        wanted = await database_sync_to_async(_group_names)(self.user_id)
        if self.ended:  # closed (logout, disconnect) while this re-check read the database
            return None
        if not _has_rights(wanted):
            await self._end(CLOSE_NO_RIGHTS)
            return None
        # Re-adding every group also refreshes its membership in a layer that expires groups.
        for group in wanted:
            await self.channel_layer.group_add(group, self.channel_name)
        for group in self.groups_joined - wanted:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = wanted
        return check

    async def _watch(self, expires_at: datetime | None) -> None:
        # One timer for both: the session's expiry, and the periodic safety net.
        # An extended session is picked up by the re-check and the next wait follows it.
        while not self.ended:
            delay = float(settings.SOCKET_RECHECK_SECONDS)
            if expires_at is not None:
                until_expiry = (expires_at - timezone.now()).total_seconds() + EXPIRY_MARGIN_SECONDS
                delay = max(min(delay, until_expiry), 0)
            await asyncio.sleep(delay)
            before = set(self.groups_joined)
            try:
                check = await self._recheck()
            except (OperationalError, InterfaceError):
                # Transient (a lost connection, a restart): try again at the next interval
                # rather than let the timer die and leave the socket unchecked.
                logger.warning("socket re-check failed, retrying", exc_info=True)
                expires_at = None
                continue
            if check is None:
                return
            if self.groups_joined != before:
                await self._send_resync()
            expires_at = check.expires_at

    async def _end(self, code: int) -> None:
        if self.ended:
            return
        self.ended = True
        self._stop_watching()
        await self._leave_groups()
        await self.close(code=code)

    def _stop_watching(self) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()

    async def _leave_groups(self) -> None:
        for group in self.groups_joined:
            with contextlib.suppress(Exception):  # the socket is going away either way
                await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = set()

    async def _send_resync(self) -> None:
        await self.send(text_data='<div id="inbox-resync" hx-swap-oob="true" data-resync="1"></div>')

    async def inbox_html(self, event: dict[str, Any]) -> None:
        if not self.ended:
            await self.send(text_data=event["html"])

    async def session_check(self, event: dict[str, Any]) -> None:
        # Logout, deactivation, a password change: sent on commit to the user's group.
        if self.ended:
            return
        if event.get("ended") == session_tag(self.session_key):
            await self._end(CLOSE_SESSION_ENDED)
            return
        await self._recheck()

    async def permissions_changed(self, event: dict[str, Any]) -> None:
        # A grant or revoke: recompute the groups (closing if none is left), then have
        # the page refetch the list so it holds only what the user may now see.
        if not self.ended and await self._recheck() is not None:
            await self._send_resync()
