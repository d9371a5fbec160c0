"""Precision: bf16 autocast (``precision auto`` on this CPU) against fp32 for a ViT-S sized prompted model.

The model is a ``pathotune`` prompted model (prompts at their initial values, instance features from the
backbone itself) whose head is fitted by ridge regression on its own fp32 features of H&E-like texture tiles
and scaled so its logits span a few units, as a trained head's do; a random head on random features would
make near-ties everywhere and judge noise, not precision. The fp32 pass is ``model.features`` (then the
fitted head); the bf16 pass is ``model(images)`` under autocast, as ``predict`` runs it; both under no_grad,
at the same batch, after one untimed warm-up batch; speed is the best batch time of each over two passes
(the least disturbed by other work on a shared machine).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.core import Figure, info, log

BATCH = 32
TILES = 160  # 99% agreement allows one tile in 160 to change class
QUICK_TILES = 32
LOGIT_SPAN = 4.0  # ridge targets: +span/2 for the true class, -span/2 for the others (p ~0.95 when clean)


def _batches(fn: Any, x: Any, placement: Any, batch: int, rounds: int = 2) -> tuple[Any, float]:
    """``fn`` over ``x`` in batches (float32 out) and the best per-batch seconds over ``rounds`` passes
    (one warm-up batch first; the outputs are the first pass's)."""
    import torch

    outs, times = [], []
    with torch.no_grad(), placement.autocast():
        fn(x[:batch])
        for round_ in range(rounds):
            for start in range(0, x.shape[0], batch):
                t = time.perf_counter()
                out = fn(x[start : start + batch])
                times.append(time.perf_counter() - t)
                if round_ == 0:
                    outs.append(out.float())
    return torch.cat(outs), min(times)


def fit_head(model: Any, features: Any, labels: Any, classes: int) -> None:
    """Ridge-regress the head on fp32 features, strongly regularised, then scale its logits to LOGIT_SPAN."""
    import torch

    f = features.double()
    mean = f.mean(0, keepdim=True)
    fc = f - mean
    y = torch.full((f.shape[0], classes), -LOGIT_SPAN / 2, dtype=torch.float64)
    y[torch.arange(f.shape[0]), labels] = LOGIT_SPAN / 2
    gram = fc.T @ fc
    lam = 0.1 * gram.diagonal().mean()
    w = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=torch.float64), fc.T @ y)
    logits = fc @ w
    scale = LOGIT_SPAN / max(float(logits.std(0).mean() * 2), 1e-6)
    with torch.no_grad():
        model.head.weight.copy_((w * scale).T.float())
        model.head.bias.copy_((-(mean @ w) * scale).squeeze(0).float())


def run(work: Any, quick: bool, seed: int = 0) -> list[Figure]:
    """The precision figures."""
    import torch

    from benchmarks.models import preset, task, texture_images
    from pathotune_cli.config.run import PromptSettings
    from pathotune_cli.engine.build import build_prompted_model
    from pathotune_cli.hardware import place

    size = "vit_tiny" if quick else "vit_small"
    n = QUICK_TILES if quick else TILES
    auto = place("cpu", "auto")
    fp32 = place("cpu", "fp32")
    torch.manual_seed(seed)
    model = build_prompted_model(task(), preset(size), PromptSettings(method="pathotune")).model.eval()
    tiles, labels = texture_images(n, seed=seed)
    x = torch.from_numpy(tiles).float().div_(255.0)
    log(f"precision: {size}, {n} tiles, fp32")
    rounds = 1 if quick else 2
    features, best32 = _batches(model.features, x, fp32, BATCH, rounds)
    fit_head(model, features, torch.from_numpy(labels), model.head.out_features)
    with torch.no_grad():
        logits32 = model.head(features)
    log(f"precision: {size}, {n} tiles, {auto.precision}")
    logits16, best16 = _batches(model, x, auto, BATCH, rounds)
    p32, p16 = torch.softmax(logits32, -1), torch.softmax(logits16, -1)
    agree = float((p32.argmax(1) == p16.argmax(1)).double().mean())
    max_diff = float((p32 - p16).abs().max())
    fp32_rate, auto_rate = BATCH / best32, BATCH / best16
    label = size.replace("_", "-")
    return [
        info("precision.fp32", "precision", f"{label} prompted model, fp32 (b{BATCH})", fp32_rate, "img/s"),
        info(
            "precision.auto",
            "precision",
            f"{label} prompted model, {auto.precision} auto (b{BATCH})",
            auto_rate,
            "img/s",
            note=auto.reason,
            precision=auto.precision,
        ),
        info(
            "precision.head_accuracy",
            "precision",
            "fitted head: accuracy on its own tiles (fp32)",
            float((p32.argmax(1) == torch.from_numpy(labels)).double().mean()),
            "",
            note=f"{n} tiles, 4 classes; confidence median {float(p32.max(1).values.median()):.2f}",
        ),
        Figure(
            "precision.speedup",
            "precision",
            f"{auto.precision} auto vs fp32 speed",
            auto_rate,
            "img/s",
            fp32_rate,
            "fp32, same model and batch",
            2.0,
        ),
        Figure(
            "precision.top_class_agreement",
            "precision",
            "same top class, bf16 vs fp32",
            agree,
            "share",
            target=0.99,
            measure="value",
            note=f"{n} tiles",
        ),
        Figure(
            "precision.max_prob_diff",
            "precision",
            "max |prob bf16 - prob fp32|",
            max_diff,
            "",
            target=0.02,
            op="<=",
            measure="value",
            note=f"{n} tiles x 4 classes",
        ),
    ]
