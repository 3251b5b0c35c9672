"""Where a setting came from, where riskguard keeps its state by default, and the
bootstrap servers' addresses: helpers of :mod:`riskguard.settings` that need nothing
of it."""

from __future__ import annotations

import difflib
import os
import re
import urllib.parse
from collections.abc import Collection, Mapping
from pathlib import Path

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
"""``runtime.log_level`` values (any case)."""

_AT = re.compile(r" - at `\$\.?([^`]*)`$")


def origin(message: str, given: Mapping[str, str], source: str) -> str:
    """Where the setting a validation ``message`` is about was given: the command-line
    flag or environment variable in ``given`` (dotted setting -> its name) whose setting
    the message names, else ``source`` (the file, or ``<defaults>``)."""
    found = _AT.search(message)
    path = found.group(1) if found else ""
    said = _AT.sub("", message)
    for dotted, name in given.items():
        leaf = dotted.rsplit(".", 1)[-1]
        if dotted == path or (dotted.startswith(f"{path}.") and leaf in said):
            return f"{name} ({dotted}): {said.removeprefix(f'{leaf}: ')}"
    return f"{source}: {message.replace('`$.', '`')}"


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where riskguard keeps its state when ``runtime.state_dir`` is not set.

    ``$STATE_DIRECTORY`` (set by systemd's ``StateDirectory=riskguard``: /var/lib/riskguard;
    the first of several), else ``$XDG_STATE_HOME/riskguard``, else
    ``~/.local/state/riskguard``. Never the current directory: a later ``run`` elsewhere
    must not pick up (or miss) halts by accident.
    """
    environ = os.environ if env is None else env
    systemd = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    xdg = environ.get("XDG_STATE_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "riskguard"
    return Path("~/.local/state/riskguard").expanduser()


def bootstrap_addresses(servers: str) -> list[tuple[str, int]]:
    """``"h1:9092,[::1]:9093"`` as ``[("h1", 9092), ("::1", 9093)]``.

    Raises :class:`ValueError` (naming ``bootstrap_servers`` and the entry) for an entry
    without a port from 1 to 65535, and when there is no entry at all.
    """
    out: list[tuple[str, int]] = []
    for entry in (e.strip() for e in servers.split(",")):
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65_535:
            raise ValueError(
                f"bootstrap_servers: {entry!r} is not host:port with a port from 1 to 65535 "
                "(e.g. 127.0.0.1:9092)"
            )
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("bootstrap_servers is empty: give host:port[,host:port...]")
    return out


def whole_number(text: str) -> int | str:
    """An environment variable's text as an int when it is one (``-5`` included), else
    the text itself, for the settings to refuse naming the variable."""
    try:
        return int(text)
    except ValueError:
        return text


def check_url(url: str) -> None:
    """Raises :class:`ValueError` (naming ``url``) unless ``url`` is an http(s) URL with a
    host: a notifier whose every delivery would fail is refused at start."""
    try:
        parts = urllib.parse.urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        usable = False
    if not usable:
        raise ValueError(f"url: {url!r} is not an http(s) URL with a host")


#: ``RISKGUARD_*`` variables other parts read (the CLI's client, the Apache Kafka jars,
#: the browser tests), beside the settings' own (:data:`riskguard.settings.ENV`).
OTHER_ENV = frozenset({"RISKGUARD_URL", "RISKGUARD_KAFKA_HOME", "RISKGUARD_CHROMIUM"})


def unknown_env(env: Mapping[str, str], known: Collection[str]) -> list[str]:
    """``RISKGUARD_*`` variables of ``env`` that nothing reads (not in ``known`` nor
    :data:`OTHER_ENV`), each with the closest known name when one is close
    (``RISKGUARD_RUNTIME_INSTANCE (did you mean RISKGUARD_INSTANCE?)``), sorted. A
    misspelt variable is otherwise ignored without a word, its setting left at its
    default."""
    names = sorted(set(known) | OTHER_ENV)
    out = []
    for name in sorted(n for n in env if n.startswith("RISKGUARD_")):
        if name in names:
            continue
        near = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
        out.append(f"{name} (did you mean {near[0]}?)" if near else name)
    return out
