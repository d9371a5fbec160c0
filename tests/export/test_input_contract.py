"""Every export takes uint8 0-255 and float32 0-1 tiles with the same probabilities, and refuses anything else.

Each format is run the way a deployment runs it (torch.jit.load, onnxruntime, torch.export.load), not through
pathotune. A refusal must come from the saved file itself and name what it expects.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from testdata import assert_close_to_scale, tiny_preset

FORMATS = ("torchscript", "onnx", "pt2", "wsinfer")
SIZE = 64
"""The tiny backbone's input size (and the demo task's tile size is 112, the wsinfer export's input)."""
RULE = "either uint8 in 0-255 or float32 in 0-1 (every value within [-0.5, 1.5], no NaN)"
RANGE = "expected float32 RGB in 0-1"


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """A tiny ``pathotune`` prompt file exported to every format (checked on export)."""
    from pathotune_cli.config import load_task_preset
    from pathotune_cli.config.run import PromptSettings
    from pathotune_cli.engine import build_prompted_model, prompt_header, save_prompt_file
    from pathotune_cli.runs.export import ExportOptions, export_run

    preset, task = tiny_preset(), load_task_preset("demo")
    torch.manual_seed(0)
    built = build_prompted_model(task, preset, PromptSettings(method="pathotune"))
    with torch.no_grad():
        for p in built.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("contract")
    prompts = save_prompt_file(folder / "prompts.safetensors", built.model.trained_state(),
                               prompt_header(built, task, preset))
    return {fmt: export_run(ExportOptions(prompts=prompts, format=fmt)).to_dict() for fmt in FORMATS}


def _deployed(doc: dict) -> Callable[[np.ndarray], np.ndarray]:
    """The saved export run as a deployment runs it: uint8 to ``tiles``, anything else to the float input."""
    path, fmt = doc["export"], doc["format"]
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

        def run(x: np.ndarray) -> np.ndarray:
            empty = (0, *x.shape[1:])
            feed = ({"tiles": x, "tiles_float": np.zeros(empty, np.float32)} if x.dtype == np.uint8
                    else {"tiles": np.zeros(empty, np.uint8), "tiles_float": x})
            return session.run(["probabilities"], feed)[0]

        return run
    if fmt == "pt2":
        program = torch.export.load(path).module()

        def run(x: np.ndarray) -> np.ndarray:
            t, empty = torch.from_numpy(x), (0, *x.shape[1:])
            args = ((t, torch.zeros(empty)) if x.dtype == np.uint8 else (torch.zeros(empty, dtype=torch.uint8), t))
            return program(*args).detach().numpy()

        return run
    model = torch.jit.load(path)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.from_numpy(x))
        return (torch.softmax(out, -1) if fmt == "wsinfer" else out).numpy()  # WSInfer's own softmax

    return run


