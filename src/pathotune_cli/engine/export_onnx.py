"""The ONNX export: the model through ``torch.onnx.export(dynamo=True)``, then its two inputs and their check.

An ONNX input has one element type, so the graph takes two, ``tiles`` (uint8, 0-255) and ``tiles_float``
(float32, 0-1), each with its own dynamic batch axis; a caller feeds both, the unused one as a batch of 0.
onnxruntime itself refuses another dtype, channel count or size, naming the expected one. The range of
``tiles_float`` is checked by nodes in front of the model: a Gather whose index is 1 when any value lies outside
``FLOAT_RANGE`` (or is NaN) fails, and onnxruntime's error carries the node's name, which is the message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pathotune_cli.engine.export import (
    FLOAT_INPUT_NAME,
    FLOAT_RANGE,
    HEADER_KEY,
    INPUT_NAME,
    ExportModule,
    example_tiles,
    float_range_message,
    input_rule,
    quiet,
    require_packages,
)
from pathotune_cli.errors import PathotuneError, first_line
from pathotune_cli.files import Staging, remove, temp_path

EXTERNAL_DATA_BYTES = 1536 * 1024**2
"""Above this many bytes of weights, ONNX weights go to a ``.data`` file beside the graph (2 GB cap)."""
_CORE_INPUT = "images"


def export_onnx(
    module: ExportModule, path: str | Path, header: dict[str, Any] | None = None, opset: int | None = None
) -> dict[str, Any]:
    """Export with both inputs and the range check, batch axes dynamic; written via a temporary folder.

    ``header`` goes into the graph's metadata as the JSON string ``pathotune``.

    Returns:
        ``{"path", "exporter", "opset", "external_data", "warnings"}``.
    """
    require_packages("onnx", check=False)
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    external = _weight_bytes(module) > EXTERNAL_DATA_BYTES
    # the model's rows are both inputs' rows together: a dim name of its own, or onnxruntime would take it for
    # ``tiles``' batch when it plans buffers
    rows = torch.export.Dim("rows", min=0, max=65536)
    kwargs: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    with quiet() as caught, torch.no_grad():
        try:
            program = torch.onnx.export(
                module, (example_tiles(module).float().div(255.0),), dynamo=True, verbose=False,
                input_names=[_CORE_INPUT], output_names=[module.output], dynamic_shapes=({0: rows},), **kwargs,
            )
            _add_inputs(program.model, module.size)
        except Exception as exc:  # the exporter raises many types; the user needs one line
            raise PathotuneError(
                f"ONNX export failed: {type(exc).__name__}: {first_line(exc)}",
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
                try:
                    program.save(str(folder / path.name), external_data=external)
                except OSError as exc:  # a write on a full disk names no file
                    raise OSError(exc.errno, exc.strerror, str(path)) from exc
                onnx.checker.check_model(str(folder / path.name))
                for name in sorted(p.name for p in folder.iterdir() if p.name != path.name) + [path.name]:
                    staged.add(folder / name, path.parent / name)
                staged.commit()
        finally:
            remove(folder)
    opset_found = next((v for d, v in program.model.opset_imports.items() if d in ("", "ai.onnx")), None)
    return {
        "path": str(path),
        "exporter": "torch.onnx.export(dynamo=True) + pathotune input nodes",
        "opset": opset_found,
        "external_data": external,
        "warnings": caught,
    }


def onnx_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """One batch through onnxruntime: uint8 tiles to ``tiles``, any other dtype to ``tiles_float``."""
    require_packages("onnx", check=True)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # the check's refusal probes fail on purpose: keep their errors quiet
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name

    def run(tiles: torch.Tensor) -> torch.Tensor:
        given = tiles.numpy()
        empty_shape = (0, *given.shape[1:])
        if given.dtype == np.uint8:
            feed = {INPUT_NAME: given, FLOAT_INPUT_NAME: np.zeros(empty_shape, np.float32)}
        else:
            feed = {INPUT_NAME: np.zeros(empty_shape, np.uint8), FLOAT_INPUT_NAME: given}
        return torch.from_numpy(session.run([output], feed)[0])

    return run


def _add_inputs(model: Any, size: int) -> None:
    """Replace the exported graph's float input by ``tiles`` and ``tiles_float``, scaled, checked and joined."""
    import onnx_ir as ir

    graph = model.graph
    (images,) = graph.inputs
    tiles = ir.Value(name=INPUT_NAME, type=ir.TensorType(ir.DataType.UINT8), shape=ir.Shape(["batch", 3, size, size]),
                     doc_string="uint8 RGB 0-255, NCHW; a batch of 0 when tiles_float is used")
    floats = ir.Value(name=FLOAT_INPUT_NAME, type=ir.TensorType(ir.DataType.FLOAT),
                      shape=ir.Shape(["batch_float", 3, size, size]),
                      doc_string="float32 RGB 0-1, NCHW, every value within "
                                 f"[{FLOAT_RANGE[0]}, {FLOAT_RANGE[1]}]; a batch of 0 when tiles is used")

    def const(name: str, value: np.ndarray) -> Any:
        v = ir.Value(name=name, type=ir.TensorType(ir.DataType.from_numpy(value.dtype)), shape=ir.Shape(value.shape),
                     const_value=ir.tensor(value, name=name))
        graph.register_initializer(v)
        return v

    def node(op: str, inputs: list[Any], name: str, out: str | None = None, **attributes: Any) -> Any:
        made = ir.node(op, inputs, attributes=attributes or None, name=name)
        made.outputs[0].name = f"pathotune_{out or name}"
        graph.append(made)
        return made.outputs[0]

    scaled = node("Div", [node("Cast", [tiles], "tiles_as_float", to=ir.DataType.FLOAT),
                          const("pathotune_255", np.array(255.0, np.float32))], "tiles_scaled")
    outside = node("Or", [node("Less", [floats, const("pathotune_low", np.array(FLOAT_RANGE[0], np.float32))], "below"),
                          node("Greater", [floats, const("pathotune_high", np.array(FLOAT_RANGE[1], np.float32))],
                               "above")], "outside")
    bad = node("Or", [outside, node("IsNaN", [floats], "nan")], "refused")
    count = node("ReduceSum", [node("Cast", [bad], "refused_count", to=ir.DataType.INT64)], "refused_total", keepdims=0)
    index = node("Min", [count, const("pathotune_one", np.array(1, np.int64))], "refused_any")
    zero = node("Gather", [const("pathotune_zero", np.zeros(1, np.float32)), index], float_range_message(size),
                out="range_ok")
    checked = node("Add", [floats, zero], "tiles_float_checked")  # + 0.0: the model waits for the check
    joined = node("Concat", [scaled, checked], "joined", axis=0)
    for user, position in list(images.uses()):
        user.replace_input_with(position, joined)
    graph.inputs.clear()
    graph.inputs.extend([tiles, floats])
    graph.sort()
    graph.doc_string = ("pathotune model. Input: " + input_rule(size) + f"; feed uint8 as '{INPUT_NAME}' and "
                        f"float32 as '{FLOAT_INPUT_NAME}', the other as a batch of 0.")


def _weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
