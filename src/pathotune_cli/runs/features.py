"""``pathotune features`` as a plain function: per slide, the tile features of a backbone or a prompt file.

Per slide ``<stem>.h5`` holds ``features`` (N x D float32) and ``coords`` (N x 2, level-0) with the attributes
``tile`` writes, plus the encoder, the backbone fingerprint and the prompt file's hash: the layout TRIDENT and
CLAM users read, and what slide-level ``tune --features`` reuses. Slides are cut as ``tile`` cuts them, at the
prompt file's tile mpp and size (or, for a bare backbone, ``--mpp`` and ``--tile-size``), through the one
per-slide engine (``runs.per_slide.engine``: locks, ``--resume``, records, ``manifest.csv``, ``run.json``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pathotune_cli.cluster import WHOLE, Shard
from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, ignore, note, warn
from pathotune_cli.files import Staging
from pathotune_cli.hardware import Placement
from pathotune_cli.runs.options import coerce_paths, kernel_spec
from pathotune_cli.runs.per_slide.devices import PerSlideCommand
from pathotune_cli.runs.per_slide.engine import RunPlan, SlideJob, run_slides
from pathotune_cli.runs.per_slide.rows import SlideInput, SlideRow, run_exit_code
from pathotune_cli.runs.per_slide.tiling import Tiling, plan

COMMAND = "features"
FEATURES_ALGORITHM = 1


@dataclass(frozen=True)
class FeaturesOptions:
    """Which slides, which encoder (a prompt file or a bare backbone), where to write."""

    slides: tuple[Path, ...] = ()
    slides_csv: Path | None = None
    out: Path = Path("features")
    prompts: Path | None = None
    backbone: str | None = None
    weights: Path | None = None
    mpp: float | None = None
    """Tile mpp with ``backbone`` (default: the backbone preset's, else 0.5); a prompt file states its own."""
    tile_size: int | None = None
    """Tile side with ``backbone`` (default 224)."""
    batch_size: int = 64
    min_tissue: float = 0.25
    tissue: str = "otsu"
    tissue_geojson: Path | None = None
    """QuPath GeoJSON of tissue polygons (one slide), or a folder of ``<stem>.geojson`` files."""
    coords: Path | None = None
    """A coords ``.h5`` (one slide) or a folder of ``<stem>.h5`` to reuse instead of cutting."""
    default_mpp: float | None = None
    max_damaged: float = 0.05
    """Share of a slide's tiles that may fail to decode before the slide fails (``wsi.damage``)."""
    roi: Path | None = None
    """Regions of interest (QuPath GeoJSON, a folder of them, or a CSV ``slide,labels``): tiles inside only."""
    roi_class: str | None = None
    precision: str = "auto"
    device: str = "auto"
    resume: bool = False
    kernels: str = "auto"
    """``--kernels``: auto (measured), or pinned (``attention=plain,weights=bf16``)."""

    shard: Shard = WHOLE
    """Which slides this process takes (``cluster.Shard``, or ``"I/N"``): every N-th from I, sorted by path."""

    def __post_init__(self) -> None:
        """One encoder, some slides, usable numbers."""
        coerce_paths(self)
        kernel_spec(self.kernels)
        if (self.prompts is None) == (self.backbone is None):
            raise BadInput("give the encoder: --prompts FILE or --backbone NAME (one of them)",
                           "e.g. --backbone uni for bare UNI features, --prompts RUN/prompts.safetensors for prompted")
        if self.prompts is not None and (self.mpp is not None or self.tile_size is not None):
            raise BadInput("--mpp and --tile-size come from the prompt file with --prompts", "drop them")
        if not self.slides and self.slides_csv is None:
            raise BadInput("no slides given", "pass slide files or folders, or --slides-csv FILE")
        if not 1 <= self.batch_size <= 4096:
            raise BadInput(f"--batch-size {self.batch_size} must lie between 1 and 4096")


@dataclass(frozen=True)
class FeaturesResult:
    """What a ``features`` run wrote."""

    out: Path
    encoder: str
    feature_dim: int
    rows: list[SlideRow] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0; 2 when every slide failed on bad input (a single slide of an unsupported format); else 1."""
        return run_exit_code(self.rows)

    @property
    def failed(self) -> int:
        """Slides that failed (not those another process was on: ``locked``)."""
        return sum(r.status == "failed" for r in self.rows)

    def joined(self, others: list[FeaturesResult]) -> FeaturesResult:
        """This result with other shards' rows (``--devices``), sorted by slide."""
        rows = sorted((r for res in [self, *others] for r in res.rows), key=lambda r: r.slide)
        return dataclasses.replace(self, rows=rows, seconds=max(r.seconds for r in [self, *others]))

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data."""
        return {"out": str(self.out), "encoder": self.encoder, "feature_dim": self.feature_dim,
                "rows": [r.to_dict() for r in self.rows], "seconds": self.seconds, "failed": self.failed}


def features_run(opts: FeaturesOptions, report: Reporter = ignore) -> FeaturesResult:
    """Write every slide's features file; a failing slide is recorded and the others go on."""
    from pathotune_cli.files import prepare_output_folder
    from pathotune_cli.runs.per_slide.devices import shard_placement
    from pathotune_cli.runs.per_slide.inputs import collect

    started = time.time()
    everything = collect(opts.slides, opts.slides_csv, tiles_as_images=False).slides
    slides = opts.shard.take(everything, key=lambda s: str(s.path))
    out = prepare_output_folder(opts.out, "--out")  # before the encoder loads: a bad --out fails at once
    if not opts.shard.whole:
        note(report, f"shard {opts.shard.label} ({opts.shard.source}): {len(slides)} of {len(everything)} slides")
    encoder, identity = _encoder(opts, report)
    encoder.tiling.check(slides)
    placement = shard_placement(opts.device, opts.precision, opts.shard)
    encoder.model.place(placement, "inference", kernel_spec(opts.kernels))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()
                if k != "slides"} | {"slides": [str(p) for p in opts.slides]}
    job = FeaturesJob(out, encoder, identity, placement, opts.batch_size, report)
    rows = run_slides(job, RunPlan(slides, everything, opts.shard, settings, opts.resume,
                                   finished_extra=lambda: {"kernels": encoder.model.kernel_choices(), **identity}))
    return FeaturesResult(out, str(identity["encoder"]), encoder.model.feature_dim, rows,
                          round(time.time() - started, 2))


