"""The relay: committed push intents become messages, rendered once per group, numbered per group.

It reads the outbox in id order, coalesces repeats of the same event, asks the
renderer each app registered for the event's frames, numbers every frame per
group and sends it through the channel layer. The rows are deleted in the same
transaction as they are read; if a send fails the transaction rolls back, the
rows are read again, and the epoch changes (see below).

Sequence numbers: every message carries (group, epoch, seq). One relay is
active at a time (a PostgreSQL advisory lock), so a group's numbers rise by
exactly one per message. The epoch changes when the relay starts, when a send
fails and when a renderer fails: a socket that sees a new epoch or a gap has
missed something and tells its page to fetch its list again. The latest
(epoch, seq) of each group, and the epoch itself, are kept in the cache so a
socket that joins a group knows where the numbers stand: a group with no number
in the current epoch has had no message in it yet (the next one is 1).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections, connections, transaction

from core.loops import KeptLoop
from core.transient import is_transient
from live.models import Push

logger = logging.getLogger(__name__)

Frame = tuple[str, dict[str, Any]]  # (group, channel-layer message with a "type")
Renderer = Callable[[list[dict[str, Any]]], Iterable[Frame]]

BATCH = 500
NOTIFY_CHANNEL = "live_push"  # the outbox's insert trigger notifies this (PostgreSQL)
LEADER_LOCK = 0x6C697665  # "live": the advisory lock the active relay holds

_renderers: dict[str, Renderer] = {}


def renders(event: str) -> Callable[[Renderer], Renderer]:
    """Register how `event` looks: a function from its payloads (repeats removed) to frames."""

    def register(renderer: Renderer) -> Renderer:
        _renderers[event] = renderer
        return renderer

    return register


EPOCH_KEY = "live:epoch"  # the active relay's epoch


def seq_key(group: str) -> str:
    return f"live:seq:{group}"


def html(content: str) -> dict[str, Any]:
    """A frame's message for HTML the page swaps in (htmx out-of-band)."""
    return {"type": "live.html", "html": content}


# Runs `function(*args)` to completion from the relay's (sync) thread. The coroutine is made only
# where it will be awaited, so a runner that refuses (AsyncToSync inside an event loop) leaves none behind.
Runner = Callable[..., None]


