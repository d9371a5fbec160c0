"""One way to write a file: whole or not at all, with the umask's permissions, and nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pathotune_cli.files import TEMP_MARK, Staging, atomic_write, host_token, remove_stale_temporaries, temp_path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = atomic_write(tmp_path / "a.txt", "old")

    def half(temp: Path) -> None:
        temp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, half)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_files_get_the_umasks_mode_even_from_writers_that_make_0600(tmp_path: Path) -> None:
    def private(temp: Path) -> None:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)

    path = atomic_write(tmp_path / "p.safetensors", private)
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_staged_outputs_appear_together_or_not_at_all(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), Staging() as staged:
        staged.temp(tmp_path / "a.csv").write_text("a")
        staged.temp(tmp_path / "b.png").write_text("b")
        raise RuntimeError("killed before the renames")
    assert list(tmp_path.iterdir()) == []
    with Staging() as staged:
        staged.temp(tmp_path / "a.csv").write_text("a")
        staged.temp(tmp_path / "b.png").write_text("b")
        assert staged.commit() == [tmp_path / "a.csv", tmp_path / "b.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.png"]


def test_a_dead_writers_temporaries_go_and_a_live_ones_stay(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".a.csv{TEMP_MARK}{host_token()}-{int(dead.stdout)}-0.csv"
    stale.write_text("left by a killed run")
    live = temp_path(tmp_path / "b.csv")  # this process's
    live.write_text("being written")
    other = tmp_path / "notes.tmp-1"  # not ours: no leading dot
    other.write_text("x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and other.exists() and not stale.exists()
