"""Headless Chromium (Debian's ``chromium``) opening a report offline, and the folders the reports are built from."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

WINDOW = (1280, 2400)
# Every flag that keeps the browser's own traffic (updates, sync, accounts) out of the network log, so what is
# left there is what the page asked for; the resolver rule makes any fetch that still happens fail.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--no-first-run", "--disable-default-apps", "--no-pings", "--enable-logging=stderr", "--v=0",
)


@dataclass
class Opened:
    """What the browser saw: the DOM after scripts ran, console messages, the page's requests, a screenshot."""

    dom: str
    console: list[str]
    requests: list[str]
    screenshot: Path
    window: tuple[int, int] = WINDOW


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium binary; missing is a failure under CI=true (the README's `make test` installs it), else a skip."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is missing (CI=true makes this a failure): apt-get install -y chromium")
    pytest.skip("chromium is missing: apt-get install -y chromium")


@pytest.fixture(scope="session")
def browse(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Opened]:
    """``browse(page)``: open a local HTML file in headless Chromium, offline, and report what happened."""

    def open_page(page: Path) -> Opened:
        work = tmp_path_factory.mktemp("chromium")
        shot, netlog = work / "screen.png", work / "net.json"
        done = subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={work / 'profile'}", f"--log-net-log={netlog}", "--dump-dom",
             f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=180, check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        console = [line for line in done.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]
        return Opened(done.stdout, console, page_requests(netlog), shot)

    return open_page


def page_requests(netlog: Path) -> list[str]:
    """URLs the page itself asked the network for (its requests carry the file:// isolation key)."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"]
            if e["type"] == start and "file://" in str(e.get("params", {}).get("network_isolation_key", ""))]