def _run_nested(function: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    # asgiref runs it on the caller's outer event loop when there is one (the inline relay in
    # tests, where the in-memory layer's queues belong to that loop), else on a new loop.
    async_to_sync(function)(*args)


class SendLoop:
    """One event loop in a thread of its own, kept for the relay process's sends (core.loops.KeptLoop).

    The channel layer keeps its Redis connections per event loop; async_to_sync from a plain
    thread makes a new loop (and thread, and connections) for every batch (profiled once: a
    decision's pushes cost the relay 9.3 ms of CPU that way, 5.6 ms on this loop).
    """

    def __init__(self) -> None:
        self._kept = KeptLoop("relay-send")

    def __call__(self, function: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        self._kept.run(function, *args, timeout=SEND_TIMEOUT)


SEND_TIMEOUT = 30.0  # seconds a batch's sends may take before the relay retries it under a new epoch


@dataclass
class Relay:
    epoch: str = field(default_factory=lambda: secrets.token_hex(4))
    seq: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    run_async: Runner = _run_nested

    def new_epoch(self) -> None:
        """Number from 1 again under a new epoch, and say so at once where joining sockets look."""
        self.epoch = secrets.token_hex(4)
        self.seq.clear()
        cache.set(EPOCH_KEY, self.epoch, timeout=None)

    def drain(self) -> int:
        """Deliver committed intents until none is left; return how many there were."""
        total = 0
        while n := self.deliver_batch():
            total += n
        return total

    def deliver_batch(self) -> int:
        with self.lock, transaction.atomic():
            rows = list(Push.objects.select_for_update(skip_locked=True).order_by("id")[:BATCH])
            if not rows:
                return 0
            frames = self.render(rows)
            try:
                self.send(frames)
            except Exception:
                # Some sockets may have had part of the batch: the next numbers start a new
                # epoch, so each of them resyncs when the retried batch reaches it.
                self.new_epoch()
                raise
            Push.objects.filter(pk__in=[row.pk for row in rows]).delete()
        return len(rows)

    def render(self, rows: list[Push]) -> list[Frame]:
        by_event: dict[str, list[dict[str, Any]]] = {}
        seen: set[tuple[str, str]] = set()
        for row in rows:
            key = (row.event, repr(sorted(row.ids.items())))
            if key not in seen:  # coalesced: the renderer reads the current state anyway
                seen.add(key)
                by_event.setdefault(row.event, []).append(row.ids)
        frames: list[Frame] = []
        for event, payloads in by_event.items():
            renderer = _renderers.get(event)
            if renderer is None:
                logger.error("no renderer for the push %r; dropped", event)
                continue
            try:
                frames.extend(renderer(payloads))
            except Exception as error:
                if is_transient(error):
                    raise
                # A page that misses this must learn it did: everyone's next message is a new epoch.
                logger.exception("rendering the push %r failed; sockets resync", event)
                self.new_epoch()
        return frames

    def send(self, frames: list[Frame]) -> None:
        if not frames:
            return
        layer = get_channel_layer()
        if layer is None:
            return
        numbered: list[Frame] = []
        for group, message in merged(frames):
            seq = self.seq.get(group, 0) + 1
            self.seq[group] = seq
            numbered.append((group, {**message, "group": group, "epoch": self.epoch, "seq": seq}))
        # Where the numbers stand, before the messages: a socket joining now reads a number it
        # then sees again (and skips) rather than one it would take for a gap.
        standing: dict[str, Any] = {seq_key(group): (self.epoch, self.seq[group]) for group, _ in numbered}
        cache.set_many({**standing, EPOCH_KEY: self.epoch}, timeout=None)
        self.run_async(_send_all, layer, numbered)


def merged(frames: list[Frame]) -> list[Frame]:
    """One message per group for the HTML a batch sends it: each socket then handles (and numbers)
    one frame per group and batch instead of one per event. HTML joins the group's last message
    only if that one is HTML too, so a group's control messages keep their place."""
    out: list[Frame] = []
    last_html: dict[str, int] = {}  # group -> index in `out` of its last message, if that one is HTML
    for group, message in frames:
        plain_html = message.keys() == {"type", "html"} and message["type"] == "live.html"
        at = last_html.get(group)
        if plain_html and at is not None:
            out[at] = (group, html(out[at][1]["html"] + message["html"]))
            continue
        out.append((group, message))
        if plain_html:
            last_html[group] = len(out) - 1
        else:
            last_html.pop(group, None)
    return out


async def _send_all(layer: Any, frames: list[Frame]) -> None:
    for group, message in frames:
        await layer.group_send(group, message)


_inline = Relay()


def deliver_inline() -> None:
    """The inline relay (tests, the single-process demo): called on commit by `live.push`."""
    try:
        _inline.drain()
    except Exception:
        # A push is never worth failing the request that committed: the rows stay for the next drain.
        logger.exception("inline push delivery failed")


def inline_relay() -> Relay:
    return _inline


def run_forever(stop: threading.Event, *, poll_seconds: float = 1.0, gather_seconds: float | None = None) -> None:
    """The relay process: hold the leader lock, deliver, then wait for the outbox's notify (or the poll).

    Deliveries are at least `gather_seconds` apart (LIVE_RELAY_GATHER_MS): the first change after a
    quiet spell goes out at once; under a stream of changes what commits meanwhile goes out together,
    one frame per group, so a socket's work grows with the batches, not with the changes.
    """
    gather = settings.LIVE_RELAY_GATHER_MS / 1000 if gather_seconds is None else gather_seconds
    relay = Relay(run_async=SendLoop())
    listener = None
    leading = False
    backoff = 0.5
    delivered_at = -math.inf
    while not stop.is_set():
        try:
            if not leading:
                listener = _listen(stop)
                if stop.is_set():
                    break
                leading = True
                # A new leader, or one that lost its connection: the numbers start over.
                relay.new_epoch()
                logger.info("relay: leading (epoch %s)", relay.epoch)
                backoff = 0.5
            if (early := delivered_at + gather - time.monotonic()) > 0:
                stop.wait(early)
            # One batch per gather; only a full one (a backlog) is followed at once by the next. Draining
            # to empty would chase a stream of commits with a batch of one or two at a time.
            delivered = relay.deliver_batch()
            while delivered == BATCH:
                delivered = relay.deliver_batch()
            if delivered:
                delivered_at = time.monotonic()  # an empty pass (the poll's) does not hold the next change back
            _wait(listener, poll_seconds, stop)
        except Exception as error:
            if not is_transient(error):
                logger.exception("relay failed")
            else:
                logger.warning("relay: %s; reconnecting", error)
            _close(listener)
            listener, leading = None, False
            close_old_connections()
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
    _close(listener)
    connections.close_all()  # this thread's, back to the pool (the process may go on: tests)


def _listen(stop: threading.Event) -> Any:
    """A connection of its own, outside the pool, that holds the leader lock and LISTENs; None off PostgreSQL."""
    wrapper = connections["default"]
    if wrapper.vendor != "postgresql":
        return None
    params = {k: v for k, v in wrapper.get_connection_params().items() if k not in {"cursor_factory", "context"}}
    listener = psycopg.connect(**params, autocommit=True)
    while not _take_lead(listener):
        logger.info("relay: another relay is active; standing by")
        if stop.wait(2.0):
            listener.close()
            return None
    listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
    return listener


def _take_lead(listener: psycopg.Connection[Any]) -> bool:
    row = listener.execute("SELECT pg_try_advisory_lock(%s)", [LEADER_LOCK]).fetchone()
    return bool(row and row[0])


# The longest the relay waits without looking at its stop event: a stopped relay (SIGTERM, a deploy) exits
# within this, not after a whole poll, and a standby takes the lead that much sooner.
STOP_CHECK_SECONDS = 0.1


def _wait(listener: Any, seconds: float, stop: threading.Event) -> None:
    """Until the first notify, `seconds` (a safety net for a missed one), or `stop`."""
    if listener is None:
        stop.wait(min(seconds, STOP_CHECK_SECONDS))
        return
    deadline = time.monotonic() + seconds
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        for _ in listener.notifies(timeout=min(left, STOP_CHECK_SECONDS), stop_after=1):
            return


def _close(listener: Any) -> None:
    if listener is not None:
        try:
            listener.close()
        except Exception:
            logger.debug("closing the relay's listener failed", exc_info=True)
