"""``pathotune export`` as a function: a prompt file to ONNX or TorchScript, checked, with a model card."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pathotune_cli.errors import BadInput, PathotuneError
from pathotune_cli.events import Reporter, ignore, note, warn
from pathotune_cli.formats import TILE_IMAGE_SUFFIXES as IMAGE_SUFFIXES
from pathotune_cli.runs.options import coerce_paths

SYNTHETIC_NOISE_TILES = 4
"""Uniform-noise tiles in every check; plus one synthetic H&E-like tile per demo class."""


@dataclass(frozen=True)
class ExportOptions:
    """What to export, to which format and file, and how to check it."""

    prompts: Path
    format: str = "onnx"
    """``onnx`` or ``torchscript``."""
    out: Path | None = None
    """The export file; None: ``model.onnx`` or ``model.ts`` beside the prompt file."""
    check: bool = True
    """Run PyTorch and the export on the same tiles; fail above ``engine.export.TOLERANCE``."""
    check_data: Path | None = None
    """A folder of real tiles (searched recursively) to add to the check's synthetic ones."""
    check_tiles: int = 32
    """At most this many real tiles, spread evenly over the sorted file list."""
    weights: Path | None = None
    """Backbone weight file or folder (overrides the weight map)."""
    metrics: Path | None = None
    """An eval ``metrics.json`` for the card; None: ``eval/metrics.json`` beside the prompt file, if any."""

    def __post_init__(self) -> None:
        """Refuse what cannot work before anything loads."""
        coerce_paths(self)
        from pathotune_cli.engine.export import FORMATS

        fmt = self.format.lower().strip()
        if fmt not in FORMATS:
            choices = " or ".join(f"--format {f}" for f in FORMATS)
            raise BadInput(f"unknown export format '{self.format}'", f"use {choices}")
        object.__setattr__(self, "format", fmt)
        if self.out is not None and Path(self.out).is_dir():
            name = default_out("x", fmt).name
            raise BadInput(f"--out {self.out} is a folder", f"pass a file name, e.g. --out {Path(self.out) / name}")
        if self.check_data is not None and not Path(self.check_data).is_dir():
            raise BadInput(f"--check-data {self.check_data} is not a folder", "pass a folder of tiles (png, jpg, tif)")

    @property
    def out_file(self) -> Path:
        """The export file, absolute."""
        return (Path(self.out) if self.out else default_out(self.prompts, self.format)).resolve()


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and how it was checked."""

    export: Path
    format: str
    bytes: int
    sha256: str
    exporter: str
    opset: int | None
    input: dict[str, Any]
    output: dict[str, Any]
    classes: list[str]
    check: dict[str, Any] | None
    card_json: Path
    card_md: Path
    prompts: Path
    task: str
    method: str
    backbone: str
    exporter_warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data."""
        data = asdict(self)
        data.update({k: str(v) for k, v in data.items() if isinstance(v, Path)})
        return data


def default_out(prompts: str | Path, fmt: str) -> Path:
    """``model.onnx`` / ``model.ts`` beside the prompt file."""
    from pathotune_cli.engine.export import SUFFIXES

    return Path(prompts).resolve().parent / f"model{SUFFIXES[fmt]}"


def card_paths(export_path: str | Path) -> tuple[Path, Path]:
    """``<file>.card.json`` and ``<file>.card.md`` beside an export."""
    path = Path(export_path)
    return path.with_name(f"{path.name}.card.json"), path.with_name(f"{path.name}.card.md")


