"""Server-rendered SVG charts: the numbers become coordinates here, the template draws them."""

from __future__ import annotations

from typing import Any

WIDTH, HEIGHT = 600, 120


def bars(series: list[dict[str, Any]], key: str, *, label: str = "bucket") -> dict[str, Any]:
    values = [float(row.get(key) or 0) for row in series]
    top = max(values, default=0) or 1.0
    width = WIDTH / max(len(values), 1)
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "max": top,
        "bars": [
            {
                "x": round(i * width, 1),
                "w": round(max(width - 1, 1), 1),
                "h": round(HEIGHT * v / top, 1),
                "y": round(HEIGHT - HEIGHT * v / top, 1),
                "value": v,
                "label": row.get(label),
            }
            for i, (row, v) in enumerate(zip(series, values, strict=True))
        ],
    }


def reliability(points: list[dict[str, Any]], size: int = 200) -> dict[str, Any]:
    """Stated confidence (x) against how often reviewers agreed (y); the diagonal is perfect calibration."""
    return {
        "size": size,
        "points": [
            {
                "cx": round(p["stated"] * size, 1),
                "cy": round(size - p["agreement"] * size, 1),
                "r": min(12, 3 + p["reviewed"] ** 0.5 / 2),
                "title": f"stated {p['stated']:.2f}, agreed {p['agreement']:.0%} of {p['reviewed']}",
            }
            for p in points
        ],
    }
