"""The console ships as plain static files, and the install step brings the browser its
tests need (the browser tests themselves are in tests/integration/test_console.py)."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path

from riskguard.control.api import CONSOLE_FILES, CONSOLE_HEADERS

ROOT = Path(__file__).resolve().parents[1]


def test_console_files_are_in_the_package_and_load_nothing_from_elsewhere() -> None:
    folder = resources.files("riskguard") / "console"
    for name in CONSOLE_FILES:
        assert (folder / name).is_file(), name
    page = (folder / "index.html").read_text()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(assets) == ["/console/app.css", "/console/app.js"]
    assert "<script>" not in page and re.search(r"\son[a-z]+=", page) is None  # CSP: no inline
    script = (folder / "app.js").read_text()
    assert "innerHTML" not in script  # text is set with textContent only
    assert "sessionStorage" in script and "localStorage" not in script
    assert "document.cookie" not in script and "?token" not in script
    csp = CONSOLE_HEADERS["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp


def test_the_install_step_brings_chromium_and_playwright() -> None:
    readme = (ROOT / "README.md").read_text()
    install = next(b for b in re.findall(r"```bash\n(.*?)\n```", readme, re.S) if "pip" in b)
    assert "command -v chromium" in install and "apt-get install -y" in install
    assert "apt-get update" in install and install.count("\n") == 0  # one command
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["test"]
    assert any(dep.startswith("playwright") for dep in extra)
