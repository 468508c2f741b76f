"""The outbox and the relay: pushes commit with their change, are delivered once per group, and are numbered."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db import connection, transaction
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from live import relay as relay_module
from live.consumers import RESYNC, LiveConsumer
from live.layers import LiveLayer
from live.models import Push
from live.push import push, push_many
from live.relay import Relay, SendLoop, html, renders, seq_key
from tests.conftest import needs_postgres, needs_redis
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TEST_EVENT = "test.thing"
calls: list[list[dict[str, Any]]] = []


@renders(TEST_EVENT)
def _render_thing(payloads: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    calls.append(payloads)
    return [(f"things.{p['group']}", html(f"<p>{p['n']}</p>")) for p in payloads]


@pytest.fixture(autouse=True)
def _fresh(settings: Any) -> Any:
    calls.clear()
    # The relay is a separate process here: this test drains it by hand.
    settings.LIVE_RELAY = "process"
    yield


# What each listening channel has received, read by one task per channel that never stops: the
# pub/sub layer drops a channel whose receive is cancelled (it takes that for its consumer leaving).
_inboxes: dict[str, asyncio.Queue[dict[str, Any]]] = {}
_readers: list[asyncio.Task[None]] = []


async def listen(group: str) -> str:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    inbox = _inboxes[channel] = asyncio.Queue()

    async def read() -> None:
        while True:
            await inbox.put(await layer.receive(channel))

    _readers.append(asyncio.ensure_future(read()))
    return channel


async def received(channel: str) -> list[dict[str, Any]]:
    """What reached the channel so far: a barrier sent to it now arrives after everything sent before."""
    barrier = {"type": "barrier", "id": len(_readers) + id(channel)}
    await get_channel_layer().send(channel, barrier)
    out = []
    while (message := await asyncio.wait_for(_inboxes[channel].get(), timeout=10)) != barrier:
        out.append(message)
    return out


def run(scenario: Any) -> Any:
    # One event loop for the whole test: the channel layer's queues belong to the loop that made them.
    # Sync work runs in its thread and its sends come back onto this loop (asgiref).
    async def scenario_then_stop() -> Any:
        try:
            return await scenario()
        finally:
            for reader in _readers:
                reader.cancel()
            _readers.clear()
            _inboxes.clear()

    return async_to_sync(scenario_then_stop)()


sync = database_sync_to_async


def test_a_change_that_rolls_back_pushes_nothing():
    def change() -> None:
        with pytest.raises(RuntimeError), transaction.atomic():
            push(TEST_EVENT, group="a", n=1)
            raise RuntimeError("the change fails")

    async def scenario() -> tuple[int, int, list[Any]]:
        channel = await listen("things.a")
        await sync(change)()
        return await sync(Push.objects.count)(), await sync(Relay().drain)(), await received(channel)

    assert run(scenario) == (0, 0, [])


def test_the_intent_commits_with_the_change_and_is_delivered_after():
    def change() -> int:
        with transaction.atomic():
            push(TEST_EVENT, group="a", n=1)
        committed = Push.objects.count()
        try:
            with transaction.atomic():
                push(TEST_EVENT, group="a", n=2)
                raise RuntimeError("the change fails")
        except RuntimeError:
            pass
        return committed if Push.objects.count() == committed else -1  # a rolled-back change leaves no intent

    async def scenario() -> Any:
        channel = await listen("things.a")
        inside = await sync(change)()
        before = await received(channel)  # nothing sent by the process that made the change
        drained = await sync(Relay().drain)()
        return inside, before, drained, await received(channel), await sync(Push.objects.count)()

    inside, before, drained, after, left = run(scenario)
    assert (inside, before, drained, left) == (1, [], 1, 0)
    assert [m["html"] for m in after] == ["<p>1</p>"]


def test_repeats_are_coalesced_and_rendered_once_per_batch():
    async def scenario() -> Any:
        a, b = await listen("things.a"), await listen("things.b")
        await sync(push_many)(TEST_EVENT, [{"group": "a", "n": 1}] * 5 + [{"group": "b", "n": 2}])
        await sync(Relay().drain)()
        return await received(a), await received(b)

    to_a, to_b = run(scenario)
    assert len(calls) == 1 and len(calls[0]) == 2
    assert [m["html"] for m in to_a] == ["<p>1</p>"]
    assert [m["html"] for m in to_b] == ["<p>2</p>"]


def test_numbers_rise_by_one_per_group_and_are_kept_where_a_new_socket_reads_them():
    relay = Relay()

    def pushes() -> None:
        for n in range(3):
            push(TEST_EVENT, group="a", n=n)
            relay.drain()
        push(TEST_EVENT, group="b", n=9)
        relay.drain()

    async def scenario() -> Any:
        a, b = await listen("things.a"), await listen("things.b")
        await sync(pushes)()
        return await received(a), await received(b)

    to_a, to_b = run(scenario)
    assert [m["seq"] for m in to_a] == [1, 2, 3]
    assert [m["seq"] for m in to_b] == [1]
    assert {m["epoch"] for m in to_a + to_b} == {relay.epoch}
    assert cache.get(seq_key("things.a")) == (relay.epoch, 3)


def test_a_failed_send_keeps_the_intents_and_starts_a_new_epoch(monkeypatch):
    relay = Relay()
    real_send = relay_module._send_all

    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("redis went away")

    def attempt() -> tuple[str, int]:
        push(TEST_EVENT, group="a", n=1)
        relay.drain()
        first_epoch = relay.epoch
        monkeypatch.setattr(relay_module, "_send_all", refuse)
        push(TEST_EVENT, group="a", n=2)
        with pytest.raises(ConnectionError):
            relay.drain()
        left = Push.objects.count()  # still there for the next try
        monkeypatch.setattr(relay_module, "_send_all", real_send)
        relay.drain()
        return first_epoch, left

    async def scenario() -> Any:
        channel = await listen("things.a")
        return await sync(attempt)(), await received(channel)

    (first_epoch, left), messages = run(scenario)
    assert left == 1
    assert [m["html"] for m in messages] == ["<p>1</p>", "<p>2</p>"]
    assert messages[1]["epoch"] != first_epoch  # a socket that had part of the failed batch resyncs


@renders("test.broken")
def _broken(payloads: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    raise ValueError("a template bug")


def test_a_renderer_that_fails_starts_a_new_epoch_and_the_others_still_go():
    relay = Relay()

    def pushes() -> tuple[str, int, int]:
        push(TEST_EVENT, group="a", n=1)
        relay.drain()
        before = relay.epoch
        push("test.broken", x=1)
        push(TEST_EVENT, group="a", n=2)
        return before, relay.drain(), Push.objects.count()

    async def scenario() -> Any:
        channel = await listen("things.a")
        return await sync(pushes)(), await received(channel)

    (before, drained, left), messages = run(scenario)
    assert (drained, left) == (2, 0)  # a poison intent does not block the outbox
    assert messages[-1]["html"] == "<p>2</p>" and messages[-1]["epoch"] != before


def test_inline_mode_delivers_on_commit(settings):
    settings.LIVE_RELAY = "inline"

    def change() -> None:
        with transaction.atomic():
            push(TEST_EVENT, group="a", n=7)

    async def scenario() -> Any:
        channel = await listen("things.a")
        await sync(change)()
        return await received(channel)

    assert [m["html"] for m in run(scenario)] == ["<p>7</p>"]


# --- The socket's side: gaps and new epochs become a resync -----------------------


class _Waiting(LiveLayer):
    """The production layer's one read the socket makes of its queue, over a list (no Redis)."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: list[dict[str, Any]] = []

    def receive_ready(self, channel: str) -> list[dict[str, Any]]:
        ready, self.queue = self.queue, []
        return ready


