"""An exported file run in the runtime a deployment would use, and checked against the PyTorch model.

Apart from ``engine.export`` (which builds and saves the graphs) so that the runtimes, ONNX among them, stand
above both builders: ``export`` -> ``export_onnx`` / ``export_torch`` -> ``export_run``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from pathotune_cli.engine.export import TOLERANCE, PromptedModel, quiet
from pathotune_cli.errors import PathotuneError, first_line


def run_export(path: str | Path, fmt: str, batch_size: int = 16) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function that runs a saved export on tiles, as a deployment would, and returns probabilities.

    uint8 tiles go to the uint8 input, anything else to the float one (ONNX, pt2), so a refusal is the export's
    own. A ``wsinfer`` export's logits are turned into probabilities with the softmax WSInfer applies.
    """
    run = _runner(Path(path), fmt)

    def batched(tiles: torch.Tensor) -> torch.Tensor:
        out = torch.cat([run(tiles[i : i + batch_size].contiguous()) for i in range(0, len(tiles), batch_size)])
        return torch.softmax(out, dim=-1) if fmt == "wsinfer" else out

    return batched


def reference_probabilities(
    model: PromptedModel, tiles: torch.Tensor, batch_size: int = 16, temperature: float = 1.0
) -> torch.Tensor:
    """What PyTorch computes for uint8 tiles, as ``pathotune eval`` does: fp32, calibrated by ``temperature``."""
    model = model.to(device="cpu", dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(tiles), batch_size):
            images = tiles[i : i + batch_size].float().div(255.0)
            out.append(torch.softmax(model(images).float() / temperature, dim=-1))
    return torch.cat(out)


def check_export(
    model: PromptedModel, path: str | Path, fmt: str, tiles: torch.Tensor, tolerance: float = TOLERANCE,
    temperature: float = 1.0,
) -> dict[str, float | list[str]]:
    """Run PyTorch and the saved export on the same tiles, as uint8 and as float32, and probe its refusals.

    Returns:
        ``{"max_abs_diff", "max_abs_diff_uint8", "max_abs_diff_float32", "refuses"}``: the largest absolute
        probability differences, and the wrong inputs the export was seen to refuse.

    Raises:
        PathotuneError: a difference is above ``tolerance`` (exit code 1), the export does not run, or it
            accepts an input it must refuse.
    """
    expected = reference_probabilities(model, tiles, temperature=temperature)
    run = run_export(path, fmt)
    diffs = {}
    for name, given in (("uint8", tiles), ("float32", tiles.float().div(255.0))):
        got = _run_checked(run, given, path, fmt)
        if got.shape != expected.shape:
            raise PathotuneError(
                f"{path} returns shape {tuple(got.shape)} for {name} tiles, expected {tuple(expected.shape)}",
                "rerun with --debug and report it",
            )
        diff = float((got.float() - expected).abs().max()) if len(tiles) else 0.0
        if not diff <= tolerance:  # also catches NaN
            raise PathotuneError(
                f"{path}: {_runtime(fmt)} and PyTorch probabilities differ by up to {diff:.2e} "
                f"on {len(tiles)} tiles (allowed {tolerance:.0e})",
                "the export is not faithful; try the other --format, or rerun with --debug and report it",
            )
        diffs[name] = diff
    return {"max_abs_diff": max(diffs.values()), "max_abs_diff_uint8": diffs["uint8"],
            "max_abs_diff_float32": diffs["float32"], "refuses": _probe_refusals(run, tiles[:1], path, fmt)}


def wrong_inputs(tile: torch.Tensor) -> dict[str, torch.Tensor]:
    """One wrong input of each kind the contract refuses, made from one uint8 tile (1, 3, S, S)."""
    size = tile.shape[-1]
    return {
        "float32 0-255 pixels": tile.float(),
        "float32 NaN": torch.full(tuple(tile.shape), float("nan")),
        "float64": tile.double() / 255.0,
        "4 channels": torch.zeros(1, 4, size, size, dtype=torch.uint8),
        f"size {size + 1}": torch.zeros(1, 3, size + 1, size + 1, dtype=torch.uint8),
    }


def _probe_refusals(run: Callable[[torch.Tensor], torch.Tensor], tile: torch.Tensor, path: str | Path,
                    fmt: str) -> list[str]:
    refused = []
    for name, wrong in wrong_inputs(tile).items():
        try:
            run(wrong)
        except Exception:  # each runtime raises its own type; refusing is what counts
            refused.append(name)
            continue
        raise PathotuneError(f"{path} accepts {name} tiles in {_runtime(fmt)}; it must refuse them",
                             "rerun with --debug and report it")
    return refused


def _run_checked(run: Callable[[torch.Tensor], torch.Tensor], tiles: torch.Tensor, path: str | Path,
                 fmt: str) -> torch.Tensor:
    try:
        return run(tiles)
    except PathotuneError:
        raise
    except Exception as exc:  # the runtimes raise many types; the user needs one line
        raise PathotuneError(
            f"{path} does not run in {_runtime(fmt)}: {type(exc).__name__}: {first_line(exc)}",
            "rerun with --debug and report it",
        ) from exc


def _runner(path: Path, fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """One batch through the saved file, in the runtime a deployment would use."""
    if fmt == "onnx":
        from pathotune_cli.engine.export_onnx import onnx_runner

        return onnx_runner(path)
    if fmt == "pt2":
        with quiet():
            program = torch.export.load(str(path)).module()

        def run_pt2(tiles: torch.Tensor) -> torch.Tensor:
            empty_shape = (0, *tiles.shape[1:])
            if tiles.dtype == torch.uint8:
                args = (tiles, torch.zeros(empty_shape, dtype=torch.float32))
            else:
                args = (torch.zeros(empty_shape, dtype=torch.uint8), tiles)
            with torch.no_grad():
                return program(*args)

        return run_pt2
    with quiet():
        loaded = torch.jit.load(str(path), map_location="cpu").eval()

    def run_torchscript(tiles: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(tiles)

    return run_torchscript


def _runtime(fmt: str) -> str:
    return {"onnx": "onnxruntime", "pt2": "torch.export"}.get(fmt, "TorchScript")


