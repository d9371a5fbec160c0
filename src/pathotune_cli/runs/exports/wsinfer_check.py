"""``export --format wsinfer --check-wsinfer SLIDE``: WSInfer runs the export, compared with ``predict``.

WSInfer is never a dependency: it is found as the ``wsinfer`` executable (``--wsinfer PATH``, else on PATH) and
run in its own process, as a lab runs it: ``wsinfer run`` with its own tissue detection and grid, one data
worker (0 crashes its GeoJSON step). ``pathotune predict`` runs on the same slide in fp32. Tiles at the same
level-0 position and size in both are compared: the share whose top class agrees, and the largest absolute
difference of any class probability.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pathotune_cli.errors import BadInput, PathotuneError
from pathotune_cli.events import Reporter, note

MIN_AGREEMENT = 0.99
"""Share of shared tiles whose top class must agree."""
MAX_PROBABILITY_DIFF = 0.02
"""Largest absolute difference of a class probability allowed on a shared tile."""
WSINFER_INSTALL = "pip install wsinfer==0.6.1 'zarr<3' into its own environment"
REGISTRY = "~/.wsinfer-zoo/wsinfer-zoo-registry.json"


def find_wsinfer(explicit: Path | None) -> Path:
    """The ``wsinfer`` executable: the one given, else the one on PATH.

    Raises:
        BadInput: the one given is not an executable file, or none is on PATH.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_dir():
            path = path / "wsinfer"
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BadInput(f"--wsinfer {explicit} is not an executable", "pass the path of the `wsinfer` command")
        return path.resolve()
    found = shutil.which("wsinfer")
    if found is None:
        raise BadInput("--check-wsinfer needs WSInfer, and no `wsinfer` command is on PATH",
                       f"{WSINFER_INSTALL}, then pass --wsinfer /path/to/bin/wsinfer")
    return Path(found).resolve()


def check_with_wsinfer(folder: Path, prompts: Path, slide: Path, exe: Path, classes: list[str],
                       weights: Path | None, report: Reporter) -> dict[str, Any]:
    """Run WSInfer on the exported folder and ``pathotune predict`` on ``slide``; compare their tiles.

    WSInfer runs first: a WSInfer that does not start fails before predict spends its time.

    Returns:
        The comparison: tile counts, shared tiles, top-class agreement, max and mean |dp|, thresholds, seconds.

    Raises:
        PathotuneError: WSInfer fails or writes no predictions, the two share no tiles, or they disagree beyond
            ``MIN_AGREEMENT`` / ``MAX_PROBABILITY_DIFF`` (one line with the numbers).
    """
    from pathotune_cli.runs.predict import PredictOptions, predict_run

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="pathotune-wsinfer-check-") as tmp:
        root = Path(tmp)
        note(report, f"WSInfer ({exe}) on {slide.name}")
        theirs, version = _run_wsinfer(exe, folder, slide, root, classes)
        note(report, f"pathotune predict on {slide.name} (fp32)")
        predicted = predict_run(PredictOptions(prompts=prompts, inputs=(slide,), out=root / "predict",
                                               precision="fp32", weights=weights))
        if predicted.failed:
            raise PathotuneError(f"pathotune predict failed on {slide.name}: {predicted.slides[0].error}",
                                 "check the slide with `pathotune tile`")
        ours = _read_tiles(root / "predict" / f"{slide.stem}.predictions.csv", "x", "y", "w", classes)
    comparison = compare_tiles(ours, theirs, classes)
    comparison.update(slide=str(slide), wsinfer=str(exe), wsinfer_version=version,
                      pathotune_level=int(predicted.slides[0].level or 0), seconds=round(time.time() - started, 2))
    _judge(comparison, slide.name)
    note(report, f"WSInfer agrees with predict on {comparison['top_class_agreement']:.1%} of "
                 f"{comparison['shared_tiles']} shared tiles, max |dp| {comparison['max_abs_dp']:.2e}")
    return comparison


