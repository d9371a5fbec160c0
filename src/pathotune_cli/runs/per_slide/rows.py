"""What every per-slide command knows of one slide: where it came from (``SlideInput``) and how it ended (``SlideRow``).

A row has the columns every command shares as attributes, and the command's own columns (class fractions, a
slide label, a feature width) in ``values``. It is what the slide's record holds (``to_record``), what the
folder's summary shows (``to_summary``), and what ``cli`` renders (attributes, ``column``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

ROW_STATUSES = ("ok", "failed", "locked", "pending", "in progress")
"""``ok`` finished; ``failed`` with its line in ``error``; ``locked`` another live process is on it (this run
skipped it); ``pending`` / ``in progress`` only in a folder's summary (``per_slide.merge``)."""

Value = str | int | float | bool | None
"""A summary cell."""


@dataclass(frozen=True)
class SlideInput:
    """One slide of a run: its file, and the mpp its slides-CSV row gives (None: the file's, or ``--default-mpp``)."""

    path: Path
    mpp: float | None = None

    @property
    def stem(self) -> str:
        """The name every output of the slide is built from (unique in a run)."""
        return self.path.stem

    @property
    def name(self) -> str:
        """The file name, as lines and summaries show it."""
        return self.path.name


@dataclass
class SlideRow:
    """One slide's line: shared columns as attributes, the command's own in ``values``."""

    slide: str
    status: str
    tiles: int = 0
    level: int | None = None
    mpp: float | None = None
    mpp_source: str = ""
    seconds: float = 0.0
    error: str = ""
    resume: str = ""
    """With ``--resume``: ``kept``, or ``redone (why)``; never stored in the record."""
    values: dict[str, Value] = field(default_factory=dict)
    """The command's own columns, in order."""
    notes: tuple[str, ...] = ()
    """Warnings for the user about this slide (stderr), never stored."""
    exit_code: int = 0
    """A failed slide's code: 2 when its input is at fault (an unsupported format, no mpp), else 1; never stored."""

    def column(self, name: str) -> Value:
        """A column by name, shared or the command's own (None when the row has no such column)."""
        if name in _SHARED:
            return getattr(self, name)
        return self.values.get(name)

    @property
    def name(self) -> str:
        """The slide's file name."""
        return Path(self.slide).name

    def to_record(self) -> dict[str, Value]:
        """The row as the slide's record stores it (and ``from_record`` reads back)."""
        shared = {f: getattr(self, f) for f in _SHARED if f != "resume"}
        return {**shared, **self.values}

    def to_summary(self) -> dict[str, Value]:
        """The row as the folder's summary shows it: the record's columns and this run's resume word."""
        return {**self.to_record(), "resume": self.resume}

    def to_dict(self) -> dict[str, Value | list[str]]:
        """The row as plain data (``--json``)."""
        return {**self.to_summary(), "notes": list(self.notes)}

    @classmethod
    def from_record(cls, record: dict[str, Value], resume: str = "") -> SlideRow:
        """A row from a slide's record (or a summary line): shared keys to attributes, the rest to ``values``."""
        shared = {k: record[k] for k in _SHARED if k in record and k != "resume"}
        values = {k: v for k, v in record.items() if k not in _SHARED}
        shared.setdefault("slide", "")
        shared.setdefault("status", "ok")
        return cls(**shared, values=values, resume=resume)  # type: ignore[arg-type]


def run_exit_code(rows: list[SlideRow]) -> int:
    """A per-slide run's exit code: 0 when no slide failed; 2 when every slide failed on bad input; else 1.

    A single slide of an unsupported format, or without mpp, is the user's input, as for any command (2); a run
    where some slides failed is a failed run whose other results are kept (1).
    """
    failed = [r for r in rows if r.status == "failed"]
    if not failed:
        return 0
    return 2 if len(failed) == len(rows) and all(r.exit_code == 2 for r in failed) else 1


_SHARED = tuple(f.name for f in fields(SlideRow) if f.name not in ("values", "notes", "exit_code"))
