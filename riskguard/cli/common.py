"""Exit codes and small helpers shared by the commands."""

from __future__ import annotations

import argparse

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found a problem (invalid file, refused request)
EXIT_USAGE = 2  # bad arguments, unreadable input, unreachable service


def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port, 0 to 65535 (0: a free one). Anything else is
    argparse's one-line usage error (exit 2), never bind()'s OverflowError."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give 0 to 65535 (0: a free one)")
    return port


EXIT_CODES_HELP = """exit codes:
  0  done (status: riskguard is ready)
  1  the command ran and found a problem: a request refused (401, 403, 409, 4xx),
     riskguard not ready (status), a resume re-halted at once by a standing breach
  2  bad arguments, an unreadable file, riskguard unreachable, or a server that is
     not riskguard"""
"""The epilog of every command's ``--help``: what each exit code means."""

_UNREACHABLE = """  2  bad arguments, an unreadable token file, riskguard unreachable, or a server
     that is not riskguard; a request taken with no answer in time (it may still be
     carried out: check with `riskguard status`)"""


def operator_exit_codes(done: str, refused: str) -> str:
    """The ``--help`` epilog of an operator command (``halt``, ``resume``, ``approve``,
    ``withdraw``): ``done`` says what exit 0 means, ``refused`` what exit 1 means."""
    return f"exit codes:\n  0  {done}\n  1  {refused}\n{_UNREACHABLE}"


HALT_EXIT_CODES_HELP = operator_exit_codes(
    "the halt (or reduce-only) is recorded under your name",
    "refused: 401 (token unknown), 403 (your role may not halt), 409 or another 4xx,\n"
    "     the reason printed",
)
RESUME_EXIT_CODES_HELP = operator_exit_codes(
    "resumed, or (four-eyes) a resume request made and its id printed",
    "refused (401, 403: risk-admin only, 409: a request for the scope pending, 4xx),\n"
    "     or re-halted at once"
    " by a standing breach (the rule and value printed)",
)
APPROVE_EXIT_CODES_HELP = operator_exit_codes(
    "approved: the resume is carried out, recorded with both names",
    "refused: your own request, 404 (an unknown request id), 409 (one that ended),\n"
    "     401, 403, 4xx; or approved and re-halted at once by a standing breach (the\n"
    "     rule and value printed)",
)
WITHDRAW_EXIT_CODES_HELP = operator_exit_codes(
    "the request is withdrawn",
    "refused: 404 (an unknown request id), 409 (one that ended), 401, 403, 4xx",
)
STATUS_EXIT_CODES_HELP = operator_exit_codes(
    "riskguard is ready",
    "riskguard answered and is not ready (the reason printed), or refused the\n"
    "     request: 401 (token unknown or missing), 403, 4xx",
)

RUN_EXIT_CODES_HELP = """exit codes:
  0  stopped gracefully (SIGTERM or SIGINT: batch finished, offsets committed)
  1  stopped without finishing (runtime.stop_timeout_s passed, or a second signal),
     with offsets left uncommitted (the broker down: the input is read again from
     the last commit at the next start), or stopped because a background task
     failed (a bug: logged at critical)
  2  could not start, with one line saying why (settings, naming the file, variable
     or flag; a secret or limits file, the users file, a busy port, no broker, a
     broker refusing riskguard, another riskguard on this host under the same
     runtime.instance on the same control topic)"""
"""The epilog of ``riskguard run --help`` (:mod:`riskguard.cli.run`)."""

BROKER_EXIT_CODES_HELP = """exit codes:
  0  stopped (Ctrl-C, SIGTERM, SIGHUP); --fetch: the jars are in the cache, or Java
     or Maven is missing and it says so (Apache Kafka is optional)
  1  the broker exited by itself; --fetch: Maven could not fetch the jars
  2  bad arguments, a --port already in use, or the broker could not start"""
"""The epilog of ``riskguard broker --help``."""

VALIDATE_EXIT_CODES_HELP = """exit codes:
  0  the limits file is valid (or --metrics)
  1  the limits file is invalid: every problem is listed
  2  bad arguments, or the file cannot be read"""
"""The epilog of ``riskguard validate --help``."""

REPLAY_EXIT_CODES_HELP = """exit codes:
  0  the replay ran to the end (its transitions and peaks are the result)
  2  bad arguments, unreadable events, or limits that cannot be read or are invalid"""
"""The epilog of ``riskguard replay --help``."""

DEMO_EXIT_CODES_HELP = """exit codes:
  0  the demo ran and its guarantees held (every runaway halted, nothing sent once the
     gate held the halt, working orders cancelled, no fat finger sent, positions
     reconciled)
  1  one of those guarantees did not hold: the summary says which
  2  bad arguments, or the bundled broker could not start
  130  interrupted (Ctrl-C): everything it started is stopped"""
"""The epilog of ``riskguard demo --help`` (:mod:`riskguard.demo.cli`)."""

TOP_EXIT_CODES_HELP = """exit codes (each command's --help says what they mean for it):
  0  done
  1  the command ran and found a problem (a request refused, riskguard not ready,
     an invalid limits file, a stop that did not finish)
  2  bad arguments, an unreadable file, an unreachable service, or could not start;
     one line on stderr says which, never a traceback"""
"""The epilog of ``riskguard --help``."""
