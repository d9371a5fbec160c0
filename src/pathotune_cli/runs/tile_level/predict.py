"""Tile-level ``predict``: what one slide goes through with a tile classifier (``TilePredictJob``).

Per slide: ``<stem>.predictions.csv`` (x, y, w, h, class, prob_*), ``<stem>.tiles.geojson`` (opens in QuPath),
``<stem>.heatmap.png`` and, with ``--explain-top``, ``<stem>.explain/``; the engine (``runs.per_slide.engine``)
does the locks, ``--resume``, records and summary. Per tile: the reported probabilities (calibrated unless
``--uncalibrated``, ``runs.trust``), with ``--alpha`` the prediction set and its size, and where the prompt file
has OOD statistics the OOD score and flag; a flagged tile is classified ``Uncertain`` in the GeoJSON, and the
slide's row gets the flagged share (``ood_fraction``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, ignore, warn
from pathotune_cli.files import Staging, write_csv
from pathotune_cli.hardware import Placement
from pathotune_cli.runs.options import PredictOptions, kernel_spec
from pathotune_cli.runs.per_slide.engine import SlideJob
from pathotune_cli.runs.per_slide.inference import TileOutputs, infer_tiles
from pathotune_cli.runs.per_slide.rows import SlideInput, SlideRow
from pathotune_cli.runs.per_slide.tiling import PlannedSlide, Tiling, plan
from pathotune_cli.runs.trust.apply import UNCERTAIN, Columns, Trust, extra_headers, extra_values, tile_columns
from pathotune_cli.runs.trust.modality import modality_columns

if TYPE_CHECKING:
    import torch

    from pathotune_cli.engine.model import PromptedModel
    from pathotune_cli.engine.stain_stats import ModalityCheck, StainStats

PREDICT_ALGORITHM = 3
"""Bumped when a change of pathotune predicts differently from the same slide, model and settings (2: calibrated
probabilities by default, prediction sets, OOD columns; 3: the plain thumbnail the report overlays)."""


@dataclass(frozen=True)
class ImagesResult:
    """Tile images classified into one CSV."""

    file: Path
    images: int
    counts: dict[str, int]
    flagged: int | None = None
    """Images flagged out of distribution (None without OOD statistics)."""


def start_tile_level(opts: PredictOptions, prompts: Path, tiling: Tiling, out: Path, sha: str,
                     report: Reporter = ignore) -> TilePredictJob:
    """Load the tile classifier, its trust section and its placement; the job every slide goes through.

    Raises:
        BadInput: a damaged prompt file, another backbone's weights, an unknown ``--heatmap-class``, an ``--alpha``
            the file does not store.
    """
    from pathotune_cli.engine import load_prompted_model, random_weights_warning
    from pathotune_cli.runs.per_slide.devices import shard_placement
    from pathotune_cli.runs.trust.apply import load_trust

    model, file = load_prompted_model(prompts, opts.weights)
    task = file.header.task
    if random_weights_warning(model):
        warn(report, str(random_weights_warning(model)))
    trust = load_trust(file, uncalibrated=opts.uncalibrated, alpha=opts.alpha)
    if trust.notice:
        warn(report, trust.notice)
    if opts.heatmap_class is not None and opts.heatmap_class not in task.class_names:
        raise BadInput(f"--heatmap-class '{opts.heatmap_class}' is not a class of this prompt file",
                       f"use one of {', '.join(task.class_names)}")
    placement = shard_placement(opts.device, opts.precision, opts.shard)
    model.place(placement, "inference", kernel_spec(opts.kernels))
    return TilePredictJob(out, model, placement, trust, tiling, opts, list(task.class_names), file.path, sha,
                          file.header.backbone.fingerprint, file.header.stain_stats, report)


class TilePredictJob(SlideJob):
    """A tile classifier over one slide: plan, infer in batches, write CSV, GeoJSON, heatmap (and explanations)."""

    command = "predict"

    def __init__(self, out: Path, model: PromptedModel, placement: Placement, trust: Trust, tiling: Tiling,
                 opts: PredictOptions, class_names: list[str], prompts: Path, prompts_sha256: str,
                 fingerprint: str, stain_stats: StainStats | None = None, report: Reporter = ignore) -> None:
        super().__init__(out, report)
        self.model, self.placement, self.trust, self.tiling, self.opts = model, placement, trust, tiling, opts
        self.class_names = class_names
        self.prompts, self.prompts_sha256, self.fingerprint = prompts, prompts_sha256, fingerprint
        self.pool: Any = None
        """Reading processes shared by every slide of the run (None: read in this process)."""
        self.stain_stats = stain_stats
        """The training tiles' stain statistics (``engine.stain_stats``): each slide is checked against them."""

    def settings(self, slide: SlideInput) -> dict[str, object]:
        """The prompt file, the precision, the tiling and the output options."""
        opts = self.opts
        return {"version": PREDICT_ALGORITHM, "prompts_sha256": self.prompts_sha256,
                "precision": self.placement.precision, **self.tiling.settings(slide),
                "heatmap_class": opts.heatmap_class, "uncalibrated": opts.uncalibrated, "alpha": opts.alpha,
                "explain_top": opts.explain_top, "strict": opts.strict}

    def label(self, slide: SlideInput) -> str:
        """``summary.csv`` names slides by file name."""
        return slide.name

    def outputs(self, stem: str) -> list[Path]:
        """CSV, GeoJSON, heatmap (and the explanations folder with ``--explain-top``)."""
        return list(output_paths(self.out, stem, bool(self.opts.explain_top)).values())

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Reading processes (on a GPU) started once for every slide of the run."""
        workers = reading_workers(self.opts.workers, self.placement.device)
        if workers <= 0:
            yield
            return
        from pathotune_cli.wsi.tiles import TileReaderPool

        with TileReaderPool(workers) as pool:
            self.pool = pool
            try:
                yield
            finally:
                self.pool = None

    def process(self, slide: SlideInput, staged: Staging) -> SlideRow:
        """Plan, infer, write the slide's files under temporary names; its summary row."""
        from pathotune_cli.wsi.geojson import write_tiles_geojson
        from pathotune_cli.wsi.thumbnail import draw_heatmap, save_png
        from pathotune_cli.wsi.thumbnail_file import save_slide_thumbnail

        planned = plan(slide, self.tiling)
        for line in planned.plan.notes:
            warn(self.report, line)
        modality = self._modality(slide, planned)
        inferred = self._infer(planned)
        planned = dataclasses.replace(planned, coords=inferred.coords(planned))  # the tiles that decoded
        logits, ood = inferred.values[0], (inferred.values[1] if self.trust.has_ood else None)
        columns = tile_columns(self.trust, logits, ood, self.class_names)
        columns["damaged"] = inferred.filled
        if modality is not None and not modality.modality_ok:  # every tile of the wrong kind of slide: Uncertain
            columns["wrong_kind"] = np.ones(len(logits), bool)
        probs = columns["probs"]
        paths = output_paths(self.out, slide.stem, bool(self.opts.explain_top))
        picture = draw_heatmap(planned.plan.thumbnail, planned.plan.level0_size, planned.coords, planned.footprint,
                               probs, self.class_names, show=self.opts.heatmap_class)
        _write_tile_csv(staged.temp(paths["csv"]), planned.coords, planned.footprint, columns, self.class_names)
        write_tiles_geojson(staged.temp(paths["geojson"]), planned.coords, planned.footprint, self.class_names, probs,
                            **geojson_extras(columns, self.class_names))
        save_png(staged.temp(paths["heatmap"]), picture)
        save_slide_thumbnail(staged.temp(paths["thumb"]), planned.plan.thumbnail, planned.plan.level0_size)
        if self.opts.explain_top:
            self._explain_top(planned, probs, staged.temp(paths["explain"]))
        row = self._row(slide, planned, probs, columns)
        row.values["tiles_damaged"] = inferred.damage.count
        row.values.update(modality_columns(modality))
        return row

    def _modality(self, slide: SlideInput, planned: PlannedSlide) -> ModalityCheck | None:
        """The slide against the training tiles' stain statistics: a warning naming it, or (``--strict``) its failure.

        Raises:
            PathotuneError: ``--strict``, and the slide is not the kind of slide the model was tuned on.
        """
        from pathotune_cli.errors import PathotuneError
        from pathotune_cli.runs.trust.modality import modality_warning, slide_modality

        check = slide_modality(self.stain_stats, planned.path, planned.coords, planned.level, planned.read_size,
                               planned.tile_size, planned.backend)
        line = modality_warning(slide.name, check) if check is not None else None
        if line and self.opts.strict:
            raise PathotuneError(line, "predict it with a model tuned on slides of its kind, or drop --strict")
        if line:
            warn(self.report, line)
        return check

    def run_extra(self) -> dict[str, object]:
        """What the run record adds when the run ends."""
        return {"prompts_sha256": self.prompts_sha256, "precision": self.placement.precision,
                "backbone_fingerprint": self.fingerprint, "kernels": self.model.kernel_choices()}

    def images(self, images: list[Path]) -> ImagesResult:
        """``predictions.csv`` of tile images, with the trust columns where available.

        With ``--explain-top`` the most confident images of each class are explained into ``predictions.explain/``.
        """
        from pathotune_cli.runs.explain import explain_images, most_confident
        from pathotune_cli.training.images import ImageStore
        from pathotune_cli.training.outputs import model_outputs

        store = ImageStore(images, self.model.backbone.input_size, max_bytes=256 * 1024**2)
        outputs = model_outputs(self.model, store, self.opts.batch_size, self.placement,
                                with_features=self.trust.has_ood)
        scores = self.trust.ood_scores(outputs.features) if outputs.features is not None else None
        columns = tile_columns(self.trust, outputs.logits, scores, self.class_names)
        labels, names = columns["labels"], self.class_names
        path = self.out / "predictions.csv"
        write_csv(path, ["path", "class", *[f"prob_{c}" for c in names], *extra_headers(columns)],
                  ([str(p), names[int(k)], *[f"{v:.6f}" for v in row], *extra_values(columns, i)]
                   for i, (p, k, row) in enumerate(zip(images, labels, columns["probs"], strict=True))))
        chosen = [images[i] for _, _, i in most_confident(columns["probs"], self.opts.explain_top)]
        if chosen:
            explain_images(self.model, self.trust, chosen, self.out / "predictions.explain", names, 3, 8,
                           self.placement.device)
        flagged = int(np.sum(columns["ood"])) if "ood" in columns else None
        return ImagesResult(path, len(images), {c: int((labels == i).sum()) for i, c in enumerate(names)}, flagged)

    def _row(self, slide: SlideInput, planned: PlannedSlide, probs: np.ndarray, columns: Columns) -> SlideRow:
        area = (planned.footprint * planned.plan.mpp / 1000.0) ** 2
        roi = {} if planned.roi_mm2 is None else {"roi_area_mm2": round(planned.roi_mm2, 4)}
        values = {"tissue_area_mm2": round(planned.plan.tissue_area_mm2, 4), **roi,
                  **_composition(probs, self.class_names, area), **trust_fractions(columns),
                  "coords": str(planned.coords_file) if planned.coords_file else "tiled on the fly",
                  "prompts": self.prompts.name, "prompts_sha256": self.prompts_sha256}
        return SlideRow(slide.name, "ok", tiles=int(len(planned)), level=int(planned.level),
                        mpp=round(planned.plan.mpp, 5), mpp_source=planned.plan.mpp_source, values=values)

    def _infer(self, planned: PlannedSlide) -> TileOutputs:
        """Logits (kept, C) of the slide's tiles and their OOD scores (kept,) where the file has them.

        The scores are computed batch by batch from the features of the same forward, so no (N, d) array is kept.
        """
        from pathotune_cli.training.outputs import forward_with_features

        with_ood = self.trust.has_ood

        def step(images: torch.Tensor) -> tuple[np.ndarray, ...]:
            z, f = forward_with_features(self.model, images, with_features=with_ood)
            scores = self.trust.ood_scores(f.float().cpu().numpy()) if with_ood and f is not None else None
            return z.float().cpu().numpy(), (scores if scores is not None else np.zeros(len(z)))

        empty = (np.zeros((0, len(self.class_names)), np.float32), np.zeros(0))
        return infer_tiles(planned, step, empty, self.placement, batch_size=self.opts.batch_size,
                           max_damaged=self.tiling.max_damaged, report=self.report, pool=self.pool)

    def _explain_top(self, planned: PlannedSlide, probs: np.ndarray, folder: Path) -> None:
        """PNGs of the ``--explain-top`` most confident tiles of each class, and ``explanations.csv``.

        Into ``folder`` (a temporary the caller stages), named ``<CLASS>_<rank>_x<X>_y<Y>.png``.
        """
        from pathotune_cli.runs.explain import CSV_COLUMNS, CSV_NAME, ExplainRow, explain_tiles, most_confident
        from pathotune_cli.wsi.damage import TileDamage
        from pathotune_cli.wsi.open import open_slide
        from pathotune_cli.wsi.tiles import read_batch

        folder.mkdir(parents=True, exist_ok=True)
        chosen = most_confident(probs, self.opts.explain_top)
        rows: list[ExplainRow] = []
        with open_slide(planned.path, planned.backend) as reader:
            for start in range(0, len(chosen), 8):
                part = chosen[start : start + 8]
                xy = planned.coords[[i for _, _, i in part]]
                tiles = read_batch(reader, xy, planned.level, planned.read_size, planned.tile_size,
                                   damage=TileDamage(planned.path.name, max_share=None))
                names = [f"{self.class_names[c]}_{rank}_x{int(x)}_y{int(y)}"
                         for (c, rank, _), (x, y) in zip(part, xy, strict=True)]
                rows += explain_tiles(self.model, self.trust, tiles, names, [folder / f"{n}.png" for n in names],
                                      self.class_names, 3, self.placement.device)
        rows = [dataclasses.replace(row, png=Path(row.png).name) for row in rows]
        write_csv(folder / CSV_NAME, CSV_COLUMNS, (r.cells() for r in rows))


