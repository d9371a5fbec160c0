"""Lock files, so several processes (SLURM array tasks, ``--devices`` workers, torchrun ranks) share one folder.

A slide being worked on has ``<stem>.<command>.lock``, holding the owner's host, pid, start time and process
identity (its start tick and the host's boot id, so a reused pid is not mistaken for the owner). Another process
skips a slide whose lock is live. A lock is stale, and taken over, when its owner on this host is gone (a
process killed with SIGKILL leaves its lock behind), or when it comes from another host and has shown no sign of
life for ``FOREIGN_STALE_S``: a pid means nothing across hosts, so every holder touches its locks every
``HEARTBEAT_S`` from a thread, and a lock whose modification time stopped moving belongs to a crashed node or a
killed job (this is said out loud). The folder's summary is rebuilt under ``<command>.summary.lock`` so the last
rebuild sees every record.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pathotune_cli.events import Reporter, ignore, warn
from pathotune_cli.files import claim_stale, create_exclusive, pid_namespace, process_alive

HEARTBEAT_S = 30.0
"""How often a holder touches its locks (their modification time is its sign of life)."""
FOREIGN_STALE_S = 15 * 60
"""A lock from another host untouched for this long is taken over: 30 missed heartbeats, far above any clock
skew between a node and the file server."""
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
    namespace: str = ""
    """The owner's pid namespace (``files.pid_namespace``): containers on one host share its name, not its pids."""

    def is_here(self) -> bool:
        """Whether the pid means a process this one can see: same host, same pid namespace."""
        return self.host == socket.gethostname() and (not self.namespace or self.namespace == pid_namespace())

    def where(self) -> str:
        """``host h`` (with its container's pid namespace when it shares this host's name)."""
        other_container = self.host == socket.gethostname() and self.namespace and self.namespace != pid_namespace()
        return f"host {self.host}" + (f" (pid namespace {self.namespace})" if other_container else "")

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
    return Owner(socket.gethostname(), pid, time.time(), _process_start(pid), _boot_id(), pid_namespace())


def acquire(path: Path) -> Claim:
    """Take the lock at ``path`` unless a live process holds it; a stale one is taken over."""
    mine = json.dumps(asdict(me()))
    for _ in range(8):  # a few rounds of contention at most
        if create_exclusive(path, mine):
            _HEARTBEAT.hold(path)
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
            _HEARTBEAT.hold(path)
            who = owner.describe() if owner else "an unreadable owner"
            return Claim(True, taken_over=f"{path.name}: took over the lock of {who}: {why}")
    return Claim(False, _parse(_read(path)))


def release(path: Path) -> None:
    """Remove the lock if it is still this process's (a lock taken over as stale is the new owner's)."""
    _HEARTBEAT.drop(path)
    owner = _parse(_read(path))
    if owner is not None and owner.is_here() and owner.pid == os.getpid():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def slide_lock(out: Path, stem: str, command: str) -> Iterator[Claim]:
    """Hold a slide's lock for the block (when ``claim.held``); released when the block ends, however it ends."""
    path = lock_path(out, stem, command)
    claim = None
    try:
        claim = acquire(path)
        yield claim
    finally:
        if claim is None or claim.held:  # also when SIGTERM or Ctrl-C came just after the lock was made
            release(path)  # removes only a lock of this process


@contextlib.contextmanager
def folder_lock(path: Path, report: Reporter = ignore, wait_s: float = SUMMARY_WAIT_S) -> Iterator[None]:
    """Wait for and hold a short-lived lock (the summary's rebuild); after ``wait_s`` go on without it, saying so."""
    deadline = time.monotonic() + wait_s
    claim = None
    try:
        claim = acquire(path)
        while not claim.held and time.monotonic() < deadline:
            time.sleep(WAIT_POLL_S)
            claim = acquire(path)
        if not claim.held:
            who = claim.owner.describe() if claim.owner else "another process"
            warn(report, f"{path.name} is still held by {who} after {wait_s:.0f} s; going on without it")
        elif claim.taken_over:
            warn(report, claim.taken_over)
        yield
    finally:
        if claim is None or claim.held:  # also when interrupted just after the lock was made
            release(path)  # removes only a lock of this process


def stale_reason(owner: Owner | None, path: Path) -> str | None:
    """Why a lock's owner is gone (the lock may be taken over), or None while it may still be working."""
    now = time.time()
    if owner is None:
        age = now - _mtime(path, now)
        return f"it does not parse and is {age:.0f} s old" if age > UNREADABLE_STALE_S else None
    if not owner.is_here():  # another host or another container: only the heartbeat tells
        quiet = now - max(owner.started, _mtime(path, now))
        if quiet > FOREIGN_STALE_S:
            return (f"{owner.where()} has not touched it for {quiet / 60:.0f} min (a live owner does every "
                    f"{HEARTBEAT_S:.0f} s): its node crashed or its job was killed")
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
                     str(data.get("boot", "")), str(data.get("namespace", "")))
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


class _Heartbeat:
    """Touches every lock this process holds every ``HEARTBEAT_S``, from one daemon thread started on first use."""

    def __init__(self) -> None:
        self._held: set[Path] = set()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self, path: Path) -> None:
        with self._guard:
            self._held.add(Path(path))
            if self._thread is None or self._pid != os.getpid():  # a forked child has no thread of its parent
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._beat, name="pathotune-lock-heartbeat", daemon=True)
                self._thread.start()

    def drop(self, path: Path) -> None:
        with self._guard:
            self._held.discard(Path(path))

    def beat_once(self) -> None:
        """Touch every held lock now (the thread's work; tests call it directly)."""
        with self._guard:
            held = list(self._held)
        for path in held:
            with contextlib.suppress(OSError):  # released meanwhile, or a file system that refuses: next time
                os.utime(path)

    def _beat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            self.beat_once()


_HEARTBEAT = _Heartbeat()
