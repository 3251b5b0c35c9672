"""Limits file v1: the documented example loads; every class of mistake is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from riskguard import examples
from riskguard.cli import main
from riskguard.limits import METRICS, LimitsError, load, parse
from riskguard.limits.vocabulary import NONNEGATIVE_METRICS

ROOT = Path(__file__).resolve().parents[2]

ISSUE_EXAMPLE = """
version = 1

[[rule]]
name = "smars-overfill"            # unique
metric = "parent_overfill_ratio"   # from the metric vocabulary below
scope = "strategy"                 # firm | account | strategy | symbol
match = { strategy = "smars" }     # optional; omitted = every key at that scope
max = 1.0                          # breach when value > max  (use `min` for lower bounds, e.g. pnl)
action = "halt"                    # alert | reduce_only | halt

[[rule]]
name = "order-rate"
metric = "order_rate"
scope = "strategy"
window_ms = 1000                   # required for windowed metrics, rejected for others
max = 500
action = "halt"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(LimitsError) as info:
        parse(text, source="limits.toml")
    assert str(info.value).startswith("limits.toml:")
    return info.value.problems


def rule(body: str) -> str:
    return f"version = 1\n[[rule]]\n{body}\n"


OK = 'name = "r"\nmetric = "order_qty"\nscope = "account"\nmax = 5\naction = "halt"'


def test_issue_example_is_accepted() -> None:
    limits = parse(ISSUE_EXAMPLE)
    overfill, rate = limits.rules
    assert overfill.match["strategy"] == ("smars",)
    assert overfill.max == 1.0 and overfill.min is None
    assert rate.window_ms == 1000 and rate.action == "halt"


def test_bundled_example_is_valid_and_matches_rules_dir() -> None:
    shipped = examples.LIMITS.read_bytes()
    assert shipped == (ROOT / "rules" / "example.toml").read_bytes()
    assert len(load(examples.LIMITS).rules) >= 10


def test_unknown_keys_name_rule_and_field() -> None:
    found = problems("owner = 'me'\n" + rule(OK + "\nmax_qty = 3"))
    assert any("rule 'r' (#1): field 'max_qty': unknown field" in p for p in found)
    assert any("unknown top-level key 'owner'" in p for p in found)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (OK.replace("order_qty", "order_speed"), "field 'metric': unknown metric 'order_speed'"),
        (OK.replace('"account"', '"desk"'), "field 'scope': must be one of"),
        (OK.replace('"halt"', '"panic"'), "field 'action': must be one of"),
        (OK.replace("max = 5", ""), "field 'max': a rule needs 'max'"),
        (OK.replace("max = 5", "max = 'five'"), "field 'max': must be a finite number"),
        (OK.replace("max = 5", "max = nan"), "field 'max': must be a finite number"),
        (OK.replace("max = 5", "max = true"), "field 'max': must be a finite number"),
        (OK.replace("max = 5", "max = 5\nmin = 9"), "field 'min': min (9) is above max (5)"),
        (OK + "\nwindow_ms = 100", "field 'window_ms': not allowed"),
        (OK.replace("order_qty", "order_rate"), "field 'window_ms': required"),
        (OK.replace("order_qty", "order_rate") + "\nwindow_ms = 0", "field 'window_ms': must be"),
        (OK.replace("order_qty", "order_rate") + "\nwindow_ms = 1.5", "field 'window_ms': must"),
        (OK + "\nmin_orders = 10", "field 'min_orders': only allowed"),
        (OK + '\nmatch = { strategy = "s" }', "field 'match.strategy': not a match field"),
        (OK + "\nmatch = { account = [] }", "field 'match.account': must be a non-empty"),
        (OK + "\nmatch = { account = [1] }", "field 'match.account': must be a non-empty"),
        (OK + '\nmatch = "A"', "field 'match': must be a table"),
        (
            OK.replace('"account"', '"strategy"').replace("order_qty", "feed_silence_ms"),
            "field 'scope': metric 'feed_silence_ms' supports scopes firm",
        ),
        (OK.replace('name = "r"', 'name = ""'), "field 'name': required"),
        (OK + "\ndescription = 5", "field 'description': must be a string"),
    ],
)
def test_each_mistake_is_named(body: str, expected: str) -> None:
    found = problems(rule(body))
    assert any(expected in p for p in found), found


def test_every_problem_is_listed_not_just_the_first() -> None:
    text = (
        rule(OK.replace("order_qty", "nope"))
        + "[[rule]]\n"
        + OK.replace('"halt"', '"x"')
        + "\n[[rule]]\n"
        + OK
    )
    found = problems(text)
    assert len(found) == 4, found  # bad metric, bad action, two duplicate names
    assert "rule 'r' (#2): field 'name': duplicate of rule #1" in found
    assert "rule 'r' (#3): field 'name': duplicate of rule #1" in found


