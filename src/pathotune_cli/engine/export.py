"""A prompted model as one self-contained, deployable graph, checked against PyTorch.

The export contract, the same for every format (``engine.export_torch`` and ``engine.export_onnx`` write them):

- input: RGB tiles, shape (B, 3, S, S) (NCHW), in one of the two conventions of the field, with the same
  probabilities for both: **uint8 in 0-255**, or **float32 in 0-1** (``torchvision``'s ``ToTensor``). A float32
  tile is accepted when every value lies within [-0.5, 1.5] (room for resampling overshoot) and none is NaN;
  anything else (another dtype, 0-255 pixels passed as floats, already normalised tensors, another channel count
  or size) is refused inside the graph with a message that says what it expects. S is the backbone's input size
  (``wsinfer``: the task's tile size, resized to the backbone's inside the graph, as ``pathotune predict`` does).
  Cut tiles at the task's mpp and size and resize them to S x S; scaling and the backbone's mean/std are baked in.
- output ``probabilities``: float32 (B, C), softmax over the task's classes, in the prompt file's class order
  (``wsinfer``: ``logits``, because WSInfer and QuPath apply the softmax themselves).

How each format takes the two conventions: TorchScript, one input of either dtype; ONNX and pt2, whose inputs
have one dtype each, two inputs, ``tiles`` (uint8) and ``tiles_float`` (float32), both given, the unused one a
batch of 0 (the output rows are ``tiles``' rows, then ``tiles_float``'s).

Exports are always fp32, on the CPU. The frozen backbone, the prompts, the head and, for ``pathotune``, the
instance encoder (the backbone itself, or another frozen model) are all inside the graph.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from pathotune_cli.engine.model import PromptedModel
from pathotune_cli.errors import MissingDependency

FORMATS = ("onnx", "torchscript", "pt2", "wsinfer")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts", "pt2": ".pt2", "wsinfer": ""}
"""File suffix per format; ``wsinfer`` writes a folder."""
WSINFER_MODEL = "torchscript_model.pt"
"""The TorchScript file's name in a WSInfer model folder (what WSInfer and QuPath's extension look for)."""
INPUT_NAME = "tiles"
FLOAT_INPUT_NAME = "tiles_float"
"""The float32 input of the formats whose inputs have one dtype each (ONNX, pt2)."""
OUTPUT_NAME = "probabilities"
LOGITS_NAME = "logits"
FLOAT_RANGE = (-0.5, 1.5)
"""A float32 tile is accepted when every value lies in this closed range (0-1 RGB, with resampling overshoot)."""
HEADER_KEY = "pathotune"
"""ONNX metadata key / TorchScript and pt2 extra file (``pathotune.json``) holding the classes and input contract."""
TOLERANCE = 1e-4
"""Largest absolute difference of probabilities allowed between PyTorch and an fp32 export."""
EXPORT_EXTRA = "pip install 'pathotune-cli[export]'"
_TRACE_BATCH = 2


def input_rule(size: int) -> str:
    """The input contract in one sentence, as every export's refusals state it."""
    low, high = FLOAT_RANGE
    return (f"RGB tiles of shape (B, 3, {size}, {size}) (NCHW), either uint8 in 0-255 or float32 in 0-1 "
            f"(every value within [{low}, {high}], no NaN)")


def float_range_message(size: int) -> str:
    """What ONNX and pt2 say when ``tiles_float`` holds values outside ``FLOAT_RANGE`` (or NaN)."""
    low, high = FLOAT_RANGE
    return (f"pathotune model input '{FLOAT_INPUT_NAME}': expected float32 RGB in 0-1, shape (B, 3, {size}, {size}), "
            f"every value within [{low}, {high}], no NaN; for 0-255 pixels use the uint8 input '{INPUT_NAME}'")


class ExportModule(nn.Module):
    """Float32 RGB images (B, 3, N, N) in [0, 1] to probabilities or logits (B, C); preprocessing inside.

    The input contract (dtypes, range, shape) is added around this by each format's writer.
    """

    def __init__(
        self, model: PromptedModel, size: int | None = None, output: str = OUTPUT_NAME, temperature: float = 1.0
    ) -> None:
        super().__init__()
        self.temperature = float(temperature)
        """The prompt file's calibration temperature: the export gives the calibrated probabilities (and logits
        divided by it), as ``pathotune predict`` does by default."""
        if output not in (OUTPUT_NAME, LOGITS_NAME):
            raise ValueError(f"output must be {OUTPUT_NAME!r} or {LOGITS_NAME!r}, got {output!r}")
        self.model = model
        self.input_size = int(model.backbone.input_size)
        self.size = int(size or self.input_size)
        """The tile side the export takes; resized to ``input_size`` inside when they differ."""
        self.output = output

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities (or logits) (B, C) for float32 images (B, 3, size, size) in [0, 1]."""
        features = None
        if self.model.needs_instance_features:
            # PromptedModel.instance_features would do the same, but it counts images in a Python int,
            # which a trace would freeze; call the frozen encoder directly.
            features = self.model.encode_instances(self.model.stain_normalise(images))
        logits = self.model(images, features) / self.temperature
        return logits if self.output == LOGITS_NAME else torch.softmax(logits, dim=-1)


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


def prepare(
    model: PromptedModel, size: int | None = None, output: str = OUTPUT_NAME, temperature: float = 1.0
) -> ExportModule:
    """The model in fp32, on the CPU, in eval mode, frozen, with its preprocessing, calibration and softmax."""
    model = model.to(device="cpu", dtype=torch.float32).eval()
    model.requires_grad_(False)
    return ExportModule(model, size, output, temperature).eval()


def example_tiles(module: ExportModule, batch: int = _TRACE_BATCH) -> torch.Tensor:
    """Random uint8 tiles of the export's input shape."""
    generator = torch.Generator().manual_seed(0)
    size = module.size
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)


def _missing(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is None
    return importlib.util.find_spec(name) is None


@contextlib.contextmanager
def quiet() -> Iterator[list[str]]:
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
