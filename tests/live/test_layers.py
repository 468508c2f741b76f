"""The pub/sub channel layer (live.layers): one PUBLISH per frame and group, and a failed read is never silent."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
import redis
import redis.asyncio
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError

from live.consumers import CLOSE_TRY_AGAIN
from live.groups import user_group
from live.layers import LAYER_LOST, LiveLayer
from tests.approvals.test_consumers import close_code, connect
from tests.conftest import needs_redis, user

pytestmark = needs_redis


def _layer() -> LiveLayer:
    return LiveLayer(hosts=[os.environ["REDIS_URL"]], prefix=f"t-{uuid.uuid4().hex[:8]}")


def _publishes() -> int:
    stats = redis.Redis.from_url(os.environ["REDIS_URL"]).info("commandstats")
    return int(stats.get("cmdstat_publish", {}).get("calls", 0))


def test_a_frame_to_a_group_is_one_publish_however_many_sockets_listen():
    layer = _layer()

    async def scenario() -> tuple[list[dict], int]:
        channels = [await layer.new_channel() for _ in range(300)]
        for channel in channels:
            await layer.group_add("inbox", channel)
        before = _publishes()
        await layer.group_send("inbox", {"type": "live.html", "html": "<i></i>"})
        got = [await asyncio.wait_for(layer.receive(channel), timeout=10) for channel in channels]
        sent = _publishes() - before
        await layer.flush()
        return got, sent

    got, sent = async_to_sync(scenario)()
    assert got == [{"type": "live.html", "html": "<i></i>"}] * 300
    assert sent == 1


def test_what_waits_for_a_socket_is_taken_at_once_in_order_and_only_what_waits():
    layer = _layer()

    async def scenario() -> tuple[list[dict], list[dict], list[dict]]:
        channel, other = await layer.new_channel(), await layer.new_channel()
        for member in (channel, other):
            await layer.group_add("inbox", member)
        for n in range(5):
            await layer.group_send("inbox", {"type": "live.html", "html": f"<i>{n}</i>"})
        # The layer's reader puts each message in every member's queue in one go: once the other socket
        # has received all five, all five wait for this one. Its queue is its own: the other still got them.
        theirs = [await asyncio.wait_for(layer.receive(other), timeout=10) for _ in range(5)]
        ready = layer.receive_ready(channel)
        empty = layer.receive_ready(channel)
        await layer.flush()
        return ready, theirs, empty

    ready, theirs, empty = async_to_sync(scenario)()
    assert ready == theirs == [{"type": "live.html", "html": f"<i>{n}</i>"} for n in range(5)]
    assert empty == []


def test_a_failed_read_from_redis_tells_every_local_socket():
    layer = _layer()

    async def scenario() -> list[dict]:
        channels = [await layer.new_channel() for _ in range(3)]
        await layer.group_add("inbox", channels[0])
        shard = layer._get_layer()._shards[0]
        real = shard._pubsub.get_message
        failed = []

        async def fail_once(*args, **kwargs):
            if not failed:
                failed.append(True)
                raise RedisConnectionError("Connection closed by server.")
            return await real(*args, **kwargs)

        shard._pubsub.get_message = fail_once
        got = [await asyncio.wait_for(layer.receive(channel), timeout=10) for channel in channels]
        # And it goes on reading afterwards: a later frame still arrives.
        await layer.group_send("inbox", {"type": "live.html", "html": "after"})
        got.append(await asyncio.wait_for(layer.receive(channels[0]), timeout=10))
        await layer.flush()
        return got

    got = async_to_sync(scenario)()
    assert got == [LAYER_LOST, LAYER_LOST, LAYER_LOST, {"type": "live.html", "html": "after"}]


@pytest.mark.django_db(transaction=True)
def test_a_socket_told_the_layer_lost_redis_closes_to_resync(demo):
    reviewer = user("reviewer")

    async def scenario() -> tuple[bool, int]:
        socket, connected = await connect(reviewer)
        await get_channel_layer().group_send(user_group(reviewer.pk), LAYER_LOST)
        return connected, await close_code(socket)

    connected, code = async_to_sync(scenario)()
    assert connected and code == CLOSE_TRY_AGAIN


def test_a_frame_is_deserialised_once_per_process_however_many_local_sockets_get_it():
    layer = _layer()
    calls = []
    real = layer._serializer.deserialize

    def counting(message: bytes) -> dict:
        calls.append(message)
        return real(message)

    layer._serializer.deserialize = counting

    async def scenario() -> list[dict]:
        channels = [await layer.new_channel() for _ in range(50)]
        for channel in channels:
            await layer.group_add("inbox", channel)
        await layer.group_send("inbox", {"type": "live.html", "html": "<i></i>", "seq": 1})
        got = [await asyncio.wait_for(layer.receive(channel), timeout=10) for channel in channels]
        await layer.flush()
        return got

    got = async_to_sync(scenario)()
    assert got == [{"type": "live.html", "html": "<i></i>", "seq": 1}] * 50
    assert len(calls) == 1


def _as_read(data: bytes) -> dict | None:
    """What the layer makes of `data`: a message, or None if it is not one."""
    try:
        message = _layer().deserialize(data)
    except Exception:
        return None
    return message if isinstance(message, dict) and isinstance(message.get("type"), str) else None


_small = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what msgpack can hold


@given(
    frame=st.one_of(
        st.binary(max_size=64),
        st.builds(  # well-formed msgpack that is not a message: a list, a map without a "type", a number
            lambda value: _layer().serialize(value),
            st.one_of(st.lists(_small), st.dictionaries(st.text(max_size=5), _small), _small),
        ),
    )
)
@hypothesis_settings(max_examples=20, deadline=None)
def test_a_frame_the_layer_cannot_read_resyncs_the_sockets_it_was_for_and_the_next_still_arrives(frame):
    layer = _layer()

    async def scenario() -> list[dict]:
        channels = [await layer.new_channel() for _ in range(3)]
        for channel in channels:
            await layer.group_add("inbox", channel)
        elsewhere = await layer.new_channel()
        await layer.group_add("elsewhere", elsewhere)
        # Anything may be published on Redis: a stranger's client, another version of the layer.
        raw = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
        await raw.publish(layer._get_layer()._get_group_channel_name("inbox"), frame)
        await raw.aclose()
        got = [await asyncio.wait_for(layer.receive(channel), timeout=10) for channel in channels]
        await layer.group_send("inbox", {"type": "live.html", "html": "after"})
        got.append(await asyncio.wait_for(layer.receive(channels[0]), timeout=10))
        # A socket the frame was not for heard nothing of it, and its own frames still come.
        got.extend(layer.receive_ready(elsewhere))
        await layer.group_send("elsewhere", {"type": "live.html", "html": "theirs"})
        got.append(await asyncio.wait_for(layer.receive(elsewhere), timeout=10))
        await layer.flush()
        return got

    read = _as_read(frame)
    after = [{"type": "live.html", "html": "after"}, {"type": "live.html", "html": "theirs"}]
    assert async_to_sync(scenario)() == [read or LAYER_LOST] * 3 + after