class _Marking(LiveConsumer):
    async def test_mark(self, event: dict[str, Any]) -> None:  # a control message: it says where it was handled
        await self.send(text_data=f"<mark {event['n']}>")


def _consumer(layer: LiveLayer | None = None) -> tuple[LiveConsumer, list[str]]:
    consumer = _Marking(audience=lambda user_id: set(), check_session=lambda **kw: None)
    consumer.channel_layer = layer
    consumer.channel_name = "specific.test"
    consumer.seen = {}
    consumer.ended = False
    sent: list[str] = []

    async def send(text_data: str) -> None:
        sent.append(text_data)

    consumer.send = send  # type: ignore[method-assign]
    return consumer, sent


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["g1", "g2"]), st.booleans(), st.booleans()),  # group, delivered, new epoch first
        max_size=30,
    )
)
def test_a_socket_resyncs_exactly_when_it_missed_something(stream):
    consumer, sent = _consumer()
    seq: dict[str, int] = {}
    epoch = {"g1": "e0", "g2": "e0"}
    missed = {"g1": False, "g2": False}
    started = {"g1": False, "g2": False}
    expected = 0
    for step, (group, delivered, rotate) in enumerate(stream):
        if rotate:
            epoch[group] = f"e{step + 1}"
            seq[group] = 0
            missed[group] = True
        seq[group] = seq.get(group, 0) + 1
        if not delivered:
            missed[group] = True
            continue
        event = {"type": "live.html", "group": group, "epoch": epoch[group], "seq": seq[group], "html": "<p></p>"}
        if started[group] and missed[group]:
            expected += 1
        started[group] = True
        missed[group] = False
        asyncio.run(consumer.live_html(event))
    assert sum(text.count(RESYNC) for text in sent) == expected


