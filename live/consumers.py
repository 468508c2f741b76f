"""The live socket. Thin: authenticate, join the groups the user may see, forward what the relay sends.

Which groups a user may join, and whether a session is still good, belong to the
apps above this one; `config.asgi` hands them in (`LiveConsumer.as_asgi(audience=...,
check_session=...)`).

A socket follows the session it was opened with: it closes when the session ends
(logout, expiry), the user is deactivated or changes password, or the user no
longer holds any right the socket serves. Control messages ask for a re-check at
once (`live.push.SESSIONS_CHECK`, `PERMISSIONS_CHANGED`); a timer re-checks at
the session's expiry and every SOCKET_RECHECK_SECONDS (the first time after a random part of it, so
sockets opened together do not re-check together) for changes that send none.

A socket that has fallen behind sends the HTML messages waiting for it as one frame (`live_html`).

Nothing is lost silently. Every message carries its group's (epoch, seq): a gap
or a new epoch sends the page a resync, and so does a change of groups. If the
channel layer fails under the socket (a Redis timeout or restart) the socket
closes with 1012, which the page's socket library reopens, and a reopened page
fetches its list again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from live.groups import session_tag, user_group
from live.layers import LiveLayer
from live.relay import EPOCH_KEY, seq_key

logger = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 4401  # not (or no longer) authenticated: the page reloads and HTTP decides
CLOSE_NO_RIGHTS = 4403  # authenticated, but nothing left to review, configure or operate
CLOSE_TRY_AGAIN = 1012  # the channel layer failed: reconnect (and resync)
# What a socket's URL may say about its page; the audience decides what it may join for it.
PAGE_KEYS = frozenset({"run"})

# The session row's expiry is compared with "now" in the database: wake just after it.
EXPIRY_MARGIN_SECONDS = 0.05

RESYNC = '<div id="inbox-resync" hx-swap-oob="true" data-resync="1"></div>'

# Sockets opened together (a deploy, a network blip: every page reconnects at once) would re-check
# together, every SOCKET_RECHECK_SECONDS, and every socket's frames waited behind the burst: with 300
# sockets, pushes took 0.1-1.5 s around each one (bench/scale.py push, docs/benchmarks-history.md). So a socket's
# first wait is drawn from the whole interval and the later ones are the interval: the re-checks of a
# burst spread evenly over it and stay spread, and no socket goes longer than the interval unchecked.
# Not a secret: any pseudo-random spread will do.
_spread = random.Random()  # noqa: S311


def recheck_delay(interval: float, *, first: bool) -> float:
    """How long a socket waits for its next periodic re-check: the interval, the first time a random part of it."""
    return interval * _spread.uniform(0.0, 1.0) if first else interval


# Joining and leaving groups takes a Redis connection per call. A burst of sockets (a deploy, a
# network blip: every page reconnects at once) would open one each and exhaust the pool; a few at a
# time, the burst queues here instead and every socket gets in.
_layer_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slots = _layer_slots.get(loop)
    if slots is None:
        slots = _layer_slots[loop] = asyncio.Semaphore(settings.LIVE_LAYER_CONCURRENCY)
    return slots


class SessionStatus(Protocol):
    ok: bool
    expires_at: datetime | None


def seq_marker(group: str, epoch: str, seq: int) -> str:
    """Sent before each message's HTML: a client can count the numbers itself."""
    data = f'data-group="{group}" data-epoch="{epoch}" data-seq="{seq}"'
    return f'<div id="live-seq" hx-swap-oob="true" {data} hidden></div>'