def reading_workers(requested: int | None, device: str) -> int:
    """Tile-reading processes: as asked, or (None) 0 when the model runs on the CPU and 2 on a GPU.

    On a CPU the model's threads already use every core, so a reading process takes one from them and the
    whole pass slows: vit_small on 2 cores predicted 9.4 tiles/s with 2 readers and 11.5 reading between
    batches in its own process, where decoding a batch costs about 1% of running the model on it
    (benchmarks, issue 6). With a GPU the CPU is free to read ahead.
    """
    if requested is not None:
        return requested
    return 0 if device == "cpu" else 2


def output_paths(out: Path, stem: str, explain: bool = False) -> dict[str, Path]:
    """Where one slide's predictions go (and its explanations, with ``--explain-top``)."""
    paths = {
        "csv": out / f"{stem}.predictions.csv",
        "geojson": out / f"{stem}.tiles.geojson",
        "heatmap": out / f"{stem}.heatmap.png",
        "thumb": out / f"{stem}.thumb.jpg",
    }
    if explain:
        paths["explain"] = out / f"{stem}.explain"
    return paths


def geojson_extras(columns: Columns, classes: list[str]) -> dict[str, Any]:
    """The GeoJSON's trust columns, as ``wsi.write_tiles_geojson`` keywords.

    Measurements ``set_size`` and ``in_set_<class>`` (0/1), ``ood_score`` and ``ood`` (0/1); the set as text
    under ``metadata``; flagged tiles classified ``Uncertain``.
    """
    measurements: dict[str, np.ndarray] = {}
    extras: dict[str, Any] = {"measurements": measurements}
    if "sets" in columns:
        measurements["set_size"] = columns["set_size"]
        measurements.update({f"in_set_{c}": columns["sets"][:, i] for i, c in enumerate(classes)})
        extras["metadata"] = {"prediction_set": columns["prediction_set"]}
    if "ood" in columns:
        measurements.update(ood_score=columns["ood_score"], ood=columns["ood"])
        extras.update(uncertain=columns["ood"], uncertain_name=UNCERTAIN)
    if "wrong_kind" in columns:  # a slide unlike the training tiles: every tile Uncertain, measured so
        measurements["modality_ok"] = np.zeros(len(columns["wrong_kind"]))
        flagged = columns["wrong_kind"] | (columns["ood"] if "ood" in columns else False)
        extras.update(uncertain=flagged, uncertain_name=UNCERTAIN)
    if "damaged" in columns and np.any(columns["damaged"]):  # read from a coarser level: its own did not decode
        measurements["damaged"] = np.asarray(columns["damaged"], np.float64)
    return extras