def test_version_syntax_and_encoding() -> None:
    assert any("'version' must be 1" in p for p in problems("version = 2\n"))
    assert any("TOML syntax" in p for p in problems("version = = 1"))
    with pytest.raises(LimitsError, match="not UTF-8"):
        parse(b"version = 1\n# \xff\n")
    with pytest.raises(LimitsError, match="cannot read file"):
        load("/nonexistent/limits.toml")


def test_cli_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(ISSUE_EXAMPLE)
    assert main(["validate", str(good)]) == 0
    assert "OK, 2 rule(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(rule(OK.replace("order_qty", "nope").replace('"halt"', '"x"')))
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "INVALID, 2 problem(s)" in err and "field 'metric'" in err and "field 'action'" in err
    assert main(["validate", "--metrics"]) == 0
    assert "parent_overfill_ratio" in capsys.readouterr().out


def test_cli_validate_group_refuses_what_group_mode_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    firm = tmp_path / "firm.toml"
    firm.write_text(ISSUE_EXAMPLE)
    assert main(["validate", str(firm)]) == 0
    capsys.readouterr()
    assert main(["validate", "--group", str(firm)]) == 1
    err = capsys.readouterr().err
    assert "INVALID" in err and "spans input partitions" in err and "run this rule in single" in err
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(rule(OK))
    assert main(["validate", "--group", str(accounts)]) == 0
    assert "group mode sums" not in capsys.readouterr().out
    summed = tmp_path / "summed.toml"
    summed.write_text(
        rule(OK) + '\n[[rule]]\nname = "firm-rate"\nmetric = "order_rate"\nscope = "firm"\n'
        'window_ms = 1000\nmax = 500\naction = "halt"\n'
    )
    assert main(["validate", "--group", str(summed)]) == 0
    assert "group mode sums 1 cross-partition rule(s)" in capsys.readouterr().out


def test_cancel_deadline_defaults_to_one_second_and_is_read() -> None:
    assert parse(rule(OK)).cancel_deadline_ms == 1000
    assert parse("cancel_deadline_ms = 250\n" + rule(OK)).cancel_deadline_ms == 250
    assert parse("cancel_deadline_ms = 0\n" + rule(OK)).cancel_deadline_ms == 0
    assert parse("cancel_deadline_ms = 600000\n" + rule(OK)).cancel_deadline_ms == 600_000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-1", "'cancel_deadline_ms' must be between 0 and 600000, got -1"),
        ("600001", "'cancel_deadline_ms' must be between 0 and 600000, got 600001"),
        ("1.5", "'cancel_deadline_ms' must be an integer number of milliseconds, got 1.5"),
        ("true", "'cancel_deadline_ms' must be an integer number of milliseconds, got True"),
        ('"1s"', "'cancel_deadline_ms' must be an integer number of milliseconds, got '1s'"),
    ],
)
def test_a_bad_cancel_deadline_is_named(value: str, expected: str) -> None:
    found = problems(f"cancel_deadline_ms = {value}\n" + rule(OK))
    assert expected in found, found


V12 = """
version = 1
base_currency = "EUR"

[[rule]]
name = "gross"
metric = "gross_notional"
scope = "account"
max = 5000000
warn_at = [0.5, 0.75, 0.9]
rearm = 0.1
action = "halt"

[[rule]]
name = "xnas-sells"
metric = "order_rate"
scope = "venue"
match = { venue = "XNAS", side = "sell" }
window_ms = 1000
max = 100
action = "halt"

[[restricted]]
symbols = ["XYZ"]
reason = "MNPI"
strategies = ["smars"]
"""


