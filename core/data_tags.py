"""Template filters that show JSON data to people: tables and collapsible trees, never Python's dict text.

Registered as the `data` library (settings.TEMPLATES ... "libraries"): `{% load data %}`, then
`{{ value|data }}` for any JSON value and `{{ before|changes:after }}` for field-level old → new.
Everything is escaped; long text is cut with a way to see the rest, and wraps (app.css `.data`).
Each `mark_safe` below wraps HTML built only by format_html/format_html_join or this module's
own escaped output (hence its `noqa: S308`).
"""

from __future__ import annotations

import difflib
import functools
import json
from typing import Any

from django import template
from django.apps import apps
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

TEXT_SHOWN = 600  # characters of a string shown before "show all"
TEXT_MAX = 20_000  # characters a page ever carries of one string
ITEMS_SHOWN = 50  # list items and object fields shown before the rest are summarised
OPEN_DEPTH = 1  # nested objects deeper than this start collapsed
MAX_DEPTH = 8
WRAP_COLUMN = 60  # side-by-side diff lines wrap here, so a long prompt line stays inside its card


@register.filter
def data(value: Any) -> SafeString:
    """Any JSON value as HTML: scalars as text, objects as two-column tables, lists as lists."""
    if _scalar(value):
        return mark_safe(_render(value, 0))  # noqa: S308
    return mark_safe(f'<div class="data">{_render(value, 0)}</div>')  # noqa: S308


@register.filter
def changes(before: Any, after: Any) -> SafeString:
    """Field-level old → new between two JSON objects (or two values): only what changed."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        if before == after:
            return mark_safe('<span class="muted">no change</span>')
        return format_html(
            '<div class="data changes"><del>{}</del> → <ins>{}</ins></div>',
            mark_safe(_render(before, 1)),  # noqa: S308
            mark_safe(_render(after, 1)),  # noqa: S308
        )
    rows = []
    for key in list(before) + [k for k in after if k not in before]:
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        rows.append(
            format_html(
                "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
                humanize_key(key),
                mark_safe(f"<del>{_render(old, 1)}</del>")  # noqa: S308
                if key in before
                else mark_safe('<span class="muted">—</span>'),
                mark_safe(f"<ins>{_render(new, 1)}</ins>")  # noqa: S308
                if key in after
                else mark_safe('<span class="muted">removed</span>'),
            )
        )
    if not rows:
        return mark_safe('<span class="muted">no change</span>')
    return format_html(
        '<table class="data changes"><thead><tr><th scope="col">field</th><th scope="col">before</th>'
        '<th scope="col">after</th></tr></thead><tbody>{}</tbody></table>',
        mark_safe("".join(rows)),  # noqa: S308
    )


@register.filter
def side_by_side(before: str, after: str) -> SafeString:
    """Two texts side by side, changed lines coloured (difflib's own table; it escapes the text)."""
    table = difflib.HtmlDiff(wrapcolumn=WRAP_COLUMN).make_table(
        str(before or "").splitlines(), str(after or "").splitlines(), "before", "after", context=True, numlines=2
    )
    return mark_safe(f'<div class="side-by-side">{table}</div>')  # noqa: S308


@register.filter
def target_label(label_lower: str) -> str:
    """What a model is called for people (`approvals.actionrequest` → "action"), from its verbose name."""
    if not label_lower:
        return ""
    try:
        return str(apps.get_model(label_lower)._meta.verbose_name)
    except (LookupError, ValueError):
        return label_lower


@register.filter
def perm_label(codename: Any) -> Any:
    """A permission's name for people (`review_agent` → "Review the agent's actions"), as its model declares it."""
    return _permission_labels().get(str(codename), codename) if isinstance(codename, str) else codename


@functools.cache
def _permission_labels() -> dict[str, str]:
    return {codename: str(label) for model in apps.get_models() for codename, label in model._meta.permissions}


@register.filter
def humanize_key(key: Any) -> str:
    """A field name for people: `order_id` → "order id"."""
    return str(key).replace("_", " ")


def _render(value: Any, depth: int) -> str:
    if value is None:
        return '<span class="muted">—</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format_html("{}", value)
    if isinstance(value, str):
        return _text(value)
    if depth >= MAX_DEPTH:
        return _text(json.dumps(value, default=str))
    if isinstance(value, list):
        return _list(value, depth)
    if isinstance(value, dict):
        return _object(value, depth)
    return _text(str(value))


def _text(value: str) -> str:
    shown = value[:TEXT_SHOWN]
    if len(value) <= TEXT_SHOWN:
        return format_html('<span class="text">{}</span>', value)
    rest = value[TEXT_SHOWN:TEXT_MAX]
    cut = f" (cut at {TEXT_MAX:,} of {len(value):,} characters)" if len(value) > TEXT_MAX else ""
    return format_html(
        '<span class="text">{}</span><details class="more"><summary>the rest ({} characters in all)</summary>'
        '<span class="text">{}</span>{}</details>',
        shown,
        f"{len(value):,}",
        rest,
        cut,
    )


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 80)


def _list(value: list[Any], depth: int) -> str:
    if not value:
        return '<span class="muted">none</span>'
    shown = value[:ITEMS_SHOWN]
    more = (
        format_html('<span class="muted"> … and {} more</span>', len(value) - ITEMS_SHOWN)
        if len(value) > ITEMS_SHOWN
        else ""
    )
    if all(_scalar(v) for v in shown):
        return format_html_join(", ", "{}", ((mark_safe(_render(v, depth + 1)),) for v in shown)) + more  # noqa: S308
    items = format_html_join("", "<li>{}</li>", ((mark_safe(_render(v, depth + 1)),) for v in shown))  # noqa: S308
    return _fold(f"<ol>{items}</ol>{more}", f"{len(value)} items", depth)


def _object(value: dict[str, Any], depth: int) -> str:
    if not value:
        return '<span class="muted">empty</span>'
    keys = list(value)[:ITEMS_SHOWN]
    rows = format_html_join(
        "",
        "<tr><th>{}</th><td>{}</td></tr>",
        ((humanize_key(k), mark_safe(_render(value[k], depth + 1))) for k in keys),  # noqa: S308
    )
    more = (
        format_html('<tr><td colspan="2" class="muted">… and {} more fields</td></tr>', len(value) - ITEMS_SHOWN)
        if len(value) > ITEMS_SHOWN
        else ""
    )
    return _fold(f'<table class="fields"><tbody>{rows}{more}</tbody></table>', f"{len(value)} fields", depth)


def _fold(html: str, summary: str, depth: int) -> str:
    """Nested structures below the first levels start collapsed: a tree people open as they need."""
    if depth <= OPEN_DEPTH:
        return html
    return format_html("<details><summary>{}</summary>{}</details>", summary, mark_safe(html))  # noqa: S308
