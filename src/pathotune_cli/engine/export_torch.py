"""The PyTorch exports: TorchScript (``torchscript`` and the ``wsinfer`` folder's model) and ``torch.export`` (pt2).

TorchScript is what WSInfer and QuPath's WSInfer extension run, so it stays; the model itself is traced (once,
at the export's size, with float32 input) and the input contract around it is scripted, because a trace would
freeze the branch on the input's dtype. ``pt2`` is the forward-looking format: ``torch.export`` without the
deprecated tracer, loaded with ``torch.export.load``. Its inputs have one dtype each, so it takes two.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pathotune_cli.engine.export import (
    FLOAT_RANGE,
    HEADER_KEY,
    ExportModule,
    example_tiles,
    float_range_message,
    input_rule,
    quiet,
)
from pathotune_cli.errors import PathotuneError, first_line
from pathotune_cli.files import atomic_write

_MAX_BATCH = 65536


def _dtype_name(dtype: torch.dtype) -> str:
    """A dtype's name inside TorchScript (where ``str(dtype)`` is a number)."""
    for name, known in (("float64", torch.float64), ("float16", torch.float16), ("bfloat16", torch.bfloat16),
                        ("int64", torch.int64), ("int32", torch.int32), ("int16", torch.int16),
                        ("int8", torch.int8), ("bool", torch.bool)):
        if dtype == known:
            return name
    return "another dtype"


class ScriptedContract(nn.Module):
    """uint8 0-255 or float32 0-1 tiles (B, 3, S, S) into the traced model; anything else refused, with why."""

    def __init__(self, core: torch.jit.ScriptModule, size: int) -> None:
        super().__init__()
        self.core = core
        self.size = size
        self.low, self.high = FLOAT_RANGE
        self.expected = "pathotune model input: expected " + input_rule(size)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """The model's output for tiles in either convention."""
        if tiles.dim() != 4 or tiles.size(1) != 3 or tiles.size(2) != self.size or tiles.size(3) != self.size:
            raise ValueError(self.expected + "; got shape " + str(tiles.shape))
        if tiles.dtype == torch.uint8:
            images = tiles.to(torch.float32) / 255.0
        elif tiles.dtype == torch.float32:
            if bool(((tiles < self.low) | (tiles > self.high) | torch.isnan(tiles)).any()):
                raise ValueError(self.expected + "; got float32 values outside [" + str(self.low) + ", "
                                 + str(self.high) + "] or NaN (0-255 pixels as floats? pass them as uint8)")
            images = tiles
        else:
            raise ValueError(self.expected + "; got " + _dtype_name(tiles.dtype))
        return self.core(images)


class TwoInputContract(nn.Module):
    """uint8 ``tiles`` and float32 ``tiles_float`` (either may be a batch of 0) into the model, for torch.export."""

    def __init__(self, core: ExportModule) -> None:
        super().__init__()
        self.core = core
        self.low, self.high = FLOAT_RANGE
        self.message = float_range_message(core.size)

    def forward(self, tiles: torch.Tensor, tiles_float: torch.Tensor) -> torch.Tensor:
        """The model's output for ``tiles``' rows, then ``tiles_float``'s."""
        tiles_float = tiles_float.to(torch.float32)  # in the program: a dtype assertion, as for ``tiles``
        bad = ((tiles_float < self.low) | (tiles_float > self.high) | torch.isnan(tiles_float)).any()
        torch._assert_async(torch.logical_not(bad), self.message)
        return self.core(torch.cat([tiles.to(torch.float32) / 255.0, tiles_float]))


def export_torchscript(
    module: ExportModule, path: str | Path, header: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The traced model inside its scripted input contract; ``header`` goes in as the extra file pathotune.json.

    Returns:
        ``{"path", "exporter", "warnings"}``.
    """
    path = Path(path)
    with quiet() as caught, torch.no_grad():
        try:
            images = example_tiles(module).float().div(255.0)
            core = torch.jit.trace(module, (images,), check_trace=False)
            scripted = torch.jit.script(ScriptedContract(core, module.size))
        except Exception as exc:  # the tracer raises many types; the user needs one line
            raise PathotuneError(
                f"TorchScript export failed: {type(exc).__name__}: {first_line(exc)}",
                "try --format onnx or --format pt2, or rerun with --debug",
            ) from exc
        extra = {} if header is None else {f"{HEADER_KEY}.json": json.dumps(header)}
        # saved to memory, then written by Python: torch's own writer on a full disk aborts the whole process
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer, _extra_files=extra)
        atomic_write(path, buffer.getbuffer())
    return {"path": str(path), "exporter": "torch.jit.trace (model) + torch.jit.script (input contract)",
            "warnings": caught}


def export_pt2(module: ExportModule, path: str | Path, header: dict[str, Any] | None = None) -> dict[str, Any]:
    """``torch.export`` of the model with both inputs, batch axes dynamic; ``header`` as extra file pathotune.json.

    Returns:
        ``{"path", "exporter", "warnings"}``.
    """
    path = Path(path)
    tiles = example_tiles(module)
    batch = torch.export.Dim("batch", min=0, max=_MAX_BATCH)
    batch_float = torch.export.Dim("batch_float", min=0, max=_MAX_BATCH)
    with quiet() as caught, torch.no_grad():
        try:
            program = torch.export.export(
                TwoInputContract(module).eval(), (tiles, tiles.float().div(255.0)),
                dynamic_shapes=({0: batch}, {0: batch_float}), strict=False,
            )
        except Exception as exc:  # the exporter raises many types; the user needs one line
            raise PathotuneError(
                f"pt2 export failed: {type(exc).__name__}: {first_line(exc)}",
                "try --format torchscript, or rerun with --debug",
            ) from exc
        extra = {} if header is None else {f"{HEADER_KEY}.json": json.dumps(header)}
        buffer = io.BytesIO()  # as for TorchScript: a full disk is an OSError here, never an abort
        torch.export.save(program, buffer, extra_files=extra)
        atomic_write(path, buffer.getbuffer())
    return {"path": str(path), "exporter": "torch.export.export (strict=False)", "warnings": caught}
