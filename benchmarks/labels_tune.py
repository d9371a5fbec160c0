"""Tuning from slides (``tune --data labels.csv``) against tuning from the same tiles saved as files, at ViT-S.

Issue 23's figure: images per second of the whole ``tune`` run (data loading included) from ``labels.csv``,
where every tile is read from its slide, over the same run from an ImageFolder of the same tiles saved as PNG
files. Same backbone (a random ViT-S at 224 px), same tiles, same seed, same epochs; the two runs alternate
and the best of ``--rounds`` counts for each. Run it alone on the machine (``python -m benchmarks.labels_tune``);
it prints the figures and the ratio (target >= 0.9x).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _data(root: Path, slides: int) -> tuple[Path, Path, int]:
    """(labels.csv, the same tiles as an ImageFolder of PNG files, tiles) from the demo's annotated slides at 224 px."""
    from PIL import Image

    from pathotune_cli.config import load_task_preset
    from pathotune_cli.runs.tile_level.demo_labels import TRAIN_SLIDE_SIZE, _write_slide, write_quadrant_annotations
    from pathotune_cli.runs.tile_level.labels import discover_data, store_for
    from pathotune_cli.wsi.labels import label_tiles, read_label_regions
    from pathotune_cli.wsi.labels_csv import labelled_rows, write_labels_csv
    from pathotune_cli.wsi.plan import plan_slide

    task = load_task_preset("demo")
    rows = []
    for i in range(slides):
        slide = _write_slide(root / f"s{i}.tiff", 100 + i)
        annotations = write_quadrant_annotations(root / f"s{i}.geojson", *TRAIN_SLIDE_SIZE)
        plan = plan_slide(slide, target_mpp=0.5, tile_size=224, tissue="none", min_tissue=0)
        tiles = label_tiles(read_label_regions(annotations, task, plan.level0_size), plan.coords,
                            plan.grid.patch_size_level0, 0.75)
        rows += labelled_rows(plan, tiles, task.class_names)
    labels = write_labels_csv(root / "labels.csv", rows)
    data = discover_data(labels, task, print)
    pixels = store_for(data, 224).batch(list(range(len(data))))
    folder = root / "files"
    for i, (tile, label) in enumerate(zip(pixels, data.labels, strict=True)):
        target = folder / task.class_names[int(label)] / f"t{i:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tile.permute(1, 2, 0).numpy()).save(target)
    return labels, folder, len(data)


def _tune(data: Path, backbone: Path, out: Path, epochs: int) -> tuple[float, int]:
    """(seconds of the whole run, training images)."""
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    config = resolve_config(TuneOptions(preset="demo", data=data, backbone=str(backbone), out=out, epochs=epochs,
                                        seed=0, sets=("train.batch_size=32", "train.patience=null")))
    started = time.perf_counter()
    result = tune_run(config, force=True)
    return time.perf_counter() - started, result.train_images


def main() -> None:
    """Build the data once, then alternate the two runs and print the figures as JSON and a line."""
    import tempfile

    from benchmarks.models import preset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slides", type=int, default=12)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        labels, files, tiles = _data(root, args.slides)
        backbone = root / "vit-s.yaml"
        backbone.write_text(json.dumps(preset("vit_small").model_dump(mode="json")))
        best = {"slides": float("inf"), "files": float("inf")}
        images = 0
        for _ in range(args.rounds):
            for name, data in (("files", files), ("slides", labels)):
                seconds, images = _tune(data, backbone, root / f"run-{name}", args.epochs)
                best[name] = min(best[name], seconds)
        rate = {k: images * args.epochs / v for k, v in best.items()}
        ratio = rate["slides"] / rate["files"]
        print(json.dumps({"tiles": tiles, "train_images": images, "epochs": args.epochs, "seconds": best,
                          "images_per_second": rate, "ratio": ratio}))
        verdict = "PASS" if ratio >= 0.9 else "FAIL"
        print(f"tune --data labels.csv vs tune --data DIR at ViT-S: {rate['slides']:.2f} vs {rate['files']:.2f} "
              f"img/s = {ratio:.2f}x (target >= 0.9x): {verdict}")


if __name__ == "__main__":
    main()
