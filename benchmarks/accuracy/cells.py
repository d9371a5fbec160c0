"""One cell of the grid: tune and evaluate through the same code as ``pathotune tune`` and ``pathotune eval``.

A cell is finished when its record ``cell.json`` (written last) holds the cell's key (the digest of the
resolved run config, the test data, the bootstrap settings) and the sha256 of ``eval/metrics.json``, and that
file is still there with that hash. Anything else (a killed tune, a killed eval, changed settings) is redone
from an empty folder, so a half-finished grid resumes where it stopped and never mixes settings.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.accuracy.grid import Cell, GridSpec
from pathotune_cli.events import Message, Reporter

RECORD = "cell.json"
CHECKPOINT = "checkpoint.safetensors"
METRICS = Path("eval") / "metrics.json"
PREDICTIONS = Path("eval") / "predictions.csv"
EVAL_SEED = 0


def tune_options(spec: GridSpec, cell: Cell, folder: Path) -> Any:
    """The ``TuneOptions`` of a cell: what ``pathotune tune`` would get on the command line."""
    from pathotune_cli.runs.tune import TuneOptions

    return TuneOptions(
        preset=spec.task, data=spec.train, backbone=cell.backbone, method=cell.method, out=folder,
        sets=cell.sets(spec.sets), epochs=spec.epochs, shots=cell.shots, seed=cell.seed,
        precision=spec.precision, device=spec.device, val_data=spec.val,
    )


def cell_key(spec: GridSpec, cell: Cell, config: Any) -> dict[str, Any]:
    """What must match for a finished cell to be kept: the resolved run config and how it is evaluated."""
    from pathotune_cli.runs.tune import config_digest

    return {
        "cell": asdict(cell), "config_digest": config_digest(config), "test": str(spec.test.resolve()),
        "bootstrap": spec.bootstrap, "eval_seed": EVAL_SEED,
    }


def finished(folder: Path, key: dict[str, Any]) -> tuple[bool, str]:
    """Whether the cell in ``folder`` finished with this key, and if not, why it is (re)done."""
    from pathotune_cli.files import sha256_file

    record = read_record(folder)
    if record is None:
        return False, "unfinished" if folder.exists() else "new"
    if record.get("key") != key:
        return False, "settings changed"
    metrics = folder / METRICS
    if not metrics.is_file() or sha256_file(metrics) != record.get("metrics_sha256"):
        return False, "metrics missing or changed"
    return True, "kept"


def read_record(folder: Path) -> dict[str, Any] | None:
    """The cell's record, or None when it has none (or a torn one)."""
    try:
        return json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None


def run_cell(spec: GridSpec, cell: Cell, config: Any, key: dict[str, Any], folder: Path,
             report: Reporter) -> dict[str, Any]:
    """Tune, evaluate, drop the resume checkpoint (unless kept) and write the cell's record last.

    Returns:
        The record, as written to ``cell.json``.

    Raises:
        PathotuneError: the run or its evaluation failed (bad data for these shots, ...).
    """
    from pathotune_cli.files import sha256_file, write_json
    from pathotune_cli.runs.evaluate import EvalOptions, eval_run
    from pathotune_cli.runs.tune import tune_run

    if folder.exists():
        shutil.rmtree(folder)  # a killed or outdated cell starts again from nothing
    tuned = tune_run(config, report=report)
    evaluated = eval_run(
        EvalOptions(prompts=tuned.prompts, data=spec.test, out=folder / METRICS.parent, bootstrap=spec.bootstrap,
                    seed=EVAL_SEED, precision=spec.precision or "auto", device=spec.device or "auto"),
        report=report,
    )
    if not spec.keep_checkpoints:  # only `tune --resume` reads it, and a finished cell never resumes
        (folder / CHECKPOINT).unlink(missing_ok=True)
    record = {
        "key": key,
        "cell": {**asdict(cell), "variant": cell.variant, "title": cell.title, "shots": cell.shots_label},
        "tvp_tokens": config.prompt.tvp.tokens if cell.method in ("vpt", "pathotune") else None,
        "tune": {k: getattr(tuned, k) for k in (
            "trainable_parameters", "backbone_parameters", "seconds", "epochs_run", "best_epoch", "stopped_early",
            "train_images", "val_images", "random_weights", "precision", "device", "early_stopping_on",
            "prompts_bytes")},
        "eval": {"seconds": evaluated.seconds, "tiles": evaluated.scores["n"]},
        "metrics_sha256": sha256_file(folder / METRICS),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(folder / RECORD, record)
    return record


def warnings_once(sink: Any) -> Reporter:
    """A reporter that passes each distinct warning line to ``sink`` once for the whole grid."""
    seen: set[str] = set()

    def report(event: object) -> None:
        if isinstance(event, Message) and event.warning and event.text not in seen:
            seen.add(event.text)
            sink(event.text)

    return report
