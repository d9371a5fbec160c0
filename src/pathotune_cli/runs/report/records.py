"""What a report is built from: a predict or eval folder's records, read once; the model is never run.

A predict folder holds ``summary.csv``, ``run.json`` and per slide ``<stem>.predict.json`` with its outputs
(``<stem>.predictions.csv``, ``<stem>.heatmap.png`` or ``<stem>.attention.png``, ``<stem>.thumb.jpg``,
``<stem>.explain/``). An eval folder holds ``metrics.json``, ``predictions.csv``, ``confusion_matrix.png`` and
``reliability_diagram.png``. The model section comes from the prompt file's header where the file the records
name is still there (its sha256 checked against ``run.json``), else from the records alone, and says which.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pathotune_cli.errors import BadInput

Kind = Literal["predict", "eval"]
PREDICT_RECORDS = frozenset({"predict"})
"""The ``command`` of the run records a predict folder holds."""
MAP_NAMES = (".heatmap.png", ".attention.png")
"""The map picture ``predict`` draws per slide: tile-level heatmap, slide-level attention."""


@dataclass(frozen=True)
class ModelInfo:
    """The model a run used, as its records tell it."""

    task: str = ""
    level: str = "tile"
    classes: tuple[str, ...] = ()
    backbone: str = ""
    licence: str = ""
    method: str = ""
    prompts: str = ""
    prompts_sha256: str = ""
    precision: str = ""
    calibration: str = ""
    """What the probabilities are, in words (``calibrated ...`` only when the records say so)."""
    calibrated: bool = False
    random_weights: bool | None = None
    """None: unknown (the prompt file is not where the records say)."""
    fingerprint: str = ""
    tile: str = ""
    trained_on: dict[str, Any] = field(default_factory=dict)
    """From the header's training section: data, class counts, epochs, seed."""
    source: str = ""
    """Where these facts come from."""


@dataclass(frozen=True)
class SlideRecord:
    """One slide of a predict folder: its summary row and the files beside it."""

    stem: str
    row: dict[str, str]
    tiles_csv: Path | None = None
    map_png: Path | None = None
    thumbnail: Path | None = None
    top_tiles: Path | None = None
    """``<stem>.top_tiles.png``: the most attended tiles of a slide-level prediction."""
    explain: list[dict[str, str]] = field(default_factory=list)
    """``explanations.csv`` rows of ``<stem>.explain/``, ``png`` made a full path."""


@dataclass(frozen=True)
class RunRecords:
    """Everything a report shows, read from one folder."""

    folder: Path
    kind: Kind
    model: ModelInfo
    run: dict[str, Any] = field(default_factory=dict)
    """``run.json`` (predict) or ``metrics.json`` (eval)."""
    columns: list[str] = field(default_factory=list)
    slides: list[SlideRecord] = field(default_factory=list)
    images: Path | None = None
    """``predictions.csv`` of tile images (predict)."""


def read_records(folder: Path) -> RunRecords:
    """The records of a predict or eval folder.

    Raises:
        BadInput: ``folder`` is not a folder, or holds neither a predict run nor an eval run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"{folder} is not a folder", "pass the --out folder of `pathotune predict` or `pathotune eval`")
    metrics = _json(folder / "metrics.json")
    if metrics is not None and "confusion_matrix" in metrics and "prompts" in metrics:  # tune's has no prompts
        return RunRecords(folder, "eval", eval_model(metrics), run=metrics)
    run = _json(folder / "run.json") or next(
        (r for r in map(_json, sorted(folder.glob("run-*-of-*.json"))) if r is not None), None)  # a shard's
    command = (run or {}).get("command")
    summary = (folder / "summary.csv").is_file()
    if (isinstance(command, str) and command in PREDICT_RECORDS) or (command is None and summary):
        columns, rows = read_csv(folder / "summary.csv")
        slides = [_slide(folder, row) for row in rows]
        images = folder / "predictions.csv"
        return RunRecords(folder, "predict", predict_model(run or {}), run=run or {}, columns=columns,
                          slides=slides, images=images if images.is_file() else None)
    raise BadInput(f"{folder} is not a predict or eval folder (no summary.csv of predict, no metrics.json of eval)",
                   "pass the --out folder of `pathotune predict` or `pathotune eval`")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV file; empty when it cannot be read."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except (OSError, UnicodeDecodeError, csv.Error):
        return [], []


def predict_model(run: dict[str, Any]) -> ModelInfo:
    """The model of a predict run: ``run.json``, completed by the prompt file's header when it is unchanged."""
    settings = run.get("settings") or {}
    uncalibrated = bool(settings.get("uncalibrated"))
    return _with_header(settings.get("prompts") or "", run.get("prompts_sha256") or "",
                        run.get("precision") or settings.get("precision") or "", uncalibrated, None)


