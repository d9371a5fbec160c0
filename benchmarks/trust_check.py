"""``python -m benchmarks.trust_check``: the trust section checked on held-out Kather tiles, and the OOD flag's AUROC.

    python -m benchmarks.trust_check --out DIR [--epochs 10] [--backbone tiny-random] [--seed 0]

1. Splits the 76 real Kather 2016 tiles (``../shared/data/patches/kather2016-dev``) per class, seeded, into
   train / validation / held-out test (40% / 30% / 30%), tunes on the first two (the validation tiles fit the
   temperature, the conformal quantiles and the OOD threshold), and evaluates on the held-out tiles: ECE before
   and after the temperature, Brier, coverage and mean set size per alpha.
2. ``predict --alpha 0.1`` on the folder of held-out tiles (``predictions.csv`` with ``prediction_set``,
   ``set_size``, ``ood_score``, ``ood``) and ``explain`` on them (one PNG per tile).
3. The OOD score's AUROC (and flagged share at the stored threshold) of held-out Kather tiles against tiles from
   other sources: glass/background and tissue tiles cut from the CMU slide (another lab and scanner), the
   background of the kidney image (its one small piece of tissue is too small for a tile at 0.495 um/px), and
   the demo's synthetic tiles. Kather has an ``EMPTY`` class, so background is *in* its distribution.
4. The same the other way round: prompts tuned on the demo's synthetic tiles (no background class), held-out
   synthetic tiles against real H&E (Kather, CMU tissue) and glass (CMU background).

Prints one JSON document; writes it to ``OUT/trust_check.json``. With ``tiny-random`` (random weights) the
numbers show the machinery works, not what a pathology backbone would reach.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data").resolve()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.trust_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--backbone", default="tiny-random")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    train_csv, test_csv, test_dir = split_kather(args.out, args.seed)
    result: dict[str, Any] = {"split": _counts(train_csv, test_csv)}
    prompts = tune(train_csv, args.out / "run", args.backbone, args.epochs, args.seed)
    result["eval"] = evaluate(prompts, test_csv, args.out / "eval")
    result["predict"] = predict(prompts, test_dir, args.out / "predict")
    result["explain"] = explain(prompts, test_dir, args.out / "explain")
    result["ood"] = ood_auroc(prompts, test_dir, args.out, args.seed)
    result["ood_demo_model"] = ood_auroc_demo(args.out, args.backbone, args.seed)
    text = json.dumps(result, indent=2)
    (args.out / "trust_check.json").write_text(text + "\n")
    print(text)
    return 0


def split_kather(out: Path, seed: int) -> tuple[Path, Path, Path]:
    """Per class: 40% train, 30% validation, 30% held-out test (at least one each where the class has three)."""
    rng = np.random.default_rng(seed)
    rows, test_dir = [], out / "heldout"
    for folder in sorted(p for p in (DATA / "patches" / "kather2016-dev").iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.png"))
        files = [files[i] for i in rng.permutation(len(files))]
        n_test = max(1, round(0.3 * len(files)))
        n_val = max(1, round(0.3 * len(files)))
        for i, f in enumerate(files):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            rows.append((str(f), folder.name, split))
            if split == "test":
                (test_dir / folder.name).mkdir(parents=True, exist_ok=True)
                (test_dir / folder.name / f.name).write_bytes(f.read_bytes())
    train_csv, test_csv = out / "train_val.csv", out / "test.csv"
    for path, keep in ((train_csv, ("train", "val")), (test_csv, ("test",))):
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "split"])
            writer.writerows(r for r in rows if r[2] in keep)
    return train_csv, test_csv, test_dir


def tune(data: Path, out: Path, backbone: str, epochs: int, seed: int) -> Path:
    """Tune ``pathotune`` prompts on the train rows, validating on the val rows."""
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    config = resolve_config(TuneOptions(preset="kather2016", data=str(data), backbone=backbone, out=str(out),
                                        epochs=epochs, seed=seed))
    return tune_run(config).prompts


def evaluate(prompts: Path, data: Path, out: Path) -> dict[str, Any]:
    """ECE before/after, Brier, coverage and set size per alpha on the held-out tiles."""
    from pathotune_cli.engine import read_prompt_file
    from pathotune_cli.runs.evaluate import EvalOptions, eval_run

    trust = read_prompt_file(prompts).header.trust
    doc = eval_run(EvalOptions(prompts=prompts, data=data, out=out, bootstrap=1000)).to_dict()
    cal = doc["calibration"]
    return {
        "n": doc["n"], "temperature": cal["temperature"],
        "validation": trust.calibration.model_dump() if trust else None,
        "accuracy": doc["metrics"]["accuracy"],
        "ece_raw": cal["raw"]["ece"], "ece_calibrated": cal["calibrated"]["ece"],
        "brier_raw": cal["raw"]["brier"], "brier_calibrated": cal["calibrated"]["brier"],
        "nll_raw": cal["raw"]["nll"], "nll_calibrated": cal["calibrated"]["nll"],
        "conformal": doc["conformal"], "ood": doc["ood"],
    }


def predict(prompts: Path, folder: Path, out: Path) -> dict[str, Any]:
    """``predict --alpha 0.1`` on a folder of tiles: the columns of ``predictions.csv`` and a few rows."""
    from pathotune_cli.runs.predict import PredictOptions, predict_run

    predict_run(PredictOptions(prompts=prompts, inputs=(folder,), out=out, alpha=0.1))
    with (out / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    keep = ("path", "class", "prediction_set", "set_size", "ood_score", "ood")
    return {"columns": list(rows[0]), "rows": len(rows),
            "first": [{k: Path(r[k]).name if k == "path" else r[k] for k in keep} for r in rows[:3]]}


def explain(prompts: Path, folder: Path, out: Path) -> dict[str, Any]:
    """``explain`` on a folder of tiles: one PNG per tile."""
    from pathotune_cli.runs.explain import ExplainOptions, explain_run

    result = explain_run(ExplainOptions(prompts=prompts, images=(folder,), out=out, alpha=0.1))
    return {"tiles": len(result.rows), "pngs": len(list(out.glob("*.png")))}


def ood_auroc(prompts: Path, heldout: Path, out: Path, seed: int) -> dict[str, Any]:
    """AUROC of the OOD score, held-out Kather tiles (in) against each other source (out)."""
    from pathotune_cli.demo_data import write_demo_tiles

    model, trust, placement = _load(prompts)
    size = model.backbone.input_size
    cmu_bg, cmu_tissue = _slide_tiles(DATA / "slides" / "cmu-1-small-region.svs", None, size)
    kidney_bg, _ = _slide_tiles(DATA / "slides" / "unsupported" / "kidney-48-5.tif", 0.5, size)
    demo = write_demo_tiles(out / "demo-tiles", per_class=10, seed=seed + 1)
    sources = {"cmu_background": cmu_bg, "cmu_tissue": cmu_tissue, "kidney_background": kidney_bg,
               "demo_synthetic": _decode(sorted(demo.rglob("*.png")), size)}
    return _aurocs(model, trust, placement, "kather_heldout", _decode(sorted(heldout.rglob("*.png")), size), sources)


def ood_auroc_demo(out: Path, backbone: str, seed: int) -> dict[str, Any]:
    """Prompts tuned on synthetic tiles: held-out synthetic tiles (in) against real H&E and glass (out)."""
    from pathotune_cli.demo_data import write_demo_tiles
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    data = write_demo_tiles(out / "demo-train", per_class=24, seed=seed)
    config = resolve_config(TuneOptions(preset="demo", data=str(data), backbone=backbone, out=str(out / "demo-run"),
                                        epochs=2, seed=seed, sets=["train.lr=3e-3"]))
    model, trust, placement = _load(tune_run(config).prompts)
    size = model.backbone.input_size
    held = write_demo_tiles(out / "demo-heldout", per_class=10, seed=seed + 1)
    cmu_bg, cmu_tissue = _slide_tiles(DATA / "slides" / "cmu-1-small-region.svs", None, size, target_mpp=0.5,
                                      tile=112)
    kather = _decode(sorted((DATA / "patches" / "kather2016-dev").rglob("*.png")), size)
    sources = {"kather_real_he": kather, "cmu_tissue": cmu_tissue, "cmu_background": cmu_bg}
    return _aurocs(model, trust, placement, "demo_heldout", _decode(sorted(held.rglob("*.png")), size), sources)


def _aurocs(model: Any, trust: Any, placement: Any, name: str, inside_tiles: np.ndarray,
            sources: dict[str, np.ndarray]) -> dict[str, Any]:
    from pathotune_cli.training.ood import auroc

    inside = _scores(model, trust, placement, inside_tiles)
    report: dict[str, Any] = {"threshold": trust.ood_threshold, f"in_{name}": {
        "n": len(inside), "flagged_share": float((inside > trust.ood_threshold).mean())}}
    for source, tiles in sources.items():
        scores = _scores(model, trust, placement, tiles)
        report[source] = {"n": len(scores), "auroc": auroc(inside, scores),
                          "flagged_share": float((scores > trust.ood_threshold).mean())}
    return report


def _decode(paths: list[Path], size: int) -> np.ndarray:
    from pathotune_cli.training.images import decode_image

    return np.stack([decode_image(p, size) for p in paths])


def _load(prompts: Path) -> tuple[Any, Any, Any]:
    from pathotune_cli.engine import load_prompted_model
    from pathotune_cli.hardware import place
    from pathotune_cli.runs.trust.apply import load_trust

    model, file = load_prompted_model(prompts)
    placement = place("cpu", "fp32")
    model.place(placement)
    return model, load_trust(file), placement


def _scores(model: Any, trust: Any, placement: Any, tiles: np.ndarray) -> np.ndarray:
    """OOD scores of uint8 (N, 3, S, S) tiles."""
    import torch

    from pathotune_cli.training.outputs import model_outputs

    class Store:
        def __len__(self) -> int:
            return len(tiles)

        def batch(self, index: Any) -> torch.Tensor:
            return torch.from_numpy(tiles[np.asarray(index)])

    return trust.ood_scores(model_outputs(model, Store(), 32, placement).features)


def _slide_tiles(path: Path, default_mpp: float | None, size: int, target_mpp: float = 0.495,
                 tile: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """A slide's tiles at a task's mpp and size: background (tissue < 5%) and tissue (> 50%), (N, 3, S, S)."""
    from PIL import Image

    from pathotune_cli.wsi import open_slide, plan_slide, read_batch

    plan = plan_slide(path, target_mpp=target_mpp, tile_size=tile, min_tissue=0.0, default_mpp=default_mpp)
    with open_slide(plan.path, plan.backend) as reader:
        tiles = read_batch(reader, plan.coords, plan.level, plan.read_size, tile)
    resized = np.stack([np.asarray(Image.fromarray(t).resize((size, size), Image.BICUBIC)) for t in tiles])
    chw = resized.transpose(0, 3, 1, 2).copy()
    return chw[plan.tissue_fraction < 0.05], chw[plan.tissue_fraction > 0.5]


def _counts(train_csv: Path, test_csv: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in (train_csv, test_csv):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                counts[row["split"]] = counts.get(row["split"], 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
