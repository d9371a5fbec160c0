"""One way to write a file: under a temporary name in the same folder, then renamed into place.

A reader (a lab's script polling the output folder, QuPath, a rerun with ``--resume``) therefore sees either
the old file or the whole new one, never half of one. Temporaries carry ``TEMP_MARK`` in their name, so a run
that was killed before it could rename them leaves names that the next run in that folder recognises and
removes (``remove_stale_temporaries``). Every file is created with the process's umask (0644 by default), as
the lab's other tools expect on a shared cluster; some writers (safetensors) create 0600 files, which are
widened here.

The small helpers every writer needs live here too: JSON encoding of numpy, torch and pydantic values, the
sha256 of a file, and the one PNG compression level (``wsi.save_png`` writes every PNG picture with it).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pathotune_cli.errors import BadInput, os_error

TEMP_MARK = ".tmp-"
"""Part of every temporary's name: ``.<final name>.tmp-<host>-<pid>-<n><suffix>``."""
PNG_COMPRESSION = 1
"""zlib level for every PNG pathotune writes: on a slide overview 10% larger than level 6, in half the time."""
_counter = itertools.count()
_UMASK: int | None = None


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path``, with the same suffix (writers such as Pillow pick the format from
    it) and the host and pid, so ``remove_stale_temporaries`` can tell a dead writer's leftovers from a live one's."""
    return path.with_name(f".{path.name}{TEMP_MARK}{host_token()}-{os.getpid()}-{next(_counter)}{path.suffix}")


def pid_namespace() -> str:
    """This process's pid namespace (the inode of ``/proc/self/ns/pid``; empty where there is none).

    Two containers on one host with host networking share the hostname but not their pids: a pid is only
    meaningful with its namespace.
    """
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def host_token() -> str:
    """The host (and pid namespace) a temporary's pid belongs to, as it appears in its name."""
    host = socket.gethostname().split(".")[0].replace("-", "_") or "host"
    namespace = pid_namespace()
    return f"{host}_ns{namespace}" if namespace else host


def atomic_write(path: str | os.PathLike[str], data: bytes | str | Callable[[Path], Any]) -> Path:
    """Write ``data`` to ``path`` atomically and return ``path``.

    Args:
        path: The final file (or folder, when ``data`` is a callback that makes one). Missing parent folders
            are created.
        data: The bytes or text (UTF-8) to write, or a callback that writes to the temporary path it is given
            (a file or a folder).

    Raises:
        OSError: The write or the rename failed; the temporary is removed and ``path`` is unchanged.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(final)
    try:
        if callable(data):
            data(temp)
        else:
            payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
        _widen_to_umask(temp)
        if final.is_dir() and not final.is_symlink() and temp.is_dir():
            shutil.rmtree(final)
        os.replace(temp, final)
    except BaseException as exc:
        remove(temp)
        found = os_error_of(exc)
        if found is not None and (found is not exc or TEMP_MARK in os.fsdecode(found.filename or "")):
            raise OSError(found.errno, found.strerror, os.fspath(final_path(final))) from exc
        raise
    return final


def final_path(path: str | os.PathLike[str]) -> Path:
    """The final name a temporary stands for (``.a.csv.tmp-host-1-2.csv`` -> ``a.csv``, temporaries of
    temporaries too), so a message names the file the user asked for; other paths are returned as they are."""
    path = Path(path)
    name = path.name
    while name.startswith(".") and TEMP_MARK in name:
        name = name[1:].rsplit(TEMP_MARK, 1)[0]
    return path.with_name(name)


def os_error_of(exc: BaseException) -> OSError | None:
    """The operating system's error behind ``exc``, or None.

    An ``OSError`` without a file name (a write on a full disk names none) comes back as a new ``OSError`` so
    the caller can add the path; writers in other languages (safetensors) raise their own types whose text
    says ``(os error 28)``, and come back as the ``OSError`` of that number.
    """
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc if exc.filename is not None else OSError(exc.errno, exc.strerror)
    match = re.search(r"os error (\d+)", str(exc))
    if match is None:
        return None
    number = int(match.group(1))
    return OSError(number, os.strerror(number))


def prepare_output_folder(
    folder: str | os.PathLike[str], option: str = "--out", value: str | os.PathLike[str] | None = None
) -> Path:
    """Make ``folder`` (and its parents) and check that a file can be created in it, before any long work.

    Args:
        folder: The output folder.
        option: The option that named it, for the message.
        value: What the option said, when it named a file in ``folder`` (``export --out FILE``).

    Raises:
        BadInput: the folder cannot be made or written (a file in the way, a read-only disk, no permission,
            no space), in one line naming ``option``, the path and the fix.
    """
    folder = Path(folder)
    probe = temp_path(folder / "probe")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        named = Path(os.fsdecode(exc.filename)) if exc.filename is not None else folder
        named = folder if named == probe else named
        found = os_error(OSError(exc.errno, exc.strerror, os.fspath(named)), folder, option)
        if exc.errno == errno.ENOENT:  # mkdir in a place that takes no folders (/proc, a vanished mount)
            found = BadInput(f"{named} cannot be created there ({exc.strerror})", found.fix.replace("check the path",
                             f"choose another {option or 'location'}"))
        given = Path(value) if value is not None else folder
        starts = found.problem.startswith(str(named))
        prefix = f"{option} " if named == given and starts else f"{option} {given}: "
        raise BadInput(prefix + found.problem if option else found.problem, found.fix) from None
    return folder


class Staging:
    """Several outputs written under temporary names, then renamed into place together by ``commit``.

    Used as a context manager: whatever was not committed when the block ends (an error, Ctrl-C) is removed,
    so a slide's outputs appear under their final names all at once or not at all.
    """

    def __init__(self) -> None:
        self._pairs: list[tuple[Path, Path]] = []

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def temp(self, final: str | os.PathLike[str]) -> Path:
        """A temporary path to write ``final``'s content to (file or folder); its parent is created."""
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path(final)
        self._pairs.append((temp, final))
        return temp

    def add(self, temp: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
        """Stage a file already written elsewhere on the same file system (e.g. by a writer that must choose
        its own file names), to be renamed to ``final`` on commit."""
        self._pairs.append((Path(temp), Path(final)))

    @property
    def finals(self) -> list[Path]:
        """The final paths staged so far, in order."""
        return [final for _, final in self._pairs]

    def commit(self) -> list[Path]:
        """Rename every staged temporary to its final name, in the order staged; returns the final paths."""
        done = []
        for temp, final in self._pairs:
            _widen_to_umask(temp)
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            os.replace(temp, final)
            done.append(final)
        self._pairs.clear()
        return done

    def discard(self) -> None:
        """Remove every temporary not yet committed."""
        for temp, _ in self._pairs:
            remove(temp)
        self._pairs.clear()


def create_exclusive(path: str | os.PathLike[str], text: str) -> bool:
    """Make ``path`` hold ``text`` only if no file has that name; True when this call made it (a lock).

    The text goes to a temporary first and is hard-linked to ``path``: the link is atomic and refuses an existing
    name (also on NFS, where ``O_EXCL`` once was not), and the file appears complete, never half-written.
    """
    final = Path(path)
    temp = temp_path(final)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            os.link(temp, final)
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            return _create_exclusive_in_place(final, text)
        return True
    except FileExistsError:
        return False
    finally:
        remove(temp)


NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK}
"""What ``link`` answers on file systems without hard links (gcsfuse, s3fs, blobfuse, some SMB mounts)."""


