"""Slide-level ``predict``: what one slide goes through with a slide-level model (``SlidePredictJob``).

Per slide: ``<stem>.predictions.csv`` (x, y, w, h, attention per tile), ``<stem>.tiles.geojson`` (the attention as
a measurement QuPath can colour by), ``<stem>.attention.png`` (the attention over the thumbnail, scaled to the
slide's most attended tile) and ``<stem>.top_tiles.png`` (the most attended tiles); ``summary.csv`` gains the
slide's ``label`` and ``prob_<class>`` (calibrated by the file's temperature unless ``--uncalibrated``) and, with
``--alpha``, its ``prediction_set`` and ``set_size``. With ``--explain-top K``, ``<stem>.explain/`` holds a PNG of
each of the K most attended tiles with its attribution map for the slide's class
(``training.attribution.slide_gradient_x_input``) and ``explanations.csv``. Slides are cut by the same options as
at tile level (``runs.per_slide.tiling``); locks, resume, records and the summary are the engine's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pathotune_cli.events import Reporter, ignore, warn
from pathotune_cli.files import Staging
from pathotune_cli.hardware import Placement
from pathotune_cli.runs.options import PredictOptions, kernel_spec
from pathotune_cli.runs.per_slide.engine import SlideJob
from pathotune_cli.runs.per_slide.rows import SlideInput, SlideRow
from pathotune_cli.runs.per_slide.tiling import PlannedSlide, Tiling, plan
from pathotune_cli.runs.trust.apply import Columns, Trust

if TYPE_CHECKING:
    import torch

    from pathotune_cli.engine.slide_model import SlideModel

TOP_TILES = 8
SLIDE_ALGORITHM = 2
"""2: slides cut with every tiling option (``--min-tissue``, ``--tissue-geojson``, ``--default-mpp``, ...), and
the plain thumbnail the report overlays."""


def start_slide_level(opts: PredictOptions, prompts: Path, tiling: Tiling, out: Path, sha: str,
                      report: Reporter = ignore) -> SlidePredictJob:
    """Load the slide-level model, its trust section and its placement; the job every slide goes through.

    Raises:
        BadInput: a damaged prompt file, another backbone's weights, an ``--alpha`` the file does not store,
            a ``--heatmap-class`` (a slide-level model draws its attention).
    """
    from pathotune_cli.engine import random_weights_warning
    from pathotune_cli.engine.slide_model import load_slide_model
    from pathotune_cli.errors import BadInput
    from pathotune_cli.runs.per_slide.devices import shard_placement
    from pathotune_cli.runs.trust.apply import load_trust

    if opts.heatmap_class is not None:
        raise BadInput("--heatmap-class is for tile-level prompt files; a slide-level model draws where it looked "
                       "(<slide>.attention.png)", "drop --heatmap-class")
    model, file = load_slide_model(prompts, opts.weights)
    if random_weights_warning(model.tiles):
        warn(report, str(random_weights_warning(model.tiles)))
    trust = load_trust(file, uncalibrated=opts.uncalibrated, alpha=opts.alpha)
    if trust.notice:
        warn(report, trust.notice)
    placement = shard_placement(opts.device, opts.precision, opts.shard)
    model.place(placement, "inference", kernel_spec(opts.kernels))
    return SlidePredictJob(out, model, placement, trust, tiling, opts, list(file.header.classes), file.path, sha,
                           report)


class SlidePredictJob(SlideJob):
    """A slide-level model over one slide: its label, its attention map, the tiles it looked at."""

    command = "predict"

    def __init__(self, out: Path, model: SlideModel, placement: Placement, trust: Trust, tiling: Tiling,
                 opts: PredictOptions, class_names: list[str], prompts: Path, prompts_sha256: str,
                 report: Reporter = ignore) -> None:
        super().__init__(out, report)
        self.model, self.placement, self.trust, self.tiling, self.opts = model, placement, trust, tiling, opts
        self.class_names = class_names
        self.prompts, self.prompts_sha256 = prompts, prompts_sha256

    def settings(self, slide: SlideInput) -> dict[str, object]:
        """The prompt file, the precision, the calibration, the tiling and the output options."""
        return {"version": SLIDE_ALGORITHM, "prompts_sha256": self.prompts_sha256,
                "precision": self.placement.precision, "calibrated": self.trust.calibrated, "alpha": self.opts.alpha,
                "explain_top": self.opts.explain_top, **self.tiling.settings(slide)}

    def label(self, slide: SlideInput) -> str:
        """``summary.csv`` names slides by file name."""
        return slide.name

    def outputs(self, stem: str) -> list[Path]:
        """CSV, GeoJSON, attention map, top tiles (and the explanations folder with ``--explain-top``)."""
        return list(_outputs(self.out, stem, bool(self.opts.explain_top)).values())

    def run_extra(self) -> dict[str, object]:
        """What the run record adds when the run ends."""
        return {"prompts_sha256": self.prompts_sha256, "precision": self.placement.precision,
                "kernels": self.model.tiles.kernel_choices()}

    def images(self, images: list[Path]) -> None:
        """Tile images are not slides: a slide-level model skips them, and says so."""
        warn(self.report, f"{len(images)} tile images skipped: a slide-level model predicts whole slides")

    def process(self, slide: SlideInput, staged: Staging) -> SlideRow:
        """The slide's label and probabilities, and its files under temporary names."""
        from pathotune_cli.runs.slide_level.evaluate import slide_logits_of
        from pathotune_cli.runs.trust.apply import tile_columns

        planned = plan(slide, self.tiling)
        for line in planned.plan.notes:
            warn(self.report, line)
        seen = slide_logits_of(self.model, planned, self.placement, self.report, self.opts.batch_size,
                               self.tiling.max_damaged)
        planned, attention = seen.slide, seen.attention
        columns = tile_columns(self.trust, seen.logits[None], None, self.class_names)
        self._write(planned, attention, staged, slide.stem)
        if self.opts.explain_top:
            folder = staged.temp(_outputs(self.out, slide.stem, True)["explain"])
            _explain_top(self.model, self.trust, planned, seen.features, attention, columns, self.class_names,
                         self.opts.explain_top, folder)
        row = self._row(slide, planned, columns)
        row.values["tiles_damaged"] = seen.tiles_damaged
        return row

    def _write(self, planned: PlannedSlide, attention: np.ndarray, staged: Staging, stem: str) -> None:
        from pathotune_cli.files import write_csv
        from pathotune_cli.wsi.geojson import write_measured_tiles
        from pathotune_cli.wsi.thumbnail import draw_heatmap, save_png
        from pathotune_cli.wsi.thumbnail_file import save_slide_thumbnail

        coords, footprint, finals = planned.coords, planned.footprint, _outputs(self.out, stem)
        scaled = attention / attention.max() if len(attention) and attention.max() > 0 else attention
        rows = ([int(x), int(y), footprint, footprint, f"{a:.6g}"] for (x, y), a in zip(coords, attention, strict=True))
        write_csv(staged.temp(finals["csv"]), ["x", "y", "w", "h", "attention"], rows)
        write_measured_tiles(staged.temp(finals["geojson"]), coords, footprint,
                             {"attention": attention, "attention_scaled": scaled})
        picture = draw_heatmap(planned.plan.thumbnail, planned.plan.level0_size, coords, footprint,
                               scaled.reshape(-1, 1), ["attention"], show="attention")
        save_png(staged.temp(finals["attention"]), picture)
        save_png(staged.temp(finals["top"]), _montage(planned, attention))
        save_slide_thumbnail(staged.temp(finals["thumb"]), planned.plan.thumbnail, planned.plan.level0_size)

    def _row(self, slide: SlideInput, planned: PlannedSlide, columns: Columns) -> SlideRow:
        probs = columns["probs"][0]
        sets = ({"prediction_set": columns["prediction_set"][0], "set_size": int(columns["set_size"][0])}
                if "prediction_set" in columns else {})
        values = {"label": self.class_names[int(probs.argmax())],
                  **{f"prob_{c}": round(float(p), 6) for c, p in zip(self.class_names, probs, strict=True)},
                  **sets, "tissue_area_mm2": round(planned.plan.tissue_area_mm2, 4),
                  "coords": str(planned.coords_file) if planned.coords_file else "tiled on the fly",
                  "prompts": self.prompts.name, "prompts_sha256": self.prompts_sha256}
        return SlideRow(slide.name, "ok", tiles=int(len(planned)), level=int(planned.level),
                        mpp=round(planned.plan.mpp, 5), mpp_source=planned.plan.mpp_source, values=values)