class LiveConsumer(AsyncWebsocketConsumer):
    groups_joined: set[str]
    seen: dict[str, tuple[str, int]]
    recheck_lock: asyncio.Lock
    session_key: str = ""
    auth_hash: str = ""
    watcher: asyncio.Task[None] | None = None
    ended: bool = False

    page: dict[str, str]

    def __init__(
        self,
        *,
        audience: Callable[[int, dict[str, str]], set[str]],
        check_session: Callable[..., SessionStatus],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.audience = audience
        self.check_session = check_session

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # channels' AsyncConsumer.__call__, with its loop replaced (_serve).
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        try:
            self.channel_name = await self.channel_layer.new_channel()
            await self._serve(receive)
        except StopConsumer:
            pass  # the socket closed
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if isinstance(error, OSError) and not isinstance(error, TimeoutError):
                logger.info("live socket: the connection is gone (%r)", error)  # the client left mid-send
            else:
                # Usually the channel layer (a Redis timeout or restart). Closing is what keeps the
                # socket from going deaf: the page reconnects and refetches its list.
                logger.warning("live socket failed; closing it so the page reconnects", exc_info=True)
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN})

    async def _serve(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """Handle what the socket and the channel layer send, one message at a time, until either stops.

        channels' own loop (`await_many_dispatch`) waits on both anew for every message: an `asyncio.wait`
        and a new task per message and socket; in a py-spy profile of a web process serving 50 busy sockets,
        17 % of its samples were that loop's own (docs/benchmarks.md). Here each source has one task for the
        socket's life, and a lock keeps channels' promise that handlers run one at a time. Once a handler
        raises (StopConsumer when the socket closed, or an error), no other runs.
        """
        turn = asyncio.Lock()
        stopped = False

        async def pump(next_message: Callable[[], Awaitable[dict[str, Any]]]) -> None:
            nonlocal stopped
            while True:
                message = await next_message()
                async with turn:
                    if stopped:  # the other source's handler raised while this one waited its turn
                        return
                    try:
                        await self.dispatch(message)
                    except BaseException:
                        stopped = True
                        raise

        tasks = [
            asyncio.create_task(pump(receive)),
            asyncio.create_task(pump(functools.partial(self.channel_layer.receive, self.channel_name))),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # An error wins over a close that came with it: it is the one to log.
            for task in sorted(done, key=lambda task: isinstance(task.exception(), StopConsumer)):
                task.result()
        finally:
            self.ended = True
            self._stop_watching()
            for task in tasks:
                task.cancel()
            # Shielded: a second cancellation (a server shutting down) must not cut the release short.
            await asyncio.shield(self._release(tasks))

    async def _release(self, tasks: list[asyncio.Task[None]]) -> None:
        """After the socket's last handler: its tasks finished, and the layer forgets it whole."""
        await asyncio.gather(*tasks, return_exceptions=True)
        if isinstance(self.channel_layer, LiveLayer):
            try:
                await self.channel_layer.discard_channel(self.channel_name)
            except Exception:
                logger.warning("live: releasing a closed socket's channel failed", exc_info=True)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' own dispatch first hops to the sync thread to close stale database connections,
        # once per message and socket: with hundreds of sockets, every frame waited in line for that
        # one thread. This consumer reaches the database only through database_sync_to_async, which
        # closes them itself, in the thread that uses them.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.groups_joined = set()
        self.seen = {}
        self.recheck_lock = asyncio.Lock()
        user = self.scope.get("user")
        session = self.scope.get("session")
        if user is None or not user.is_authenticated or session is None or not session.session_key:
            await self._end(CLOSE_SESSION_ENDED)
            return
        self.user_id = user.pk
        # What the page is about (`?run=<id>` on a run page): its own groups join the user's.
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.page = {name: values[-1][:32] for name, values in query.items() if name in PAGE_KEYS and values}
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

    async def _recheck(self) -> SessionStatus | None:
        """Validate the session and recompute the groups; close and return None if the socket must end."""
        # The timer and the message handlers run concurrently: one re-check at a time,
        # or an older read could re-join a group a newer one has just left.
        async with self.recheck_lock:
            return await self._recheck_now()

    async def _recheck_now(self) -> SessionStatus | None:
        check = await database_sync_to_async(self.check_session)(
            session_key=self.session_key, user_id=self.user_id, auth_hash=self.auth_hash
        )
        if not check.ok:
            await self._end(CLOSE_SESSION_ENDED)
            return None
        wanted = await database_sync_to_async(self.audience)(self.user_id, self.page)
        if self.ended:  # closed (logout, disconnect) while this re-check read the database
            return None
        # The personal group alone serves nothing: every right is some agent's group.
        if not wanted - {user_group(self.user_id)}:
            await self._end(CLOSE_NO_RIGHTS)
            return None
        # Re-adding every group also refreshes its membership in a layer that expires groups.
        async with _slots():
            for group in wanted:
                await self.channel_layer.group_add(group, self.channel_name)
            for group in self.groups_joined - wanted:
                await self.channel_layer.group_discard(group, self.channel_name)
                self.seen.pop(group, None)
        new = wanted - self.groups_joined
        self.groups_joined = wanted
        if new:
            # Joined first, then read where the numbers stand: a message sent in between is
            # numbered at or below what is read, and what it says the page fetches anyway.
            standing = await database_sync_to_async(cache.get_many)([EPOCH_KEY, *(seq_key(g) for g in new)])
            if (epoch := standing.get(EPOCH_KEY)) is not None:
                for group in new:
                    mark = standing.get(seq_key(group))
                    # A number from an older epoch says nothing now: this epoch has not used the group.
                    self.seen[group] = (str(mark[0]), int(mark[1])) if mark and mark[0] == epoch else (epoch, 0)
        return check

    async def _watch(self, expires_at: datetime | None) -> None:
        # One timer for both: the session's expiry, and the periodic safety net.
        # An extended session is picked up by the re-check and the next wait follows it.
        first = True
        while not self.ended:
            delay = recheck_delay(float(settings.SOCKET_RECHECK_SECONDS), first=first)
            first = False
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
            except Exception:
                # The channel layer (Redis) failed under the re-check: a socket that cannot be kept to
                # its rights closes, and the page reconnects and refetches its list.
                logger.warning("socket re-check failed; closing it so the page reconnects", exc_info=True)
                with contextlib.suppress(Exception):
                    await self._end(CLOSE_TRY_AGAIN)
                return
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
        async with _slots():
            for group in self.groups_joined:
                with contextlib.suppress(Exception):  # the socket is going away either way
                    await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = set()

    async def _send_resync(self) -> None:
        await self.send(text_data=RESYNC)

    def _sequence(self, event: dict[str, Any]) -> str | None:
        """Track the group's numbers. None: drop it (the page already has it); RESYNC on a gap or a new epoch."""
        group, epoch, seq = event.get("group"), event.get("epoch"), event.get("seq")
        if group is None or epoch is None or seq is None:
            return ""
        last = self.seen.get(group)
        self.seen[group] = (epoch, seq)
        if last is None:
            return ""
        if last[0] == epoch and seq <= last[1]:
            self.seen[group] = last
            return None  # already covered by what the page fetched when it joined
        if last[0] != epoch or seq != last[1] + 1:
            logger.info("live: %s jumped from %s to %s; resync", group, last, (epoch, seq))
            return RESYNC
        return ""

    async def _in_sequence(self, event: dict[str, Any]) -> bool:
        """As `_sequence`, sending the resync itself. False: drop it."""
        before = self._sequence(event)
        if before:
            await self.send(text_data=before)
        return before is not None

    def _framed(self, event: dict[str, Any]) -> str:
        """What the page gets for one HTML message: any resync, its number, its HTML ('' if dropped)."""
        before = self._sequence(event)
        if before is None:
            return ""
        marker = seq_marker(event["group"], event["epoch"], event["seq"]) if "seq" in event else ""
        return before + marker + event["html"]

    async def live_html(self, event: dict[str, Any]) -> None:
        if self.ended:
            return
        # One event loop serves every socket of the process. When it falls behind (a thousand sockets,
        # a frame each several times a second), messages wait in the socket's queue. They are taken
        # together, and the HTML ones in a row go out as one frame: the loop pays one send (its
        # dispatch, its websocket frame, its write) where it paid one per message. A socket that keeps
        # up finds nothing waiting and sends each at once. Control messages keep their place.
        waiting = (
            self.channel_layer.receive_ready(self.channel_name) if isinstance(self.channel_layer, LiveLayer) else []
        )
        text = ""
        for message in [event, *waiting]:
            if message.get("type") == "live.html":
                text += self._framed(message)
                continue
            if text:
                await self.send(text_data=text)
                text = ""
            await self.dispatch(message)
            if self.ended:
                return
        if text:
            await self.send(text_data=text)

    async def live_layer_lost(self, event: dict[str, Any]) -> None:
        # The layer could not read from Redis (live.layers): frames may have been published
        # meanwhile. Closing with 1012 has the page reconnect and fetch its list again.
        if not self.ended:
            await self._end(CLOSE_TRY_AGAIN)

    async def session_check(self, event: dict[str, Any]) -> None:
        # Logout, deactivation, a password change: sent on commit to the user's group.
        if self.ended or not await self._in_sequence(event):
            return
        if event.get("ended") == session_tag(self.session_key):
            await self._end(CLOSE_SESSION_ENDED)
            return
        await self._recheck()

    async def permissions_changed(self, event: dict[str, Any]) -> None:
        # A grant or revoke: recompute the groups (closing if none is left), then have
        # the page refetch the list so it holds only what the user may now see.
        if self.ended or not await self._in_sequence(event):
            return
        if await self._recheck() is not None:
            await self._send_resync()
