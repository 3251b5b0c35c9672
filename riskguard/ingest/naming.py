"""This instance's name on the control topic (``runtime.instance``), and one process per
name on a host.

The default name is the host name (under Kubernetes, the pod's name): stable across
restarts, so an instance restarted on its host is the same instance on the control topic
(its previous runs are not listed as dead peers in ``/v1/status``) and, in group mode,
rejoins under the same static membership id. Two riskguards on one host that share a
control topic need a name each: :func:`claim` refuses the second process under a name
another process on this host already uses on the same control topic, so it cannot start
under the default by accident (the control topic would only show it later, as an
``instance_conflict``).
"""

from __future__ import annotations

import errno
import hashlib
import socket
import sys

from riskguard.settings import KafkaSettings


class NameTakenError(Exception):
    """Another process on this host runs as this instance on the same control topic."""


def default_instance() -> str:
    """The name of an instance whose ``runtime.instance`` is empty: the host name
    (``socket.gethostname()``), or ``riskguard`` when the host has none."""
    return socket.gethostname() or "riskguard"


def claim(name: str, kafka: KafkaSettings, default: bool = False) -> socket.socket | None:
    """Hold ``name`` on ``kafka``'s control topic for this process, on this host.

    Binds an abstract Unix socket (Linux; per network namespace, so per pod) named after
    the bootstrap servers, the control topic and ``name``; the kernel releases it when
    the process ends, however it ends. Keep the returned socket open while running.
    Returns None where abstract sockets do not exist (not Linux). Raises
    :class:`NameTakenError` (one line, saying what to set; ``default``: the name is the
    default one) when another process holds it.
    """
    if not sys.platform.startswith("linux"):
        return None
    key = f"{kafka.bootstrap_servers}\0{kafka.control_topic}\0{name}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        held.bind(f"\0riskguard-instance-{digest}")
    except OSError as exc:
        held.close()
        if exc.errno != errno.EADDRINUSE:
            return None  # no abstract sockets here: the control topic still tells
        why = " (the default: the host name)" if default else ""
        raise NameTakenError(
            f"another riskguard on this host already runs as instance {name!r}{why} on the "
            f"control topic {kafka.control_topic!r} of {kafka.bootstrap_servers}: give each "
            "its own runtime.instance (env RISKGUARD_INSTANCE), runtime.state_dir and "
            "kafka.group_id"
        ) from exc
    return held
