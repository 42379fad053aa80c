"""Payload validation (pydantic): what is published and what is consumed are checked the
same way, errors name the field's path, unknown fields pass unless the handler is strict."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from outbox_app.payloads import coerce, to_json


class Channel(enum.Enum):
    EMAIL = "email"
    SMS = "sms"


@dataclass
class Line:
    sku: str
    quantity: int


@dataclass
class Order:
    customer: str
    lines: list[Line]
    channel: Channel = Channel.EMAIL
    due: datetime | None = None
    tags: list[str] = field(default_factory=list)


ORDER = {"customer": "c-1", "lines": [{"sku": "A", "quantity": 2}], "channel": "sms"}


def test_nested_types_lists_enums_and_datetimes_are_built() -> None:
    raw = json.dumps({**ORDER, "due": "2026-12-01T08:00:00Z"})
    order = coerce(Order, raw)
    assert order == Order("c-1", [Line("A", 2)], Channel.SMS, datetime(2026, 12, 1, 8, tzinfo=UTC))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"lines": []}, "field 'customer': Field required"),
        ({**ORDER, "lines": [{"sku": "A", "quantity": "many"}]}, "field 'lines[0].quantity'"),
        ({**ORDER, "lines": [{"sku": "A"}]}, "field 'lines[0].quantity': Field required"),
        ({**ORDER, "channel": "fax"}, "field 'channel': Input should be 'email' or 'sms'"),
        ({**ORDER, "due": "soon"}, "field 'due'"),
        ({**ORDER, "tags": ["a", 1]}, "field 'tags[1]'"),
        ([1, 2], "payload: Input should be"),
    ],
)
def test_errors_name_the_field_path(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        coerce(Order, json.dumps(data))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        to_json(data, Order)  # the publisher meets the same check


def test_unknown_fields_are_ignored_unless_strict() -> None:
    newer = {**ORDER, "gift_wrap": True, "lines": [{"sku": "A", "quantity": 2, "colour": "red"}]}
    assert coerce(Order, json.dumps(newer)).lines == [Line("A", 2)]
    with pytest.raises(ValueError, match=r"field 'lines\[0\].colour': unknown field"):
        coerce(Order, json.dumps(newer), strict=True)
    with pytest.raises(ValueError, match="field 'gift_wrap': unknown field"):
        to_json({**ORDER, "gift_wrap": True}, Order, strict=True)
    with pytest.raises(ValueError, match="field 'lines.0.quantity'|lines\\[0\\].quantity"):
        coerce(Order, json.dumps({**ORDER, "lines": [{"sku": "A", "quantity": "2"}]}), strict=True)


def test_the_stored_json_is_what_the_type_makes_of_the_payload() -> None:
    stored = to_json(ORDER, Order)
    assert json.loads(stored) == {**ORDER, "due": None, "tags": []}
    assert to_json(Order("c-1", [Line("A", 2)], Channel.SMS), Order) == stored  # an instance too
    assert coerce(Order, stored) == Order("c-1", [Line("A", 2)], Channel.SMS)


def test_pydantic_models_and_plain_types_work_as_well() -> None:
    class Ping(BaseModel):
        n: int

    assert coerce(Ping, '{"n": "3"}') == Ping(n=3)
    assert to_json({"n": 4}, Ping) == '{"n":4}'
    assert coerce(list[int], "[1, 2]") == [1, 2]


def test_untyped_payloads_are_plain_json() -> None:
    assert coerce(None, '{"a": 1}') == {"a": 1}
    assert to_json({"a": "hé"}) == '{"a":"hé"}'
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        to_json({"x": {1, 2}})
    with pytest.raises(ValueError, match="not JSON"):
        coerce(None, "{broken")


def test_a_strict_handler_refuses_unknown_fields_at_publish_and_a_lenient_one_drops_them() -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from outbox_app import InvalidEvent, Registry, publish
    from outbox_app.schema import create_schema, outbox_table

    reg = Registry()

    @reg.handler("order.strict", service="orders", payload=Order, strict=True)
    def strict(ctx: object) -> None: ...

    @reg.handler("order.lenient", service="orders", payload=Order)
    def lenient(ctx: object) -> None: ...

    engine = create_engine("sqlite://")
    create_schema(engine, reg.routes(), reg.metadata)
    newer = {**ORDER, "gift_wrap": True}
    with Session(engine) as session, session.begin():
        with pytest.raises(InvalidEvent, match="order.strict.*gift_wrap"):
            publish(session, "order.strict", newer, registry=reg)
        publish(session, "order.lenient", newer, registry=reg)
    with engine.connect() as conn:
        (stored,) = conn.execute(outbox_table(reg.route("orders")).select()).all()
    assert stored.event_type == "order.lenient" and "gift_wrap" not in stored.payload
