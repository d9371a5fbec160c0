"""``pathotune report``: one offline HTML page for a predict or eval folder, from its records alone.

``records`` reads the folder (never the model), ``slide_view`` and ``images`` make each slide's pictures,
``predict_page`` / ``eval_page`` write the page on the shell of ``page``, with the CSS and JavaScript of
``static/`` inlined. The page loads nothing: every image is a data URI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pathotune_cli.events import Reporter, ignore, warn

REPORT_NAME = "report.html"


@dataclass(frozen=True)
class ReportResult:
    """The page written, and what it holds."""

    path: Path
    kind: str
    slides: int
    bytes: int
    seconds: float

    def to_dict(self) -> dict[str, object]:
        """The result as plain data."""
        return {"path": str(self.path), "kind": self.kind, "slides": self.slides, "bytes": self.bytes,
                "seconds": self.seconds}


def build_report(folder: Path) -> Path:
    """Write ``folder/report.html`` from the predict or eval records in ``folder``; returns its path.

    Raises:
        BadInput: ``folder`` is not a predict or eval folder.
    """
    return report_run(folder).path


def write_report_quietly(folder: Path, report: Reporter = ignore) -> Path | None:
    """``build_report`` after a run that already finished; returns the page, or None when it failed.

    A report that cannot be written is a warning, not a failure of the run: its records are in place, and
    ``pathotune report FOLDER`` can try again.
    """
    from pathotune_cli.errors import PathotuneError, describe

    try:
        return build_report(folder)
    except (PathotuneError, OSError, ValueError) as exc:
        warn(report, f"report.html not written: {describe(exc)[1]}; rerun `pathotune report {folder}`")
        return None


def report_run(folder: Path, out: Path | None = None) -> ReportResult:
    """Build the report of ``folder`` into ``out`` (default ``folder/report.html``).

    Raises:
        BadInput: ``folder`` is not a predict or eval folder.
    """
    from pathotune_cli.files import atomic_write
    from pathotune_cli.runs.report.records import read_records

    started = time.time()
    records = read_records(Path(folder))
    if records.kind == "eval":
        from pathotune_cli.runs.report.eval_page import eval_page

        text = eval_page(records)
    else:
        from pathotune_cli.runs.report.predict_page import predict_page
        from pathotune_cli.runs.report.slide_view import slide_view

        classes = list(records.model.classes) or _classes(records.columns)
        views = {s.stem: slide_view(s, classes) for s in records.slides if s.row.get("status") == "ok"}
        text = predict_page(records, views, classes)
    path = Path(out) if out else records.folder / REPORT_NAME
    data = text.encode("utf-8")
    atomic_write(path, data)
    return ReportResult(path, records.kind, len(records.slides), len(data), round(time.time() - started, 2))


def _classes(columns: list[str]) -> list[str]:
    """Class names from ``summary.csv`` columns (``fraction_<c>`` or ``prob_<c>``) when the header is not there."""
    for prefix in ("fraction_", "prob_"):
        found = [c[len(prefix):] for c in columns if c.startswith(prefix)]
        if found:
            return found
    return []
