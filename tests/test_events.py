"""Wire schema v1: every type decodes, every class of bad input gets a reason, nothing raises."""

from __future__ import annotations

import orjson
import pytest

from riskguard.events import (
    BAD_REASONS,
    BadEvent,
    Fill,
    Heartbeat,
    Mark,
    NewOrder,
    decode,
    decode_many,
    encode,
)

NEW = {
    "type": "new",
    "ts": 1,
    "order_id": "o1",
    "account": "A",
    "strategy": "S",
    "symbol": "X",
    "side": "buy",
    "qty": 100,
    "price": 10.5,
}


def raw(**changes: object) -> bytes:
    body = {**NEW, **changes}
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def test_every_type_decodes_and_round_trips() -> None:
    k = {"account": "A", "strategy": "S", "symbol": "X"}
    lines = [
        {"type": "parent", "ts": 1, "parent_id": "P", "side": "sell", "qty": 5, **k},
        NEW,
        {**NEW, "price": None, "parent_id": "P"},
        {"type": "replace", "ts": 2, "order_id": "o1", "side": "buy", "qty": 50, "price": 11, **k},
        {"type": "cancel", "ts": 3, "order_id": "o1", **k},
        {"type": "reject", "ts": 3, "order_id": "o1", **k},
        {
            "type": "fill",
            "ts": 4,
            "order_id": "o1",
            "exec_id": "e",
            "side": "buy",
            "qty": 1,
            "price": 10,
            **k,
        },
        {"type": "mark", "ts": 5, "symbol": "X", "price": 10.25},
        {"type": "heartbeat", "ts": 6, "source": "router"},
    ]
    for line in lines:
        event = decode(orjson.dumps(line))
        assert not isinstance(event, BadEvent), (line, event)
        assert decode(encode(event)) == event


def test_unknown_fields_are_ignored() -> None:
    event = decode(raw(venue="XNAS", extra={"nested": [1, 2]}))
    assert isinstance(event, NewOrder) and event.qty == 100.0


def test_market_order_has_null_price() -> None:
    event = decode(raw(price=None))
    assert isinstance(event, NewOrder) and event.price is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe{}", "invalid_utf8"),
        (b'{"type":"mark","ts":1,"symbol":"\xff","price":1}', "invalid_utf8"),
        (b"{not json", "malformed_json"),
        (b"", "malformed_json"),
        (b'{"type":"new"', "malformed_json"),
        (b'{"type":"mark","ts":1,"symbol":"X","price":NaN}', "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (b"[" * 100_000, "not_an_object"),
        (b'"a string"', "not_an_object"),
        (b'{"ts": 1}', "missing_type"),
        (b'{"type": "bogus", "ts": 1}', "unknown_type"),
        (b'{"type": 5, "ts": 1}', "unknown_type"),
        (raw(qty=...), "missing_field"),
        (raw(price=...), "missing_field"),
        (raw(qty="100"), "wrong_type"),
        (raw(qty=True), "wrong_type"),
        (raw(ts=1.5), "wrong_type"),
        (raw(ts="1"), "wrong_type"),
        (raw(account=7), "wrong_type"),
        (raw(qty=0), "out_of_range"),
        (raw(qty=-5), "out_of_range"),
        (raw(qty=1e30), "out_of_range"),
        (raw(price=-1e13), "out_of_range"),
        (b'{"type":"mark","ts":1,"symbol":"X","price":1e999}', "out_of_range"),
        (raw(ts=-1), "out_of_range"),
        (raw(account=""), "out_of_range"),
        (raw(symbol="x" * 300), "out_of_range"),
        (raw(side="hold"), "invalid_value"),
    ],
)
def test_bad_inputs_get_a_reason_and_never_raise(data: bytes, reason: str) -> None:
    bad = decode(data, "line 9")
    assert isinstance(bad, BadEvent)
    assert bad.reason == reason, bad.detail
    assert bad.reason in BAD_REASONS
    assert bad.position == "line 9"
    assert bad.detail
    assert bad.raw == data[:4096]


def test_orjson_style_coercions_are_rejected() -> None:
    """orjson + numpy would turn "100" and true into 100; the schema must not."""
    for value in ("100", True, [100], {"v": 100}):
        assert isinstance(decode(raw(qty=value)), BadEvent)


def test_decode_many_numbers_lines() -> None:
    out = list(
        decode_many(
            [raw(), b"oops", orjson.dumps({"type": "heartbeat", "ts": 1, "source": "r"})],
            first_line=10,
        )
    )
    assert isinstance(out[0], NewOrder)
    assert isinstance(out[1], BadEvent) and out[1].position == "line 11"
    assert isinstance(out[2], Heartbeat)


def test_fill_and_mark_fields() -> None:
    f = decode(
        b'{"type":"fill","ts":7,"order_id":"o","exec_id":"e","account":"A",'
        b'"strategy":"S","symbol":"X","side":"sell","qty":2.5,"price":99.5,"parent_id":"P"}'
    )
    assert isinstance(f, Fill) and f.parent_id == "P" and f.qty == 2.5
    m = decode(b'{"type":"mark","ts":7,"symbol":"X","price":3}')
    assert isinstance(m, Mark) and m.price == 3.0
