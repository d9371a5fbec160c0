"""GPU benchmark: forward and tuning images/s of ViT-B and ViT-L sized backbones in bf16, and their model FLOPs
utilisation (MFU) against a bf16 matmul rate measured on the same GPU.

    python -m benchmarks.gpu                       # on a CUDA machine: ViT-B/16 and ViT-L/16, ~3-5 minutes
    python -m benchmarks.gpu --json-out gpu.json   # also write the figures as JSON
    python -m benchmarks.gpu --smoke --device cpu  # tiny sizes, to check the script runs anywhere

Per backbone (random weights; speed does not depend on them), at a batch that fills the GPU (the largest of
the candidates that fits, or ``--batch``):

- **forward**: the bare backbone under ``torch.autocast(bf16)`` and no_grad.
- **tuning step (loop)**: ``training.loop.fit`` with ``method="pathotune"``, timed from its per-step reports, as
  ``pathotune tune`` runs it (augmentation on the CPU, cached instance features, AdamW on the prompts).
- **tuning step (device only)**: forward + backward + optimiser step of the same prompted model on tensors
  already on the GPU; the gap to the loop figure is what the loop's host-side work costs.

FLOPs per image come from ``torch.utils.flop_counter.FlopCounterMode`` on the real modules (a frozen backbone's
backward computes input gradients only, so a prompt-tuning step is about 2x a forward, not 3x), and MFU is
achieved FLOP/s over the measured bf16 matmul rate (8192^3 GEMMs), not a datasheet peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

MODELS = {
    # size in benchmarks.models.SIZES: (forward batches to try, tuning batches to try)
    "vit_base": ((1024, 512, 256, 128), (512, 256, 128, 64)),
    "vit_large": ((512, 256, 128, 64), (256, 128, 64, 32)),
}
SMOKE = {"vit_tiny": ((8, 4), (8, 4))}


def sync(device: str) -> None:
    """Wait for queued GPU work (a no-op on the CPU)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_rate(device: str, n: int = 8192, repeats: int = 20) -> float:
    """Achieved bf16 FLOP/s of an n x n x n matmul (the MFU denominator)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def _fits(fn: Any, batches: tuple[int, ...], device: str) -> tuple[int, Any]:
    """The first batch in ``batches`` (largest first) for which ``fn(batch)`` runs without running out of memory."""
    import torch

    for batch in batches:
        try:
            return batch, fn(batch)
        except torch.OutOfMemoryError:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    raise RuntimeError(f"out of memory even at batch {batches[-1]}")


def forward_figures(backbone: Any, batch: int, *, device: str, repeats: int) -> dict[str, float]:
    """Forward images/s and FLOPs per image of the bare backbone."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch, 3, 224, 224, device=device)
    with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
        with FlopCounterMode(display=False) as counter:
            backbone(x[:2])
        flops = counter.get_total_flops() / 2
        for _ in range(2):
            backbone(x)
        sync(device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            backbone(x)
            sync(device)
            times.append(time.perf_counter() - start)
    return {"batch": batch, "img_s": batch / statistics.median(times), "flops_per_img": flops}


def device_step_figures(model: Any, batch: int, *, device: str, repeats: int) -> dict[str, float]:
    """Images/s of forward + backward + AdamW on GPU-resident tensors, and FLOPs per image of that step."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    x = torch.rand(batch, 3, 224, 224, device=device)
    y = torch.arange(batch, device=device) % model.head.out_features
    feats = model.instance_features(x).float()  # cached, as fit does
    model.train()

    def step(n: int | None = None) -> None:
        xb, yb, fb = (x, y, feats) if n is None else (x[:n], y[:n], feats[:n])
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            logits = model(xb, fb)
        loss = F.cross_entropy(logits.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step(2)
    flops = counter.get_total_flops() / 2
    for _ in range(2):
        step()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return {"batch": batch, "img_s": batch / statistics.median(times), "flops_per_img": flops}


def loop_step_rate(task: Any, preset: Any, batch: int, steps: int, device: str) -> float:
    """Images/s of ``fit``'s own step (median of ``steps`` after one warm-up), images starting on the host."""
    import numpy as np
    import torch

    from benchmarks.models import MemoryStore
    from pathotune_cli.config.run import PromptSettings, TrainSettings
    from pathotune_cli.engine.build import build_prompted_model
    from pathotune_cli.hardware import place
    from pathotune_cli.training.loop import Split, fit

    model = build_prompted_model(task, preset, PromptSettings(method="pathotune")).model
    n = batch * (steps + 1)
    images = torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8)
    stamps: list[float] = []

    def report(event: Any) -> None:
        from pathotune_cli.events import StepDone, TrainingStarted

        if isinstance(event, (TrainingStarted, StepDone)):
            sync(device)
            stamps.append(time.perf_counter())

    fit(
        model,
        Split(MemoryStore(images), np.arange(n) % 4),
        None,
        TrainSettings(epochs=1, batch_size=batch, patience=None, warmup_epochs=0.0),
        place(device, "bf16"),
        0,
        report=report,
    )
    durations = [b - a for a, b in zip(stamps, stamps[1:], strict=False)][1:]
    return batch / statistics.median(durations)