def _create_exclusive_in_place(final: Path, text: str) -> bool:
    """``create_exclusive`` where hard links are refused: ``O_EXCL`` on the final name. For the microseconds
    until the text is written a reader sees an empty file, which locks read as unparsable and leave alone."""
    try:
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return True


def claim_stale(path: str | os.PathLike[str], seen: str) -> bool:
    """Remove ``path`` (a dead process's lock) if it still holds ``seen``; True when this call removed it.

    The file is renamed to a private name first (of several processes claiming it, one rename wins), then read:
    if it no longer holds ``seen`` (another process took it over meanwhile), it is linked back.
    """
    final = Path(path)
    private = temp_path(final)
    try:
        os.replace(final, private)
    except FileNotFoundError:
        return False
    try:
        if private.read_text(encoding="utf-8") == seen:
            return True
        try:
            os.link(private, final)  # a live owner's lock, taken by mistake: give it back
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            _create_exclusive_in_place(final, seen)
        return False
    finally:
        remove(private)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, text)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON atomically (numpy, torch, paths and pydantic models encoded as plain values)."""
    return atomic_write(path, dumps(data) + "\n")


def write_yaml(path: str | os.PathLike[str], data: Any) -> Path:
    """Write YAML atomically, keys in their given order."""
    import yaml

    return atomic_write(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def write_csv(path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV atomically."""
    import csv

    def write(temp: Path) -> None:
        with temp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    return atomic_write(path, write)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pathotune`` (else ``~/.cache/pathotune``): measurements worth keeping between runs."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "pathotune"


def read_json_cache(path: Path) -> dict[str, Any]:
    """A JSON cache file as a dict; empty when it is missing or unreadable (a cache is never an error)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_json_cache(path: Path, key: str, value: Any) -> None:
    """Set one entry of a JSON cache file atomically; a cache that cannot be written is skipped, not an error."""
    data = read_json_cache(path)
    data[key] = value
    try:
        write_json(path, data)
    except OSError:
        pass


def dumps(data: Any, indent: int | None = 2) -> str:
    """JSON text of ``data``, with the encoder every pathotune file uses."""
    return json.dumps(data, indent=indent, default=json_default)


def json_default(value: Any) -> Any:
    """Plain values for JSON: arrays and tensors as lists, paths as strings, pydantic models as dicts."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def remove(path: Path) -> None:
    """Remove a file or a folder if it exists; never raises for one that is already gone."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries a killed run left in ``folder`` (not recursive); returns what was removed.

    A temporary is stale when it was made on this host (and pid namespace) by a process that no longer runs.
    Temporaries of live processes (another shard writing into the same folder) and of other hosts or containers
    (a shared file system, where a pid means nothing here) are left alone; the latter are removed once they are
    a day old.
    """
    import time

    folder = Path(folder)
    if not folder.is_dir():
        return []
    host = host_token()
    removed = []
    for entry in folder.iterdir():
        name = entry.name
        if not name.startswith(".") or TEMP_MARK not in name:
            continue
        owner = name.rsplit(TEMP_MARK, 1)[1].split("-")
        if len(owner) < 2 or not owner[1].isdigit():
            continue
        stale = False
        if owner[0] == host:
            stale = not process_alive(int(owner[1]))
        else:
            with contextlib.suppress(OSError):
                stale = time.time() - entry.lstat().st_mtime > 86_400
        if stale:
            remove(entry)
            removed.append(entry)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (this process counts as alive).

    A process that was killed but not yet reaped (a zombie: its parent died too, and a container's first
    process may never reap it) answers ``kill(pid, 0)``, yet it is gone: ``/proc`` says so.
    """
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS), or it ended just now
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] not in (["Z"], ["X"])


def _widen_to_umask(path: Path) -> None:
    """Give a file the mode ``open`` would have given it (0666 less the umask); folders get 0777 less it."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    base = 0o777 if path.is_dir() else 0o666
    with contextlib.suppress(OSError):
        os.chmod(path, base & ~_UMASK)
