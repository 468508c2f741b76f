"""What model calls cost: a per-model price table (USD per million tokens).

Override or extend with COUNTERSIGN_MODEL_PRICES, a JSON object
{"model-name": [input_per_million, output_per_million], ...}.
"""

from __future__ import annotations

import json
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULT_PRICES: dict[str, tuple[str, str]] = {
    "gpt-4o": ("2.50", "10.00"),
    "gpt-4o-mini": ("0.15", "0.60"),
    "gpt-4.1": ("2.00", "8.00"),
    "gpt-4.1-mini": ("0.40", "1.60"),
    # The scripted stand-in and self-hosted models cost nothing per token here.
}
MILLION = Decimal(1_000_000)


def price_table() -> dict[str, tuple[Decimal, Decimal]]:
    table = {name: (Decimal(i), Decimal(o)) for name, (i, o) in DEFAULT_PRICES.items()}
    raw = getattr(settings, "COUNTERSIGN_MODEL_PRICES", "")
    if raw:
        try:
            extra = json.loads(raw)
            for name, (inp, out) in extra.items():
                table[name] = (Decimal(str(inp)), Decimal(str(out)))
        except (ValueError, TypeError) as exc:
            raise ImproperlyConfigured(f"COUNTERSIGN_MODEL_PRICES is not a valid price table: {exc}") from exc
    return table


def prices_for(model: str, table: dict[str, tuple[Decimal, Decimal]]) -> tuple[Decimal, Decimal] | None:
    """Exact name first, then the longest listed name it starts with (servers report dated versions)."""
    if model in table:
        return table[model]
    matches = [name for name in table if model.startswith(name)]
    return table[max(matches, key=len)] if matches else None


def cost_of(model: str, prompt_tokens: int, completion_tokens: int, *, configured_model: str = "") -> Decimal:
    table = price_table()
    prices = prices_for(model, table) or prices_for(configured_model, table)
    if prices is None:
        return Decimal(0)
    per_in, per_out = prices
    return ((per_in * prompt_tokens) + (per_out * completion_tokens)) / MILLION
