"""A tuning run's folder through its life: claimed, started, then finished or failed, as ``run.json`` says.

``run.json`` carries a ``status``: ``running`` (with the host and pid of the process), ``finished`` (the prompt
file, written last, is there) or ``failed`` (with the one-line error). A folder whose run did not finish is
never silently started over: a rerun without ``--resume`` refuses and names both ways on (``--resume`` or
``--force``), and a run that is still going on this host is never touched.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pathotune_cli.errors import BadInput, describe
from pathotune_cli.files import pid_namespace, process_alive, remove, write_json

RUN_RECORD = "run.json"
PROMPTS_NAME = "prompts.safetensors"
CHECKPOINT_NAME = "checkpoint.safetensors"
RUN_OUTPUTS = (
    PROMPTS_NAME, CHECKPOINT_NAME, "config.yaml", RUN_RECORD, "data_manifest.csv", "history.csv", "metrics.json",
    "val_predictions.csv", "confusion_matrix.png", "curves.png",
)
"""Every file a tuning run writes into its folder: what ``--force`` removes (nothing else of the folder)."""


def read_run_record(out: Path) -> dict[str, Any] | None:
    """A run folder's ``run.json``, or None when it has none (or an unreadable one)."""
    try:
        record = json.loads((out / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def claim(out: Path, *, resume: bool, force: bool) -> None:
    """Refuse a folder that holds another run, unless told what to do with it.

    Raises:
        BadInput: ``--resume`` with ``--force``; a run still going in the folder on this host; a finished run
            without ``--resume`` or ``--force``; an unfinished one (killed, failed) without either.
    """
    if resume and force:
        raise BadInput("--resume and --force exclude each other", "--resume continues the run, --force starts again")
    record = read_run_record(out)
    if record is not None and record.get("status") == "running" and _owner_alive(record):
        raise BadInput(
            f"{out} is in use by a tuning run still going (pid {record.get('pid')} on {record.get('host')})",
            "wait for it to end, or choose another --out",
        )
    if resume or force:
        return
    if (out / PROMPTS_NAME).exists():
        raise BadInput(f"{out} already holds a finished run",
                       "choose another --out, pass --resume to continue it, or --force to start again in it")
    if record is not None or (out / CHECKPOINT_NAME).exists():
        status = (record or {}).get("status") or "no status"
        error = str((record or {}).get("error") or "").split("; ")[0]
        detail = f"{status}: {error}" if error else status
        raise BadInput(
            f"{out} holds an unfinished run ({detail})",
            "pass --resume to continue it from its last checkpoint, or --force to start again in this folder",
        )


def clear(out: Path) -> None:
    """``--force``: remove the previous run's files (and only those) before starting again."""
    for name in RUN_OUTPUTS:
        remove(out / name)


def started_record(extra: dict[str, object]) -> dict[str, Any]:
    """The fields of ``run.json`` that say a run is going, and where."""
    return {"status": "running", "host": socket.gethostname(), "pid": os.getpid(), "pid_namespace": pid_namespace(),
            **extra}


@contextmanager
def failure_recorded(out: Path) -> Iterator[None]:
    """Mark ``run.json`` (where the run wrote one) ``failed`` with the one-line error when the block raises."""
    try:
        yield
    except BaseException as exc:
        mark_failed(out, describe(exc)[1])
        raise


def mark_failed(out: Path, error: str) -> None:
    """``run.json`` says ``failed`` with ``error``, where this process's run wrote it and it still says ``running``.

    A run that another rank's failure stops (the watchdog ends this process at once) calls this first, so that the
    rerun names that error instead of an unfinished ``running`` run.
    """
    record = read_run_record(out)
    if record is not None and record.get("status") == "running" and record.get("pid") == os.getpid():
        record.update(status="failed", error=error, ended=_now())
        try:
            write_json(out / RUN_RECORD, record)
        except OSError:  # the disk that failed the run may refuse this too: the status stays "running"
            pass


def mark_finished(out: Path, seconds: float) -> None:
    """``run.json`` says the run finished (written after the prompt file)."""
    record = read_run_record(out) or {}
    record.update(status="finished", ended=_now(), seconds=seconds)
    write_json(out / RUN_RECORD, record)


def _owner_alive(record: dict[str, object]) -> bool:
    pid = record.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    same_container = record.get("pid_namespace", pid_namespace()) == pid_namespace()
    return record.get("host") == socket.gethostname() and same_container and process_alive(pid)




def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")
