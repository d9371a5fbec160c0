"""One resume rule for every per-slide command (``tile``, ``predict``): keep a slide only when nothing changed.

Each finished (or failed) slide leaves a record, ``<stem>.<command>.json``, written after its outputs are in
place. It holds the slide's summary row and its key: the input file's identity and every setting that changes
the outputs. ``--resume`` keeps a slide only when its record says it finished, the key matches and the outputs
are there; otherwise the slide is redone and the summary says why (``redone (settings changed: min_tissue)``).
The summary of a folder (``manifest.csv``, ``summary.csv``) is rebuilt from the records, so it lists every
slide of the folder, whichever run or process made it.

The input's identity is its size and the sha256 of its first and last MiB: cheap on a slide of many GB, and it
tells a replaced file from the original without trusting modification times, which copies rewrite.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathotune_cli.errors import PathotuneError
from pathotune_cli.files import remove, sha256_file, write_json

SAMPLE_BYTES = 1 << 20
RECORD_VERSION = 1


@dataclass(frozen=True)
class SlideKey:
    """What a slide's outputs depend on: the input file and the settings, each setting by name."""

    input: dict[str, Any]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The key as plain data, for the record."""
        return {"input": self.input, "settings": self.settings}


@dataclass(frozen=True)
class Decision:
    """Whether to keep a slide's earlier outputs, and the word for the summary."""

    keep: bool
    resume: str
    """``kept``, or ``redone (why)``; empty when the slide has no record."""
    row: dict[str, Any] = field(default_factory=dict)
    """The kept slide's summary row (empty when redone)."""


def input_identity(path: Path) -> dict[str, Any]:
    """Name, size and a sampled sha256 (first and last MiB) of an input.

    Of each file that stands for the slide, in order (``wsi.inputs.identity_files``: a DICOM series' files, an
    OME-Zarr folder's metadata, an MRXS file and its index); a one-file slide's identity is as it always was.
    """
    from pathotune_cli.wsi.inputs import identity_files

    files = (identity_files(path) if path.is_dir() or path.suffix.lower() in (".dcm", ".mrxs") else []) or [path]
    digest = hashlib.sha256()
    total = 0
    for file in files:
        size = file.stat().st_size
        total += size
        digest.update(str(size).encode())
        with file.open("rb") as handle:
            digest.update(handle.read(SAMPLE_BYTES))
            if size > SAMPLE_BYTES:
                handle.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
                digest.update(handle.read(SAMPLE_BYTES))
    return {"name": path.name, "bytes": total, "sample_sha256": digest.hexdigest()}


def file_digest(path: str | Path | None) -> str | None:
    """sha256 of a small side file that a slide's outputs depend on (tissue GeoJSON, coords, prompts), or None."""
    return None if path is None else sha256_file(path)


def record_path(out: Path, stem: str, command: str) -> Path:
    """Where a slide's record lives."""
    return out / f"{stem}.{command}.json"


def write_record(out: Path, stem: str, command: str, key: SlideKey, row: dict[str, object]) -> Path:
    """Write a slide's record after its outputs are in place (atomically: it is the last word on the slide)."""
    return write_json(
        record_path(out, stem, command), {"version": RECORD_VERSION, "key": key.to_dict(), "row": row}
    )


def record_failure(
    out: Path, stem: str, command: str, outputs: Iterable[Path], key: Callable[[], SlideKey], row: dict[str, object]
) -> None:
    """Remove a failed slide's outputs and record why it failed.

    Nothing stays under a final name without an ``ok`` record, and the folder's summary lists the slide.
    ``key`` is called here: the slide itself may be what is broken.
    """
    record_path(out, stem, command).unlink(missing_ok=True)
    for final in outputs:
        remove(final)
    try:
        found = key()
    except (OSError, PathotuneError):  # the slide itself is missing or unreadable
        found = SlideKey(input={"name": stem}, settings={})
    try:
        write_record(out, stem, command, found, row)
    except OSError:  # a full disk: this run's summary still lists the slide
        pass


def decide(out: Path, stem: str, command: str, key: SlideKey, outputs: list[Path]) -> Decision:
    """Keep the slide's earlier outputs only if its record finished with this key and every output exists."""
    record = read_record(record_path(out, stem, command))
    if record is None:
        return Decision(False, "")
    row = record.get("row") or {}
    if row.get("status") != "ok":
        return Decision(False, "redone (it failed before)")
    old = record.get("key") or {}
    if old.get("input") != key.input:
        return Decision(False, "redone (the input file changed)")
    before = old.get("settings") or {}
    changed = sorted(k for k in {*before, *key.settings} if before.get(k) != key.settings.get(k))
    if changed:
        return Decision(False, f"redone (settings changed: {', '.join(changed)})")
    missing = [p.name for p in outputs if not p.exists()]
    if missing:
        return Decision(False, f"redone (outputs missing: {', '.join(missing)})")
    return Decision(True, "kept", row)


def read_record(path: Path) -> dict[str, Any] | None:
    """A record, or None when it is missing or unreadable (a slide without a readable record is redone)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("row"), dict) else None


def folder_rows(out: Path, command: str) -> list[dict[str, Any]]:
    """The summary row of every slide recorded in ``out`` for ``command``, sorted by slide name."""
    rows = []
    for path in sorted(out.glob(f"*.{command}.json")):
        record = read_record(path)
        if record is not None:
            rows.append(record["row"])
    return sorted(rows, key=lambda r: str(r.get("slide", "")))
