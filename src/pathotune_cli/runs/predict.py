"""``pathotune predict`` as a plain function: a prompt file mapped over slides, images and folders.

The level is read once, from the prompt file's header, and picks the per-slide job: a tile classifier
(``runs.tile_level.predict``) or a slide-level model (``runs.slide_level.predict``). Both cut slides the same way
(``runs.per_slide.tiling``: the prompt file's tile mpp and size, the tissue options, ``--coords``) and run through
the one per-slide engine (``runs.per_slide.engine``: locks, ``--resume``, records, ``summary.csv``, ``run.json``,
shards). Tile images are classified as they are, into ``predictions.csv`` (by shard 0 only). One output folder
holds one model's predictions: a second prompt file into it is refused, and ``summary.csv`` names the file.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, ignore, note
from pathotune_cli.runs.options import PredictOptions
from pathotune_cli.runs.per_slide.devices import PerSlideCommand
from pathotune_cli.runs.per_slide.engine import RunPlan, run_slides
from pathotune_cli.runs.per_slide.rows import SlideRow, run_exit_code
from pathotune_cli.runs.slide_level.predict import SlidePredictJob, start_slide_level
from pathotune_cli.runs.tile_level.predict import ImagesResult, TilePredictJob, start_tile_level

__all__ = ["PREDICT", "ImagesResult", "PredictOptions", "PredictResult", "predict_run"]

PredictJob = TilePredictJob | SlidePredictJob


@dataclass(frozen=True)
class PredictResult:
    """What a ``predict`` run did: one summary row per slide of this run, and the images' CSV."""

    out: Path
    prompts: Path
    task: str
    classes: list[str]
    tile: dict[str, object]
    precision: str
    probabilities: str = ""
    """What the reported probabilities are (calibrated, with the temperature, or raw and why)."""
    slides: list[SlideRow] = field(default_factory=list)
    images: ImagesResult | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0; 2 when every slide failed on bad input (a single slide of an unsupported format); else 1."""
        return run_exit_code(self.slides)

    @property
    def failed(self) -> int:
        """Slides that failed (not those another process was on: ``locked``)."""
        return sum(r.status == "failed" for r in self.slides)

    @property
    def rows(self) -> list[SlideRow]:
        """The slides' rows (what every per-slide result has)."""
        return self.slides

    def joined(self, others: list[PredictResult]) -> PredictResult:
        """This result with other shards' rows and images (``--devices``), rows sorted by slide."""
        results = [self, *others]
        rows = sorted((r for res in results for r in res.slides), key=lambda r: r.slide)
        images = next((res.images for res in results if res.images is not None), None)
        return dataclasses.replace(self, slides=rows, images=images, seconds=max(r.seconds for r in results))

    def to_dict(self) -> dict[str, object]:
        """The result as plain data."""
        data = {**asdict(self), "slides": [r.to_dict() for r in self.slides]}
        data.update(out=str(self.out), prompts=str(self.prompts), failed=self.failed)
        if self.images is not None:
            data["images"] = {**asdict(self.images), "file": str(self.images.file)}
        return data


def predict_run(opts: PredictOptions, report: Reporter = ignore) -> PredictResult:
    """Predict every input.

    Writes per-slide outputs (``runs.tile_level.predict`` or ``runs.slide_level.predict``), ``summary.csv``,
    ``predictions.csv`` and the run record ``run.json``.

    Raises:
        BadInput: no inputs, a damaged prompt file, another backbone's weights, an unknown ``--heatmap-class``,
            coordinates of another scale, or an output folder holding another prompt file's predictions.
    """
    from pathotune_cli.engine.promptfile import read_prompt_file
    from pathotune_cli.files import prepare_output_folder, sha256_file
    from pathotune_cli.runs.per_slide.inputs import collect

    started = time.time()
    file = read_prompt_file(opts.prompts)
    inputs = collect(opts.inputs, opts.slides_csv, tiles_as_images=True)
    slides = opts.shard.take(inputs.slides, key=lambda s: str(s.path))
    images = inputs.images if opts.shard.index == 0 else []
    if not opts.shard.whole:
        note(report, f"shard {opts.shard.label} ({opts.shard.source}): {len(slides)} of {len(inputs.slides)} slides"
                     + (f"; the {len(inputs.images)} tile images go to shard 0" if inputs.images else ""))
    tiling = opts.tiling(file.header.tile.mpp, file.header.tile.size)
    tiling.check(slides)
    out = prepare_output_folder(opts.out, "--out")  # before the model loads: a bad --out fails at once
    sha = sha256_file(file.path)
    one_model_per_folder(out, file.path, sha)
    job = _levels()[file.header.level](opts, file.path, tiling, out, sha, report)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()}
    rows = run_slides(job, RunPlan(slides, inputs.slides, opts.shard, settings, opts.resume,
                                   finished_extra=job.run_extra))
    result = PredictResult(
        out=out, prompts=file.path, task=file.header.task.name, classes=job.class_names,
        tile=file.header.tile.model_dump(), precision=job.placement.precision, probabilities=job.trust.describe(),
        slides=rows, images=job.images(images) if images else None, seconds=round(time.time() - started, 2),
    )
    if opts.report and opts.shard.whole and rows:  # one offline page from the records (runs.report)
        from pathotune_cli.runs.report import write_report_quietly

        write_report_quietly(out, report)
    return result


def count_slides(opts: PredictOptions) -> int:
    """This process's slides (its shard), listed as ``predict_run`` lists them."""
    from pathotune_cli.runs.per_slide.inputs import collect

    slides = collect(opts.inputs, opts.slides_csv, tiles_as_images=True).slides
    return len(opts.shard.take(slides, key=lambda s: str(s.path)))


PREDICT = PerSlideCommand("predict", predict_run, count_slides)
"""``predict`` for ``--devices``."""


def one_model_per_folder(out: Path, prompts: Path, sha: str) -> None:
    """Refuse a folder that holds another prompt file's predictions: its summary would mix two models.

    Raises:
        BadInput: a run record or a slide record in ``out`` names another prompt file's hash.
    """
    for path in sorted([*out.glob("run*.json"), *out.glob("*.predict.json")]):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        key = record.get("key") if isinstance(record.get("key"), dict) else {}
        other = record.get("prompts_sha256") or (key.get("settings") or {}).get("prompts_sha256")
        if other and other != sha:
            raise BadInput(
                f"{out} holds predictions of another prompt file (sha256 {str(other)[:12]}..., in {path.name}); "
                f"{prompts.name} is {sha[:12]}...: one folder holds one model's predictions",
                f"predict into another --out (e.g. --out {out / prompts.stem}), or remove that folder's predictions",
            )


def _levels() -> dict[str, Callable[..., PredictJob]]:
    """The per-slide job of each level, by the prompt file's ``level``."""
    return {"tile": start_tile_level, "slide": start_slide_level}
