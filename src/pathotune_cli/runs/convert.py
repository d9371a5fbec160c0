"""``pathotune convert`` as a plain function: any slide pathotune reads to a tiled pyramidal generic TIFF.

A lab's CZI, OME-Zarr, DICOM or MRXS slide becomes ``<stem>.tiff`` (JPEG tiles, or deflate with ``lossless``;
mpp in the resolution tags) that OpenSlide, QuPath, WSInfer, CLAM and TRIDENT read. The writing is
``wsi.convert.convert_slide``; the slides go through the one per-slide engine (``runs.per_slide.engine``: locks,
``--resume``, records, ``manifest.csv``, ``run.json``, shards).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pathotune_cli.cluster import WHOLE, Shard
from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, ignore, note
from pathotune_cli.files import Staging, prepare_output_folder
from pathotune_cli.runs.options import coerce_paths
from pathotune_cli.runs.per_slide.devices import PerSlideCommand
from pathotune_cli.runs.per_slide.engine import RunPlan, SlideJob, run_slides
from pathotune_cli.runs.per_slide.inputs import collect
from pathotune_cli.runs.per_slide.rows import SlideInput, SlideRow, run_exit_code

CONVERT_ALGORITHM = 1
"""Bumped when a change of pathotune writes other files from the same slide and settings."""


@dataclass(frozen=True)
class ConvertOptions:
    """Which slides, where, and how to encode them."""

    slides: tuple[Path, ...] = ()
    out: Path = Path("converted")
    slides_csv: Path | None = None
    """A slide list (its ``mpp`` column is written into the file, for slides that state none)."""
    lossless: bool = False
    """Deflate tiles instead of JPEG."""
    quality: int = 90
    """JPEG quality."""
    max_damaged: float = 0.05
    """Share of a slide's level-0 tiles that may fail to decode before the slide fails."""
    backend: str = "auto"
    resume: bool = False
    shard: Shard = WHOLE

    def __post_init__(self) -> None:
        """Some slides, a usable quality."""
        coerce_paths(self)
        if not self.slides and self.slides_csv is None:
            raise BadInput("no slides given", "pass slide files or folders, or --slides-csv FILE")
        if not 1 <= self.quality <= 100:
            raise BadInput(f"--quality {self.quality} must lie between 1 and 100")


@dataclass(frozen=True)
class ConvertResult:
    """What a ``convert`` run wrote."""

    out: Path
    rows: list[SlideRow] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0; 2 when every slide failed on bad input (a single slide of an unsupported format); else 1."""
        return run_exit_code(self.rows)

    def joined(self, others: list[ConvertResult]) -> ConvertResult:
        """This result with other shards' rows (``--devices``), sorted by slide."""
        return dataclasses.replace(self, rows=sorted((r for res in [self, *others] for r in res.rows),
                                                     key=lambda r: r.slide))

    def to_dict(self) -> dict[str, object]:
        """The run as plain data (for ``--json``)."""
        return {"out": str(self.out), "slides": [r.to_dict() for r in self.rows],
                "failed": sum(r.status == "failed" for r in self.rows)}


def convert_run(opts: ConvertOptions, report: Reporter = ignore) -> ConvertResult:
    """Convert every slide of ``opts`` (of its shard); a failing slide is recorded and the others go on."""
    everything = collect(opts.slides, opts.slides_csv, tiles_as_images=False).slides
    slides = opts.shard.take(everything, key=lambda s: str(s.path))
    out = prepare_output_folder(opts.out, "--out")
    if not opts.shard.whole:
        note(report, f"shard {opts.shard.label} ({opts.shard.source}): {len(slides)} of {len(everything)} slides")
    settings = {k: [str(p) for p in v] if k == "slides" else (str(v) if isinstance(v, Path) else v)
                for k, v in asdict(opts).items()}
    rows = run_slides(ConvertJob(out, opts, report), RunPlan(slides, everything, opts.shard, settings, opts.resume))
    return ConvertResult(out, rows)


def count_slides(opts: ConvertOptions) -> int:
    """This process's slides (its shard), listed as ``convert_run`` lists them."""
    everything = collect(opts.slides, opts.slides_csv, tiles_as_images=False).slides
    return len(opts.shard.take(everything, key=lambda s: str(s.path)))


CONVERT = PerSlideCommand("convert", convert_run, count_slides, places_model=False)
"""``convert`` for ``--devices`` (CPU workers)."""


class ConvertJob(SlideJob):
    """What ``convert`` does to one slide: ``<stem>.tiff``, a tiled pyramid with its mpp."""

    command = "convert"

    def __init__(self, out: Path, opts: ConvertOptions, report: Reporter = ignore) -> None:
        super().__init__(out, report)
        self.opts = opts

    def settings(self, slide: SlideInput) -> dict[str, object]:
        """The encoding and the mpp written."""
        return {"version": CONVERT_ALGORITHM, "lossless": self.opts.lossless, "quality": self.opts.quality,
                "csv_mpp": slide.mpp, "max_damaged": self.opts.max_damaged, "reader": self.opts.backend}

    def outputs(self, stem: str) -> list[Path]:
        """``<stem>.tiff``."""
        return [self.out / f"{stem}.tiff"]

    def process(self, slide: SlideInput, staged: Staging) -> SlideRow:
        """Write the pyramid under a temporary name."""
        from pathotune_cli.wsi.convert import convert_slide

        final = self.outputs(slide.stem)[0]
        if final.resolve() == slide.path.resolve():
            raise BadInput(f"{slide.name}: converting it into {self.out} would overwrite it", "pass another --out")
        written = convert_slide(slide.path, staged.temp(final), lossless=self.opts.lossless,
                                quality=self.opts.quality, mpp=slide.mpp, backend=self.opts.backend,
                                max_damaged=self.opts.max_damaged)
        width, height = written.level_dimensions[0]
        return SlideRow(str(slide.path), "ok", level=0, mpp=written.mpp,
                        mpp_source="csv" if slide.mpp is not None else ("metadata" if written.mpp else ""),
                        values={"width": width, "height": height, "levels": len(written.level_dimensions),
                                "compression": written.compression, "tiles_damaged": written.tiles_damaged,
                                "reader": written.backend, "output": final.name})
