"""More than 100k malformed inputs through the decoder and the engine: 0 crashes, and
every reject is counted with a reason.

Mutations start from valid events of every type: flipped, dropped and inserted bytes,
truncations, deep nesting, non-UTF-8, swapped field types (strings, bools, null, NaN,
inf, 0, negatives, 1e30), missing and unknown fields and types. Deterministic (seeded).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import orjson

from riskguard.demo.scenario import TradingSim
from riskguard.engine import Engine
from riskguard.events import BAD_REASONS, BadEvent, Event, decode, encode
from riskguard.examples import LIMITS
from riskguard.limits import load

N_INPUTS = 120_000
NASTY_VALUES: list[object] = [
    "100",
    True,
    False,
    None,
    [],
    {},
    0,
    -1,
    -0.0,
    1e30,
    1e308,
    2**63 - 1,
    -(2**63),
    "NaN",
    "",
    "x" * 300,
    100.5,
    "buy ",
    {"$gt": 0},
]

RAW_LITERALS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "18446744073709551616",
    "-9223372036854775809",
    "1e400",
    "01",
    "1.",
    "+1",
]


def seeds() -> list[bytes]:
    return [encode(e) for e in TradingSim(seed=5, activity=0.5).run(3000)]


def mutate(rng: random.Random, raw: bytes) -> bytes:
    kind = rng.randrange(9)
    b = bytearray(raw)
    if kind == 0 and b:  # flip bytes
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 1:  # truncate
        return bytes(b[: rng.randrange(len(b) + 1)])
    if kind == 2:  # insert random bytes
        at = rng.randrange(len(b) + 1)
        return bytes(b[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + b[at:])
    if kind == 3:  # deep nesting
        depth = rng.choice([10, 1000, 100_000])
        return b"[" * depth + raw + b"]" * rng.choice([0, depth])
    if kind == 4:  # non-UTF-8 inside a string
        return raw.replace(b'":"', b'":"\xc3\x28', 1)
    obj = orjson.loads(raw)
    if kind == 5:  # wrong type or value in one field
        obj[rng.choice(list(obj))] = rng.choice(NASTY_VALUES)
    elif kind == 6:  # drop a field
        obj.pop(rng.choice(list(obj)))
    elif kind == 7:  # unknown type
        obj["type"] = rng.choice(["fil", "NEW", "", "cancel_all", 7])
    else:  # literals orjson cannot write: NaN, infinities, integers past 64 bits
        text = orjson.dumps(obj).decode()
        key = rng.choice([k for k in obj if k != "type"])
        literal = rng.choice(RAW_LITERALS)
        return text.replace(f'"{key}":', f'"{key}":{literal},"_":', 1).encode()
    return orjson.dumps(obj)


def inputs(rng: random.Random, corpus: list[bytes]) -> Iterator[bytes]:
    for _ in range(N_INPUTS):
        yield mutate(rng, rng.choice(corpus))


def test_fuzzed_inputs_never_crash_and_every_reject_has_a_reason() -> None:
    rng = random.Random(20121801)
    engine = Engine(load(LIMITS), event_time=True)
    reasons: Counter[str] = Counter()
    batch: list[Event] = []
    applied = total = duplicates = 0
    for raw in inputs(rng, seeds()):
        total += 1
        item = decode(raw, f"input {total}")
        if isinstance(item, BadEvent):
            assert item.reason in BAD_REASONS and item.detail, item
            reasons[item.reason] += 1
            continue
        batch.append(item)
        if len(batch) >= 4096:
            result = engine.apply(batch)
            applied += result.applied
            duplicates += result.duplicates
            for bad in result.bad:
                reasons[bad.reason] += 1
            batch.clear()
    result = engine.apply(batch)
    applied += result.applied
    duplicates += result.duplicates
    for bad in result.bad:
        reasons[bad.reason] += 1
    assert total >= 100_000
    rejected = sum(reasons.values())
    # nothing vanished: applied, counted as a redelivery, or counted with a reason
    assert applied + duplicates + rejected == total
    assert rejected > total // 2
    for reason in (
        "invalid_utf8",
        "malformed_json",
        "not_an_object",
        "unknown_type",
        "missing_field",
        "wrong_type",
        "out_of_range",
        "invalid_value",
    ):
        assert reasons[reason] > 0, (reason, reasons)
