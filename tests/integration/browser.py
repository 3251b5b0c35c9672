"""A real browser for the console tests: Debian's headless Chromium driven by Playwright.

Playwright's own browser download cannot work here, so Playwright is pointed at the
system's Chromium (``/usr/bin/chromium`` from Debian's ``chromium`` package, or
``$RISKGUARD_CHROMIUM``), launched with a fresh profile folder. Without Chromium or
Playwright the tests skip, saying how to install them, except where ``CI`` is set:
there they fail, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.apache_kafka_fixtures import in_ci

HOW_TO_INSTALL = (
    "install Chromium and Playwright: apt-get install -y chromium && pip install -e '.[test]'"
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def unavailable(message: str) -> None:
    """Skip with how to enable the browser tests, or fail where CI is set."""
    if in_ci():
        pytest.fail(f"{message} (CI is set: the browser tests may not skip)", pytrace=False)
    pytest.skip(f"{message}. To enable the browser tests: {HOW_TO_INSTALL}")


def chromium_path() -> str:
    """The system Chromium's executable (skips or fails when there is none)."""
    wanted = os.environ.get("RISKGUARD_CHROMIUM")
    found = wanted if wanted else shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).is_file() or not os.access(found, os.X_OK):
        unavailable(f"no Chromium at {found}")
    return found


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A Playwright browser context over the system Chromium, with a fresh profile."""
    executable = chromium_path()
    try:
        from playwright.async_api import async_playwright  # noqa: PLC0415 - optional
    except ImportError:
        unavailable("the Python package playwright is not installed")
        raise
    with tempfile.TemporaryDirectory(prefix="riskguard-chromium-") as profile:
        async with async_playwright() as p:
            context = await p.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                headless=True,
                args=ARGS,
                viewport={"width": 1440, "height": 1000},
            )
            try:
                yield context
            finally:
                await context.close()


async def sign_in(context: Any, url: str, token: str) -> Any:
    """A new tab on the console at ``url``, signed in with ``token``."""
    page = await context.new_page()
    await page.goto(url + "/")
    await page.fill("#token", token)
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#main:not([hidden])", timeout=10_000)
    return page
