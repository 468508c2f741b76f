"""The socket's loop (LiveConsumer._serve): one handler at a time, and nothing left behind when it closes."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import redis.asyncio
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from live import consumers
from live.consumers import CLOSE_TRY_AGAIN, LiveConsumer
from live.layers import LiveLayer
from tests.approvals.test_consumers import close_code, connect
from tests.conftest import needs_redis, user

pytestmark = needs_redis

GROUP = "loop-test"


class _Slow(LiveConsumer):
    """Joins one group at connect; its HTML handler waits for the test to let it finish."""

    events: list[str]
    release: asyncio.Event
    started: asyncio.Event

    async def connect(self) -> None:
        self.groups_joined, self.seen, self.recheck_lock = {GROUP}, {}, asyncio.Lock()
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()
        opened.append(self)

    async def live_html(self, event: dict[str, Any]) -> None:
        self.events.append(f"html {event['html']} starts")
        self.started.set()
        await self.release.wait()
        self.events.append(f"html {event['html']} ends")

    async def disconnect(self, code: int) -> None:
        self.events.append("disconnect")
        await super().disconnect(code)


opened: list[_Slow] = []


def _app(closing: asyncio.Event | None = None) -> Any:
    """The consumer's ASGI app; `closing` is set the moment it takes the client's close off its receive."""
    _Slow.events, _Slow.release, _Slow.started = [], asyncio.Event(), asyncio.Event()
    app = _Slow.as_asgi(audience=lambda user_id, page: set(), check_session=lambda **kw: None)

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        async def receive_watched() -> dict[str, Any]:
            message = await receive()
            if closing is not None and message["type"] == "websocket.disconnect":
                closing.set()
            return message

        await app(scope, receive_watched, send)

    return watched


def test_a_close_waits_for_the_handler_running_and_leaves_no_channel_or_subscription_behind():
    layer = get_channel_layer()
    assert isinstance(layer, LiveLayer)
    opened.clear()

    async def scenario() -> tuple[list[str], bool, int]:
        closing = asyncio.Event()
        socket = WebsocketCommunicator(_app(closing), "/ws/inbox/")
        connected, _ = await socket.connect()
        assert connected
        consumer = opened[-1]
        await layer.group_send(GROUP, {"type": "live.html", "html": "1"})
        await asyncio.wait_for(consumer.started.wait(), timeout=10)
        # The second waits in the socket's queue while the first is handled; the close comes behind both.
        await layer.group_send(GROUP, {"type": "live.html", "html": "2"})
        await socket.send_input({"type": "websocket.disconnect", "code": 1000})
        # The socket's reader has taken the close: from there it goes straight to its turn, so by the time
        # this wakes it has either handled the close beside the running handler (the fault) or is waiting.
        await asyncio.wait_for(closing.wait(), timeout=10)
        consumer.events.append("released")
        consumer.release.set()
        await socket.wait(timeout=10)
        channels = layer._get_layer().channels
        return consumer.events, consumer.channel_name in channels, await _subscribers(consumer.channel_name)

    events, listening, subscribers = async_to_sync(scenario)()
    assert events[:3] == ["html 1 starts", "released", "html 1 ends"]
    assert "disconnect" in events
    # The second frame was taken or not, but never handled beside the close, and never after it.
    assert events[3:] in (["disconnect"], ["html 2 starts", "html 2 ends", "disconnect"])
    assert not listening
    assert subscribers == 0


def test_a_layer_that_fails_under_the_socket_closes_it_to_reconnect_and_frees_its_channel(monkeypatch):
    layer = get_channel_layer()
    assert isinstance(layer, LiveLayer)
    opened.clear()
    real = LiveLayer.receive

    async def receive(self: LiveLayer, channel: str) -> dict[str, Any]:
        message = await real(self, channel)
        if message.get("html") == "fail":
            raise RedisTimeoutError("Timeout reading from socket")
        return message

    monkeypatch.setattr(LiveLayer, "receive", receive)

    async def scenario() -> tuple[Any, bool, bool, int]:
        socket = WebsocketCommunicator(_app(), "/ws/inbox/")
        await socket.connect()
        await layer.group_send(GROUP, {"type": "live.html", "html": "fail"})
        closed = await socket.receive_output(timeout=10)
        await socket.wait(timeout=10)
        loop_layer = layer._get_layer()
        group = loop_layer._get_group_channel_name(GROUP)
        # No disconnect() ran: the socket never left its group itself. The layer forgets it there too, and
        # with its last local member gone, stops reading the group's frames.
        listening = opened[-1].channel_name in loop_layer.channels
        return closed, listening, group in loop_layer.groups, await _subscribers(group)

    closed, listening, grouped, group_subscribers = async_to_sync(scenario)()
    assert closed == {"type": "websocket.close", "code": CLOSE_TRY_AGAIN}
    assert not listening
    assert not grouped
    assert group_subscribers == 0


@pytest.mark.django_db(transaction=True)
def test_a_recheck_the_layer_fails_under_closes_the_socket_to_reconnect(demo, settings, monkeypatch):
    settings.SOCKET_RECHECK_SECONDS = 600
    monkeypatch.setattr(consumers, "recheck_delay", lambda interval, *, first: 0.05)
    reviewer = user("reviewer")

    async def failing_group_add(self: LiveLayer, group: str, channel: str) -> None:
        raise RedisConnectionError("Connection closed by server.")

    async def scenario() -> tuple[bool, int]:
        socket, connected = await connect(reviewer)
        # From here every re-check fails in the layer; before, the timer died and the socket went unchecked.
        monkeypatch.setattr(LiveLayer, "group_add", failing_group_add, raising=False)
        return connected, await close_code(socket)

    assert async_to_sync(scenario)() == (True, CLOSE_TRY_AGAIN)


async def _subscribers(channel: str) -> int:
    raw = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
    try:
        counts = await raw.pubsub_numsub(channel)
        return int(counts[0][1])
    finally:
        await raw.aclose()
