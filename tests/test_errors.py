"""Every OSError family maps to one line naming the path and the fix, with the exit code of its kind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pathotune_cli.errors import BadInput, PathotuneError, os_error
from pathotune_cli.files import atomic_write, final_path, os_error_of, prepare_output_folder


@pytest.mark.parametrize(
    ("code", "exit_code", "words"),
    [
        (errno.EEXIST, 2, "exists and is not a folder"),
        (errno.ENOTDIR, 2, "a part of this path is a file, not a folder"),
        (errno.EISDIR, 2, "is a folder, not a file"),
        (errno.EROFS, 2, "is on a read-only file system"),
        (errno.EACCES, 2, "permission denied"),
        (errno.EPERM, 2, "permission denied"),
        (errno.ENOENT, 2, "does not exist"),
        (errno.ENOSPC, 1, "no space left on the device holding"),
        (errno.EDQUOT, 1, "on the device holding"),
    ],
)
def test_each_os_error_is_one_line_with_the_path_and_the_fix(code: int, exit_code: int, words: str) -> None:
    mapped = os_error(OSError(code, os.strerror(code), "/data/out"), option="--out")
    line = mapped.one_line()
    assert mapped.exit_code == exit_code and isinstance(mapped, BadInput) == (exit_code == 2)
    assert words in line and "/data/out" in line and "; " in line and "\n" not in line


def test_an_error_without_a_file_name_takes_the_place_it_was_given() -> None:
    line = os_error(OSError(errno.ENOSPC, "No space left on device"), where="/data/P").one_line()
    assert "no space left on the device holding /data/P" in line


def test_writers_in_other_languages_are_read_for_their_os_error() -> None:
    found = os_error_of(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert found is not None and found.errno == errno.ENOSPC
    assert os_error_of(ValueError("no number here")) is None


def test_a_failed_write_names_the_final_file_never_the_temporary(tmp_path: Path) -> None:
    def full(temp: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / ".a.csv.tmp-host-1-2.csv"  # a temporary of a temporary (files.Staging, then atomic_write)
    with pytest.raises(OSError) as info:
        atomic_write(target, full)
    assert info.value.filename == str(tmp_path / "a.csv") and info.value.errno == errno.ENOSPC
    assert final_path(tmp_path / "plain.txt") == tmp_path / "plain.txt"


@pytest.mark.parametrize(
    ("layout", "words"),
    [
        ("out is a file", "--out {out} exists and is not a folder"),
        ("parent is a file", "--out {out}: a part of this path is a file, not a folder"),
    ],
)
def test_an_output_folder_that_cannot_be_made_is_refused_up_front(layout: str, words: str, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if layout == "out is a file" else tmp_path / "f" / "sub"
    with pytest.raises(BadInput) as info:
        prepare_output_folder(out)
    assert words.format(out=out) in info.value.one_line()


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.EROFS, "is on a read-only file system"), (errno.EACCES, "permission denied"),
     (errno.ENOSPC, "no space left on the device")],
)
def test_an_output_folder_that_cannot_be_written_is_refused_up_front(
    code: int, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pathotune_cli.files as files

    real = os.open

    def refuse(path: object, flags: int, mode: int = 0o777, *args: object) -> int:
        if str(path).startswith(str(tmp_path / "out")):
            raise OSError(code, os.strerror(code), os.fspath(path))  # type: ignore[arg-type]
        return real(path, flags, mode, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(files.os, "open", refuse)
    with pytest.raises(BadInput) as info:
        prepare_output_folder(tmp_path / "out", "--out")
    line = info.value.one_line()
    assert words in line and f"--out {tmp_path / 'out'}" in line and ".probe" not in line
    assert info.value.exit_code == 2  # found before the work: the user's location, even when it is full


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_a_real_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(BadInput, match="permission denied"):
        prepare_output_folder(locked / "out")


def test_failed_runs_and_bad_inputs_keep_their_exit_codes() -> None:
    assert PathotuneError("x").exit_code == 1 and BadInput("x").exit_code == 2