def test_a_number_the_socket_already_covers_is_dropped():
    consumer, sent = _consumer()
    consumer.seen["g"] = ("e", 5)
    asyncio.run(consumer.live_html({"type": "live.html", "group": "g", "epoch": "e", "seq": 5, "html": "<p>old</p>"}))
    asyncio.run(consumer.live_html({"type": "live.html", "group": "g", "epoch": "e", "seq": 6, "html": "<p>new</p>"}))
    assert len(sent) == 1 and sent[0].endswith("<p>new</p>") and 'data-seq="6"' in sent[0]


# What reaches a socket: HTML of two groups, numbered with repeats, gaps and new epochs, and control messages.
socket_stream = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["g1", "g2"]), st.sampled_from(["e1", "e2"]), st.integers(1, 6)),
        st.integers(0, 99),  # a control message
    ),
    max_size=30,
)


def _message(item: Any) -> dict[str, Any]:
    if isinstance(item, int):
        return {"type": "test.mark", "n": item}
    group, epoch, seq = item
    return {"type": "live.html", "group": group, "epoch": epoch, "seq": seq, "html": f"<p>{group}{epoch}{seq}</p>"}


@hypothesis_settings(max_examples=300, deadline=None)
@given(socket_stream)
def test_a_socket_behind_sends_what_waits_as_one_frame_the_page_sees_the_same(stream):
    messages = [_message(item) for item in stream]
    # Keeping up: each message handled as it comes, nothing waiting behind it.
    one_by_one, sent_one_by_one = _consumer(_Waiting())
    for message in messages:
        asyncio.run(one_by_one.dispatch(message))
    # Behind: the first handled while all the others wait in the socket's queue (as the layer does it).
    layer = _Waiting()
    behind, sent_behind = _consumer(layer)
    layer.queue = list(messages)
    while layer.queue:  # channels' loop: receive one, dispatch it
        asyncio.run(behind.dispatch(layer.queue.pop(0)))

    def joined(sent: list[str]) -> list[str]:  # the HTML sent between two control messages, as one frame
        out: list[str] = []
        for text in sent:
            if out and not text.startswith("<mark") and not out[-1].startswith("<mark"):
                out[-1] += text
            else:
                out.append(text)
        return out

    # The same HTML, resyncs and numbers, in the same order, control messages in their places: one frame
    # per run of HTML where keeping up sent one (or two, with a resync) per message.
    assert sent_behind == joined(sent_one_by_one)
    assert behind.seen == one_by_one.seen