def eval_model(metrics: dict[str, Any]) -> ModelInfo:
    """The model of an eval run: ``metrics.json``, completed by the prompt file's header where it is there."""
    cal = metrics.get("calibration") or {}
    probabilities = cal.get("probabilities")
    words = None
    if probabilities == "calibrated":
        words = f"calibrated probabilities (temperature {_g(cal.get('temperature'))}, fitted on the validation split)"
    elif probabilities:
        words = f"{probabilities} softmax probabilities"
    info = _with_header(metrics.get("prompts") or "", "", metrics.get("precision") or "",
                        probabilities not in (None, "calibrated"), words)
    return ModelInfo(**{**info.__dict__, "task": info.task or metrics.get("task", ""),
                        "method": info.method or metrics.get("method", ""),
                        "backbone": info.backbone or metrics.get("backbone", ""),
                        "level": metrics.get("level") or info.level})


def _with_header(prompts: str, recorded_sha: str, precision: str, uncalibrated: bool,
                 calibration: str | None) -> ModelInfo:
    """Facts of the prompt file at ``prompts``, when it is there and (if a hash was recorded) unchanged."""
    from pathotune_cli.files import sha256_file

    path = Path(prompts) if prompts else None
    bare = ModelInfo(prompts=prompts, prompts_sha256=recorded_sha, precision=precision,
                     calibration=calibration or "not recorded")
    if path is None or not path.is_file():
        why = f"the prompt file {prompts or '(unnamed)'} is not there"
        return ModelInfo(**{**bare.__dict__, "source": f"the run's records only: {why}"})
    sha = sha256_file(path)
    if recorded_sha and sha != recorded_sha:
        why = f"{prompts} changed since the run (sha256 differs)"
        return ModelInfo(**{**bare.__dict__, "source": f"the run's records only: {why}"})
    header = read_header(path)
    if header is None:
        why = f"{prompts} holds no readable pathotune header"
        return ModelInfo(**{**bare.__dict__, "prompts_sha256": recorded_sha or sha,
                            "source": f"the run's records only: {why}"})
    return _from_header(header, bare, sha, uncalibrated, calibration)


def read_header(path: Path) -> dict[str, Any] | None:
    """The pathotune metadata of a prompt file (its safetensors header), without loading tensors or torch."""
    import struct

    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 64 * 1024**2:
                return None
            outer = json.loads(handle.read(length))
        meta = json.loads(outer["__metadata__"]["pathotune"])
    except (OSError, struct.error, ValueError, KeyError, TypeError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == "pathotune-prompts" else None


def _from_header(header: dict[str, Any], bare: ModelInfo, sha: str, uncalibrated: bool,
                 calibration: str | None) -> ModelInfo:
    backbone = header.get("backbone") or {}
    preset = backbone.get("preset") or {}
    cal = (header.get("trust") or {}).get("calibration") or {}
    temperature = cal.get("temperature")
    if calibration is None:
        calibration = ("raw softmax probabilities (no calibration in this prompt file)" if temperature is None else
                       f"raw softmax probabilities (--uncalibrated; the file's temperature is {_g(temperature)})"
                       if uncalibrated else
                       f"raw softmax probabilities (no temperature: {cal['note']})" if cal.get("note") else
                       f"calibrated probabilities (temperature {_g(temperature)}, fitted on the validation split)")
    tile = header.get("tile") or {}
    return ModelInfo(**{
        **bare.__dict__,
        "task": (header.get("task") or {}).get("name", ""), "level": header.get("level") or "tile",
        "classes": tuple(header.get("classes") or ()), "backbone": preset.get("name", ""),
        "licence": preset.get("licence", ""), "method": header.get("method", ""),
        "prompts_sha256": bare.prompts_sha256 or sha, "calibration": calibration,
        "calibrated": calibration.startswith("calibrated"),
        "random_weights": _random(backbone) or _random(header.get("instance_encoder")),
        "fingerprint": backbone.get("fingerprint", ""),
        "tile": f"{tile.get('size', '?')} px at {_g(tile.get('mpp'))} µm/px" if tile else "",
        "trained_on": dict(header.get("training") or {}),
        "source": "the prompt file's header" + (" (sha256 as in run.json)" if bare.prompts_sha256 else ""),
    })


def _random(part: Any) -> bool:
    """Whether a frozen part of the header ran on random weights (format 1 files: when its preset says so)."""
    if not isinstance(part, dict):
        return False
    return (part.get("weight_source") or (part.get("preset") or {}).get("weights")) == "random"


def _slide(folder: Path, row: dict[str, str]) -> SlideRecord:
    stem = Path(row.get("slide", "")).stem
    maps = [folder / f"{stem}{suffix}" for suffix in MAP_NAMES]
    tiles = folder / f"{stem}.predictions.csv"
    thumb = folder / f"{stem}.thumb.jpg"
    top = folder / f"{stem}.top_tiles.png"
    explain_dir = folder / f"{stem}.explain"
    _, explained = read_csv(explain_dir / "explanations.csv")
    for entry in explained:
        entry["png"] = str(explain_dir / entry.get("png", ""))
    return SlideRecord(
        stem=stem, row=row, tiles_csv=tiles if tiles.is_file() else None,
        map_png=next((m for m in maps if m.is_file()), None), thumbnail=thumb if thumb.is_file() else None,
        top_tiles=top if top.is_file() else None,
        explain=[e for e in explained if Path(e["png"]).is_file()],
    )


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _g(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "?"
