"""Precision: bf16 autocast (``precision auto`` on this CPU) against fp32 for a ViT-S sized prompted model.

The model is a ``pathotune`` prompted model (prompts at their initial values, instance features from the
backbone itself) whose head is fitted by ridge regression on its own fp32 features of H&E-like texture tiles
and scaled so its logits span a few units, as a trained head's do; a random head on random features would
make near-ties everywhere and judge noise, not precision. Both passes are ``model.features`` then the fitted
head, the bf16 one under autocast as ``predict`` runs ``model(images)``; both under no_grad, at the same
batch, after one untimed warm-up batch. The two precisions take turns batch by batch, so both meet the same
moments of a shared machine; speed is the best batch time of each over two passes.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.core import Figure, info, log

BATCH = 32
TILES = 160  # 99% agreement allows one tile in 160 to change class
QUICK_TILES = 32
LOGIT_SPAN = 4.0  # ridge targets: +span/2 for the true class, -span/2 for the others (p ~0.95 when clean)


def _features_in_turn(model: Any, x: Any, fp32: Any, auto: Any, batch: int, rounds: int) -> tuple:
    """fp32 and ``auto`` features of every batch, timed batch by batch in turn so both precisions see the same
    machine, and the best batch time of each over ``rounds`` passes (one untimed warm-up batch of each first).

    Returns (fp32 features, auto features, best fp32 seconds, best auto seconds); the features are the first
    pass's, the auto ones in the dtype autocast left them (the head runs on them under autocast too).
    """
    import torch

    f32, f16, t32, t16 = [], [], [], []
    with torch.no_grad():
        for placement in (fp32, auto):
            model.place(placement)  # the kernels pathotune picks for that placement, as predict would
            with placement.autocast():
                model.features(x[:batch])
        for round_ in range(rounds):
            for start in range(0, x.shape[0], batch):
                xb = x[start : start + batch]
                for placement, outs, times in ((fp32, f32, t32), (auto, f16, t16)):
                    model.place(placement)
                    with placement.autocast():
                        t = time.perf_counter()
                        out = model.features(xb)
                        times.append(time.perf_counter() - t)
                    if round_ == 0:
                        outs.append(out)
    return torch.cat(f32).float(), torch.cat(f16), min(t32), min(t16)


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
    log(f"precision: {size}, {n} tiles, fp32 and {auto.precision} batch by batch in turn")
    rounds = 1 if quick else 2
    features, features16, best32, best16 = _features_in_turn(model, x, fp32, auto, BATCH, rounds)
    fit_head(model, features, torch.from_numpy(labels), model.head.out_features)
    with torch.no_grad():
        logits32 = model.head(features)
        with auto.autocast():  # model(x) under autocast is this head on these features
            logits16 = model.head(features16).float()
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
