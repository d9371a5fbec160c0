"""Slide prediction: end-to-end ``predict`` against the model's forward pass, and its memory on large slides.

Throughput: ``predict_run`` with ``PredictOptions``' defaults (in this process, as a Python caller runs it: load
the prompt file, plan the slide, read tiles ahead in the default number of worker processes, run the model,
write CSV, GeoJSON and heatmap) on a generated slide with tissue everywhere, in tiles per second from call to
return, against forward-only images per second on in-memory tensors at the same batch and precision:

- of the **prompted model** predict runs (judged: what is left is slide I/O and bookkeeping), and
- of the **bare backbone** (context: a ``pathotune`` prompt file with instance prompts from the backbone itself
  runs the backbone twice per tile, once plain for the instance features and once prompted).

Memory: ``predict_run`` in a child process on a 25,000 px and a 100,000 px slide (the same three tissue regions
on 16x the glass), with a ``tiny-random`` prompt file tuned on generated tiles. Judged: the child's own peak
(VmHWM, exact) plus each of its other processes' peak as polled from /proc every 20 ms, an upper bound of
the tree's peak; the summed RSS of the tree at one moment is shown beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.core import Figure, Timer, info, log

SIDE = 5_376  # 24 x 24 tiles of 224 px at 0.5 µm/px
QUICK_SIDE = 1_792
RSS_SIDES = (25_000, 100_000)
QUICK_RSS_SIDES = (4_000, 16_000)


def make_prompt_file(backbone: Any, work: Path, name: str, seed: int = 0) -> Path:
    """A ``pathotune`` prompt file for ``backbone`` from one short epoch of ``tune`` on generated tiles."""
    from benchmarks.models import task
    from pathotune_cli.config.run import RunConfig, TrainSettings
    from pathotune_cli.demo_data import write_demo_tiles
    from pathotune_cli.runs.tune import tune_run

    tiles = work / "tune-tiles"
    if not tiles.exists():
        write_demo_tiles(tiles, per_class=4, size=64, seed=seed)
    out = work / f"tune-{name}"
    if out.exists():
        shutil.rmtree(out)
    config = RunConfig(
        task=task(224),
        backbone=backbone,
        data=str(tiles),
        out=str(out),
        seed=seed,
        train=TrainSettings(epochs=1, batch_size=8, patience=None, val_fraction=0.25, warmup_epochs=0.0),
    )
    return tune_run(config).prompts


def _status_kb(pid: int | str, fields: tuple[str, ...] = ("VmRSS", "VmHWM")) -> dict[str, int]:
    """Fields of /proc/PID/status in bytes (missing ones left out)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in fields:
                    out[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants, from the parent ids in /proc/PID/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def peak_rss(cmd: list[str], interval: float = 0.02) -> tuple[int, dict[int, int], float, str]:
    """Run ``cmd`` and poll its process tree.

    Returns:
        (peak of the summed RSS of the tree at one moment, each process's own peak (VmHWM) as last seen,
        seconds, stdout). ``ru_maxrss`` is no use here: a process started by fork + exec inherits its
        parent's peak in that count (Linux merges the pre-exec peak), so a child of a big process looks big.
    """
    start = time.perf_counter()
    root = str(Path(__file__).resolve().parents[1])  # so the child imports this package from anywhere
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = [0]
    hwm: dict[int, int] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            total = 0
            for pid in tree_pids(proc.pid):
                status = _status_kb(pid)
                total += status.get("VmRSS", 0)
                if "VmHWM" in status:
                    hwm[pid] = max(hwm.get(pid, 0), status["VmHWM"])
            peak[0] = max(peak[0], total)
            time.sleep(interval)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"predict child failed ({proc.returncode}): {err.strip().splitlines()[-3:]}")
    hwm.pop(proc.pid, None)  # the child reports its own exact peak itself
    return peak[0], hwm, seconds, out


def _child(prompts: str, slide: str, out: str) -> None:
    """Run in the child: one predict_run, then a JSON line with what it did and its own peak RSS (VmHWM)."""
    from pathotune_cli.runs.predict import PredictOptions, predict_run

    result = predict_run(
        PredictOptions(prompts=prompts, inputs=[slide], out=out)
    )  # the defaults, as a user runs it
    row = result.slides[0]
    print(
        json.dumps(
            {
                "tiles": row.tiles,
                "status": row.status,
                "error": row.error,
                "seconds": result.seconds,
                "self_hwm": _status_kb("self")["VmHWM"],
            }
        )
    )