def test_v12_keys_load() -> None:
    limits = parse(V12)
    assert limits.base_currency == "EUR"
    gross = limits.rule("gross")
    assert (gross.warn_at, gross.warn_rearm, gross.alert_rearm) == ((0.5, 0.75, 0.9), 0.1, 0.1)
    rate = limits.rule("xnas-sells")
    assert (rate.event_filter("side"), rate.event_filter("venue")) == (("sell",), ())
    (entry,) = limits.restricted
    assert (entry.name, entry.action, entry.reason) == ("restricted-1", "halt", "MNPI")
    assert dict(entry.match) == {"symbol": ("XYZ",), "strategy": ("smars",)}
    assert parse(ISSUE_EXAMPLE).rule("smars-overfill").warn_rearm == 0.05  # the default


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            ('base_currency = "EUR"', 'base_currency = "euro"'),
            "'base_currency' must be an ISO 4217",
        ),
        (("warn_at = [0.5, 0.75, 0.9]", "warn_at = [0.9, 0.5]"), "field 'warn_at': levels must"),
        (("warn_at = [0.5, 0.75, 0.9]", "warn_at = [1.5]"), "field 'warn_at': must be a list"),
        (("rearm = 0.1", "rearm = 1"), "field 'rearm': must be a fraction"),
        (('side = "sell"', 'side = "short"'), "field 'match.side': must be 'buy' or 'sell'"),
        (('venue = "XNAS"', 'venue = "nasdaq"'), "field 'match.venue': must be ISO 10383"),
        (('reason = "MNPI"', 'reason = ""'), "restricted 'restricted-1' (#1): field 'reason'"),
        (('symbols = ["XYZ"]', "symbols = []"), "field 'symbols': required"),
        (('scope = "account"\nmax = 5000000', 'scope = "venue"\nmax = 5000000'), "supports scopes"),
    ],
)
def test_v12_mistakes_are_named(change: tuple[str, str], named: str) -> None:
    text = V12.replace(*change)
    assert text != V12
    assert any(named in p for p in problems(text)), problems(text)


def test_side_on_a_position_metric_is_refused_with_the_reason() -> None:
    text = V12.replace(
        'scope = "account"\nmax = 5000000',
        'scope = "account"\nmatch = { side = "buy" }\nmax = 5000000',
    )
    (problem,) = problems(text)
    assert "rule 'gross' (#1): field 'match.side': selects orders and fills" in problem


def test_warn_at_needs_a_bound_it_is_a_fraction_of() -> None:
    text = V12.replace("max = 5000000", "min = 10")
    assert any("field 'warn_at': needs a positive 'max'" in p for p in problems(text))


def test_restricted_is_not_a_rule_metric() -> None:
    text = V12.replace('metric = "gross_notional"', 'metric = "restricted"')
    assert any("'restricted' comes from [[restricted]] entries" in p for p in problems(text))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (OK.replace("max = 5", "max = -5"), "field 'max': -5 is below 0, and 'order_qty' never"),
        (
            OK.replace("order_qty", "price_deviation").replace("max = 5", "max = -0.1"),
            "field 'max': -0.1 is below 0, and 'price_deviation' never is: the rule would "
            "breach on every evaluation (max = 0 refuses any)",
        ),
        (
            OK.replace("order_qty", "price_deviation").replace("max = 5", "max = 0.1\nmin = -0.1"),
            "field 'min': -0.1 is below 0, and 'price_deviation' never is: the rule could "
            "never breach",
        ),
        (OK.replace("order_qty", "drawdown").replace("max = 5", "max = -1"), "'drawdown' never"),
    ],
)
def test_bounds_below_zero_on_metrics_that_never_are_refused(body: str, expected: str) -> None:
    found = problems(rule(body))
    assert any(expected in p for p in found), found


def test_every_metric_that_can_be_negative_takes_negative_bounds() -> None:
    assert {m for m in METRICS if m not in NONNEGATIVE_METRICS} == {
        "pnl",
        "net_notional",
        "consumer_lag_ms",
    }
    for metric in ("pnl", "net_notional"):
        body = OK.replace("order_qty", metric).replace("max = 5", "min = -5\nmax = -1")
        parse(rule(body))  # a band below zero is fine where values can be


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "'version' must be 1, it is missing"),
        ("version = true\n", "'version' must be 1, got true"),
        (
            "version = 1\nrevalue_ms = false\n",
            "must be an integer number of milliseconds, got false",
        ),
        (
            rule(OK.replace("max = 5", "max = true")),
            "field 'max': must be a finite number, got true",
        ),
        (rule(OK.replace('action = "halt"', "")), "field 'action': must be one of"),
        (rule(OK.replace('scope = "account"', "scope = [1]")), "got [1]"),
        (rule(OK.replace('metric = "order_qty"', "")), "field 'metric': required (one of: "),
    ],
)
def test_messages_speak_toml_not_python(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found
    joined = "\n".join(found)
    assert "None" not in joined and "True" not in joined and "False" not in joined, found


def test_cli_validate_says_there_are_no_rules_and_exits_2_when_unreadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("version = 1\n")
    assert main(["validate", str(empty)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{empty}: OK, but it has no rules: nothing would ever halt or alert")
    assert "0 rule(s)" not in out and "()" not in out
    missing = tmp_path / "missing.toml"
    assert main(["validate", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"riskguard validate: {missing}: cannot read file: No such file or directory\n"
    )
    assert main(["validate", str(tmp_path)]) == 2  # a folder
    assert "cannot read file: Is a directory" in capsys.readouterr().err
