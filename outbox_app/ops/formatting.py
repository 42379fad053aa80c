"""Plain-text output of the operator commands: tables, one-line errors, ids, spans."""

from __future__ import annotations

from typing import Any


def age(counts: dict[str, Any]) -> str:
    seconds = counts["oldest_pending_age_s"]
    return "-" if seconds is None else f"{seconds:.1f}s"


def span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def one_line(text: str | None, width: int) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def ids(values: list[int]) -> str:
    shown = ", ".join(map(str, values[:20]))
    return shown + (f" and {len(values) - 20} more" if len(values) > 20 else "")


def table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
