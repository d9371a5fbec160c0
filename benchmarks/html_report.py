"""How fast ``pathotune report`` builds, and how large the page grows, for a predict folder of many slides.

Not part of ``python -m benchmarks``: a quick script. It writes a predict folder of ``--slides`` synthetic slides
as ``predict`` leaves them (summary row, record, tile CSV of ``--tiles`` tiles on a 80,000 x 60,000 px slide,
with class probabilities that vary smoothly over it as tissue regions do, heatmap PNG, plain thumbnail), then
times ``report_run`` on it and prints seconds and MB, in all and per slide.

    PYTHONPATH=src python -m benchmarks.html_report --slides 100 --tiles 8000 [--thumbnail real.thumb.jpg]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ("tumor", "stroma", "lymphocytes", "adipose")
LEVEL0 = (80_000, 60_000)
FOOTPRINT = 224


def tissue_picture(rng: np.random.Generator, size: tuple[int, int] = (1024, 768)) -> np.ndarray:
    """A pink, textured ellipse of 'tissue' on light glass (JPEG-sized like a real H&E thumbnail)."""
    from PIL import Image, ImageFilter

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((xx - w / 2) / (0.42 * w)) ** 2 + ((yy - h / 2) / (0.4 * h)) ** 2 < 1
    noise = np.asarray(Image.fromarray(rng.integers(0, 255, (h, w), np.uint8)).filter(ImageFilter.GaussianBlur(1.5)))
    rgb = np.full((h, w, 3), 240, np.uint8)
    rgb[inside] = np.stack([200 + noise[inside] // 8, 100 + noise[inside] // 4, 170 + noise[inside] // 10], axis=1)
    return rgb


def smooth_probabilities(coords: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class probabilities that change over the slide as tissue regions do (smooth fields plus tile noise)."""
    u = coords / np.array(LEVEL0, np.float64)
    phase = rng.uniform(0, 2 * np.pi, size=(len(CLASSES), 2))
    logits = np.stack([3 * np.sin(5 * u[:, 0] + p[0]) * np.cos(4 * u[:, 1] + p[1]) for p in phase], axis=1)
    logits += rng.normal(0, 0.7, logits.shape)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write_folder(out: Path, slides: int, tiles: int, seed: int = 0, thumbnail: Path | None = None) -> None:
    """A predict folder of ``slides`` synthetic slides with ``tiles`` tiles each (``thumbnail``: a real picture)."""
    from PIL import Image

    from pathotune_cli.wsi import save_png, save_slide_thumbnail

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    cols, rows = LEVEL0[0] // FOOTPRINT, LEVEL0[1] // FOOTPRINT
    cells = np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), -1).reshape(-1, 2)
    centre = np.array([cols / 2, rows / 2])
    order = np.argsort(np.linalg.norm((cells - centre) / centre, axis=1))  # tiles fill an ellipse from the centre
    summary = []
    picture = tissue_picture(rng) if thumbnail is None else np.asarray(Image.open(thumbnail).convert("RGB"))
    for i in range(slides):
        stem = f"slide-{i:03d}"
        coords = cells[order[:tiles]] * FOOTPRINT
        probs = smooth_probabilities(coords, rng)
        top = probs.argmax(1)
        with (out / f"{stem}.predictions.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["x", "y", "w", "h", "class", *[f"prob_{c}" for c in CLASSES], "ood_score", "ood"])
            for (x, y), p, k in zip(coords, probs, top, strict=True):
                writer.writerow([x, y, FOOTPRINT, FOOTPRINT, CLASSES[k], *[f"{v:.6f}" for v in p],
                                 f"{rng.random():.4f}", int(rng.random() < 0.05)])
        save_slide_thumbnail(out / f"{stem}.thumb.jpg", picture, LEVEL0)
        save_png(out / f"{stem}.heatmap.png", picture)
        row = {"slide": f"{stem}.svs", "status": "ok", "tiles": tiles, "tissue_area_mm2": round(tiles * 0.0125, 2),
               **{f"fraction_{c}": round(float((top == j).mean()), 4) for j, c in enumerate(CLASSES)},
               **{f"area_mm2_{c}": round(float((top == j).sum()) * 0.0125, 3) for j, c in enumerate(CLASSES)},
               "ood_fraction": 0.05, "mean_set_size": "", "error": ""}
        (out / f"{stem}.predict.json").write_text(json.dumps({"version": 1, "row": row}))
        summary.append(row)
    with (out / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    (out / "run.json").write_text(json.dumps({"command": "predict", "settings": {"prompts": ""}}))


def cpu_model() -> str:
    """The CPU, as ``lscpu`` names it."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")), "?")


def main() -> None:
    """Write the folder, build the report, print the figures."""
    from pathotune_cli.runs.report import report_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=100)
    parser.add_argument("--tiles", type=int, default=8000)
    parser.add_argument("--thumbnail", type=Path, default=None,
                        help="A real thumbnail (an image) for every slide instead of the generated one.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "P"
        write_folder(folder, args.slides, args.tiles, thumbnail=args.thumbnail)
        started = time.perf_counter()
        result = report_run(folder)
        seconds = time.perf_counter() - started
    mb = result.bytes / 1e6
    print(f"{args.slides} slides x {args.tiles} tiles: {seconds:.2f} s ({seconds / args.slides * 1000:.0f} ms/slide), "
          f"{mb:.2f} MB ({mb / args.slides * 1000:.0f} KB/slide) on {cpu_model()}")


if __name__ == "__main__":
    main()
