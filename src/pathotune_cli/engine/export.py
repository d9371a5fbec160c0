"""A prompted model as one self-contained, deployable graph: ONNX or TorchScript, checked against PyTorch.

The export contract, the same for both formats:

- input ``tiles``: uint8 RGB, shape (B, 3, S, S) (NCHW), values 0-255, S the backbone's input size; the batch
  axis is dynamic. Cut tiles at the task's mpp and size, resize them to S x S (bicubic, as ``pathotune``
  does), and pass the pixels as they are: scaling to [0, 1] and the backbone's mean/std are baked in.
- output ``probabilities``: float32 (B, C), softmax over the task's classes, in the prompt file's class order.

Exports are always fp32, on the CPU. The frozen backbone, the prompts, the head and, for ``pathotune``, the
instance encoder (the backbone itself, or another frozen model) are all inside the graph.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pathotune_cli.engine.model import PromptedModel
from pathotune_cli.errors import MissingDependency, PathotuneError
from pathotune_cli.files import Staging, atomic_write, remove, temp_path

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts"}
INPUT_NAME = "tiles"
OUTPUT_NAME = "probabilities"
HEADER_KEY = "pathotune"
"""ONNX metadata key / TorchScript extra file (``pathotune.json``) holding the classes and input contract."""
TOLERANCE = 1e-4
"""Largest absolute difference of probabilities allowed between PyTorch and an fp32 export."""
EXTERNAL_DATA_BYTES = 1536 * 1024**2
"""Above this many bytes of weights, ONNX weights go to a ``.data`` file beside the graph (2 GB cap)."""
EXPORT_EXTRA = "pip install 'pathotune-cli[export]'"
_TRACE_BATCH = 2


class ExportModule(nn.Module):
    """uint8 RGB tiles (B, 3, S, S) in 0-255 to class probabilities (B, C); preprocessing inside."""

    def __init__(self, model: PromptedModel) -> None:
        super().__init__()
        self.model = model
        self.input_size = int(model.backbone.input_size)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """Probabilities (B, C) for uint8 tiles (B, 3, S, S)."""
        images = tiles.to(torch.float32) / 255.0
        features = None
        if self.model.needs_instance_features:
            # PromptedModel.instance_features would do the same, but it counts images in a Python int,
            # which a trace would freeze; call the frozen encoder directly.
            encoder = (
                self.model.instance_encoder
                if self.model.instance_encoder is not None
                else self.model.backbone
            )
            features = encoder(images)
        return torch.softmax(self.model(images, features), dim=-1)


def require_packages(fmt: str, check: bool = True) -> None:
    """The optional packages a format needs, or one line naming the ``pip install`` that adds them.

    Raises:
        MissingDependency: onnx, onnxscript (the exporter) or onnxruntime (the check) is not installed.
    """
    if fmt != "onnx":
        return
    needed = ["onnx", "onnxscript"] + (["onnxruntime"] if check else [])
    missing = [name for name in needed if _missing(name)]
    if missing:
        raise MissingDependency(
            f"ONNX export needs {', '.join(missing)}, which is not installed", EXPORT_EXTRA
        )


def prepare(model: PromptedModel) -> ExportModule:
    """The model in fp32, on the CPU, in eval mode, frozen, wrapped with its preprocessing and softmax."""
    model = model.to(device="cpu", dtype=torch.float32).eval()
    model.requires_grad_(False)
    return ExportModule(model).eval()


def example_tiles(module: ExportModule, batch: int = _TRACE_BATCH) -> torch.Tensor:
    """Random uint8 tiles of the export's input shape."""
    generator = torch.Generator().manual_seed(0)
    size = module.input_size
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)


def export_onnx(
    module: ExportModule, path: str | Path, header: dict[str, Any] | None = None, opset: int | None = None
) -> dict[str, Any]:
    """Export through ``torch.onnx.export(dynamo=True)``, batch axis dynamic; written via a temporary folder.

    ``header`` goes into the graph's metadata as the JSON string ``pathotune``.

    Returns:
        ``{"path", "exporter", "opset", "external_data", "warnings"}``.
    """
    require_packages("onnx", check=False)
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    external = _weight_bytes(module) > EXTERNAL_DATA_BYTES
    batch = torch.export.Dim("batch", min=1, max=65536)
    kwargs: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    with _quiet() as caught, torch.no_grad():
        try:
            program = torch.onnx.export(
                module,
                (example_tiles(module),),
                dynamo=True,
                verbose=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                **kwargs,
            )
        except Exception as exc:  # the exporter raises many types; the user needs one line
            raise PathotuneError(
                f"ONNX export failed: {type(exc).__name__}: {_first_line(exc)}",
                "try --format torchscript, or rerun with --debug",
            ) from exc
        if header is not None:
            program.model.metadata_props[HEADER_KEY] = json.dumps(header)
        # ONNX names its external-data file after the graph, so both are written under their own names into a
        # temporary folder, then renamed into place: external data first, the graph last (a graph that exists
        # always finds its data)
        folder = temp_path(path)
        folder.mkdir()
        try:
            with Staging() as staged:
                program.save(str(folder / path.name), external_data=external)
                onnx.checker.check_model(str(folder / path.name))
                for name in sorted(p.name for p in folder.iterdir() if p.name != path.name) + [path.name]:
                    staged.add(folder / name, path.parent / name)
                staged.commit()
        finally:
            remove(folder)
    opset_found = next((v for d, v in program.model.opset_imports.items() if d in ("", "ai.onnx")), None)
    return {
        "path": str(path),
        "exporter": "torch.onnx.export(dynamo=True)",
        "opset": opset_found,
        "external_data": external,
        "warnings": caught,
    }


