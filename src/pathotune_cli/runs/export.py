"""``pathotune export`` as a function: a prompt file to ONNX, TorchScript, pt2 or a WSInfer folder, with a card."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, ignore, note, warn
from pathotune_cli.runs.options import coerce_paths


@dataclass(frozen=True)
class ExportOptions:
    """What to export, to which format and file, and how to check it."""

    prompts: Path
    format: str = "onnx"
    """``onnx``, ``torchscript``, ``pt2`` or ``wsinfer`` (a folder WSInfer and QuPath's extension load)."""
    out: Path | None = None
    """The export file (``wsinfer``: folder); None: ``model.onnx``, ``model.ts``, ``model.pt2`` or
    ``wsinfer-model/`` beside the prompt file."""
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
    check_wsinfer: Path | None = None
    """A slide to run WSInfer on with the ``wsinfer`` export, compared tile by tile with ``pathotune predict``."""
    wsinfer: Path | None = None
    """The ``wsinfer`` executable for ``check_wsinfer``; None: the one on PATH."""

    def __post_init__(self) -> None:
        """Refuse what cannot work before anything loads."""
        coerce_paths(self)
        from pathotune_cli.engine.export import FORMATS

        fmt = self.format.lower().strip()
        if fmt not in FORMATS:
            choices = ", ".join(f"--format {f}" for f in FORMATS)
            raise BadInput(f"unknown export format '{self.format}'", f"use one of {choices}")
        object.__setattr__(self, "format", fmt)
        if fmt == "wsinfer" and self.out is not None and Path(self.out).is_file():
            raise BadInput(f"--out {self.out} is a file; --format wsinfer writes a folder",
                           f"pass a folder, e.g. --out {Path(self.out).with_suffix('')}-wsinfer")
        if fmt != "wsinfer" and self.out is not None and Path(self.out).is_dir():
            name = default_out("x", fmt).name
            raise BadInput(f"--out {self.out} is a folder", f"pass a file name, e.g. --out {Path(self.out) / name}")
        if self.check_data is not None and not Path(self.check_data).is_dir():
            raise BadInput(f"--check-data {self.check_data} is not a folder", "pass a folder of tiles (png, jpg, tif)")
        if self.check_wsinfer is not None:
            if fmt != "wsinfer":
                raise BadInput("--check-wsinfer checks the WSInfer model folder", "add --format wsinfer")
            if not Path(self.check_wsinfer).exists():
                raise BadInput(f"--check-wsinfer {self.check_wsinfer} does not exist", "pass a slide file")

    @property
    def out_file(self) -> Path:
        """The export's model file, absolute (``wsinfer``: the TorchScript file in the folder)."""
        from pathotune_cli.engine.export import WSINFER_MODEL

        if self.format == "wsinfer":
            return self.folder / WSINFER_MODEL
        return (Path(self.out) if self.out else default_out(self.prompts, self.format)).resolve()

    @property
    def folder(self) -> Path:
        """The ``wsinfer`` export's folder, absolute (the model file's folder for the other formats)."""
        if self.format != "wsinfer":
            return self.out_file.parent
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
    folder: Path | None = None
    """The ``wsinfer`` export's folder (model, ``config.json`` and card)."""
    config: Path | None = None
    """The ``wsinfer`` export's ``config.json``."""
    wsinfer_check: dict[str, Any] | None = None
    """WSInfer against ``pathotune predict`` on ``--check-wsinfer``'s slide."""

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data."""
        data = asdict(self)
        data.update({k: str(v) for k, v in data.items() if isinstance(v, Path)})
        return data


def default_out(prompts: str | Path, fmt: str) -> Path:
    """``model.onnx`` / ``model.ts`` / ``model.pt2`` / ``wsinfer-model`` beside the prompt file."""
    from pathotune_cli.engine.export import SUFFIXES

    name = "wsinfer-model" if fmt == "wsinfer" else f"model{SUFFIXES[fmt]}"
    return Path(prompts).resolve().parent / name


def card_paths(export_path: str | Path) -> tuple[Path, Path]:
    """``<file>.card.json`` and ``<file>.card.md`` beside an export."""
    path = Path(export_path)
    return path.with_name(f"{path.name}.card.json"), path.with_name(f"{path.name}.card.md")


def export_run(opts: ExportOptions, report: Reporter = ignore) -> ExportResult:
    """Export ``opts.prompts``, check it, write the model card beside it.

    Raises:
        BadInput: unknown format, missing optional package or ``wsinfer``, damaged prompt file, bad ``--check-data``.
        PathotuneError: the export fails, differs from PyTorch above the tolerance, or (``--check-wsinfer``)
            WSInfer disagrees with ``pathotune predict``; then nothing is left.
    """
    from pathotune_cli.engine.export import LOGITS_NAME, OUTPUT_NAME, prepare, require_packages
    from pathotune_cli.engine.load import load_prompted_model, random_weights_warning
    from pathotune_cli.files import prepare_output_folder, remove_stale_temporaries, sha256_file
    from pathotune_cli.runs.exports.check import check_against_pytorch, real_tiles
    from pathotune_cli.runs.exports.wsinfer_check import check_with_wsinfer, find_wsinfer

    started = time.time()
    require_packages(opts.format, opts.check)
    exe = find_wsinfer(opts.wsinfer) if opts.check_wsinfer is not None else None
    out = opts.out_file
    prepare_output_folder(out.parent, "--out", opts.out or out)  # an unwritable folder fails before the export
    remove_stale_temporaries(out.parent)
    if opts.check_data is not None and not opts.check:
        warn(report, "--check-data is ignored with --no-check")
    if opts.wsinfer is not None and opts.check_wsinfer is None:
        warn(report, "--wsinfer is only used with --check-wsinfer")
    model, file = load_prompted_model(opts.prompts, opts.weights)
    random_note = random_weights_warning(model)
    if random_note:
        warn(report, random_note)
    header = file.header
    wsinfer = opts.format == "wsinfer"
    # WSInfer gives the model the task's tiles (resized inside, as predict does) and applies softmax itself
    temperature = header.trust.calibration.temperature if header.trust is not None else 1.0
    module = prepare(model, header.tile.size if wsinfer else None, LOGITS_NAME if wsinfer else OUTPUT_NAME,
                     temperature)
    # everything that can fail on bad input happens before the export is written
    real = None
    if opts.check and opts.check_data is not None:
        real = real_tiles(Path(opts.check_data), module.size, opts.check_tiles)
    contract = export_contract(module.size, header.classes, opts.format)
    prompts = {"path": str(file.path.resolve()), "sha256": sha256_file(file.path), "bytes": file.size_bytes}
    note(report, f"exporting {header.method} on {header.backbone.preset.name} to {opts.format}: "
                 f"{opts.folder if wsinfer else out}")
    written = _write_export(module, out, opts.format, header, contract, prompts["sha256"])
    try:  # a failed check or card (or Ctrl-C) leaves no export behind: nothing half-written looks finished
        check = (check_against_pytorch(model, out, opts.format, module.size, real, opts.check_data, report,
                                       temperature) if opts.check else None)
        checked_wsinfer = None if exe is None else check_with_wsinfer(
            opts.folder, file.path.resolve(), Path(opts.check_wsinfer).resolve(), exe, list(header.classes),
            opts.weights, report)
        extras = {"config": written.get("config"), "wsinfer_check": checked_wsinfer}
        card_json, card_md = _write_card(file, out, opts, written, contract, prompts, check, random_note, report,
                                         extras)
    except BaseException:
        _remove_export(out, opts.format)
        raise
    return ExportResult(
        export=out, format=opts.format, bytes=out.stat().st_size, sha256=sha256_file(out),
        exporter=written["exporter"], opset=written.get("opset"), input=contract["input"],
        output=contract["output"], classes=list(header.classes), check=check, card_json=card_json, card_md=card_md,
        prompts=file.path.resolve(), task=header.task.name, method=header.method,
        backbone=header.backbone.preset.name, exporter_warnings=written["warnings"],
        seconds=round(time.time() - started, 2), folder=opts.folder if wsinfer else None,
        config=opts.folder / "config.json" if wsinfer else None, wsinfer_check=checked_wsinfer,
    )


def export_contract(size: int, classes: list[str], fmt: str = "onnx") -> dict[str, dict[str, Any]]:
    """What an export takes and returns: the ``input`` and ``output`` specifications for the card.

    Both conventions of the field are accepted with the same probabilities: uint8 RGB in 0-255 and float32 RGB
    in 0-1 (``engine.export`` has the rule and how each format is called).
    """
    from pathotune_cli.engine.export import (
        FLOAT_INPUT_NAME,
        FLOAT_RANGE,
        INPUT_NAME,
        LOGITS_NAME,
        OUTPUT_NAME,
        input_rule,
    )

    two = fmt in ("onnx", "pt2")
    float_input = FLOAT_INPUT_NAME if two else INPUT_NAME
    output = LOGITS_NAME if fmt == "wsinfer" else OUTPUT_NAME
    meaning = ("logits over the classes, in the order of `classes`: WSInfer and QuPath apply softmax to them, "
               "which gives pathotune's probabilities" if fmt == "wsinfer"
               else "softmax probabilities over the classes, in the order of `classes`")
    return {
        "input": {
            "name": INPUT_NAME, "inputs": [INPUT_NAME, FLOAT_INPUT_NAME] if two else [INPUT_NAME],
            "shape": ["batch", 3, size, size], "layout": "NCHW", "channels": "RGB", "size": size,
            "conventions": [
                {"dtype": "uint8", "range": [0, 255], "input": INPUT_NAME},
                {"dtype": "float32", "range": [0, 1], "accepted": list(FLOAT_RANGE), "input": float_input},
            ],
            "rule": input_rule(size),
            "refused": (f"any other dtype, a float32 value outside [{FLOAT_RANGE[0]}, {FLOAT_RANGE[1]}] or NaN "
                        "(0-255 pixels passed as floats, tiles already normalised), another channel count or size"),
            "call": CALLS[fmt].format(size=size, tiles=INPUT_NAME, floats=FLOAT_INPUT_NAME, out=output),
        },
        "output": {
            "name": output, "dtype": "float32", "shape": ["batch", len(classes)], "meaning": meaning,
        },
    }


CALLS = {
    "torchscript": "torch.jit.load(FILE)(tiles) with uint8 or float32 tiles (B, 3, {size}, {size})",
    "onnx": ("session.run(['{out}'], {{'{tiles}': uint8 (B, 3, {size}, {size}), '{floats}': float32 "
             "(B', 3, {size}, {size})}}): both inputs are required, the unused one a batch of 0 "
             "(e.g. np.zeros((0, 3, {size}, {size}), np.float32)); the output rows are {tiles}' rows, then {floats}'"),
    "pt2": ("torch.export.load(FILE).module()({tiles}, {floats}) with uint8 and float32 tiles (B, 3, {size}, {size}), "
            "the unused one a batch of 0 (e.g. torch.zeros(0, 3, {size}, {size})); the output rows are {tiles}' rows, "
            "then {floats}'"),
    "wsinfer": ("wsinfer run --wsi-dir SLIDES --results-dir OUT --model-path DIR/torchscript_model.pt "
                "--config DIR/config.json; in Python, torch.jit.load(DIR/torchscript_model.pt)(tiles) with "
                "uint8 or float32 tiles (B, 3, {size}, {size}) returns logits"),
}
"""How each format is called, for the card (``FILE`` is the export)."""


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
    """The graph with the classes and input contract inside it (ONNX metadata, TorchScript or pt2 extra file).

    For ``wsinfer``, its ``config.json`` goes beside it; the two are renamed into place together.
    """
    from pathotune_cli.engine.export_onnx import export_onnx
    from pathotune_cli.engine.export_torch import export_pt2, export_torchscript
    from pathotune_cli.files import Staging, write_json
    from pathotune_cli.runs.exports.wsinfer import wsinfer_config

    embedded = {
        "format": "pathotune-export", "pathotune_version": header.pathotune_version, "task": header.task.name,
        "classes": list(header.classes), **contract, "tile": header.tile.model_dump(mode="json"),
        "backbone": {"preset": header.backbone.preset.name, "fingerprint": header.backbone.fingerprint},
        "method": header.method, "prompts_sha256": prompts_sha256,
    }
    if fmt != "wsinfer":
        return {"onnx": export_onnx, "pt2": export_pt2, "torchscript": export_torchscript}[fmt](module, out, embedded)
    config = wsinfer_config(list(header.classes), header.tile.mpp, header.tile.size,
                            architecture=f"pathotune-{header.method}-{header.backbone.preset.name}")
    with Staging() as staged:
        written = export_torchscript(module, staged.temp(out), embedded)
        write_json(staged.temp(out.parent / "config.json"), config)
        staged.commit()
    return {**written, "path": str(out), "config": config}


def _write_card(file: Any, out: Path, opts: ExportOptions, written: dict[str, Any], contract: dict[str, Any],
                prompts: dict[str, Any], check: dict[str, Any] | None, random_note: str | None,
                report: Reporter, extras: dict[str, Any]) -> tuple[Path, Path]:
    """The model card beside the export, as JSON and Markdown."""
    from pathotune_cli.files import sha256_file, write_json, write_text
    from pathotune_cli.runs.exports.model_card import build_card, card_markdown, evaluation_metrics, validation_metrics
    from pathotune_cli.runs.exports.wsinfer import PIXELS_NOTE, QUPATH_NOTE
    from pathotune_cli.runs.records import versions

    prompts_path = file.path.resolve()
    runtime = _runtime_versions(opts.format)
    export_info = {
        "file": str(out), "format": opts.format, "bytes": out.stat().st_size, "sha256": sha256_file(out),
        "exporter": written["exporter"], "opset": written.get("opset"),
        "external_data": written.get("external_data", False), "precision": "fp32", "runtime": runtime["runtime"],
    }
    wsinfer = None if opts.format != "wsinfer" else {
        "folder": str(opts.folder), "config": extras["config"], "pixels": PIXELS_NOTE, "qupath": QUPATH_NOTE,
        "check": extras["wsinfer_check"],
    }
    card = build_card(
        file.header, export=export_info, input_spec=contract["input"], output_spec=contract["output"],
        prompts=prompts, check=check, validation=validation_metrics(file.header, prompts_path),
        evaluation=evaluation_metrics(prompts_path, opts.metrics, lambda text: warn(report, text)),
        versions={**versions(), **runtime["versions"]}, random_weights=random_note, wsinfer=wsinfer,
    )
    card_json, card_md = card_paths(out)
    write_json(card_json, card)
    write_text(card_md, card_markdown(card))
    return card_json, card_md


def _runtime_versions(fmt: str) -> dict[str, Any]:
    import torch

    if fmt == "pt2":
        return {"runtime": f"torch.export (torch {torch.__version__}, torch.export.load)", "versions": {}}
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


def _remove_export(path: Path, fmt: str) -> None:
    """A failed check leaves no export behind: the graph, its external data, any older card beside it.

    For ``wsinfer``, the folder's ``config.json`` too.
    """
    stale = [path, path.with_name(f"{path.name}.data"), *card_paths(path)]
    if fmt == "wsinfer":
        stale.append(path.parent / "config.json")
    for item in stale:
        item.unlink(missing_ok=True)