def trust_fractions(columns: Columns) -> dict[str, Any]:
    """A slide's flagged share and mean set size (empty cells where not computed)."""
    n = len(columns["probs"])
    ood = round(float(np.mean(columns["ood"])), 4) if "ood" in columns and n else ""
    size = round(float(np.mean(columns["set_size"])), 4) if "set_size" in columns and n else ""
    return {"ood_fraction": ood, "mean_set_size": size}


def _composition(probs: np.ndarray, classes: list[str], tile_area_mm2: float) -> dict[str, float]:
    """Each class's share of the tiles (by top class) and its area in mm2."""
    labels = probs.argmax(1) if len(probs) else np.zeros(0, int)
    row: dict[str, float] = {}
    for i, name in enumerate(classes):
        count = int((labels == i).sum())
        row[f"fraction_{name}"] = round(count / len(probs), 4) if len(probs) else 0.0
        row[f"area_mm2_{name}"] = round(count * tile_area_mm2, 4)
    return row


def _write_tile_csv(path: Path, coords: np.ndarray, footprint: int, columns: Columns,
                    classes: list[str]) -> None:
    probs, labels = columns["probs"], columns["labels"]
    header = ["x", "y", "w", "h", "class", *[f"prob_{c}" for c in classes], *extra_headers(columns)]
    rows = ([int(x), int(y), footprint, footprint, classes[int(k)], *[f"{v:.6f}" for v in p],
             *extra_values(columns, i)]
            for i, ((x, y), k, p) in enumerate(zip(coords, labels, probs, strict=True)))
    write_csv(path, header, rows)
