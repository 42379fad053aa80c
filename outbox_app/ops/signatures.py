"""Failure signatures: a dead row's ``last_error`` with its variable parts masked, so the
dead letters of one bug fall into one group however many ids, keys and values they name.

Masked: quoted strings (``'…'`` / ``"…"``), UUIDs, hex ids and numbers (``N``).
Whitespace is collapsed (a traceback becomes one line) and the result is capped, so a
signature is short enough to show, to send back in a requeue request, and to compare.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

MAX_SIGNATURE_CHARS = 500
NO_ERROR = "(no error recorded)"

# A quote opens only where no word character precedes it: "handler's" is no quote.
_QUOTED = re.compile(r"""(?<!\w)(?:'[^'\n]*'|"[^"\n]*")(?!\w)""")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b")
_HEX_LITERAL = re.compile(r"\b0[xX][0-9a-fA-F]+\b")
# Long hex runs with a digit and a letter (object ids, digests); plain words have no digit.
_HEX_ID = re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b")
# Numbers, dotted ones too (1.5, 10.0.0.1); not the digits of a name such as utf8 or h2.
_NUMBER = re.compile(r"(?<![A-Za-z_\d])\d+(?:\.\d+)*")
_SPACE = re.compile(r"\s+")


def signature(error: str | None) -> str:
    """The failure signature of a dead row's last error."""
    if error is None or not error.strip():
        return NO_ERROR
    text = _QUOTED.sub(lambda m: m.group(0)[0] + "…" + m.group(0)[0], error)
    for pattern in (_UUID, _HEX_LITERAL, _HEX_ID, _NUMBER):
        text = pattern.sub("N", text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > MAX_SIGNATURE_CHARS:
        text = text[: MAX_SIGNATURE_CHARS - 1] + "…"
    return text


@dataclass(frozen=True)
class DeadRef:
    """What grouping needs of a dead row: never its payload."""

    id: int
    event_type: str
    last_error: str | None
    updated_at: datetime


@dataclass
class DeadGroup:
    signature: str
    count: int = 0
    event_types: set[str] = field(default_factory=set)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    sample_id: int = 0
    sample_error: str | None = None

    def add(self, row: DeadRef) -> None:
        self.count += 1
        self.event_types.add(row.event_type)
        if self.first_seen is None or row.updated_at < self.first_seen:
            self.first_seen = row.updated_at
        # The newest row is the sample: the one an operator most likely wants to look at.
        if self.last_seen is None or (row.updated_at, row.id) > (self.last_seen, self.sample_id):
            self.last_seen, self.sample_id, self.sample_error = (
                row.updated_at,
                row.id,
                row.last_error,
            )

    def as_dict(self) -> dict[str, object]:
        return {
            "signature": self.signature,
            "count": self.count,
            "event_types": sorted(self.event_types),
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "sample": {"id": self.sample_id, "last_error": self.sample_error},
        }


def group_dead(rows: Iterable[DeadRef]) -> list[DeadGroup]:
    """Groups by signature, the largest first (then the most recent)."""
    groups: dict[str, DeadGroup] = {}
    for row in rows:
        sig = signature(row.last_error)
        groups.setdefault(sig, DeadGroup(sig)).add(row)
    newest_first = sorted(groups.values(), key=lambda g: (g.last_seen, g.sample_id), reverse=True)
    return sorted(newest_first, key=lambda g: -g.count)  # stable: ties stay newest first


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"
