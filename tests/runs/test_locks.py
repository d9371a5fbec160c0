"""Per-slide lock files: a live owner keeps its slide, a dead or very old one is taken over, and says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from pathotune_cli.files import claim_stale, create_exclusive
from pathotune_cli.runs.per_slide.locks import FOREIGN_STALE_S, Owner, acquire, clear_stale, live_owner, me, release


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


def test_a_lock_of_another_host_is_taken_over_only_when_its_heartbeat_stopped(tmp_path: Path) -> None:
    path = tmp_path / "s.features.lock"
    _write(path, Owner("node-elsewhere", 1, time.time() - 60))
    assert not acquire(path).held
    long_ago = time.time() - FOREIGN_STALE_S - 60
    _write(path, Owner("node-elsewhere", 1, long_ago))  # started long ago, but touched just now: alive
    assert not acquire(path).held
    os.utime(path, (long_ago, long_ago))  # and then its node stopped touching it
    claim = acquire(path)
    assert claim.held and "host node-elsewhere has not touched it for 16 min" in claim.taken_over


def test_a_holder_touches_its_locks_until_it_releases_them(tmp_path: Path) -> None:
    from pathotune_cli.runs.per_slide.locks import _HEARTBEAT

    path = tmp_path / "s.tile.lock"
    assert acquire(path).held
    os.utime(path, (1.0, 1.0))
    _HEARTBEAT.beat_once()
    assert time.time() - path.stat().st_mtime < 60  # its sign of life, for processes on other hosts
    release(path)
    other = tmp_path / "t.tile.lock"
    _write(other, Owner("node-elsewhere", 1, time.time()))
    os.utime(other, (1.0, 1.0))
    _HEARTBEAT.beat_once()
    assert not path.exists() and other.stat().st_mtime == 1.0  # only the locks it holds


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


def test_locks_work_on_file_systems_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gcsfuse, s3fs, blobfuse and some SMB mounts refuse link(2): locks fall back to O_EXCL on the final name."""
    import errno

    import pathotune_cli.files as files

    def no_links(src: object, dst: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(files.os, "link", no_links)
    path = tmp_path / "s.predict.lock"
    assert acquire(path).held and json.loads(path.read_text())["pid"] == os.getpid()
    assert not create_exclusive(path, "another")  # a second process is refused, the first keeps it
    _write(path, Owner(me().host, _dead_pid(), time.time()))
    claim = acquire(path)  # a dead owner's lock is still taken over
    assert claim.held and "is gone" in claim.taken_over
    release(path)
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporaries left


def test_a_lock_of_another_container_with_this_hostname_is_judged_by_its_heartbeat(tmp_path: Path) -> None:
    """Containers with host networking share the hostname, not their pids: a pid alive here means nothing."""
    from dataclasses import replace

    path = tmp_path / "s.predict.lock"
    other = replace(me(), pid=os.getpid(), namespace="1")  # "our" pid, in another pid namespace
    _write(path, other)
    assert not acquire(path).held  # alive as far as anyone here can tell: its heartbeat is fresh
    release(path)  # and never removed as if it were this process's
    assert path.exists()
    long_ago = time.time() - FOREIGN_STALE_S - 60
    _write(path, replace(other, pid=_dead_pid(), started=long_ago))  # a pid dead here may live there
    assert not acquire(path).held
    os.utime(path, (long_ago, long_ago))
    claim = acquire(path)
    assert claim.held and "(pid namespace 1) has not touched it" in claim.taken_over


def test_temporaries_of_another_container_with_this_hostname_are_left_alone(tmp_path: Path) -> None:
    from pathotune_cli.files import host_token, remove_stale_temporaries, temp_path

    mine_dead = tmp_path / f".a.json.tmp-{host_token()}-{_dead_pid()}-0.json"
    elsewhere = tmp_path / f".b.json.tmp-{host_token().split('_ns')[0]}_ns1-{_dead_pid()}-0.json"
    for path in (mine_dead, elsewhere):
        path.write_text("x")
    assert temp_path(tmp_path / "c.json").name.startswith(f".c.json.tmp-{host_token()}-{os.getpid()}-")
    assert remove_stale_temporaries(tmp_path) == [mine_dead] and elsewhere.exists()