def kernels_against_fastest(model: Any, images: Any, placement: Any, rounds: int) -> Figure:
    """The prompted model's forward with the kernels ``predict`` picks (``model.place``: measured on this machine
    for inference, on a batch of 4) against the fastest of every kernel choice at predict's batch, interleaved."""
    import torch

    from benchmarks.core import interleaved
    from pathotune_cli.backbones.kernels import candidates

    x = images.float().div_(255.0).to(placement.device)
    model.place(placement, "inference")
    chosen = model.backbone.kernels
    parts = [p for p in (model.backbone, model.instance_encoder) if p is not None]
    options = candidates(model.backbone, placement.precision, placement.device)

    def rate(choice: Any) -> float:
        for part in parts:
            part.apply_kernels(choice, placement)
        with torch.no_grad(), placement.autocast():
            model(x)  # warm after a switch: the first call after new weights pays for their layout
            start = time.perf_counter()
            model(x)
            return x.shape[0] / (time.perf_counter() - start)

    sides = {choice.describe(): (lambda c=choice: rate(c)) for choice in options}
    result = interleaved(sides, rounds)  # every choice the same number of times, in turn
    for part in parts:
        part.apply_kernels(chosen, placement)
    fastest = max(sides, key=result.best)
    return Figure(
        "predict.kernels_vs_fastest", "predict", "predict's kernels vs the fastest kernels (prompted model)",
        result.best(chosen.describe()), "img/s", result.best(fastest),
        f"fastest of {len(options)} kernel choices ({fastest}), interleaved", 0.95,
        note=f"predict chose {chosen.describe()}; each choice best of {rounds}",
        extra={"chosen": chosen.describe(), "fastest": fastest, **result.to_dict()},
    )


def throughput(work: Path, quick: bool, seed: int) -> list[Figure]:
    """predict_run tiles/s against forward-only rates."""
    from benchmarks.models import forward_rate, preset, random_images
    from benchmarks.slides import slide_everywhere
    from pathotune_cli.engine import load_prompted_model
    from pathotune_cli.hardware import place
    from pathotune_cli.runs.predict import PredictOptions, predict_run

    size = "vit_tiny" if quick else "vit_small"
    side = QUICK_SIDE if quick else SIDE
    log(f"predict: prompt file for {size}")
    prompts = make_prompt_file(preset(size), work, size, seed)
    slide = slide_everywhere(work / f"predict-{side}.tiff", side, seed=seed)
    opts = PredictOptions(prompts=str(prompts), inputs=[str(slide.path)], out=str(work / "predict-out"))
    batch = opts.batch_size  # the defaults, as a user runs it
    from benchmarks.reading import predict_settings

    workers, _ = predict_settings()
    placement = place("cpu", opts.precision)
    model, _ = load_prompted_model(prompts)
    images = random_images(batch, seed=seed)
    log(f"predict: predict's kernels against every kernel choice, interleaved, batch {batch}")
    kernels = kernels_against_fastest(model, images[:batch], placement, rounds=1 if quick else 3)
    log(f"predict: forward-only baselines, batch {batch}")
    model_rate = forward_rate(model, images, placement, batch, repeats=2)
    backbone_rate = forward_rate(model.backbone, images, placement, batch, repeats=2)
    del model
    log(f"predict: predict_run on a {side:,} px slide ({workers} reading workers)")
    with Timer() as t:
        result = predict_run(opts)
    row = result.slides[0]
    if row.status != "ok":
        raise RuntimeError(f"predict failed: {row.error}")
    tiles = row.tiles
    rate = tiles / t.seconds
    label = size.replace("_", "-")
    return [
        info(
            "predict.run",
            "predict",
            f"predict_run, {label} pathotune prompts, {side:,} px slide",
            rate,
            "tiles/s",
            note=f"{tiles} tiles in {t.seconds:.1f} s end to end; {result.precision}; {workers} reading workers",
            tiles=tiles,
            seconds=t.seconds,
        ),
        info(
            "predict.model_forward",
            "predict",
            f"{label} prompted model forward only (b{batch})",
            model_rate,
            "img/s",
        ),
        info(
            "predict.backbone_forward",
            "predict",
            f"{label} bare backbone forward only (b{batch})",
            backbone_rate,
            "img/s",
            note=f"prompted/bare = {model_rate / backbone_rate:.2f} (instance features run the backbone)",
        ),
        kernels,
        Figure(
            "predict.vs_model_forward",
            "predict",
            "predict end to end vs the model's forward",
            rate,
            "tiles/s",
            model_rate,
            "prompted model forward, in memory, same batch and precision",
            0.85,
            note="slide I/O hidden behind compute",
        ),
        Figure(
            "predict.vs_backbone_forward",
            "predict",
            "predict end to end vs the bare backbone's forward",
            rate,
            "tiles/s",
            backbone_rate,
            "bare backbone forward, in memory, same batch and precision",
            note="context only: pathotune prompts cost a second backbone pass per tile",
        ),
    ]