def run(device: str, smoke: bool, batch: int | None, repeats: int) -> dict[str, Any]:
    """Every figure, as a dict."""
    import torch

    from pathotune_cli.backbones import load_backbone
    from pathotune_cli.config.run import PromptSettings
    from pathotune_cli.engine.build import build_prompted_model

    result: dict[str, Any] = {"device": device, "torch": torch.__version__, "models": {}}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        result["gpu"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "count": torch.cuda.device_count(),
        }
    peak = matmul_rate(device, n=512 if smoke else 8192, repeats=3 if smoke else 20)
    result["bf16_matmul_tflops"] = peak / 1e12
    print(f"bf16 matmul: {peak / 1e12:.1f} TFLOP/s", file=sys.stderr)
    from benchmarks.models import preset as bench_preset
    from benchmarks.models import task as bench_task

    task = bench_task(224)
    for name, (fwd_batches, tune_batches) in (SMOKE if smoke else MODELS).items():
        preset = bench_preset(name)
        torch.manual_seed(0)
        backbone = load_backbone(preset).to(device)
        b, fwd = _fits(
            partial(forward_figures, backbone, device=device, repeats=repeats),
            (batch,) if batch else fwd_batches,
            device,
        )
        print(f"{name}: forward {fwd['img_s']:.0f} img/s at batch {b}", file=sys.stderr)
        del backbone
        built = build_prompted_model(task, preset, PromptSettings(method="pathotune"))
        model = built.model.to(device)
        b, dev = _fits(
            partial(device_step_figures, model, device=device, repeats=repeats),
            (batch,) if batch else tune_batches,
            device,
        )
        print(f"{name}: tuning step (device only) {dev['img_s']:.0f} img/s at batch {b}", file=sys.stderr)
        del model, built
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        loop = loop_step_rate(task, preset, dev["batch"], steps=2 if smoke else 4, device=device)
        print(f"{name}: tuning step (fit loop) {loop:.0f} img/s at batch {dev['batch']}", file=sys.stderr)
        result["models"][name] = {
            "forward": {**fwd, "mfu": fwd["img_s"] * fwd["flops_per_img"] / peak},
            "tuning_device": {**dev, "mfu": dev["img_s"] * dev["flops_per_img"] / peak},
            "tuning_loop": {"batch": dev["batch"], "img_s": loop, "mfu": loop * dev["flops_per_img"] / peak},
            "step_vs_forward": dev["img_s"] / fwd["img_s"],
            "loop_vs_device": loop / dev["img_s"],
        }
    return result


def table(result: dict[str, Any]) -> str:
    """The figures as Markdown, for BENCHMARKS.md."""
    gpu = result.get("gpu", {})
    lines = [
        f"{gpu.get('name', result['device'])}, torch {result['torch']}; "
        f"measured bf16 matmul rate {result['bf16_matmul_tflops']:.0f} TFLOP/s (the MFU denominator)",
        "",
        "| backbone | figure | batch | img/s | GFLOP/img | MFU |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        for key, label in (
            ("forward", "forward (bf16)"),
            ("tuning_device", "pathotune step, device only"),
            ("tuning_loop", "pathotune step, fit loop"),
        ):
            fig = m[key]
            gflops = fig.get("flops_per_img", m["tuning_device"]["flops_per_img"]) / 1e9
            lines.append(
                f"| {name} | {label} | {fig['batch']} | {fig['img_s']:,.0f} | {gflops:.1f} | {fig['mfu']:.1%} |"
            )
        lines.append(f"| {name} | step / forward | | {m['step_vs_forward']:.2f} | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with --smoke)")
    p.add_argument("--batch", type=int, help="one batch size for everything instead of the largest that fits")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per figure")
    p.add_argument(
        "--smoke", action="store_true", help="a 2-block ViT-Ti at tiny batches: checks the script runs"
    )
    p.add_argument("--json-out", type=Path, help="write the figures here as JSON")
    args = p.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "no CUDA GPU here: run this on a GPU machine (or --smoke --device cpu to check the script)",
            file=sys.stderr,
        )
        return 2
    result = run(args.device, args.smoke, args.batch, 3 if args.smoke else args.repeats)
    print(table(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
