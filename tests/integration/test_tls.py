"""The control API over TLS (cert and key from settings)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import msgspec
import pytest

from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL, TOKEN


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_api_serves_tls(settings: Settings, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    base = msgspec.to_builtins(settings)
    base["http"].update(tls_certfile=str(cert), tls_keyfile=str(key))
    sidecar = Sidecar(msgspec.convert(base, Settings), OVERFILL)
    await sidecar.start()
    try:
        assert sidecar.api_url.startswith("https://")
        trust = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as s:
            async with s.post(
                f"{sidecar.api_url}/v1/halt",
                ssl=trust,
                headers={"Authorization": f"Bearer {TOKEN}"},
                json={"scope": "firm", "reason": "tls"},
            ) as r:
                assert r.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await s.get(f"{sidecar.api_url}/livez")  # untrusted without the CA
    finally:
        await sidecar.stop()