def export_run(opts: ExportOptions, report: Reporter = ignore) -> ExportResult:
    """Export ``opts.prompts``, check it, write the model card beside it.

    Raises:
        BadInput: unknown format, missing optional package, damaged prompt file, bad ``--check-data``.
        PathotuneError: the export fails, or differs from PyTorch above the tolerance (then nothing is left).
    """
    from pathotune_cli.engine.export import prepare, require_packages
    from pathotune_cli.engine.load import load_prompted_model, random_weights_warning
    from pathotune_cli.files import sha256_file

    started = time.time()
    require_packages(opts.format, opts.check)
    if opts.check_data is not None and not opts.check:
        warn(report, "--check-data is ignored with --no-check")
    model, file = load_prompted_model(opts.prompts, opts.weights)
    random_note = random_weights_warning(model)
    if random_note:
        warn(report, random_note)
    module = prepare(model)
    # everything that can fail on bad input happens before the export is written
    real = None
    if opts.check and opts.check_data is not None:
        real = _real_tiles(Path(opts.check_data), module.input_size, opts.check_tiles)
    header = file.header
    contract = export_contract(module.input_size, header.classes)
    prompts = {"path": str(file.path.resolve()), "sha256": sha256_file(file.path), "bytes": file.size_bytes}
    out = opts.out_file
    note(report, f"exporting {header.method} on {header.backbone.preset.name} to {opts.format}: {out}")
    written = _write_export(module, out, opts.format, header, contract, prompts["sha256"])
    check = _check(model, out, opts.format, module.input_size, real, opts.check_data, report) if opts.check else None
    card_json, card_md = _write_card(file, out, opts, written, contract, prompts, check, random_note, report)
    return ExportResult(
        export=out, format=opts.format, bytes=out.stat().st_size, sha256=sha256_file(out),
        exporter=written["exporter"], opset=written.get("opset"), input=contract["input"],
        output=contract["output"], classes=list(header.classes), check=check, card_json=card_json, card_md=card_md,
        prompts=file.path.resolve(), task=header.task.name, method=header.method,
        backbone=header.backbone.preset.name, exporter_warnings=written["warnings"],
        seconds=round(time.time() - started, 2),
    )


def export_contract(size: int, classes: list[str]) -> dict[str, dict[str, Any]]:
    """What every export takes and returns: the ``input`` and ``output`` specifications for the card."""
    from pathotune_cli.engine.export import INPUT_NAME, OUTPUT_NAME

    return {
        "input": {
            "name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", 3, size, size], "layout": "NCHW",
            "channels": "RGB", "range": [0, 255], "size": size,
        },
        "output": {
            "name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", len(classes)],
            "meaning": "softmax probabilities over the classes, in the order of `classes`",
        },
    }


def export_all(
    prompts: str | Path,
    check_data: str | Path | None = None,
    report: Reporter = ignore,
    out_dir: str | Path | None = None,
    metrics: str | Path | None = None,
) -> dict[str, ExportResult | str]:
    """Both formats with their checks and cards (what ``pathotune demo`` ends with).

    ``out_dir`` defaults to beside the prompts; ``metrics`` is an eval ``metrics.json`` for the cards (else
    ``eval/metrics.json`` beside the prompts, if any). ONNX is skipped with a warning, not an error, where the
    ``export`` extra is not installed, so the caller still works anywhere; TorchScript needs only torch.

    Returns:
        ``{"onnx": result, "torchscript": result}``; a skipped format maps to the reason it was skipped.
    """
    from pathotune_cli.engine.export import SUFFIXES, require_packages
    from pathotune_cli.errors import MissingDependency

    done: dict[str, ExportResult | str] = {}
    for fmt in ("onnx", "torchscript"):
        try:
            require_packages(fmt, check=True)
        except MissingDependency as exc:
            warn(report, f"skipped the {fmt} export: {exc.one_line()}")
            done[fmt] = exc.one_line()
            continue
        opts = ExportOptions(
            prompts=Path(prompts), format=fmt,
            out=None if out_dir is None else Path(out_dir) / f"model{SUFFIXES[fmt]}",
            check_data=None if check_data is None else Path(check_data),
            metrics=None if metrics is None else Path(metrics),
        )
        done[fmt] = export_run(opts, report)
    return done


def _write_export(module: Any, out: Path, fmt: str, header: Any, contract: dict[str, Any],
                  prompts_sha256: str) -> dict[str, Any]:
    """The graph with the classes and input contract inside it (ONNX metadata, TorchScript extra file)."""
    from pathotune_cli.engine.export import export_onnx, export_torchscript

    embedded = {
        "format": "pathotune-export", "pathotune_version": header.pathotune_version, "task": header.task.name,
        "classes": list(header.classes), **contract, "tile": header.tile.model_dump(mode="json"),
        "backbone": {"preset": header.backbone.preset.name, "fingerprint": header.backbone.fingerprint},
        "method": header.method, "prompts_sha256": prompts_sha256,
    }
    return (export_onnx if fmt == "onnx" else export_torchscript)(module, out, embedded)


