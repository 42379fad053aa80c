"""Operator commands: stats, dead letters, requeue, purge."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_commands(sub: Any) -> None:
    p = sub.add_parser("stats", help="rows per service and status")
    p.add_argument("--json", action="store_true", help="the JSON document of /outbox/stats/")
    p.set_defaults(func=cmd_stats)


def operator_context() -> Any:
    from .operations import Operations

    return Operations.from_env()


def cmd_stats(ns: argparse.Namespace) -> int:
    ops = operator_context()
    doc = ops.stats()
    if ns.json:
        print(json.dumps(doc, indent=2))
        return 0
    rows = [
        [name, c["pending"], c["published"], c["consumed"], c["dead"], _age(c)]
        for name, c in doc["services"].items()
    ]
    print(_table(["service", "pending", "published", "consumed", "dead", "oldest pending"], rows))
    return 0


def _age(counts: dict[str, Any]) -> str:
    age = counts["oldest_pending_age_s"]
    return "-" if age is None else f"{age:.1f}s"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
