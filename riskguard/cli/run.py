"""``riskguard run``: the sidecar as a process, from settings to a bounded stop.

Every way it can fail to start ends in one line on stderr and exit code 2 (bad
settings, an unreadable secret or limits file, a busy API port, no broker, a broker
that refuses riskguard, another riskguard on this host under the same instance name
and control topic: :mod:`riskguard.ingest.naming`), never a traceback. SIGTERM or
SIGINT is logged and stops it gracefully (batch finished, offsets committed, snapshot
written) within ``runtime.stop_timeout_s``; past that what is left is abandoned (exit
1), and a watchdog ends the process should even that hang. A second signal exits at once.
SIGHUP reloads the limits and the users file (one log line when neither changed).

Exit codes: 0 stopped gracefully, 1 stopped without finishing (timeout, second
signal, offsets the broker did not take), 2 could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading

from riskguard import log
from riskguard.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from riskguard.control.users import UsersError
from riskguard.limits import LimitsError
from riskguard.setting_origin import unknown_env
from riskguard.settings import ENV, Settings, SettingsError, check_files, load_settings

#: Past ``runtime.stop_timeout_s``, closing what is left gets this long before the
#: watchdog ends the process.
WATCHDOG_GRACE_S = 10.0


#: The flag of each setting ``run`` takes from its command line (named in its errors).
FLAGS = {
    "limits": "--limits",
    "kafka.bootstrap_servers": "--bootstrap-servers",
    "http.host": "--http-host",
    "http.port": "--http-port",
    "runtime.state_dir": "--state-dir",
}


class _StartFailedError(Exception):
    """Start-up failed; the message is the one line to print."""


def kafka_problem(settings: Settings, exc: BaseException) -> str:
    """One line naming the cluster, the security settings (never the password) and the error.

    aiokafka logs the broker's own reason (e.g. ``SaslAuthenticationFailed ... invalid
    credentials``) just before; its exception keeps only "Unable to bootstrap".
    """
    k = settings.kafka
    login = f", {k.sasl_mechanism} as {k.sasl_plain_username!r}" if k.sasl_mechanism else ""
    error = str(exc) or type(exc).__name__
    return f"cannot start on Kafka at {k.bootstrap_servers} ({k.security_protocol}{login}): {error}"


def cmd_run(args: argparse.Namespace) -> int:
    """Run the sidecar until SIGTERM or SIGINT (exit codes in the module docstring)."""
    try:
        settings = load_settings(
            args.config,
            overrides={
                "limits": args.limits,
                "kafka.bootstrap_servers": args.bootstrap_servers,
                "http.host": args.http_host,
                "http.port": args.http_port,
                "runtime.state_dir": getattr(args, "state_dir", None),
            },
            flags=FLAGS,
        )
        check_files(settings)
    except SettingsError as exc:
        print(f"riskguard run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    log.configure(settings.runtime.log_level)
    ignored = unknown_env(os.environ, ENV)
    if ignored:
        log.get("sidecar").warning(
            "unknown RISKGUARD_ environment variables ignored",
            variables=ignored,
            read=sorted(n for n in ENV if n.startswith("RISKGUARD_")),
        )
    try:
        return asyncio.run(_main(settings))
    except (LimitsError, SettingsError, UsersError, _StartFailedError) as exc:
        print(f"riskguard run: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _watchdog(seconds: float) -> threading.Timer:
    """A timer that ends the process (exit 1) unless cancelled within ``seconds``."""

    def expire() -> None:
        log.get("sidecar").error("stop did not finish: exiting now", after_s=seconds)
        os._exit(EXIT_FAILED)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    return timer


async def _main(settings: Settings) -> int:
    from aiokafka.errors import KafkaError  # noqa: PLC0415 - heavy, only for `run`

    from riskguard.ingest.naming import NameTakenError, claim  # noqa: PLC0415
    from riskguard.ingest.reload import on_sighup as reload_files  # noqa: PLC0415
    from riskguard.ingest.runtime import Sidecar, StartError  # noqa: PLC0415

    sidecar = Sidecar(settings)  # LimitsError, SettingsError: one line from cmd_run
    try:  # held until the process ends: one process per name on a control topic, per host
        held = claim(sidecar.instance, settings.kafka, default=not settings.runtime.instance)
    except NameTakenError as exc:
        raise _StartFailedError(str(exc)) from exc
    loop = asyncio.get_running_loop()
    events = log.get("sidecar")
    watchdog = _watchdog(settings.runtime.stop_timeout_s + WATCHDOG_GRACE_S)

    def on_stop(sig: signal.Signals) -> None:
        if sidecar.stopping:
            events.error("second stop signal: exiting now", signal=sig.name)
            os._exit(EXIT_FAILED)
        events.warning(
            "stop requested", signal=sig.name, stop_timeout_s=settings.runtime.stop_timeout_s
        )
        watchdog.start()
        sidecar.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop, sig)
    reloads: set[asyncio.Task[bool]] = set()

    def on_sighup() -> None:
        task = asyncio.create_task(reload_files(sidecar.reloader, sidecar.api.roster))
        reloads.add(task)  # keep a reference until it is done
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        starting = asyncio.create_task(sidecar.start(), name="start")
        stopped = asyncio.create_task(sidecar.stop_requested(), name="stop-requested")
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not starting.done():  # a signal during start-up: nothing to commit yet
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await sidecar.close()
            events.info("riskguard stopped during start-up", phase=sidecar.phase)
            return EXIT_OK
        failure = starting.exception()
        if failure is not None:
            await sidecar.close()
            if isinstance(failure, StartError):
                raise _StartFailedError(str(failure)) from failure
            if isinstance(failure, (KafkaError, TimeoutError)):
                raise _StartFailedError(kafka_problem(settings, failure)) from failure
            raise failure
        return EXIT_OK if await sidecar.run() else EXIT_FAILED
    finally:
        watchdog.cancel()
        if held is not None:
            held.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``run`` that this module reads beyond the connection flags."""
    parser.add_argument(
        "--state-dir",
        help="folder of the audit log, journal and snapshots (runtime.state_dir; default "
        "$STATE_DIRECTORY under systemd, else $XDG_STATE_HOME/riskguard or "
        "~/.local/state/riskguard)",
    )
