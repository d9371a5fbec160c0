"""``pathotune explain`` as a plain function, and the explanation step ``predict --explain-top`` shares.

Per tile one PNG: the tile, its gradient x input attribution map for the top class (``training.attribution``:
non-negative, summing to 1 over the tile's pixels), and the top classes with their probabilities (calibrated
unless ``--uncalibrated``), from the same forward pass as the map; with ``--alpha`` the tile's prediction set,
and where the prompt file has OOD statistics its OOD score and flag. ``explanations.csv`` lists them.

Tile images are read at their own size (the model resizes them itself, as it does slide tiles), so the map has
the tile's shape. The slide-level half ("the attention heatmap and top tiles of a slide-level model") is not
here yet: slide-level prompt files do not exist yet; ``explain_tiles`` is the step such a model's top tiles
would go through.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, ignore, note, warn
from pathotune_cli.runs.options import check_alpha, coerce_paths
from pathotune_cli.runs.trust.apply import Columns, Trust

if TYPE_CHECKING:
    from pathotune_cli.engine.model import PromptedModel

CSV_NAME = "explanations.csv"
CSV_COLUMNS = ("image", "png", "class", "probability", "prediction_set", "set_size", "ood_score", "ood")


@dataclass(frozen=True)
class ExplainOptions:
    """Which tiles to explain, with which prompt file, and where the pictures go."""

    prompts: Path
    images: tuple[Path, ...] = ()
    out: Path = Path("explanations")
    top: int = 3
    """Classes listed beside the map."""
    alpha: float | None = None
    uncalibrated: bool = False
    batch_size: int = 8
    device: str = "auto"
    weights: Path | None = None

    def __post_init__(self) -> None:
        """Inputs and counts must be usable."""
        coerce_paths(self)
        if not self.images:
            raise BadInput("no tile images to explain", "pass tile images or folders of them")
        if not 1 <= self.top <= 50:
            raise BadInput(f"--top {self.top} must lie between 1 and 50")
        if not 1 <= self.batch_size <= 512:
            raise BadInput(f"--batch-size {self.batch_size} must lie between 1 and 512")
        check_alpha(self.alpha)


@dataclass(frozen=True)
class ExplainRow:
    """One explained tile: its PNG, top class and probability, and its set and OOD flag where the file has them."""

    image: str
    png: str
    class_name: str
    probability: float
    prediction_set: str | None = None
    set_size: int | None = None
    ood_score: float | None = None
    ood: bool | None = None

    def to_dict(self) -> dict[str, object]:
        """As ``--json`` prints it: the set and OOD keys only where present."""
        row: dict[str, object] = {"image": self.image, "png": self.png, "class": self.class_name,
                                  "probability": self.probability}
        extras = {"prediction_set": self.prediction_set, "set_size": self.set_size, "ood_score": self.ood_score,
                  "ood": self.ood}
        return {**row, **{key: value for key, value in extras.items() if value is not None}}

    def cells(self) -> list[object]:
        """The row of ``explanations.csv`` (``CSV_COLUMNS``; empty where absent)."""
        row = self.to_dict()
        return [row.get(c, "") for c in CSV_COLUMNS]


@dataclass(frozen=True)
class ExplainResult:
    """The pictures written, one row per tile."""

    out: Path
    prompts: Path
    probabilities: str
    rows: list[ExplainRow] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """The result as plain data."""
        return {"out": str(self.out), "prompts": str(self.prompts), "probabilities": self.probabilities,
                "images": len(self.rows), "rows": [r.to_dict() for r in self.rows], "seconds": self.seconds}


def explain_run(opts: ExplainOptions, report: Reporter = ignore) -> ExplainResult:
    """Explain every tile image of ``opts.images``; writes one PNG per tile and ``explanations.csv``.

    Raises:
        BadInput: no tile images, two with the same name, a damaged prompt file, an ``--alpha`` it does not store.
    """
    from pathotune_cli.engine import load_prompted_model, random_weights_warning
    from pathotune_cli.hardware import place
    from pathotune_cli.runs.trust.apply import load_trust

    started = time.time()
    images = _collect(list(opts.images))
    model, file = load_prompted_model(opts.prompts, opts.weights)
    if random_weights_warning(model):
        warn(report, str(random_weights_warning(model)))
    trust = load_trust(file, uncalibrated=opts.uncalibrated, alpha=opts.alpha)
    if trust.notice:
        warn(report, trust.notice)
    placement = place(opts.device, "fp32")  # gradients in full precision: a few tiles, no need for speed
    model.place(placement, "training")  # attributions back-propagate
    out = Path(opts.out)
    note(report, f"explaining {len(images)} tiles: gradient x input, {trust.describe()}")
    rows = explain_images(model, trust, images, out, file.header.classes, opts.top, opts.batch_size,
                          placement.device)
    return ExplainResult(out, file.path, trust.describe(), rows, round(time.time() - started, 2))


def explain_images(model: PromptedModel, trust: Trust, images: list[Path], out: Path, class_names: list[str],
                   top: int, batch_size: int, device: str) -> list[ExplainRow]:
    """``<stem>.explain.png`` per tile image into ``out``, and ``explanations.csv``; one row per image.

    The model runs in full precision here, whatever autocast the caller uses elsewhere.
    """
    from pathotune_cli.files import write_csv

    out.mkdir(parents=True, exist_ok=True)
    rows: list[ExplainRow] = []
    for group in _same_size_batches(images, batch_size):
        tiles = np.stack([_read_rgb(p) for p in group])
        pngs = [out / f"{p.stem}.explain.png" for p in group]
        rows += explain_tiles(model, trust, tiles, [p.name for p in group], pngs, class_names, top, device)
    write_csv(out / CSV_NAME, CSV_COLUMNS, (r.cells() for r in rows))
    return rows


def explain_tiles(model: PromptedModel, trust: Trust, tiles: np.ndarray, names: list[str], pngs: list[Path],
                  class_names: list[str], top: int, device: str) -> list[ExplainRow]:
    """Attribution maps of uint8 (B, H, W, 3) tiles drawn into ``pngs``; one row per tile for the CSV."""
    import torch

    from pathotune_cli.runs.trust.apply import tile_columns
    from pathotune_cli.training.attribution import gradient_x_input
    from pathotune_cli.training.trust_plots import save_explanation

    x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float().div_(255.0).to(device)
    maps, logits, features = gradient_x_input(model, x, temperature=trust.temperature if trust.calibrated else 1.0)
    columns = tile_columns(trust, logits, trust.ood_scores(features), class_names)
    rows = []
    for i, (name, png) in enumerate(zip(names, pngs, strict=True)):
        p = columns["probs"][i]
        order = np.argsort(-p, kind="stable")[:top]
        save_explanation(tiles[i], maps[i], [(class_names[k], float(p[k])) for k in order], png, title=name,
                         lines=_lines(trust, columns, i))
        extras = {key: columns[key][i].item() if hasattr(columns[key][i], "item") else columns[key][i]
                  for key in ("prediction_set", "set_size", "ood_score", "ood") if key in columns}
        rows.append(ExplainRow(image=name, png=str(png), class_name=class_names[int(order[0])],
                               probability=float(p[order[0]]), **extras))
    return rows


def most_confident(probs: np.ndarray, k: int) -> list[tuple[int, int, int]]:
    """(class, rank, tile index) of the ``k`` most confident tiles predicted as each class.

    Most confident first within a class (the highest probability of that class); ties broken by tile order.
    """
    labels = probs.argmax(axis=1) if len(probs) else np.zeros(0, int)
    chosen = []
    for c in range(probs.shape[1]):
        members = np.flatnonzero(labels == c)
        ranked = members[np.argsort(-probs[members, c], kind="stable")][:k]
        chosen += [(c, rank, int(i)) for rank, i in enumerate(ranked, start=1)]
    return chosen


def _lines(trust: Trust, columns: Columns, i: int) -> list[str]:
    lines = [trust.describe()]
    if "prediction_set" in columns:
        lines.append(f"set at alpha {trust.alpha:g}: {columns['prediction_set'][i] or '(empty)'}")
    if "ood_score" in columns:
        flag = "FLAGGED out of distribution" if columns["ood"][i] else "not flagged"
        lines.append(f"OOD score {columns['ood_score'][i]:.2f} ({flag}; threshold {trust.ood_threshold:.2f})")
    return lines


def _collect(inputs: list[Path]) -> list[Path]:
    from pathotune_cli.formats import is_flat_image

    images: list[Path] = []
    for path in (Path(p).expanduser() for p in inputs):
        if not path.exists():
            raise BadInput(f"input {path} does not exist", "pass tile images or folders of them")
        images += sorted(p for p in path.rglob("*") if p.is_file() and is_flat_image(p)) if path.is_dir() else [path]
    if not images:
        raise BadInput(f"no tile images found in {', '.join(map(str, inputs))}", "tile images end in .png, .jpg, ...")
    stems: dict[str, Path] = {}
    for image in images:
        if stems.setdefault(image.stem, image) != image:
            raise BadInput(f"two tiles share the name {image.stem!r} ({stems[image.stem]} and {image})",
                           "rename one, or explain them into different --out folders")
    return images


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadInput(f"{path} is not a readable image ({type(exc).__name__})", "remove or replace the file") from None


def _same_size_batches(images: list[Path], batch_size: int) -> list[list[Path]]:
    """Consecutive tiles of the same pixel size, at most ``batch_size`` per batch (a batch is one tensor)."""
    from PIL import Image

    batches: list[list[Path]] = []
    last = None
    for path in images:
        try:
            with Image.open(path) as img:
                size = img.size
        except (OSError, ValueError):
            size = None  # _read_rgb says what is wrong with it
        if batches and size == last and len(batches[-1]) < batch_size:
            batches[-1].append(path)
        else:
            batches.append([path])
        last = size
    return batches
