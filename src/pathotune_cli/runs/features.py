"""``pathotune features`` as a plain function: per slide, the tile features of a backbone or a prompt file.

Per slide ``<stem>.h5`` holds ``features`` (N x D float32) and ``coords`` (N x 2, level-0) with the attributes
``tile`` writes, plus the encoder, the backbone fingerprint and the prompt file's hash: the layout TRIDENT and
CLAM users read, and what slide-level ``tune --features`` reuses. Slides are cut as ``tile`` cuts them, at the
prompt file's tile mpp and size (or, for a bare backbone, ``--mpp`` and ``--tile-size``). One resume rule
(``runs.resume``), one record per slide, ``manifest.csv`` over the folder, ``run.json``; shards and per-slide
locks as ``tile`` and ``predict`` (``runs.locks``, ``runs.merge``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pathotune_cli.cluster import WHOLE, Shard
from pathotune_cli.errors import BadInput, describe
from pathotune_cli.events import Reporter, SlideDone, SlidesStarted, ignore, note, warn
from pathotune_cli.runs.options import coerce_paths, kernel_spec

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
    default_mpp: float | None = None
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
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        """Slides that failed (not those another process was on: ``locked``)."""
        return sum(r["status"] == "failed" for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data."""
        return {**asdict(self), "out": str(self.out), "failed": self.failed}


def features_run(opts: FeaturesOptions, report: Reporter = ignore) -> FeaturesResult:
    """Write every slide's features file; a failing slide is recorded and the others go on."""
    from pathotune_cli.files import prepare_output_folder, remove_stale_temporaries
    from pathotune_cli.runs.per_slide.devices import shard_placement
    from pathotune_cli.runs.per_slide.merge import rebuild_summary
    from pathotune_cli.runs.records import write_slides_record
    from pathotune_cli.runs.tile import TileConfig, collect_slides

    started = time.time()
    everything = collect_slides(TileConfig(slides=opts.slides, slides_csv=opts.slides_csv, out=opts.out))
    items = opts.shard.take(everything, key=lambda item: str(item[0]))
    out = prepare_output_folder(opts.out, "--out")  # before the encoder loads: a bad --out fails at once
    remove_stale_temporaries(out)
    if not opts.shard.whole:
        note(report, f"shard {opts.shard.label} ({opts.shard.source}): {len(items)} of {len(everything)} slides")
    encoder, identity = _encoder(opts, report)
    placement = shard_placement(opts.device, opts.precision, opts.shard)
    encoder.model.place(placement, "inference", kernel_spec(opts.kernels))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()
                if k != "slides"} | {"slides": [str(p) for p in opts.slides]}
    write_slides_record(out, COMMAND, opts.shard, [p for p, _ in everything], settings, started, "running")
    rows: list[dict[str, Any]] = []
    report(SlidesStarted(len(items)))
    for index, (path, csv_mpp) in enumerate(items):
        row = _one_slide(encoder, identity, path, csv_mpp, opts, placement, out, report)
        rows.append(row)
        detail = row["error"] if row["status"] != "ok" else (row.get("resume") or f"{row['tiles']} tiles")
        report(SlideDone(path.name, row["status"], index + 1, len(items), detail, seconds=row.get("seconds", 0.0)))
    rebuild_summary(out, COMMAND, rows, report=report)
    write_slides_record(out, COMMAND, opts.shard, [p for p, _ in everything], settings, started, "finished",
                        kernels=encoder.model.kernel_choices(), **identity)
    return FeaturesResult(out, identity["encoder"], encoder.model.feature_dim, rows, round(time.time() - started, 2))


@dataclass
class _Encoder:
    model: Any
    tiling: Any


def _encoder(opts: FeaturesOptions, report: Reporter) -> tuple[_Encoder, dict[str, Any]]:
    """The tile encoder and what the features files record of it."""
    from pathotune_cli.backbones.fingerprint import fingerprint_of
    from pathotune_cli.runs.slide_level.tiles import TilingSettings

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
    tiling = TilingSettings(mpp, size, opts.min_tissue, opts.tissue, opts.default_mpp)
    return _Encoder(model, tiling), identity


def _one_slide(encoder: _Encoder, identity: dict[str, Any], path: Path, csv_mpp: float | None, opts: FeaturesOptions,
               placement: Any, out: Path, report: Reporter) -> dict[str, Any]:
    """One slide under its lock (``locked`` when another live process is on it)."""
    from pathotune_cli.runs.per_slide.locks import slide_lock

    with slide_lock(out, path.stem, COMMAND) as claim:
        if not claim.held:
            owner = claim.owner.describe() if claim.owner else "another process"
            return {"slide": str(path), "status": "locked", "tiles": 0, "seconds": 0.0, "resume": "",
                    "error": f"{path.name}: in progress in another process ({owner})"}
        if claim.taken_over:
            note(report, claim.taken_over)
        return _features_one(encoder, identity, path, csv_mpp, opts, placement, out, report)


def _features_one(encoder: _Encoder, identity: dict[str, Any], path: Path, csv_mpp: float | None,
                  opts: FeaturesOptions, placement: Any, out: Path, report: Reporter) -> dict[str, Any]:
    from pathotune_cli.files import Staging
    from pathotune_cli.runs.per_slide.resume import (
        SlideKey,
        decide,
        input_identity,
        record_failure,
        record_path,
        write_record,
    )
    from pathotune_cli.runs.slide_level.tiles import plan_tiles, slide_features
    from pathotune_cli.wsi.features_file import write_features

    started = time.time()
    final = out / f"{path.stem}.h5"
    settings = {"version": FEATURES_ALGORITHM, **identity, **asdict(encoder.tiling), "csv_mpp": csv_mpp,
                "precision": placement.precision}
    resume = ""
    try:
        key = SlideKey(input_identity(path), settings)
        if opts.resume:
            decision = decide(out, path.stem, COMMAND, key, [final])
            if decision.keep:
                return {**decision.row, "resume": "kept", "seconds": 0.0}
            resume = decision.resume
        slide = plan_tiles(path, encoder.tiling, csv_mpp)
        features = slide_features(encoder.model, slide, placement, opts.batch_size, report)
        attrs = {**identity, "feature_dim": int(features.shape[1]), "precision": placement.precision}
        with Staging() as staged:
            write_features(staged.temp(final), features, slide.coords, slide.plan.h5_attrs(), attrs)
            record_path(out, path.stem, COMMAND).unlink(missing_ok=True)
            staged.commit()
        row = {"slide": str(path), "status": "ok", "tiles": len(slide), "dim": int(features.shape[1]),
               "mpp": round(slide.plan.mpp, 6), "mpp_source": slide.plan.mpp_source,
               "seconds": round(time.time() - started, 2), "error": ""}
        write_record(out, path.stem, COMMAND, key, row)
        return {**row, "resume": resume}
    except Exception as exc:  # one broken slide must not stop the run
        error = describe(exc, out)[1]
    row = {"slide": str(path), "status": "failed", "tiles": 0, "seconds": round(time.time() - started, 2),
           "error": error if path.name in error else f"{path.name}: {error}"}
    record_failure(out, path.stem, COMMAND, [final], lambda: SlideKey(input_identity(path), settings), row)
    return {**row, "resume": resume}
