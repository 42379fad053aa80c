from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from outbox_app.payloads import coerce, to_json


@dataclass
class Chat:
    user_id: int
    message: str
    score: float = 0.0
    tags: list[str] = field(default_factory=list)
    parent: str | None = None


def test_coerce_builds_the_dataclass():
    assert coerce(Chat, {"user_id": 1, "message": "hi", "score": 2}) == Chat(1, "hi", 2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"message": "hi"}, "missing field 'user_id'"),
        ({"user_id": "7", "message": "hi"}, "field 'user_id' must be int, got string"),
        ({"user_id": True, "message": "hi"}, "field 'user_id' must be int, got boolean"),
        ({"user_id": 1, "message": "hi", "extra": 1}, "unknown field"),
        ({"user_id": 1, "message": "hi", "tags": "a"}, "field 'tags' must be"),
        ([1, 2], "must be a JSON object, got array"),
    ],
)
def test_coerce_names_the_bad_field(data, message):
    with pytest.raises(ValueError, match=message):
        coerce(Chat, data)


def test_untyped_payload_passes_through():
    assert coerce(None, {"a": 1}) == {"a": 1}


def test_to_json_accepts_dataclasses_and_refuses_the_rest():
    assert to_json(Chat(1, "hé")) == (
        '{"user_id":1,"message":"hé","score":0.0,"tags":[],"parent":null}'
    )
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        to_json({"x": {1, 2}})
