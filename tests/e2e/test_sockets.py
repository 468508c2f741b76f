"""Many live sockets on one real daphne process: a burst all gets in, and every socket gets every push, in order."""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import pytest
import redis
import websockets
from asgiref.sync import async_to_sync
from django.core.cache import cache

from agents.selectors import agents_with_perm
from live.groups import operator_group
from live.models import Push
from live.push import OPS_CHANGED, push
from live.relay import seq_key
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.conftest import browser_session, off_loop, wait_until

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]

SOCKETS = 400  # past the ~250 where a burst used to exhaust the Redis pool ("Too many connections")
PUSHES = 10  # repeats of one event: the relay may coalesce some, never lose one
MARKER = re.compile(r'id="live-seq"[^>]*data-group="([^"]+)" data-epoch="([^"]+)" data-seq="(\d+)"')


def test_a_burst_of_sockets_all_get_in_and_each_counts_every_push(demo, stack, settings):
    settings.LIVE_RELAY = "process"  # this process writes intents; the stack's relay delivers them
    operator = user("operator")
    agent = agents_with_perm(operator, "operate_agent").order_by("pk").first()
    group = operator_group(agent.pk)
    session = browser_session(stack.base, "operator").cookies["sessionid"]
    url = stack.base.replace("http://", "ws://") + "/ws/inbox/"
    headers = {"Cookie": f"sessionid={session}", "Origin": stack.base}

    async def scenario() -> tuple[tuple[str, int], list[list[tuple[str, int]]]]:
        sockets = await asyncio.gather(
            *(websockets.connect(url, additional_headers=headers, open_timeout=60) for _ in range(SOCKETS))
        )
        try:
            for _ in range(PUSHES):
                await off_loop(push, OPS_CHANGED, agent_id=agent.pk)
            # Sent once the outbox is empty (rows go in the transaction that sent them). Repeats of one
            # event may have been coalesced: the relay's own count says how many frames there were.
            assert await off_loop(wait_until, lambda: not Push.objects.exists())
            last = await off_loop(cache.get, seq_key(group))
            return last, await asyncio.gather(*(_numbers(socket, group, last) for socket in sockets))
        finally:
            await asyncio.gather(*(socket.close() for socket in sockets))

    (epoch, last), seen = async_to_sync(scenario)()
    assert len(seen) == SOCKETS
    for numbers in seen:
        assert {e for e, _ in numbers} == {epoch}
        seqs = [seq for _, seq in numbers]
        assert seqs == list(range(seqs[0], last + 1)), seqs  # none lost, none out of order


async def _numbers(socket: Any, group: str, last: tuple[str, int]) -> list[tuple[str, int]]:
    """The (epoch, seq) of each frame for `group`, up to the relay's last one."""
    numbers: list[tuple[str, int]] = []
    while not numbers or numbers[-1] != last:
        frame = await asyncio.wait_for(socket.recv(), timeout=60)
        for found_group, epoch, seq in MARKER.findall(frame):
            if found_group == group:
                numbers.append((epoch, int(seq)))
    return numbers


def test_an_idle_socket_outlives_the_redis_socket_timeout_and_still_gets_pushes(demo, stack, stack_env, settings):
    """An idle socket is not a dead one: once, a Redis read timing out on an idle layer killed the socket
    (1011) and its pushes were lost. It idles past the stack's Redis socket timeout, then gets a push."""
    settings.LIVE_RELAY = "process"
    operator = user("operator")
    agent = agents_with_perm(operator, "operate_agent").order_by("pk").first()
    session = browser_session(stack.base, "operator").cookies["sessionid"]
    url = stack.base.replace("http://", "ws://") + "/ws/inbox/"
    headers = {"Cookie": f"sessionid={session}", "Origin": stack.base}

    redis_server = redis.Redis.from_url(os.environ["REDIS_URL"])
    timeout = int(stack_env["CHANNEL_REDIS_SOCKET_TIMEOUT"])

    def subscribers() -> dict[str, int]:
        """Redis's view of each subscribed connection: its id and how long it has been idle (s)."""
        return {c["id"]: int(c["idle"]) for c in redis_server.client_list() if int(c.get("sub", 0)) > 0}

    before = set(subscribers())

    def web_subscription_idle_past_the_timeout() -> bool:
        # The web process subscribes when this socket opens; Redis says when it has sat idle that long.
        mine = {cid: idle for cid, idle in subscribers().items() if cid not in before}
        return bool(mine) and all(idle > timeout for idle in mine.values())

    async def scenario() -> list[str]:
        async with websockets.connect(url, additional_headers=headers) as socket:
            assert await off_loop(wait_until, web_subscription_idle_past_the_timeout, 60)
            await off_loop(push, OPS_CHANGED, agent_id=agent.pk)
            frames = [await asyncio.wait_for(socket.recv(), timeout=30)]
            while 'id="ops-refresh"' not in frames[-1]:  # a resync may come first (a new relay epoch)
                frames.append(await asyncio.wait_for(socket.recv(), timeout=30))
            return frames

    frames = async_to_sync(scenario)()  # a closed socket raises ConnectionClosed here
    assert 'id="ops-refresh"' in frames[-1]