def _check(model: Any, out: Path, fmt: str, size: int, real: Any, real_data: Path | None,
           report: Reporter) -> dict[str, Any]:
    """PyTorch against the saved export on synthetic and real tiles; a failed check leaves nothing behind."""
    import torch

    from pathotune_cli.engine.export import TOLERANCE, check_export

    synthetic = _synthetic_tiles(size)
    tiles = synthetic if real is None else torch.cat([synthetic, real])
    note(report, f"checking against PyTorch on {len(tiles)} tiles")
    try:
        diff = check_export(model, out, fmt, tiles, TOLERANCE)
    except PathotuneError:
        _remove_export(out)
        raise
    note(report, f"largest probability difference {diff:.2e} (allowed {TOLERANCE:.0e})")
    return {
        "max_abs_diff": diff, "tolerance": TOLERANCE, "tiles": len(tiles), "synthetic_tiles": len(synthetic),
        "real_tiles": 0 if real is None else len(real), "real_data": None if real_data is None else str(real_data),
        "passed": True,
    }


def _write_card(file: Any, out: Path, opts: ExportOptions, written: dict[str, Any], contract: dict[str, Any],
                prompts: dict[str, Any], check: dict[str, Any] | None, random_note: str | None,
                report: Reporter) -> tuple[Path, Path]:
    """The model card beside the export, as JSON and Markdown."""
    from pathotune_cli.files import sha256_file, write_json, write_text
    from pathotune_cli.runs.model_card import build_card, card_markdown, evaluation_metrics, validation_metrics
    from pathotune_cli.runs.records import versions

    prompts_path = file.path.resolve()
    runtime = _runtime_versions(opts.format)
    export_info = {
        "file": str(out), "format": opts.format, "bytes": out.stat().st_size, "sha256": sha256_file(out),
        "exporter": written["exporter"], "opset": written.get("opset"),
        "external_data": written.get("external_data", False), "precision": "fp32", "runtime": runtime["runtime"],
    }
    card = build_card(
        file.header, export=export_info, input_spec=contract["input"], output_spec=contract["output"],
        prompts=prompts, check=check, validation=validation_metrics(file.header, prompts_path),
        evaluation=evaluation_metrics(prompts_path, opts.metrics, lambda text: warn(report, text)),
        versions={**versions(), **runtime["versions"]}, random_weights=random_note,
    )
    card_json, card_md = card_paths(out)
    write_json(card_json, card)
    write_text(card_md, card_markdown(card))
    return card_json, card_md


def _synthetic_tiles(size: int) -> Any:
    """Uniform noise plus one H&E-like texture per demo class: cheap, seeded, and not all saturated."""
    import numpy as np
    import torch

    from pathotune_cli.demo_data import DEMO_CLASSES, texture

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(SYNTHETIC_NOISE_TILES, 3, size, size), dtype=np.uint8)
    textures = np.stack([texture(i, size, size, rng).transpose(2, 0, 1) for i in range(len(DEMO_CLASSES))])
    return torch.from_numpy(np.concatenate([noise, textures]))


def _real_tiles(folder: Path, size: int, limit: int) -> Any:
    """Up to ``limit`` real tiles from ``folder``, resized to the input size as ``pathotune`` reads tiles."""
    import torch

    from pathotune_cli.training.images import decode_image

    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise BadInput(
            f"--check-data {folder} holds no images", f"pass a folder of tiles ({', '.join(IMAGE_SUFFIXES)})"
        )
    if len(paths) > limit:  # spread over the sorted list, so every class folder is sampled
        step = (len(paths) - 1) / max(1, limit - 1)
        paths = [paths[round(i * step)] for i in range(limit)]
    return torch.stack([torch.from_numpy(decode_image(p, size)) for p in paths])


def _runtime_versions(fmt: str) -> dict[str, Any]:
    import torch

    if fmt != "onnx":
        return {"runtime": f"TorchScript (torch {torch.__version__}, torch.jit.load)", "versions": {}}
    import onnx
    import onnxruntime
    import onnxscript

    return {
        "runtime": f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)",
        "versions": {
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "onnxscript": onnxscript.__version__,
        },
    }


def _remove_export(path: Path) -> None:
    """A failed check leaves no export behind: the graph, its external data, and any older card beside it."""
    for stale in (path, path.with_name(f"{path.name}.data"), *card_paths(path)):
        stale.unlink(missing_ok=True)