def compare_tiles(ours: dict[tuple[int, int, int], list[float]], theirs: dict[tuple[int, int, int], list[float]],
                  classes: list[str]) -> dict[str, Any]:
    """Top-class agreement and probability differences on the tiles both have (same x, y and size)."""
    import numpy as np

    shared = sorted(set(ours) & set(theirs))
    a = np.array([ours[k] for k in shared], np.float64).reshape(-1, len(classes))
    b = np.array([theirs[k] for k in shared], np.float64).reshape(-1, len(classes))
    diff = np.abs(a - b)
    return {
        "tiles_pathotune": len(ours), "tiles_wsinfer": len(theirs), "shared_tiles": len(shared),
        "top_class_agreement": float((a.argmax(1) == b.argmax(1)).mean()) if shared else 0.0,
        "max_abs_dp": float(diff.max()) if shared else float("nan"),
        "mean_abs_dp": float(diff.mean()) if shared else float("nan"),
        "min_agreement": MIN_AGREEMENT, "max_allowed_dp": MAX_PROBABILITY_DIFF,
    }


def _judge(comparison: dict[str, object], name: str) -> None:
    if not comparison["shared_tiles"]:
        raise PathotuneError(
            f"WSInfer and pathotune predict share no tiles on {name} (WSInfer {comparison['tiles_wsinfer']}, "
            f"pathotune {comparison['tiles_pathotune']})",
            "check the slide's mpp in both; try a slide with more tissue",
        )
    agreement, dp = comparison["top_class_agreement"], comparison["max_abs_dp"]
    comparison["passed"] = agreement >= MIN_AGREEMENT and dp <= MAX_PROBABILITY_DIFF
    if not comparison["passed"]:
        level = comparison.get("pathotune_level", 0)
        raise PathotuneError(
            f"WSInfer and pathotune predict disagree on {name}: the top class agrees on {agreement:.1%} of "
            f"{comparison['shared_tiles']} shared tiles (needs {MIN_AGREEMENT:.0%}), max |dp| {dp:.3f} "
            f"(allowed {MAX_PROBABILITY_DIFF})",
            f"pathotune read pyramid level {level} where WSInfer always reads level 0 and downsamples it, so their "
            "pixels differ (the model card's pixels note); check on a slide scanned at the task's mpp" if level
            else "the WSInfer export is not faithful; rerun with --debug and report it",
        )


def _run_wsinfer(exe: Path, folder: Path, slide: Path, root: Path,
                 classes: list[str]) -> tuple[dict[tuple[int, int, int], list[float]], str | None]:
    """WSInfer's tiles and probabilities on ``slide`` (alone in a folder), and its version."""
    from pathotune_cli.engine.export import WSINFER_MODEL

    slides, results = root / "slides", root / "wsinfer"
    slides.mkdir()
    try:
        (slides / slide.name).symlink_to(slide.resolve())
    except OSError:
        shutil.copy2(slide, slides / slide.name)
    command = [str(exe), "run", "--wsi-dir", str(slides), "--results-dir", str(results),
               "--model-path", str(folder / WSINFER_MODEL), "--config", str(folder / "config.json"),
               "--num-workers", "1"]
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=root)
    found = sorted((results / "model-outputs-csv").glob("*.csv"))
    if done.returncode != 0 or not found:
        raise PathotuneError(f"WSInfer failed on {slide.name} (exit {done.returncode}): "
                             f"{_telling_line(done.stdout + done.stderr)}", _wsinfer_fix(done.stdout + done.stderr))
    version = None
    for meta in results.glob("run_metadata_*.json"):
        version = json.loads(meta.read_text()).get("runtime", {}).get("version")
    return _read_tiles(found[0], "minx", "miny", "width", classes), version


def _read_tiles(path: Path, x: str, y: str, w: str, classes: list[str]) -> dict[tuple[int, int, int], list[float]]:
    """``(x, y, size) -> probabilities`` from a predictions CSV (pathotune's or WSInfer's columns)."""
    with path.open(newline="") as handle:
        return {(round(float(r[x])), round(float(r[y])), round(float(r[w]))): [float(r[f"prob_{c}"]) for c in classes]
                for r in csv.DictReader(handle)}


def _telling_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error:" in line.lower()]
    return ((errors or lines or ["no output"])[-1])[:300]


def _wsinfer_fix(output: str) -> str:
    if "LocalEntryNotFoundError" in output or "wsinfer-zoo-registry" in output:
        return (f"offline, WSInfer needs a model registry file at {REGISTRY} (any valid one, e.g. "
                '{"models": {"x": {"description": "x", "hf_repo_id": "a/b", "hf_revision": "main"}}})')
    if "cbuffer_sizes" in output or "KVStore" in output:
        return "WSInfer 0.6.1 needs zarr<3 and numcodecs<0.16 in its environment"
    return "run the same `wsinfer run` by hand to see its whole log"
