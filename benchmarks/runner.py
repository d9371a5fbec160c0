"""Run the benchmark groups, each in a fresh child process, and gather one table and one JSON file.

Each group runs in its own interpreter (``python -m benchmarks --group NAME``) so one group's threads, caches
and memory never colour another's figures and a crash in one is reported while the others still run. The
children, their reading workers and the predict child are all one process tree under this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.core import Figure, hardware, log

GROUPS = ("startup", "reading", "tuning", "precision", "predict", "cluster")

# Every figure each group reports, quick or full (the keys of results.json's "figures"). Judged ones first.
EXPECTED: dict[str, tuple[str, ...]] = {
    "startup": (
        "startup.help_seconds", "startup.heavy_imports", "startup.python", "startup.weights_list_seconds",
        "startup.doctor_seconds", "startup.missing_weights_seconds",
    ),
    "reading": (
        "reading.tile_vs_openslide_save",
        "reading.tile_vs_hs2p",
        "reading.predict_vs_openslide",
        "reading.predict_vs_raw",
        "reading.tile_vs_openslide",
        "reading.tile_vs_raw",
        "reading.tile_vs_openslide_2",
        "reading.tile_vs_raw_2",
        "reading.hs2p_tifffile",
        "reading.hs2p_openslide",
        "reading.slide",
        "reading.grid",
        "reading.max_pixel_diff",
        "reading.openslide_1",
        "reading.openslide_2",
        "reading.raw_1",
        "reading.raw_2",
        "reading.raw_stored_1",
        "reading.openslide_save_1",
        "reading.tile_command",
        "reading.file_write_ms",
        "reading.file_probe_ms",
        "reading.predict_stage",
    ),
    "tuning": (
        "tuning.small.step_vs_forward",
        "tuning.small.step_vs_full",
        "tuning.base.step_vs_forward",
        "tuning.base.step_vs_full",
        "tuning.precision",
        "tuning.small.forward",
        "tuning.small.pathotune_step",
        "tuning.small.full_step",
        "tuning.base.forward",
        "tuning.base.pathotune_step",
        "tuning.base.full_step",
    ),
    "precision": (
        "precision.speedup",
        "precision.top_class_agreement",
        "precision.max_prob_diff",
        "precision.fp32",
        "precision.auto",
        "precision.head_accuracy",
    ),
    "predict": (
        "predict.vs_model_forward",
        "predict.kernels_vs_fastest",
        "predict.rss_small_slide",
        "predict.rss_large_slide",
        "predict.rss_ratio",
        "predict.vs_backbone_forward",
        "predict.run",
        "predict.model_forward",
        "predict.backbone_forward",
    ),
    "cluster": (
        "cluster.ranks_vs_one",
        "cluster.shards_vs_one",
        "cluster.one_process_step",
        "cluster.two_ranks_step",
        "cluster.predict_one",
        "cluster.predict_two_shards",
        "cluster.predict_devices",
    ),
}


def run_group(name: str, work: Path, quick: bool, seed: int) -> list[Figure]:
    """Run one group in this process."""
    import importlib

    module = importlib.import_module(f"benchmarks.{name}")
    work.mkdir(parents=True, exist_ok=True)
    os.sync()  # the last group's files reach the disk now, not in the background of this group's timings
    return module.run(work, quick, seed)


def group_main(name: str, work: Path, result: Path, quick: bool, seed: int) -> int:
    """Entry point of a group's child process: write its figures (or its error) to ``result``."""
    started = time.perf_counter()
    try:
        figures = run_group(name, work, quick, seed)
        payload: dict[str, Any] = {"figures": [f.to_dict() for f in figures], "error": None}
    except Exception as exc:  # reported in the table; the other groups go on
        traceback.print_exc()
        payload = {"figures": [], "error": f"{type(exc).__name__}: {exc}"}
    payload["seconds"] = time.perf_counter() - started
    result.write_text(json.dumps(payload, default=_plain))
    return 0