def _outputs(out: Path, stem: str, explain: bool = False) -> dict[str, Path]:
    paths = {"csv": out / f"{stem}.predictions.csv", "geojson": out / f"{stem}.tiles.geojson",
             "attention": out / f"{stem}.attention.png", "top": out / f"{stem}.top_tiles.png",
             "thumb": out / f"{stem}.thumb.jpg"}
    if explain:
        paths["explain"] = out / f"{stem}.explain"
    return paths


def _montage(planned: PlannedSlide, attention: np.ndarray, k: int = TOP_TILES) -> np.ndarray:
    """The ``k`` most attended tiles side by side, most attended first (a white strip for an empty slide)."""
    from pathotune_cli.runs.slide_level.tiles import read_tiles

    size = planned.tile_size
    if not len(attention):
        return np.full((size, size, 3), 255, np.uint8)
    top = np.argsort(-attention, kind="stable")[:k]
    tiles = read_tiles(planned, top).permute(0, 2, 3, 1).numpy()
    strip = np.full((size, len(top) * (size + 4) - 4, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        strip[:, i * (size + 4) : i * (size + 4) + size] = tile
    return strip


def _explain_top(model: SlideModel, trust: Trust, planned: PlannedSlide, features: torch.Tensor, attention: np.ndarray,
                 columns: Columns,
                 classes: list[str], k: int, folder: Path) -> None:
    """PNGs of the ``k`` most attended tiles, each with its map for the slide's class, and ``explanations.csv``.

    Into ``folder`` (a temporary the caller stages), named ``<rank>_x<X>_y<Y>.png``; in full precision.
    """
    import torch

    from pathotune_cli.files import write_csv
    from pathotune_cli.runs.slide_level.tiles import read_tiles
    from pathotune_cli.training.attribution import slide_gradient_x_input
    from pathotune_cli.training.trust_plots import save_explanation

    folder.mkdir(parents=True, exist_ok=True)
    top = np.argsort(-attention, kind="stable")[:k]
    probs, label = columns["probs"][0], int(columns["labels"][0])
    ranked = np.argsort(-probs, kind="stable")[:3]
    lines = [f"slide: {trust.describe()}"]
    if "prediction_set" in columns:
        lines.append(f"slide set at alpha {trust.alpha:g}: {columns['prediction_set'][0] or '(empty)'}")
    device = features.device
    rows = []
    for start in range(0, len(top), 8):
        part = top[start : start + 8]
        tiles = read_tiles(planned, part)
        maps, _ = slide_gradient_x_input(model, features.float(), tiles.float().div(255.0).to(device), part, label,
                                         trust.temperature if trust.calibrated else 1.0)
        with torch.no_grad():
            pixels = tiles.permute(0, 2, 3, 1).numpy()
        for j, i in enumerate(part):
            rank = start + j + 1
            x, y = (int(v) for v in planned.coords[i])
            name = f"{rank}_x{x}_y{y}.png"
            save_explanation(pixels[j], maps[j], [(classes[c], float(probs[c])) for c in ranked], folder / name,
                             title=f"{planned.path.name}: attended tile {rank} of {len(attention)}",
                             lines=[*lines, f"attention {attention[i]:.4g}; map: slide's {classes[label]}"])
            rows.append([rank, x, y, f"{attention[i]:.6g}", name, classes[label], f"{probs[label]:.6f}"])
    write_csv(folder / "explanations.csv", ["rank", "x", "y", "attention", "png", "slide_class", "slide_probability"],
              rows)
