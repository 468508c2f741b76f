"""What ops shows live: a nudge to the operators' exceptions page of one agent to fetch itself again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from live.groups import operator_group
from live.push import OPS_CHANGED
from live.relay import Frame, html, renders

REFRESH = '<div id="ops-refresh" hx-swap-oob="true" hidden></div>'


@renders(OPS_CHANGED)
def ops_changed(payloads: list[dict[str, Any]]) -> Iterator[Frame]:
    for agent_id in sorted({int(p["agent_id"]) for p in payloads}):
        yield operator_group(agent_id), html(REFRESH)