def run_all(
    groups: list[str], out: Path, quick: bool, seed: int, keep: bool = False, json_out: Path | None = None
) -> dict[str, Any]:
    """Run ``groups`` in child processes; returns the results document, written to ``json_out``
    (default ``out/results.json``) after every group, so an interrupted run leaves what it measured."""
    started = time.perf_counter()
    json_out = json_out or out / "results.json"
    document: dict[str, Any] = {
        "format": 1,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": quick,
        "seed": seed,
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks", *sys.argv[1:]]),
        "hardware": hardware(),
        "groups": {},
        "skipped": [g for g in GROUPS if g not in groups],
        "figures": {},
    }
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    env.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="pathotune-bench-") as tmp:
        work_root = out / "work" if keep else Path(tmp)
        # A cache of its own: every kernel choice is measured in this run, on this machine, and reported.
        env["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        for name in groups:
            result = Path(tmp) / f"{name}.json"
            cmd = [
                sys.executable,
                "-m",
                "benchmarks",
                "--group",
                name,
                "--work",
                str(work_root / name),
                "--result",
                str(result),
                "--seed",
                str(seed),
            ] + (["--quick"] if quick else [])
            log(f"group {name}: start")
            load, others = quiet_check(name, first=name == groups[0])
            t = time.perf_counter()
            done = subprocess.run(cmd, env=env)
            seconds = time.perf_counter() - t
            if result.is_file():
                payload = json.loads(result.read_text())
            else:
                payload = {"figures": [], "error": f"group process exited {done.returncode} without a result"}
            figures = {f["key"]: f for f in payload["figures"]}
            missing = [k for k in EXPECTED[name] if k not in figures]
            for key in missing:
                figures[key] = {
                    "key": key,
                    "group": name,
                    "title": key,
                    "value": None,
                    "passed": False,
                    "note": "not measured: " + (payload.get("error") or "missing from the group's output"),
                }
            document["groups"][name] = {
                "seconds": round(seconds, 1),
                "error": payload.get("error"),
                "missing": missing,
                "load_before": round(load, 2),
                "others_busy_cores_before": round(others, 2),
                "load_after": round(os.getloadavg()[0], 2),
            }
            document["figures"].update(figures)
            log(
                f"group {name}: {seconds:.0f} s"
                + (f", ERROR {payload['error']}" if payload.get("error") else "")
            )
            document["kernels"] = kernel_choices(Path(env["XDG_CACHE_HOME"]))
            _write(document, json_out, started)
    _write(document, json_out, started)
    return document


LOAD_WARNING = 0.5


def quiet_check(group: str, first: bool) -> tuple[float, float]:
    """(1-minute load average, cores other processes kept busy over the last second) before ``group``;
    prints a warning when either says the machine is not quiet.

    The load average still counts this run's previous group for minutes after it ended, so it is judged
    before the first group only; the busy cores of other processes are judged before every group.
    """
    from benchmarks.core import others_busy_cores

    load = os.getloadavg()[0]
    others = others_busy_cores(1.0)
    if (first and load > LOAD_WARNING) or others > LOAD_WARNING:
        print(f"WARNING: the machine is not quiet before group {group}: load average {load:.2f}, other "
              f"processes kept {others:.2f} cores busy; the ratios of this group may not mean much",
              file=sys.stderr, flush=True)
    return load, others


def kernel_choices(cache: Path) -> list[dict[str, Any]]:
    """What kernel calibration chose during the run (``backbones.kernels``), one row per placement."""
    path = cache / "pathotune" / "kernels.json"
    if not path.is_file():
        return []
    rows = []
    for key, entry in json.loads(path.read_text()).items():
        parts = key.split("|")
        rows.append({"backbone": parts[2] if len(parts) > 2 else key, "placement": " ".join(parts[3:6]),
                     **entry})
    return rows


def _write(document: dict[str, Any], path: Path, started: float) -> None:
    judged = [f for f in document["figures"].values() if f.get("passed") is not None]
    document["seconds"] = round(time.perf_counter() - started, 1)
    document["passed"] = sum(bool(f["passed"]) for f in judged)
    document["failed"] = sum(not f["passed"] for f in judged)
    document["all_passed"] = document["failed"] == 0 and not any(
        g["error"] for g in document["groups"].values()
    )
    from pathotune_cli.files import atomic_write

    atomic_write(path, json.dumps(document, indent=2, default=_plain))


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and paths."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
