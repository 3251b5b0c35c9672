"""``--help`` of the live and operator commands: every option explained, a description,
and the exit codes."""

from __future__ import annotations

import argparse

import pytest

from riskguard.cli import build_parser
from riskguard.cli.common import (
    APPROVE_EXIT_CODES_HELP,
    BROKER_EXIT_CODES_HELP,
    DEMO_EXIT_CODES_HELP,
    EXIT_CODES_HELP,
    HALT_EXIT_CODES_HELP,
    REPLAY_EXIT_CODES_HELP,
    RESUME_EXIT_CODES_HELP,
    RUN_EXIT_CODES_HELP,
    STATUS_EXIT_CODES_HELP,
    VALIDATE_EXIT_CODES_HELP,
    WITHDRAW_EXIT_CODES_HELP,
)

COMMANDS = ("run", "broker", "halt", "resume", "approve", "withdraw", "status", "audit")
#: commands whose exit codes are their own, not the operator commands' (EXIT_CODES_HELP)
OWN_EXIT_CODES = {
    "run": RUN_EXIT_CODES_HELP,
    "broker": BROKER_EXIT_CODES_HELP,
    "validate": VALIDATE_EXIT_CODES_HELP,
    "replay": REPLAY_EXIT_CODES_HELP,
    "demo": DEMO_EXIT_CODES_HELP,
    "halt": HALT_EXIT_CODES_HELP,
    "resume": RESUME_EXIT_CODES_HELP,
    "approve": APPROVE_EXIT_CODES_HELP,
    "withdraw": WITHDRAW_EXIT_CODES_HELP,
    "status": STATUS_EXIT_CODES_HELP,
}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def every(name: str) -> list[argparse.ArgumentParser]:
    """The command and its own subcommands (``users add``, ``users list``)."""
    command = subcommands(build_parser())[name]
    return [command, *subcommands(command).values()]


@pytest.mark.parametrize("name", [*COMMANDS, "users"])
def test_every_option_has_help_and_the_command_a_description(name: str) -> None:
    for parser in every(name):
        assert parser.description and len(parser.description) > 30, parser.prog
        assert parser.epilog == OWN_EXIT_CODES.get(name, EXIT_CODES_HELP), parser.prog
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip(), f"{parser.prog} {action.dest}"


@pytest.mark.parametrize("name", ["halt", "resume", "approve", "withdraw", "status"])
def test_token_file_help_is_about_a_path(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([name, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--token-file PATH path of a file holding your API token" in text
    assert "exit codes: 0" in text and "2 bad arguments" in text
    assert "--operator" not in text  # who acts is the token's owner


def test_exit_codes_are_the_ones_the_commands_use() -> None:
    from riskguard.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE  # noqa: PLC0415

    for text in (EXIT_CODES_HELP, HALT_EXIT_CODES_HELP, STATUS_EXIT_CODES_HELP):
        for code in (EXIT_OK, EXIT_FAILED, EXIT_USAGE):
            assert f"\n  {code}  " in "\n" + text.split("exit codes:")[1]


@pytest.mark.parametrize("name", sorted(OWN_EXIT_CODES))
def test_commands_with_their_own_exit_codes_say_so(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run --help`` lists how the sidecar ends (2: could not start), not the operator
    commands' codes (``riskguard not ready``, ``a request refused``)."""
    with pytest.raises(SystemExit):
        build_parser().parse_args([name, "--help"])
    out = capsys.readouterr().out
    assert out.rstrip().endswith(OWN_EXIT_CODES[name])
    assert "a request refused" not in out and "riskguard not ready" not in out


def test_the_top_level_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "exit codes (each command's --help says what they mean for it):" in out
    assert "  2  bad arguments, an unreadable file, an unreachable service" in out
