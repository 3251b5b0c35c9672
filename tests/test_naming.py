"""The default instance name is the host's (stable across restarts), and one process per
name on a control topic per host: the second is refused, naming what to set."""

from __future__ import annotations

import socket
import sys

import pytest

from riskguard.ingest.naming import NameTakenError, claim, default_instance
from riskguard.settings import KafkaSettings

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets")


def test_the_default_name_is_the_host_name() -> None:
    assert default_instance() == socket.gethostname()


@linux_only
def test_a_name_is_held_once_per_control_topic_until_released() -> None:
    kafka = KafkaSettings(bootstrap_servers="h:9092", control_topic="c-naming-test")
    first = claim("rg-x", kafka, default=True)
    assert first is not None
    try:
        with pytest.raises(NameTakenError) as taken:
            claim("rg-x", kafka, default=True)
        said = str(taken.value)
        assert "already runs as instance 'rg-x' (the default: the host name)" in said
        assert "'c-naming-test' of h:9092" in said and "RISKGUARD_INSTANCE" in said
        others = [
            claim("rg-y", kafka),  # another name
            claim("rg-x", KafkaSettings(bootstrap_servers="h:9092", control_topic="other")),
            claim("rg-x", KafkaSettings(bootstrap_servers="k:9092", control_topic="c-naming-test")),
        ]
        assert all(o is not None for o in others)
        for o in others:
            assert o is not None
            o.close()
    finally:
        first.close()
    again = claim("rg-x", kafka)  # released with its socket (or the process)
    assert again is not None
    again.close()