def memory(work: Path, quick: bool, seed: int) -> list[Figure]:
    """Peak RSS of predict on two slide sizes."""
    from benchmarks.slides import slide_blobs
    from pathotune_cli.config import load_backbone_preset

    sides = QUICK_RSS_SIDES if quick else RSS_SIDES
    log("predict: tiny-random prompt file for the memory runs")
    prompts = make_prompt_file(load_backbone_preset("tiny-random"), work, "tiny-random", seed)
    peaks: dict[int, int] = {}
    figures: list[Figure] = []
    for role, side in zip(("small", "large"), sides, strict=True):
        slide = slide_blobs(work / f"blobs-{side}.tiff", side, seed=seed)
        log(
            f"predict: memory on a {side:,} px slide ({slide.bytes / 1e6:.0f} MB, written in {slide.seconds:.1f} s)"
        )
        cmd = [
            sys.executable,
            "-c",
            "import sys; from benchmarks.predict import _child; _child(*sys.argv[1:])",
            str(prompts),
            str(slide.path),
            str(work / f"rss-out-{side}"),
        ]
        polled, others, seconds, out = peak_rss(cmd)
        done = json.loads(out.strip().splitlines()[-1])
        if done["status"] != "ok":
            raise RuntimeError(f"predict failed on {side}: {done['error']}")
        # Judged: the main process's exact peak plus every worker's peak as last polled, which bounds the tree's
        # peak from above (shared library pages count once per process). The polled sum at one moment is below.
        workers = sorted(others.values(), reverse=True)
        bound = done["self_hwm"] + sum(workers)
        peak = max(bound, polled)
        peaks[side] = peak
        figures.append(
            Figure(
                f"predict.rss_{role}_slide",
                "predict",
                f"peak RSS of predict, {side:,} px slide",
                peak / 2**30,
                "GiB",
                target=2.0,
                op="<=",
                measure="value",
                note=f"{done['tiles']} tiles, {seconds:.1f} s; main process {done['self_hwm'] / 2**30:.2f} GiB"
                + (
                    f" + {len(workers)} others " + " + ".join(f"{w / 2**30:.2f}" for w in workers) + " GiB"
                    if workers
                    else " (no other processes)"
                )
                + f"; tree at once {polled / 2**30:.2f} GiB",
                extra=dict(
                    tiles=done["tiles"],
                    main_bytes=done["self_hwm"],
                    other_bytes=workers,
                    polled_tree_bytes=polled,
                    seconds=seconds,
                    side=side,
                    slide_bytes=slide.bytes,
                    slide_seconds=slide.seconds,
                ),
            )
        )
    small, large = sorted(peaks.values())
    figures.append(
        Figure(
            "predict.rss_ratio",
            "predict",
            "peak RSS, larger vs smaller of the two slides",
            large / 2**30,
            "GiB",
            small / 2**30,
            "the smaller peak",
            1.2,
            op="<=",
            note="within 20% of each other",
        )
    )
    return figures


def run(work: Path, quick: bool, seed: int = 0) -> list[Figure]:
    """Every prediction figure."""
    return throughput(work, quick, seed) + memory(work, quick, seed)
