"""The relay as it runs in production: its own process, one active, a second standing by."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.utils.module_loading import import_string

from live.groups import operator_group
from live.push import OPS_CHANGED, push
from tests.conftest import needs_postgres, needs_redis
from tests.e2e.conftest import BIN, off_loop, wait_until

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]

AGENT_ID = 424242  # the ops refresh renders without reading the agent


def test_a_standby_relay_takes_over_and_nothing_committed_is_lost(stack_env, tmp_path, settings):
    settings.LIVE_RELAY = "process"  # this process only writes intents, as a web or worker process does
    configured = settings.CHANNEL_LAYERS["default"]  # the layer the stack's processes use, on their prefix
    layer = import_string(configured["BACKEND"])(**{**configured["CONFIG"], "prefix": stack_env["CHANNEL_PREFIX"]})
    paths = [Path(tmp_path / f"relay-{i}.log") for i in range(2)]
    logs = [path.open("w") for path in paths]
    relays = [
        subprocess.Popen(
            [BIN / "python", "manage.py", "live_relay", "--poll", "0.5"],
            env=stack_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for log in logs
    ]

    def leaders() -> list[int]:
        return [i for i, path in enumerate(paths) if "relay: leading" in path.read_text()]

    async def collect(channel: str, want: int) -> list[dict[str, Any]]:
        return [await asyncio.wait_for(layer.receive(channel), timeout=30) for _ in range(want)]

    async def scenario() -> tuple[list[int], list[dict[str, Any]], list[dict[str, Any]], list[int]]:
        channel = await layer.new_channel()
        await layer.group_add(operator_group(AGENT_ID), channel)
        assert await off_loop(wait_until, leaders)
        first = leaders()
        await off_loop(push, OPS_CHANGED, agent_id=AGENT_ID)
        before = await collect(channel, 1)
        # The active relay dies without a word; what commits meanwhile waits in the outbox.
        os.killpg(relays[first[0]].pid, signal.SIGKILL)
        relays[first[0]].wait(timeout=10)
        await off_loop(push, OPS_CHANGED, agent_id=AGENT_ID)
        after = await collect(channel, 1)
        return first, before, after, leaders()

    try:
        first, before, after, now = async_to_sync(scenario)()
    finally:
        for relay in relays:
            if relay.poll() is None:
                os.killpg(relay.pid, signal.SIGTERM)
                relay.wait(timeout=15)
        for log in logs:
            log.close()
    assert len(first) == 1, "one relay leads, the other stands by"
    assert sorted(now) == [0, 1], "the standby took the lead"
    assert 'id="ops-refresh"' in before[0]["html"] and 'id="ops-refresh"' in after[0]["html"]
    # The new leader numbers from a new epoch: a socket that followed the old one resyncs.
    assert after[0]["epoch"] != before[0]["epoch"]
    assert (before[0]["seq"], after[0]["seq"]) == (1, 1)