frames_strategy = st.lists(
    st.tuples(
        st.sampled_from(["g1", "g2", "g3"]),
        st.one_of(
            st.builds(html, st.text(alphabet="abc<>/", max_size=5)),
            st.builds(lambda: {"type": "session.check", "ended": "x"}),
        ),
    ),
    max_size=30,
)


@given(frames_strategy)
@hypothesis_settings(max_examples=200, deadline=None)
def test_a_batch_sends_each_group_one_frame_of_html_between_its_control_messages(frames):
    out = relay_module.merged(frames)
    for group in ("g1", "g2", "g3"):
        sent = [m for g, m in frames if g == group]
        got = [m for g, m in out if g == group]

        # The same HTML in the same order, and the control messages where they were.
        def runs(messages):
            joined, current = [], None
            for m in messages:
                if m["type"] == "live.html":
                    current = (current or "") + m["html"]
                else:
                    if current is not None:
                        joined.append(html(current))
                    joined.append(m)
                    current = None
            return joined + ([html(current)] if current is not None else [])

        assert got == runs(sent)
        # Never two HTML frames in a row for one group.
        assert all(not (a["type"] == b["type"] == "live.html") for a, b in itertools.pairwise(got))


def test_the_relay_process_sends_every_batch_on_one_kept_event_loop():
    # The channel layer keeps its Redis connections per loop: a new loop per batch reconnected each time.
    loops: list[asyncio.AbstractEventLoop] = []

    async def note() -> None:
        loops.append(asyncio.get_running_loop())

    send = SendLoop()
    for _ in range(3):
        send(note)
    assert len(loops) == 3 and all(loop is loops[0] for loop in loops)


def test_a_failed_send_reaches_the_relay_so_the_batch_is_retried():
    async def fail() -> None:
        raise ConnectionError("redis went away")

    send = SendLoop()
    with pytest.raises(ConnectionError):
        send(fail)

    async def fine() -> None:
        pass

    send(fine)  # the loop outlives a failed send


@needs_redis  # the relay process's loop sends from a thread of its own: the in-memory layer is not for that
def test_the_relay_process_sends_a_stream_of_changes_in_batches_and_a_lone_one_at_once():
    stop = threading.Event()
    # A long gather, so that the changes below fall inside it however slow the machine is.
    relay = threading.Thread(target=relay_module.run_forever, args=(stop,), kwargs={"gather_seconds": 1.5})

    def change(n: int) -> None:
        with transaction.atomic():
            push(TEST_EVENT, group="g", n=n)

    async def next_frame(channel: str) -> str:
        while (message := await asyncio.wait_for(_inboxes[channel].get(), timeout=20))["type"] != "live.html":
            pass
        return message["html"]

    async def scenario() -> list[str]:
        channel = await listen("things.g")
        relay.start()
        await sync(change)(1)
        first = await next_frame(channel)  # after a quiet spell: sent on its own, not held for company
        for n in (2, 3, 4):
            await sync(change)(n)
            await asyncio.sleep(0.1)  # apart: without the gather each would be a frame of its own
        return [first, await next_frame(channel)]

    try:
        frames = run(scenario)
    finally:
        stop.set()
        if relay.is_alive():
            relay.join(timeout=10)
    assert frames == ["<p>1</p>", "<p>2</p><p>3</p><p>4</p>"]


@needs_postgres
def test_a_stopped_relay_exits_at_once_not_after_its_poll():
    """A deploy stops the relay (SIGTERM sets its stop event); it must not sit out the rest of a poll first,
    holding the lead a standby could have taken."""
    stop = threading.Event()
    relay = threading.Thread(target=relay_module.run_forever, args=(stop,), kwargs={"poll_seconds": 120})
    relay.start()
    try:
        # Leading, and waiting on its LISTEN connection for a notify (or the 120 s poll).
        assert wait_until(_relay_listening, timeout=30)
    finally:
        stop.set()
        relay.join(timeout=20)  # far below the poll, far above a check of the stop event
    assert not relay.is_alive()


def _relay_listening() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
            [f"LISTEN {relay_module.NOTIFY_CHANNEL}"],
        )
        return cursor.fetchone()[0] > 0
