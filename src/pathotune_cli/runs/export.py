"""``pathotune export`` as a function: a prompt file to ONNX or TorchScript, checked, with a model card."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathotune_cli.errors import BadInput, PathotuneError
from pathotune_cli.training.data import IMAGE_SUFFIXES

SYNTHETIC_NOISE_TILES = 4
"""Uniform-noise tiles in every check; plus one synthetic H&E-like tile per demo class."""


@dataclass
class ExportOptions:
    """What to export, to which format and file, and how to check it."""

    prompts: str
    format: str = "onnx"
    """``onnx`` or ``torchscript``."""
    out: str | None = None
    """The export file; None: ``model.onnx`` or ``model.ts`` beside the prompt file."""
    check: bool = True
    """Run PyTorch and the export on the same tiles; fail above ``engine.export.TOLERANCE``."""
    check_data: str | None = None
    """A folder of real tiles (searched recursively) to add to the check's synthetic ones."""
    check_tiles: int = 32
    """At most this many real tiles, spread evenly over the sorted file list."""
    weights: str | None = None
    """Backbone weight file or folder (overrides the weight map)."""
    metrics: str | None = None
    """An eval ``metrics.json`` for the card; None: ``eval/metrics.json`` beside the prompt file, if any."""


def default_out(prompts: str | Path, fmt: str) -> Path:
    """``model.onnx`` / ``model.ts`` beside the prompt file."""
    from pathotune_cli.engine.export import SUFFIXES

    return Path(prompts).resolve().parent / f"model{SUFFIXES[fmt]}"


def card_paths(export_path: str | Path) -> tuple[Path, Path]:
    """``<file>.card.json`` and ``<file>.card.md`` beside an export."""
    path = Path(export_path)
    return path.with_name(f"{path.name}.card.json"), path.with_name(f"{path.name}.card.md")


def export_run(opts: ExportOptions, report=None) -> dict[str, Any]:  # noqa: ANN001
    """Export ``opts.prompts``, check it, write the model card beside it; returns the summary the CLI renders.

    Raises:
        BadInput: unknown format, missing optional package, damaged prompt file, bad ``--check-data``.
        PathotuneError: the export fails, or differs from PyTorch above the tolerance (then nothing is left).
    """
    from pathotune_cli.engine.export import FORMATS

    report = report or (lambda kind, info: None)
    started = time.time()
    fmt = opts.format.lower().strip()
    if fmt not in FORMATS:
        raise BadInput(f"unknown export format '{opts.format}'", "use --format onnx or --format torchscript")
    from pathotune_cli.engine.export import (
        INPUT_NAME,
        OUTPUT_NAME,
        TOLERANCE,
        check_export,
        export_onnx,
        export_torchscript,
        prepare,
        require_packages,
    )
    from pathotune_cli.engine.load import load_prompted_model, random_weights_warning
    from pathotune_cli.runs.model_card import (
        build_card,
        card_markdown,
        evaluation_metrics,
        validation_metrics,
    )
    from pathotune_cli.runs.records import file_sha256, versions, write_json, write_text

    require_packages(fmt, opts.check)
    out = (Path(opts.out) if opts.out else default_out(opts.prompts, fmt)).resolve()
    if out.is_dir():
        raise BadInput(
            f"--out {out} is a folder", f"pass a file name, e.g. --out {out / default_out('x', fmt).name}"
        )
    if opts.check_data is not None and not Path(opts.check_data).is_dir():
        raise BadInput(
            f"--check-data {opts.check_data} is not a folder", "pass a folder of tiles (png, jpg, tif)"
        )
    if opts.check_data is not None and not opts.check:
        report("warning", {"message": "--check-data is ignored with --no-check"})

    model, file = load_prompted_model(opts.prompts, opts.weights)
    random_note = random_weights_warning(model)
    if random_note:
        report("warning", {"message": random_note})
    meta = file.meta
    module = prepare(model)
    size = module.input_size
    # everything that can fail on bad input happens before the export is written
    real = None
    if opts.check and opts.check_data:
        real = _real_tiles(Path(opts.check_data), size, opts.check_tiles)
    warn = lambda message: report("warning", {"message": message})  # noqa: E731
    prompts_path = file.path.resolve()
    validation = validation_metrics(meta, prompts_path)
    evaluation = evaluation_metrics(prompts_path, opts.metrics, warn)
    classes = list(meta["classes"])
    input_spec = {
        "name": INPUT_NAME,
        "dtype": "uint8",
        "shape": ["batch", 3, size, size],
        "layout": "NCHW",
        "channels": "RGB",
        "range": [0, 255],
        "size": size,
    }
    output_spec = {
        "name": OUTPUT_NAME,
        "dtype": "float32",
        "shape": ["batch", len(classes)],
        "meaning": "softmax probabilities over the classes, in the order of `classes`",
    }
    prompts_info = {"path": str(prompts_path), "sha256": file_sha256(prompts_path), "bytes": file.size_bytes}
    header = {
        "format": "pathotune-export",
        "pathotune_version": meta.get("pathotune_version"),
        "task": meta["task"]["name"],
        "classes": classes,
        "input": input_spec,
        "output": output_spec,
        "tile": meta.get("tile"),
        "backbone": {
            "preset": meta["backbone"]["preset"]["name"],
            "fingerprint": meta["backbone"]["fingerprint"],
        },
        "method": meta.get("method"),
        "prompts_sha256": prompts_info["sha256"],
    }

    report(
        "info",
        {"message": f"exporting {meta.get('method')} on {header['backbone']['preset']} to {fmt}: {out}"},
    )
    if fmt == "onnx":
        result = export_onnx(module, out, header)
    else:
        result = export_torchscript(module, out, header)

    check = None
    if opts.check:
        import torch

        synthetic = _synthetic_tiles(size)

        tiles = synthetic if real is None else torch.cat([synthetic, real])
        report("info", {"message": f"checking against PyTorch on {len(tiles)} tiles"})
        try:
            diff = check_export(model, out, fmt, tiles, TOLERANCE)
        except PathotuneError:
            _remove_export(out)
            raise
        check = {
            "max_abs_diff": diff,
            "tolerance": TOLERANCE,
            "tiles": len(tiles),
            "synthetic_tiles": len(synthetic),
            "real_tiles": 0 if real is None else len(real),
            "real_data": opts.check_data,
            "passed": True,
        }
        report("info", {"message": f"largest probability difference {diff:.2e} (allowed {TOLERANCE:.0e})"})

    found = versions()
    runtime = _runtime_versions(fmt)
    export_info = {
        "file": str(out),
        "format": fmt,
        "bytes": out.stat().st_size,
        "sha256": file_sha256(out),
        "exporter": result["exporter"],
        "opset": result.get("opset"),
        "external_data": result.get("external_data", False),
        "precision": "fp32",
        "runtime": runtime["runtime"],
    }
    card = build_card(
        meta,
        export=export_info,
        input_spec=input_spec,
        output_spec=output_spec,
        prompts=prompts_info,
        check=check,
        validation=validation,
        evaluation=evaluation,
        versions={**found, **runtime["versions"]},
        random_weights=random_note,
    )
    card_json, card_md = card_paths(out)
    write_json(card_json, card)
    write_text(card_md, card_markdown(card))
    return {
        "export": str(out),
        "format": fmt,
        "bytes": export_info["bytes"],
        "sha256": export_info["sha256"],
        "exporter": result["exporter"],
        "opset": result.get("opset"),
        "input": input_spec,
        "output": output_spec,
        "classes": classes,
        "check": check,
        "card_json": str(card_json),
        "card_md": str(card_md),
        "prompts": str(prompts_path),
        "task": meta["task"]["name"],
        "method": meta.get("method"),
        "backbone": header["backbone"]["preset"],
        "exporter_warnings": result["warnings"],
        "seconds": round(time.time() - started, 2),
    }


