from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def lookup_kind(exceptions: Any, kind: str) -> list[Any]:
    return list(exceptions.of(kind))


@register.filter
def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


@register.filter
def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value == float("inf"):
        return "> 1 day"
    if value < 60:
        return f"≤ {value:g} s"
    if value < 3600:
        return f"≤ {value / 60:g} min"
    return f"≤ {value / 3600:g} h"
