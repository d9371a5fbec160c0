"""``pathotune demo``: the whole flow on data it generates and a tiny random backbone; offline, anywhere."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def demo_run(out: Path, epochs: int = 6, seed: int = 0, report=None) -> dict[str, Any]:  # noqa: ANN001
    """Generate tiles, tune ``pathotune`` prompts on ``tiny-random``, evaluate on fresh tiles; returns paths."""
    from pathotune_cli.demo_data import write_demo_tiles
    from pathotune_cli.runs.evaluate import EvalOptions, eval_run
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    report = report or (lambda kind, info: None)
    started = time.time()
    out = Path(out)
    data = write_demo_tiles(out / "tiles" / "train", per_class=40, seed=seed)
    test = write_demo_tiles(out / "tiles" / "test", per_class=20, seed=seed + 1)
    report("info", {"message": f"generated synthetic tiles in {out / 'tiles'}"})
    config = resolve_config(TuneOptions(
        preset="demo", data=str(data), backbone="tiny-random", method="pathotune", out=str(out / "run"),
        epochs=epochs, seed=seed, sets=["train.lr=3e-3"],
    ))
    tuned = tune_run(config, resume=(out / "run" / "prompts.safetensors").exists(), report=report)
    evaluated = eval_run(EvalOptions(prompts=tuned["prompts"], data=str(test), out=str(out / "eval"), seed=seed), report)
    return {
        "out": str(out),
        "seconds": round(time.time() - started, 1),
        "tune": {k: tuned[k] for k in ("run", "prompts", "prompts_bytes", "trainable_parameters", "epochs_run", "validation")},
        "eval": {"out": evaluated["out"], "metrics": {k: v["value"] for k, v in evaluated["metrics"].items()}},
        "artifacts": {
            "training tiles": str(data),
            "test tiles": str(test),
            "prompt file": tuned["prompts"],
            "run config": str(out / "run" / "config.yaml"),
            "history": str(out / "run" / "history.csv"),
            "validation metrics": str(out / "run" / "metrics.json"),
            "test metrics": str(Path(evaluated["out"]) / "metrics.json"),
            "confusion matrix": str(Path(evaluated["out"]) / "confusion_matrix.png"),
        },
    }