def export_torchscript(
    module: ExportModule, path: str | Path, header: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Export through ``torch.jit.trace``; ``header`` goes into the archive as the extra file pathotune.json.

    Returns:
        ``{"path", "exporter", "warnings"}``.
    """
    path = Path(path)
    with _quiet() as caught, torch.no_grad():
        try:
            traced = torch.jit.trace(module, (example_tiles(module),), check_trace=False)
        except Exception as exc:  # the tracer raises many types; the user needs one line
            raise PathotuneError(
                f"TorchScript export failed: {type(exc).__name__}: {_first_line(exc)}",
                "try --format onnx, or rerun with --debug",
            ) from exc
        extra = {} if header is None else {f"{HEADER_KEY}.json": json.dumps(header)}
        atomic_write(path, lambda temp: torch.jit.save(traced, str(temp), _extra_files=extra))
    return {"path": str(path), "exporter": "torch.jit.trace", "warnings": caught}


def run_export(path: str | Path, fmt: str, batch_size: int = 16) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function that runs a saved export on uint8 tiles and returns probabilities, as a deployment would."""
    path = Path(path)
    if fmt == "onnx":
        require_packages("onnx", check=True)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run(tiles: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: tiles.numpy()})[0])
    else:
        with _quiet():
            loaded = torch.jit.load(str(path), map_location="cpu").eval()

        def run(tiles: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return loaded(tiles)

    def batched(tiles: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [run(tiles[i : i + batch_size].contiguous()) for i in range(0, len(tiles), batch_size)]
        )

    return batched


def reference_probabilities(model: PromptedModel, tiles: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """What PyTorch computes for uint8 tiles, the way ``pathotune eval`` does (fp32, no autocast)."""
    model = model.to(device="cpu", dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(tiles), batch_size):
            images = tiles[i : i + batch_size].float().div(255.0)
            out.append(torch.softmax(model(images).float(), dim=-1))
    return torch.cat(out)


def check_export(
    model: PromptedModel, path: str | Path, fmt: str, tiles: torch.Tensor, tolerance: float = TOLERANCE
) -> float:
    """Run PyTorch and the saved export on the same uint8 tiles; the largest absolute probability difference.

    Raises:
        PathotuneError: the difference is above ``tolerance`` (exit code 1), or the export does not run.
    """
    expected = reference_probabilities(model, tiles)
    try:
        got = run_export(path, fmt)(tiles)
    except PathotuneError:
        raise
    except Exception as exc:  # the runtimes raise many types; the user needs one line
        raise PathotuneError(
            f"{path} does not run in {_runtime(fmt)}: {type(exc).__name__}: {_first_line(exc)}",
            "rerun with --debug and report it",
        ) from exc
    if got.shape != expected.shape:
        raise PathotuneError(
            f"{path} returns shape {tuple(got.shape)}, expected {tuple(expected.shape)}",
            "rerun with --debug and report it",
        )
    diff = float((got.float() - expected).abs().max()) if len(tiles) else 0.0
    if not diff <= tolerance:  # also catches NaN
        raise PathotuneError(
            f"{path}: {_runtime(fmt)} and PyTorch probabilities differ by up to {diff:.2e} "
            f"on {len(tiles)} tiles (allowed {tolerance:.0e})",
            "the export is not faithful; try the other --format, or rerun with --debug and report it",
        )
    return diff


def _runtime(fmt: str) -> str:
    return "onnxruntime" if fmt == "onnx" else "TorchScript"


def _missing(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is None
    return importlib.util.find_spec(name) is None


def _weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[list[str]]:
    """Collect the exporters' warnings and chatter instead of printing them; stdout stays for results.

    Expected here: TracerWarnings where timm and the backbone compare the fixed input size (constant in an
    export by design), and torch's deprecation notices for ``torch.jit``. The check is what proves the export.
    """
    caught: list[str] = []
    sink = io.StringIO()
    with warnings.catch_warnings(record=True) as records, contextlib.redirect_stdout(sink):
        warnings.simplefilter("always")
        yield caught
    seen: set[str] = set()
    for record in records:
        line = f"{record.category.__name__}: {str(record.message).splitlines()[0][:160]}"
        if line not in seen:
            seen.add(line)
            caught.append(line)
