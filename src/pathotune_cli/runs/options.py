"""Options every run shares, and ``predict``'s, which both its levels (``tile_level``, ``slide_level``) read.

Shared: path fields that accept strings from Python callers, ``--kernels``, ``--alpha``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathotune_cli.cluster import WHOLE, Shard
from pathotune_cli.errors import BadInput
from pathotune_cli.runs.per_slide.tiling import Tiling
from pathotune_cli.wsi.tissue import TISSUE_MODES


def kernel_spec(spec: str) -> Any:
    """``--kernels`` as a ``KernelSpec``.

    Raises:
        BadInput: an unknown name or value, with the allowed ones.
    """
    from pathotune_cli.config.run import KernelSpec

    try:
        return KernelSpec.parse(spec)
    except ValueError as exc:
        raise BadInput(f"--{exc}", "e.g. --kernels auto, plain, or attention=fused,weights=bf16") from None


def coerce_paths(options: object) -> None:
    """Turn the string values of a frozen dataclass's fields into their types.

    ``Path`` fields (and tuples of them) become ``Path``s; an ``"I/N"`` string in a ``Shard`` field becomes a
    ``cluster.Shard``.
    """
    from pathotune_cli.cluster import parse_shard

    for item in dataclasses.fields(options):
        value = getattr(options, item.name)
        kind = str(item.type)
        if isinstance(value, str) and kind == "Shard":
            object.__setattr__(options, item.name, parse_shard(value))
        elif isinstance(value, str) and "Path" in kind:
            object.__setattr__(options, item.name, Path(value).expanduser())
        elif isinstance(value, (list, tuple)) and "tuple[Path" in kind:
            object.__setattr__(options, item.name, tuple(Path(v).expanduser() for v in value))
        elif isinstance(value, list) and "tuple[str" in kind:
            object.__setattr__(options, item.name, tuple(value))


def check_alpha(alpha: float | None) -> None:
    """``--alpha`` must lie strictly between 0 and 1.

    Raises:
        BadInput: it does not.
    """
    if alpha is not None and not 0.0 < alpha < 1.0:
        raise BadInput(f"--alpha {alpha} must lie strictly between 0 and 1", "use a stored level: 0.05, 0.1 or 0.2")


@dataclass(frozen=True)
class PredictOptions:
    """What to predict on, with which prompt file, and how."""

    prompts: Path
    inputs: tuple[Path, ...] = ()
    out: Path = Path("predictions")
    batch_size: int = 64
    workers: int | None = None
    """Tile-reading processes; None: 0 when the model runs on the CPU (it needs every core), else 2."""
    precision: str = "auto"
    device: str = "auto"
    weights: Path | None = None
    coords: Path | None = None
    """A coords ``.h5`` (one slide) or a folder of ``<slide stem>.h5`` files to reuse instead of tiling."""
    min_tissue: float = 0.25
    tissue: str = "otsu"
    tissue_geojson: Path | None = None
    slides_csv: Path | None = None
    """A CSV with a ``slide`` column (more slides to predict) and an optional ``mpp`` column."""
    default_mpp: float | None = None
    heatmap_class: str | None = None
    backend: str = "auto"
    resume: bool = False
    """Keep slides finished earlier from the same file with the same prompt file and settings."""
    kernels: str = "auto"
    """``--kernels``: auto (measured), or pinned (``attention=plain,weights=bf16``)."""
    alpha: float | None = None
    """Add conformal prediction sets at this level (one the prompt file stores)."""
    uncalibrated: bool = False
    """Report the raw softmax instead of the calibrated probabilities."""
    explain_top: int = 0
    """Explain the this-many most confident tiles of each class per slide (0: none)."""
    max_damaged: float = 0.05
    """Share of a slide's tiles that may fail to decode before the slide fails (``wsi.damage``)."""
    roi: Path | None = None
    """Regions of interest (QuPath GeoJSON, a folder of them, or a CSV ``slide,labels``): tiles inside only."""
    roi_class: str | None = None
    """With ``roi``: only the regions of this class."""
    report: bool = True
    """Write ``report.html`` (``runs.report``) when the run ends (a whole run, not a shard): about 60 ms a slide."""
    strict: bool = False
    """Fail a slide that is not the kind the model was tuned on (stain, modality), instead of warning."""

    shard: Shard = WHOLE
    """Which slides this process takes (``cluster.Shard``, or ``"I/N"``): every N-th from I, sorted by path."""

    def __post_init__(self) -> None:
        """The rules the command line states for each option, for Python callers too."""
        coerce_paths(self)
        kernel_spec(self.kernels)
        if not self.inputs and self.slides_csv is None:
            raise BadInput("nothing to predict on", "pass slides, images or folders, or --slides-csv")
        if not 1 <= self.batch_size <= 4096:
            raise BadInput(f"--batch-size {self.batch_size} must lie between 1 and 4096")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise BadInput(f"--min-tissue {self.min_tissue} must lie between 0 and 1")
        if self.tissue not in TISSUE_MODES:
            raise BadInput(f"--tissue {self.tissue!r} is not a tissue mode", f"use {' or '.join(TISSUE_MODES)}")
        if self.coords is not None and not Path(self.coords).exists():
            raise BadInput(f"--coords {self.coords} does not exist", "pass a coords .h5 or a folder of them")
        if not 0 <= self.explain_top <= 1000:
            raise BadInput(f"--explain-top {self.explain_top} must lie between 0 and 1000")
        check_alpha(self.alpha)

    def tiling(self, mpp: float, size: int) -> Tiling:
        """How this run cuts slides for a model whose tiles are ``size`` px at ``mpp`` (the prompt file's)."""
        return Tiling(mpp, size, self.min_tissue, self.tissue, self.default_mpp, self.backend,
                      tissue_geojson=self.tissue_geojson, coords=self.coords, max_damaged=self.max_damaged,
                      roi=self.roi, roi_class=self.roi_class)
