"""Reaching the broker at start: a bounded wait, and one-line reasons when it fails.

``riskguard run`` may start before its broker (a pod whose Kafka comes up a moment
later, a laptop where ``riskguard broker`` was forgotten). :func:`wait_for_broker`
waits up to ``runtime.broker_wait_s`` for any bootstrap server to accept a TCP
connection, then gives up with a :class:`StartError` that says so. A broker that
answers but refuses riskguard (a wrong password, an idempotent producer it does not
support) fails at once: waiting would not help.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError, KafkaError

from riskguard import log
from riskguard.setting_origin import bootstrap_addresses as parse_bootstrap
from riskguard.settings import KafkaSettings, Settings

#: Each connection attempt waits at most this long; attempts are this far apart too.
ATTEMPT_S = 1.0


class StartError(Exception):
    """riskguard could not start; the message says what, where and what to do, in one line."""


def bootstrap_addresses(servers: str) -> list[tuple[str, int]]:
    """``"h1:9092,[::1]:9093"`` as ``[("h1", 9092), ("::1", 9093)]``.

    Raises :class:`StartError` for an entry without a port from 1 to 65535 (settings
    refuse those already: :class:`~riskguard.settings.KafkaSettings`).
    """
    try:
        return parse_bootstrap(servers)
    except ValueError as exc:
        raise StartError(f"kafka.{exc}") from exc


async def _accepts(host: str, port: int) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), ATTEMPT_S)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def wait_for_broker(servers: str, wait_s: float) -> None:
    """Return once any of ``servers`` accepts a TCP connection; wait at most ``wait_s``.

    Logs once when it starts waiting. Raises :class:`StartError` ("no Kafka broker
    reachable at ... after N s") when none did in time.
    """
    addresses = bootstrap_addresses(servers)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    said = False
    while True:
        began = loop.time()
        for host, port in addresses:
            if await _accepts(host, port):
                if said:
                    log.get("sidecar").info("Kafka broker reachable", bootstrap_servers=servers)
                return
        if loop.time() >= deadline:
            raise StartError(
                f"no Kafka broker reachable at {servers} after {wait_s:g} s "
                "(runtime.broker_wait_s): is it running? For local work, "
                "`riskguard broker` starts one"
            )
        if not said:
            log.get("sidecar").warning(
                "waiting for a Kafka broker", bootstrap_servers=servers, broker_wait_s=wait_s
            )
            said = True
        pause = min(ATTEMPT_S - (loop.time() - began), deadline - loop.time())
        await asyncio.sleep(max(0.0, pause))


def make_state_folders(settings: Settings) -> None:
    """Create the folders of the audit log, the journal, the snapshots and, in group
    mode, the partitions' checkpoints (if missing). Raises :class:`StartError` naming the
    setting and the folder that cannot be made (a shared volume not writable here)."""
    rt = settings.runtime
    folders = [
        ("runtime.audit_log", rt.audit_path.parent),
        ("runtime.journal", rt.journal_path.parent),
        ("runtime.snapshot_dir", rt.snapshot_path),
    ]
    if settings.scale.group:
        folders.append(("scale.checkpoint_dir", rt.resolve(settings.scale.checkpoint_dir)))
    for setting, folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "not writable by this user")
        except OSError as exc:
            raise StartError(
                f"cannot create {folder} for {setting} (relative paths are inside "
                f"runtime.state_dir, --state-dir: {rt.state_path}): {exc.strerror or exc}"
            ) from exc


def idempotence_refused(kafka: KafkaSettings, exc: KafkaError) -> bool:
    """The producer failed to start because the broker refused idempotence (not because
    it could not connect or log in)."""
    return kafka.idempotent_producer and not isinstance(exc, KafkaConnectionError)


async def started(consumer: AIOKafkaConsumer) -> AIOKafkaConsumer:
    """``consumer``, started; stopped again when its start fails or is cancelled (a start
    interrupted by Ctrl-C or a failed start left it open: asyncio then logged
    ``Unclosed AIOKafkaConsumer`` as an error, and its connections stayed until collected).
    Raises what the start raised."""
    try:
        await consumer.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await consumer.stop()
        raise
    return consumer
