"""``pathotune eval`` as a plain function: a prompt file against labelled tiles, with honest intervals."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class EvalOptions:
    """What to evaluate, on what, and where to write it."""

    prompts: str
    data: str
    out: str | None = None
    batch_size: int = 64
    seed: int = 0
    bootstrap: int = 1000
    precision: str = "auto"
    device: str = "auto"
    weights: str | None = None


def eval_run(opts: EvalOptions, report=None) -> dict[str, Any]:  # noqa: ANN001
    """Evaluate ``opts.prompts`` on ``opts.data``; writes metrics JSON, predictions CSV and confusion PNG."""
    from pathotune_cli.config.loader import validate
    from pathotune_cli.config.schema import TaskPreset
    from pathotune_cli.engine import load_prompted_model, random_weights_warning
    from pathotune_cli.hardware import place
    from pathotune_cli.runs.records import provenance, write_csv, write_json
    from pathotune_cli.training.data import discover
    from pathotune_cli.training.images import ImageStore
    from pathotune_cli.training.loop import predict_probs
    from pathotune_cli.training.metrics import classification_metrics, predictions_table
    from pathotune_cli.training.plots import save_confusion_matrix

    report = report or (lambda kind, info: None)
    started = time.time()
    model, file = load_prompted_model(opts.prompts, opts.weights)
    if random_weights_warning(model):
        report("warning", {"message": random_weights_warning(model)})
    task = validate(TaskPreset, file.meta["task"], source=str(file.path))
    data = discover(opts.data, task, lambda m: report("warning", {"message": m}))
    placement = place(opts.device, opts.precision)
    model.to(placement.device)
    report("info", {"message": f"evaluating {len(data)} tiles with {file.meta['method']} on {task.name}"})
    store = ImageStore(data.paths, model.backbone.input_size)
    probs = predict_probs(model, store, opts.batch_size, placement)
    metrics = classification_metrics(data.labels, probs, task.class_names, ordinal=task.ordinal,
                                     bootstrap=opts.bootstrap, seed=opts.seed)
    out = Path(opts.out) if opts.out else Path(opts.prompts).resolve().parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "prompts": str(file.path), "data": str(opts.data), "task": task.name, "method": file.meta["method"],
        "backbone": file.meta["backbone"]["preset"]["name"], "precision": placement.precision,
        **metrics, "counts": data.counts(), "provenance": provenance(),
    }
    write_json(out / "metrics.json", document)
    rows = predictions_table(data.labels, probs, task.class_names, [str(p) for p in data.paths])
    write_csv(out / "predictions.csv", list(rows[0]), (list(r.values()) for r in rows))
    save_confusion_matrix(metrics["confusion_matrix"], task.class_names, out / "confusion_matrix.png", title=task.name)
    document["out"] = str(out)
    document["seconds"] = round(time.time() - started, 2)
    document.pop("provenance")
    return document
