"""Lock files, so several processes (SLURM array tasks, ``--devices`` workers, torchrun ranks) share one folder.

A slide being worked on has ``<stem>.<command>.lock``, holding the owner's host, pid, start time and process
identity (its start tick and the host's boot id, so a reused pid is not mistaken for the owner). Another process
skips a slide whose lock is live. A lock is stale, and taken over, when its owner on this host is gone (a
process killed with SIGKILL leaves its lock behind), or when it comes from another host and is older than
``FOREIGN_STALE_S`` (a pid means nothing across hosts, so only age can tell; this is said out loud). The
folder's summary is rebuilt under ``<command>.summary.lock`` so the last rebuild sees every record.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pathotune_cli.events import Reporter, ignore, warn
from pathotune_cli.files import claim_stale, create_exclusive, process_alive

FOREIGN_STALE_S = 12 * 3600
"""A lock from another host older than this is taken over: no slide takes 12 hours."""
UNREADABLE_STALE_S = 60
"""A lock file that does not parse (a foreign tool, a damaged disk) is taken over once this old."""
WAIT_POLL_S = 0.05
SUMMARY_WAIT_S = 600


@dataclass(frozen=True)
class Owner:
    """Who holds a lock."""

    host: str
    pid: int
    started: float
    """Seconds since the epoch when the lock was taken."""
    process: str = ""
    """The owner's start tick from ``/proc/<pid>/stat`` (empty where there is no /proc)."""
    boot: str = ""
    """The owner host's boot id (empty where there is none)."""

    def describe(self) -> str:
        """``host h, pid p, since 2026-01-01 12:00:00``."""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"host {self.host}, pid {self.pid}, since {since}"


@dataclass(frozen=True)
class Claim:
    """The outcome of asking for a lock."""

    held: bool
    """This process holds it now."""
    owner: Owner | None = None
    """When not held: the live process that holds it (None when it could not be read)."""
    taken_over: str = ""
    """When held: the line that says whose stale lock was taken over (empty for a fresh lock)."""


def lock_path(out: Path, stem: str, command: str) -> Path:
    """Where a slide's lock lives."""
    return Path(out) / f"{stem}.{command}.lock"


def me() -> Owner:
    """This process as a lock owner."""
    pid = os.getpid()
    return Owner(socket.gethostname(), pid, time.time(), _process_start(pid), _boot_id())


def acquire(path: Path) -> Claim:
    """Take the lock at ``path`` unless a live process holds it; a stale one is taken over."""
    mine = json.dumps(asdict(me()))
    for _ in range(8):  # a few rounds of contention at most
        if create_exclusive(path, mine):
            return Claim(True)
        try:
            seen = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        owner = _parse(seen)
        why = stale_reason(owner, path)
        if why is None:
            return Claim(False, owner)
        if claim_stale(path, seen) and create_exclusive(path, mine):
            who = owner.describe() if owner else "an unreadable owner"
            return Claim(True, taken_over=f"{path.name}: took over the lock of {who}: {why}")
    return Claim(False, _parse(_read(path)))


def release(path: Path) -> None:
    """Remove the lock if it is still this process's (a lock taken over as stale is the new owner's)."""
    owner = _parse(_read(path))
    if owner is not None and owner.host == socket.gethostname() and owner.pid == os.getpid():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def slide_lock(out: Path, stem: str, command: str) -> Iterator[Claim]:
    """Hold a slide's lock for the block (when ``claim.held``); released when the block ends, however it ends."""
    path = lock_path(out, stem, command)
    claim = acquire(path)
    try:
        yield claim
    finally:
        if claim.held:
            release(path)


@contextlib.contextmanager
def folder_lock(path: Path, report: Reporter = ignore, wait_s: float = SUMMARY_WAIT_S) -> Iterator[None]:
    """Wait for and hold a short-lived lock (the summary's rebuild); after ``wait_s`` go on without it, saying so."""
    deadline = time.monotonic() + wait_s
    claim = acquire(path)
    while not claim.held and time.monotonic() < deadline:
        time.sleep(WAIT_POLL_S)
        claim = acquire(path)
    if not claim.held:
        who = claim.owner.describe() if claim.owner else "another process"
        warn(report, f"{path.name} is still held by {who} after {wait_s:.0f} s; going on without it")
    elif claim.taken_over:
        warn(report, claim.taken_over)
    try:
        yield
    finally:
        if claim.held:
            release(path)


def stale_reason(owner: Owner | None, path: Path) -> str | None:
    """Why a lock's owner is gone (the lock may be taken over), or None while it may still be working."""
    now = time.time()
    if owner is None:
        age = now - _mtime(path, now)
        return f"it does not parse and is {age:.0f} s old" if age > UNREADABLE_STALE_S else None
    if owner.host != socket.gethostname():
        age = now - owner.started
        if age > FOREIGN_STALE_S:
            return f"it is {age / 3600:.1f} h old, above the {FOREIGN_STALE_S / 3600:.0f} h limit for other hosts"
        return None
    if owner.boot and _boot_id() and owner.boot != _boot_id():
        return "it was taken before this host restarted"
    if not process_alive(owner.pid):
        return f"its process (pid {owner.pid}) is gone"
    if owner.process and _process_start(owner.pid) not in ("", owner.process):
        return f"pid {owner.pid} now belongs to another process"
    return None


def clear_stale(path: Path) -> None:
    """Remove a lock whose owner is gone (a worker process that died); a live one is left alone."""
    text = _read(path)
    if text and stale_reason(_parse(text), path) is not None:
        claim_stale(path, text)


def live_owner(path: Path) -> Owner | None:
    """The live owner of the lock at ``path``, or None when it is stale or missing (for ``merge``)."""
    text = _read(path)
    if not text:
        return None
    owner = _parse(text)
    return owner if stale_reason(owner, path) is None else None


def _parse(text: str) -> Owner | None:
    try:
        data = json.loads(text)
        return Owner(str(data["host"]), int(data["pid"]), float(data["started"]), str(data.get("process", "")),
                     str(data.get("boot", "")))
    except (ValueError, KeyError, TypeError):
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return ""


def _mtime(path: Path, default: float) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return default


def _process_start(pid: int) -> str:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks since boot), or empty."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return text.rsplit(")", 1)[-1].split()[19] if ")" in text else ""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