def _tiles(size: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


@pytest.mark.parametrize("fmt", FORMATS)
def test_uint8_and_float32_tiles_give_the_same_probabilities(exports: dict[str, dict], fmt: str) -> None:
    doc = exports[fmt]
    size = doc["input"]["size"]
    tiles = _tiles(size)
    run = _deployed(doc)
    as_uint8, as_float = run(tiles), run(tiles.astype(np.float32) / np.float32(255.0))
    assert as_uint8.shape == (3, 4) and np.allclose(as_uint8.sum(1), 1.0, atol=1e-5)
    assert np.abs(as_uint8 - as_float).max() <= 1e-6  # the same pixels, scaled the same way: the same numbers
    assert doc["check"]["max_abs_diff_uint8"] <= 1e-4 and doc["check"]["max_abs_diff_float32"] <= 1e-4


def test_exports_match_pytorch_for_float_tiles_as_torchvision_gives_them(exports: dict[str, dict]) -> None:
    from torchvision.transforms.functional import to_tensor

    from pathotune_cli.engine import load_prompted_model
    from pathotune_cli.engine.export_run import reference_probabilities

    model, _ = load_prompted_model(exports["onnx"]["prompts"])
    tiles = _tiles(SIZE)
    floats = torch.stack([to_tensor(t.transpose(1, 2, 0)) for t in tiles]).numpy()  # HWC uint8 -> CHW float 0-1
    expected = reference_probabilities(model, torch.from_numpy(tiles)).numpy()
    for fmt in ("torchscript", "onnx", "pt2"):
        assert_close_to_scale(_deployed(exports[fmt])(floats), expected, what=fmt)


def _wrong(size: int) -> dict[str, np.ndarray]:
    tile = _tiles(size, 1)
    return {
        "0-255 floats": tile.astype(np.float32),
        "normalised floats": (tile.astype(np.float32) / 255 - 0.5) / 0.1,
        "NaN": np.full(tile.shape, np.nan, np.float32),
        "float64": tile.astype(np.float64) / 255,
        "int64": tile.astype(np.int64),
        "4 channels": np.zeros((1, 4, size, size), np.uint8),
        "NHWC": np.ascontiguousarray(tile.transpose(0, 2, 3, 1)),
        "other size": np.zeros((1, 3, size + 16, size + 16), np.uint8),
    }


def _expected_words(fmt: str, case: str, size: int) -> list[str]:
    """What each runtime's refusal must say: pathotune's rule, or the runtime naming the expected dtype or size."""
    if fmt in ("torchscript", "wsinfer"):
        got = {"float64": "got float64", "int64": "got int64", "4 channels": "got shape [1, 4",
               "NHWC": f"got shape [1, {size}, {size}, 3]", "other size": f"got shape [1, 3, {size + 16}"}
        return [f"expected RGB tiles of shape (B, 3, {size}, {size}) (NCHW)", RULE, got.get(case, "outside")]
    if case in ("0-255 floats", "normalised floats", "NaN"):
        return [RANGE, "every value within [-0.5, 1.5], no NaN", "use the uint8 input 'tiles'"]
    onnx = {"float64": ["expected: (tensor(float))"], "int64": ["expected: (tensor(float))"],
            "4 channels": ["index: 1 Got: 4 Expected: 3"], "NHWC": ["Expected: 3"],
            "other size": [f"Expected: {size}"]}
    pt2 = {"float64": ["Expected: Float"], "int64": ["Expected: Float"], "4 channels": ["size()[1] == 3"],
           "NHWC": ["size()[1] == 3"], "other size": [f"== {size}"]}
    return (onnx if fmt == "onnx" else pt2)[case]


@pytest.mark.parametrize("fmt", FORMATS)
def test_wrong_dtype_range_channels_or_size_is_refused_naming_what_is_expected(exports: dict[str, dict],
                                                                             fmt: str) -> None:
    size = exports[fmt]["input"]["size"]
    run = _deployed(exports[fmt])
    for case, wrong in _wrong(size).items():
        with pytest.raises(Exception) as refused:  # each runtime raises its own type
            run(wrong)
        message = " ".join(str(refused.value).split())
        for words in _expected_words(fmt, case, size):
            assert words in message, (fmt, case, message[:400])


def test_onnx_graph_declares_both_inputs_and_states_the_rule(exports: dict[str, dict]) -> None:
    import onnx

    model = onnx.load(exports["onnx"]["export"])
    inputs = {i.name: i for i in model.graph.input}
    assert list(inputs) == ["tiles", "tiles_float"]
    assert inputs["tiles"].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert inputs["tiles_float"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert RULE in model.graph.doc_string
    assert not {"tiles", "tiles_float"} & {i.name for i in model.graph.initializer}  # required, never defaulted


def test_contract_and_card_state_both_conventions(exports: dict[str, dict]) -> None:
    for fmt, doc in exports.items():
        conventions = doc["input"]["conventions"]
        assert [(c["dtype"], c["range"]) for c in conventions] == [("uint8", [0, 255]), ("float32", [0, 1])], fmt
        assert RULE in doc["input"]["rule"] and "refused" in doc["input"]
        card = json.loads(Path(doc["card_json"]).read_text())
        assert card["input"] == doc["input"]
        markdown = Path(doc["card_md"]).read_text()
        assert "**uint8 RGB 0-255**" in markdown and "**float32 RGB 0-1**" in markdown, fmt
        assert doc["input"]["call"] in markdown
    assert exports["onnx"]["input"]["inputs"] == ["tiles", "tiles_float"]
    assert exports["torchscript"]["input"]["inputs"] == ["tiles"]


def test_wsinfer_folder_holds_model_config_and_card_and_returns_logits(exports: dict[str, dict]) -> None:
    from pathotune_cli.runs.exports.wsinfer import config_problems

    doc = exports["wsinfer"]
    folder = Path(doc["folder"])
    assert Path(doc["export"]) == folder / "torchscript_model.pt" and folder.name == "wsinfer-model"
    config = json.loads((folder / "config.json").read_text())
    assert config_problems(config) == []
    assert config["class_names"] == doc["classes"] and config["num_classes"] == 4
    assert (config["patch_size_pixels"], config["spacing_um_px"]) == (112, 0.5)  # the demo task's tiles
    assert config["transform"] == [{"name": "Resize", "arguments": {"size": 112, "interpolation": 2}},
                                   {"name": "ToTensor"}]
    assert doc["input"]["size"] == 112 and doc["output"]["name"] == "logits"
    with torch.no_grad():
        logits = torch.jit.load(doc["export"])(torch.from_numpy(_tiles(112)))
    assert not torch.allclose(logits.sum(1), torch.ones(3))  # logits, not probabilities: WSInfer softmaxes
    card = json.loads(Path(doc["card_json"]).read_text())
    assert card["wsinfer"]["config"] == config and "local/<model name>" in card["wsinfer"]["qupath"]
    assert "## WSInfer and QuPath" in Path(doc["card_md"]).read_text()


def test_wsinfer_model_holds_no_device_constants(exports: dict[str, dict]) -> None:
    """WSInfer moves the model to CUDA where there is one: nothing in the graph may be pinned to the CPU."""
    graph = str(torch.jit.load(exports["wsinfer"]["export"]).inlined_graph)
    assert "cpu" not in graph and "Tensor>" not in graph
