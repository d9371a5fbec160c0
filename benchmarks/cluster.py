"""Cluster scale on one machine: what two gloo ranks and two predict shards cost against one process.

- **DDP overhead** (``cluster.ranks_vs_one``): images/s of a ``pathotune`` tuning step (``training.loop.fit``,
  global batch 32 on ViT-S) as 2 gloo ranks of 1 thread each under ``torchrun``, against 1 process of 2 threads.
  Both use the same 2 cores, so the ratio is what the per-step all-reduce of the trainable gradients, the
  gathered loss and the split batch cost (1.0: nothing). On a cluster each rank has its own GPU or cores, and
  this ratio bounds the loss against a perfect N-times speed-up.
- **Sharded predict** (``cluster.shards_vs_one``): slides/hour of ``pathotune predict`` over a folder of
  generated slides as 2 processes (``--shard 0/2`` and ``--shard 1/2``, started together, 1 thread each) against
  1 process of 2 threads; and ``--devices cpu,cpu`` (one command, two worker processes) beside it. Shards share
  nothing but the output folder, so across nodes slides/hour adds up; here they share 2 cores, and the ratio
  shows what the per-slide serial work (planning, writing files) gains when two slides are in flight.

Every run is a fresh process started from the command line, as a cluster job starts it; start-up (imports,
model load) is in the predict figures, as it is in a SLURM array task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.core import Figure, info, log

ROOT = Path(__file__).resolve().parents[1]
FULL = {"size": "vit_small", "batch": 32, "steps": 3, "slides": 8, "side": 2_688}
QUICK = {"size": "vit_tiny", "batch": 8, "steps": 2, "slides": 4, "side": 896}


def run(work: Path, quick: bool, seed: int = 0) -> list[Figure]:
    """Every cluster figure."""
    setup = QUICK if quick else FULL
    return [*_ddp(work, setup), *_shards(work, setup, seed)]


def _env(threads: int) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}


def _step(work: Path, setup: dict[str, Any], ranks: int) -> dict[str, Any]:
    """One tuning run: 1 process of 2 threads, or ``ranks`` gloo ranks of 1 thread."""
    result = work / f"step-{ranks}.json"
    args = ["-m", "benchmarks.cluster_step", "--size", setup["size"], "--batch", str(setup["batch"]),
            "--steps", str(setup["steps"]), "--result", str(result)]
    if ranks == 1:
        cmd = [sys.executable, *args, "--threads", "2"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", *args,
               "--threads", "1"]
    subprocess.run(cmd, env=_env(2 if ranks == 1 else 1), check=True, cwd=work, capture_output=True)
    return json.loads(result.read_text())


def _ddp(work: Path, setup: dict[str, Any]) -> list[Figure]:
    label = f"{setup['size'].replace('_', '-')} pathotune step (global b{setup['batch']})"
    log(f"cluster: {label}, 1 process of 2 threads")
    one = _step(work, setup, 1)
    log(f"cluster: {label}, 2 gloo ranks of 1 thread")
    two = _step(work, setup, 2)
    return [
        info("cluster.one_process_step", "cluster", f"{label}, 1 process x 2 threads", one["rate"], "img/s",
             note=f"{one['precision']}; steps {one['step_seconds']} s"),
        info("cluster.two_ranks_step", "cluster", f"{label}, 2 gloo ranks x 1 thread", two["rate"], "img/s",
             note=f"steps {two['step_seconds']} s (rank 0, global batch)"),
        Figure("cluster.ranks_vs_one", "cluster", "2 gloo ranks vs 1 process, same 2 cores (DDP overhead)",
               two["rate"], "img/s", one["rate"], "1 process of 2 threads", 0.8,
               note="1.0 = the gradient all-reduce costs nothing"),
    ]


def _shards(work: Path, setup: dict[str, Any], seed: int) -> list[Figure]:
    from benchmarks.models import preset
    from benchmarks.predict import make_prompt_file
    from benchmarks.slides import slide_everywhere

    log(f"cluster: prompt file for {setup['size']}")
    prompts = make_prompt_file(preset(setup["size"]), work, f"cluster-{setup['size']}", seed)
    folder = work / "cluster-slides"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(setup["slides"]):
        if not (folder / f"s{i:02d}.tiff").exists():
            slide_everywhere(folder / f"s{i:02d}.tiff", setup["side"], seed=seed + i)
    n = setup["slides"]
    base = [sys.executable, "-m", "pathotune_cli", "predict", str(prompts), str(folder), "--workers", "0"]
    log(f"cluster: predict over {n} slides, 1 process of 2 threads")
    one = _timed([[*base, "--out", str(work / "P1")]], 2, work)
    log(f"cluster: predict over {n} slides, 2 shards of 1 thread, started together")
    two = _timed([[*base, "--out", str(work / "P2"), "--shard", f"{i}/2"] for i in range(2)], 1, work)
    log(f"cluster: predict over {n} slides, --devices cpu,cpu")
    devices = _timed([[*base, "--out", str(work / "P3"), "--devices", "cpu,cpu"]], 2, work)
    per_hour = [3600 * n / s for s in (one, two, devices)]
    return [
        info("cluster.predict_one", "cluster", f"predict, {n} slides, 1 process x 2 threads", per_hour[0],
             "slides/h", note=f"{one:.1f} s"),
        info("cluster.predict_two_shards", "cluster", f"predict, {n} slides, 2 shards x 1 thread", per_hour[1],
             "slides/h", note=f"{two:.1f} s until both ended"),
        info("cluster.predict_devices", "cluster", f"predict, {n} slides, --devices cpu,cpu", per_hour[2],
             "slides/h", note=f"{devices:.1f} s"),
        Figure("cluster.shards_vs_one", "cluster", "2 predict shards vs 1 process, same 2 cores", per_hour[1],
               "slides/h", per_hour[0], "1 process of 2 threads", 0.9),
    ]


def _timed(commands: list[list[str]], threads: int, work: Path) -> float:
    """Seconds from starting ``commands`` together until the last one ended (each must succeed)."""
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=_env(threads), cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for cmd in commands]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(proc.args[:4])} exited {proc.returncode}: {err.strip()[-500:]}")
    return time.perf_counter() - start
