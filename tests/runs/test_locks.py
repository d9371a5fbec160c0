"""Per-slide lock files: a live owner keeps its slide, a dead or very old one is taken over, and says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from pathotune_cli.files import claim_stale, create_exclusive
from pathotune_cli.runs.locks import FOREIGN_STALE_S, Owner, acquire, clear_stale, live_owner, me, release


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write(path: Path, owner: Owner) -> None:
    path.write_text(json.dumps(asdict(owner)))


def test_a_live_owner_keeps_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.predict.lock"
    assert acquire(path).held
    again = acquire(path)
    assert not again.held and again.owner is not None and again.owner.pid == os.getpid()
    assert live_owner(path) is not None
    release(path)
    assert not path.exists()


def test_a_lock_whose_process_is_gone_is_taken_over_and_said(tmp_path: Path) -> None:
    path = tmp_path / "s.tile.lock"
    pid = _dead_pid()
    _write(path, Owner(me().host, pid, time.time()))
    assert live_owner(path) is None
    claim = acquire(path)
    assert claim.held and f"its process (pid {pid}) is gone" in claim.taken_over
    assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_lock_of_another_host_is_taken_over_only_when_very_old(tmp_path: Path) -> None:
    path = tmp_path / "s.features.lock"
    _write(path, Owner("node-elsewhere", 1, time.time() - 60))
    assert not acquire(path).held
    _write(path, Owner("node-elsewhere", 1, time.time() - FOREIGN_STALE_S - 60))
    claim = acquire(path)
    assert claim.held and "host node-elsewhere" in claim.taken_over and "h limit for other hosts" in claim.taken_over


def test_a_reused_pid_does_not_keep_a_dead_owners_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.predict.lock"
    _write(path, Owner(me().host, os.getpid(), time.time(), process="1", boot=me().boot))
    claim = acquire(path)
    assert claim.held and "now belongs to another process" in claim.taken_over


def test_release_leaves_another_owners_lock_and_clear_stale_a_live_one(tmp_path: Path) -> None:
    path = tmp_path / "s.predict.lock"
    _write(path, Owner("node-elsewhere", 1, time.time()))
    release(path)
    clear_stale(path)
    assert path.exists()
    _write(path, Owner(me().host, _dead_pid(), time.time()))
    clear_stale(path)
    assert not path.exists()


def test_exclusive_create_and_stale_claim_are_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    assert create_exclusive(path, "first") and not create_exclusive(path, "second")
    assert path.read_text() == "first"
    assert not claim_stale(path, "something else") and path.read_text() == "first"  # given back
    assert claim_stale(path, "first") and not path.exists()
    assert not claim_stale(path, "first")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_an_owner_killed_but_not_yet_reaped_is_gone(tmp_path: Path) -> None:
    from pathotune_cli.files import process_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{child.pid}/stat")
    while stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z":  # until it is a zombie
        time.sleep(0.01)
    try:
        assert not process_alive(child.pid)
        path = tmp_path / "s.predict.lock"
        _write(path, Owner(me().host, child.pid, time.time()))
        assert acquire(path).held
    finally:
        child.wait()