def count_slides(opts: FeaturesOptions) -> int:
    """This process's slides (its shard), listed as ``features_run`` lists them."""
    from pathotune_cli.runs.per_slide.inputs import collect

    everything = collect(opts.slides, opts.slides_csv, tiles_as_images=False).slides
    return len(opts.shard.take(everything, key=lambda s: str(s.path)))


FEATURES = PerSlideCommand("features", features_run, count_slides)
"""``features`` for ``--devices``."""


class FeaturesJob(SlideJob):
    """What ``features`` does to one slide: its tiles through the encoder into ``<stem>.h5``."""

    command = "features"

    def __init__(self, out: Path, encoder: _Encoder, identity: dict[str, object], placement: Placement,
                 batch_size: int, report: Reporter = ignore) -> None:
        super().__init__(out, report)
        self.encoder, self.identity, self.placement, self.batch_size = encoder, identity, placement, batch_size

    def settings(self, slide: SlideInput) -> dict[str, object]:
        """The encoder, the tiling and the precision."""
        return {"version": FEATURES_ALGORITHM, **self.identity, **self.encoder.tiling.settings(slide),
                "precision": self.placement.precision}

    def outputs(self, stem: str) -> list[Path]:
        """``<stem>.h5``."""
        return [self.out / f"{stem}.h5"]

    def process(self, slide: SlideInput, staged: Staging) -> SlideRow:
        """Plan the slide, encode its tiles, write the features file."""
        from pathotune_cli.runs.slide_level.tiles import slide_features
        from pathotune_cli.wsi.features_file import write_features

        planned = plan(slide, self.encoder.tiling)
        encoded = slide_features(self.encoder.model, planned, self.placement, self.batch_size, self.report,
                                 self.encoder.tiling.max_damaged)
        features = encoded.values[0]
        attrs = {**self.identity, "feature_dim": int(features.shape[1]), "precision": self.placement.precision}
        write_features(staged.temp(self.outputs(slide.stem)[0]), features, encoded.coords(planned),
                       planned.plan.h5_attrs(), attrs)
        return SlideRow(str(slide.path), "ok", tiles=len(features), level=planned.level,
                        mpp=round(planned.plan.mpp, 6), mpp_source=planned.plan.mpp_source,
                        values={"dim": int(features.shape[1]), "tiles_damaged": encoded.damage.count})


@dataclass
class _Encoder:
    model: Any
    """A ``PromptedModel`` (prompted, or the bare backbone under ``linear``)."""
    tiling: Tiling


def _encoder(opts: FeaturesOptions, report: Reporter) -> tuple[_Encoder, dict[str, Any]]:
    """The tile encoder and what the features files record of it."""
    from pathotune_cli.backbones.fingerprint import fingerprint_of

    if opts.prompts is not None:
        from pathotune_cli.engine import load_prompted_model, random_weights_warning
        from pathotune_cli.files import sha256_file

        model, file = load_prompted_model(opts.prompts, opts.weights)
        tile = file.header.tile
        part = file.header.backbone
        identity = {"encoder": part.preset.name, "backbone_fingerprint": part.fingerprint,
                    "prompts_sha256": sha256_file(file.path), "feature_kind": f"prompted ({file.header.method})"}
        mpp, size = tile.mpp, tile.size
    else:
        from pathotune_cli.backbones import load_backbone
        from pathotune_cli.config import load_backbone_preset
        from pathotune_cli.config.run import PromptSettings
        from pathotune_cli.engine import PromptedModel, random_weights_warning

        preset = load_backbone_preset(str(opts.backbone))
        backbone = load_backbone(preset, opts.weights)
        model = PromptedModel(backbone, PromptSettings(method="linear"), 1).eval()
        identity = {"encoder": preset.name, "backbone_fingerprint": fingerprint_of(backbone),
                    "prompts_sha256": "", "feature_kind": "backbone"}
        mpp, size = opts.mpp or preset.mpp or 0.5, opts.tile_size or 224
    if random_weights_warning(model):
        warn(report, str(random_weights_warning(model)))
    tiling = Tiling(mpp, size, opts.min_tissue, opts.tissue, opts.default_mpp, tissue_geojson=opts.tissue_geojson,
                    coords=opts.coords, max_damaged=opts.max_damaged, roi=opts.roi, roi_class=opts.roi_class)
    return _Encoder(model, tiling), identity