def export_all(  # noqa: ANN001
    prompts: str | Path,
    check_data: str | Path | None = None,
    report=None,
    out_dir: str | Path | None = None,
    metrics: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Both formats with their checks and cards (what ``pathotune demo`` ends with).

    ``out_dir`` defaults to beside the prompts; ``metrics`` is an eval ``metrics.json`` for the cards (else
    ``eval/metrics.json`` beside the prompts, if any). ONNX is skipped with a warning, not an error, where the
    ``export`` extra is not installed, so the caller still works anywhere; TorchScript needs only torch.

    Returns:
        ``{"onnx": summary, "torchscript": summary}``; a skipped format maps to ``{"skipped": reason}``.
    """
    from pathotune_cli.engine.export import SUFFIXES, require_packages
    from pathotune_cli.errors import MissingDependency

    report = report or (lambda kind, info: None)
    done: dict[str, dict[str, Any]] = {}
    for fmt in ("onnx", "torchscript"):
        out = None if out_dir is None else str(Path(out_dir) / f"model{SUFFIXES[fmt]}")
        try:
            require_packages(fmt, check=True)
        except MissingDependency as exc:
            report("warning", {"message": f"skipped the {fmt} export: {exc.one_line()}"})
            done[fmt] = {"skipped": exc.one_line()}
            continue
        data = None if check_data is None else str(check_data)
        opts = ExportOptions(
            prompts=str(prompts),
            format=fmt,
            out=out,
            check_data=data,
            metrics=None if metrics is None else str(metrics),
        )
        done[fmt] = export_run(opts, report)
    return done


def _synthetic_tiles(size: int):  # noqa: ANN202 - a uint8 tensor (N, 3, S, S)
    """Uniform noise plus one H&E-like texture per demo class: cheap, seeded, and not all saturated."""
    import numpy as np
    import torch

    from pathotune_cli.demo_data import DEMO_CLASSES, texture

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(SYNTHETIC_NOISE_TILES, 3, size, size), dtype=np.uint8)
    textures = np.stack([texture(i, size, size, rng).transpose(2, 0, 1) for i in range(len(DEMO_CLASSES))])
    return torch.from_numpy(np.concatenate([noise, textures]))


def _real_tiles(folder: Path, size: int, limit: int):  # noqa: ANN202 - a uint8 tensor (N, 3, S, S)
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
