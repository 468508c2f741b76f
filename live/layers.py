"""The channel layer in production: channels-redis's pub/sub layer, told when Redis fails under it.

Why pub/sub: the relay sends each frame to a group once, and channels-redis's default layer
then writes it into every member's own Redis list, which the process pops back one message
per round trip: with 300 sockets in a process, 300 round trips per frame. The pub/sub layer
PUBLISHes the frame once; each web process has one subscription per group and copies the
frame to its local sockets in memory. Nothing is stored in Redis for a socket, so there is
no per-socket capacity or expiry to tune, and a process holds a thousand sockets on one
connection.

What pub/sub gives up is delivery to a socket that is not listening at that moment; the
sequence numbers (live.relay) already make any miss visible. What it must not give up is
knowing that it missed: channels-redis's reader logs a failed read (Redis restarted, timed
out) and carries on, so the sockets would never hear of the frames published meanwhile.
`LiveLayer` tells every local socket instead (`live.layer_lost`), and each closes with 1012:
the page reconnects and fetches its list again.

A frame is deserialised once per process, as it arrives, not once per socket: every local member's
queue holds the same message, which the sockets only read (live.consumers). A frame that is not a
channel-layer message (anything may be published on Redis) has the sockets it was for resync.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _wrap_close

logger = logging.getLogger(__name__)

# Put as it is in every local socket's queue, as every frame is: the sockets only read their messages.
LAYER_LOST = {"type": "live.layer_lost"}


class _Shard(RedisSingleShardConnection):
    async def _do_receiving(self) -> None:
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception:  # a timeout too: the parent re-raises it, and its reader would die silently
                logger.warning("live: the channel layer lost Redis; every socket here resyncs", exc_info=True)
                self._lost()
                await asyncio.sleep(0.5)

    def _receive_message(self, message: dict[str, Any] | None) -> None:
        # The parent's, deserialising once for every local member rather than once in each socket.
        if message is None:
            return
        name = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
        layer = self.channel_layer
        members = [name] if name in layer.channels else layer.groups.get(name, ())
        queues = [layer.channels[member] for member in members if member in layer.channels]
        if not queues:
            return
        try:
            data = _readable(layer.channel_layer.deserialize(message["data"]))
        except Exception:
            # Anything may be published on Redis (another version's frames, a stranger's): the sockets it
            # was for cannot know what they missed, so they resync. The others, and the reader, go on.
            logger.warning("live: a frame on %s could not be read; its sockets here resync", name, exc_info=True)
            data = LAYER_LOST
        for queue in queues:
            queue.put_nowait(data)

    def _lost(self) -> None:
        for queue in self.channel_layer.channels.values():
            queue.put_nowait(LAYER_LOST)


def _readable(message: Any) -> dict[str, Any]:
    """A channel-layer message, or ValueError."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError(f"not a channel-layer message: {type(message).__name__}")
    return message


class _LoopLayer(RedisPubSubLoopLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # channels_redis sets _shards in __init__ without a declared type.
        shards: list[RedisSingleShardConnection] = self._shards  # type: ignore[has-type]
        self._shards = [_Shard(shard.host, self) for shard in shards]

    async def _subscribe_to_channel(self, channel: str) -> None:
        # The parent keeps the channel's queue even when the SUBSCRIBE fails (Redis down): a queue nobody
        # reads, which every failed read would go on filling.
        try:
            await super()._subscribe_to_channel(channel)
        except BaseException:
            self.channels.pop(channel, None)
            raise

    def receive_ready(self, channel: str) -> list[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] | None = self.channels.get(channel)
        ready = []
        while queue is not None and not queue.empty():
            ready.append(queue.get_nowait())
        return ready


class LiveLayer(RedisPubSubChannelLayer):
    """RedisPubSubChannelLayer whose per-loop layer tells its sockets when a read from Redis fails or a
    frame cannot be read, deserialises each frame once for all of them, and forgets a closed socket whole."""

    def deserialize(self, message: bytes | dict[str, Any]) -> dict[str, Any]:
        # What the loop layer's queues hold was deserialised as it arrived (_Shard); the parent's
        # `receive` hands it here again.
        return message if isinstance(message, dict) else super().deserialize(message)

    async def receive(self, channel: str) -> dict[str, Any]:
        # The parent reaches it through __getattr__ and a proxy on every call: once per message and socket.
        message: dict[str, Any] = await self._get_layer().receive(channel)
        return message

    def receive_ready(self, channel: str) -> list[dict[str, Any]]:
        """The messages already waiting for `channel`, in order, without waiting for more (`receive` takes one).

        A socket that has fallen behind (a busy process: every frame of every socket waits for the one
        event loop) takes what is waiting and sends it as one frame (live.consumers).
        """
        return self._get_layer().receive_ready(channel)

    async def discard_channel(self, channel: str) -> None:
        """Forget a closed socket's channel in this process: its queue, its place in every group, and the
        subscriptions (its own, and those of groups it was the last local member of).

        The parent drops the queue only when a `receive` waiting on it is cancelled, and a group only through
        `group_discard`; a socket may end otherwise (a failed handler, a lost client, a server shutdown).
        """
        layer = self._get_layer()
        emptied = []
        for name, members in list(layer.groups.items()):
            members.discard(channel)
            if not members:  # the parent keeps no group empty: this socket was its last local member
                del layer.groups[name]
                emptied.append(name)
        names = [channel, *emptied] if layer.channels.pop(channel, None) is not None else emptied
        for name in names:
            await layer._get_shard(name).unsubscribe(name)

    def _get_layer(self) -> _LoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)  # as the parent does: the loop's connections close with it
        return layer
