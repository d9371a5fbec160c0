"""A tuned ``pathotune`` prompt file exports to ONNX, TorchScript and pt2 that match PyTorch, with a model card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

KATHER = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "patches" / "kather2016-dev"
).resolve()
FORMATS = ("onnx", "torchscript", "pt2")

ONNX_CHILD = """
import json, sys
import numpy as np
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
tiles = np.load(sys.argv[2])
empty = np.zeros((0, *tiles.shape[1:]), np.float32)  # the float32 input, unused: a batch of 0
batches = [session.run(["probabilities"], {"tiles": tiles[i:i + 32], "tiles_float": empty})[0]
           for i in range(0, len(tiles), 32)]
out = np.concatenate(batches)
np.save(sys.argv[3], out)
header = json.loads(session.get_modelmeta().custom_metadata_map["pathotune"])
print(json.dumps({"classes": header["classes"], "pathotune_imported": "pathotune_cli" in sys.modules,
                  "input": [(i.name, i.type, i.shape) for i in session.get_inputs()]}))
"""
TORCHSCRIPT_CHILD = """
import json, sys
import numpy as np
import torch
extra = {"pathotune.json": ""}
model = torch.jit.load(sys.argv[1], map_location="cpu", _extra_files=extra)
tiles = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    out = torch.cat([model(tiles[i:i + 32]) for i in range(0, len(tiles), 32)])
np.save(sys.argv[3], out.numpy())
header = json.loads(extra["pathotune.json"])
print(json.dumps({"classes": header["classes"], "pathotune_imported": "pathotune_cli" in sys.modules}))
"""
PT2_CHILD = """
import json, sys
import numpy as np
import torch
extra = {"pathotune.json": ""}
model = torch.export.load(sys.argv[1], extra_files=extra).module()
tiles = torch.from_numpy(np.load(sys.argv[2]))
empty = torch.zeros((0, *tiles.shape[1:]), dtype=torch.float32)  # the float32 input, unused: a batch of 0
with torch.no_grad():
    out = torch.cat([model(tiles[i:i + 32], empty) for i in range(0, len(tiles), 32)])
np.save(sys.argv[3], out.numpy())
header = json.loads(extra["pathotune.json"])
print(json.dumps({"classes": header["classes"], "pathotune_imported": "pathotune_cli" in sys.modules}))
"""
CHILDREN = {"onnx": ONNX_CHILD, "torchscript": TORCHSCRIPT_CHILD, "pt2": PT2_CHILD}


def _require_kather() -> Path:
    if KATHER.exists():
        return KATHER
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"real test data {KATHER} is missing (CI=true makes this a failure)")
    pytest.skip(f"real test data {KATHER} is missing")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``pathotune`` prompt file on ``tiny-random``, tuned 1 epoch on real Kather tiles, evaluated."""
    from pathotune_cli.runs.evaluate import EvalOptions, eval_run
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    kather = _require_kather()
    out = tmp_path_factory.mktemp("export") / "RUN"
    config = resolve_config(
        TuneOptions(
            preset="kather2016",
            data=str(kather),
            backbone="tiny-random",
            method="pathotune",
            out=str(out),
            epochs=1,
            precision="fp32",
            seed=0,
        )
    )
    summary = tune_run(config)
    eval_run(EvalOptions(prompts=summary.prompts, data=str(kather), bootstrap=100, precision="fp32"))
    return Path(summary.prompts)


@pytest.fixture(scope="module")
def exported(tuned: Path) -> dict[str, dict]:
    """Both exports of the tuned prompt file, checked on synthetic and real tiles."""
    from pathotune_cli.runs.export import ExportOptions, export_run

    return {
        fmt: export_run(ExportOptions(prompts=tuned, format=fmt, check_data=KATHER)).to_dict()
        for fmt in FORMATS
    }


@pytest.fixture(scope="module")
def real_tiles_and_reference(tuned: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every real tile as the exports take it (uint8 NCHW at the input size), and PyTorch's probabilities."""
    import torch

    from pathotune_cli.engine import load_prompted_model
    from pathotune_cli.training.images import decode_image

    model, file = load_prompted_model(tuned)
    temperature = file.header.trust.calibration.temperature if file.header.trust else 1.0  # exports are calibrated
    paths = sorted(KATHER.rglob("*.png"))
    tiles = np.stack([decode_image(p, model.backbone.input_size) for p in paths])
    with torch.no_grad():
        logits = model(torch.from_numpy(tiles).float().div(255.0))
    return tiles, torch.softmax(logits / temperature, dim=-1).numpy()


@pytest.mark.parametrize("fmt", FORMATS)
def test_pathotune_prompt_file_exports_with_check_passing(exported: dict[str, dict], fmt: str) -> None:
    doc = exported[fmt]
    assert Path(doc["export"]).is_file()
    assert Path(doc["export"]).name == {"onnx": "model.onnx", "torchscript": "model.ts", "pt2": "model.pt2"}[fmt]
    check = doc["check"]
    assert check["passed"] and check["max_abs_diff"] <= 1e-4
    assert check["real_tiles"] == 32 and check["synthetic_tiles"] > 0
    inp = doc["input"]
    assert {k: inp[k] for k in ("name", "shape", "layout", "channels", "size")} == {
        "name": "tiles", "shape": ["batch", 3, 112, 112], "layout": "NCHW", "channels": "RGB", "size": 112,
    }
    float_input = "tiles" if fmt == "torchscript" else "tiles_float"
    assert inp["conventions"] == [
        {"dtype": "uint8", "range": [0, 255], "input": "tiles"},
        {"dtype": "float32", "range": [0, 1], "accepted": [-0.5, 1.5], "input": float_input},
    ]
    assert check["max_abs_diff_uint8"] <= 1e-4 and check["max_abs_diff_float32"] <= 1e-4
    assert doc["output"]["shape"] == ["batch", 8]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_matches_pytorch_on_real_tiles_in_a_fresh_process(
    exported: dict[str, dict],
    real_tiles_and_reference: tuple[np.ndarray, np.ndarray],
    fmt: str,
    tmp_path: Path,
) -> None:
    tiles, expected = real_tiles_and_reference
    assert len(tiles) == 76
    np.save(tmp_path / "tiles.npy", tiles)
    script = CHILDREN[fmt]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            exported[fmt]["export"],
            str(tmp_path / "tiles.npy"),
            str(tmp_path / "out.npy"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    child = json.loads(result.stdout.strip().splitlines()[-1])
    assert not child["pathotune_imported"]
    assert child["classes"] == exported[fmt]["classes"]
    got = np.load(tmp_path / "out.npy")
    assert got.shape == expected.shape == (76, 8)
    assert np.abs(got - expected).max() <= 1e-4


def test_model_card_has_classes_input_backbone_training_metrics_and_limits(
    exported: dict[str, dict], tuned: Path
) -> None:
    from pathotune_cli.engine.promptfile import read_prompt_file

    meta = read_prompt_file(tuned).header.to_json()
    card = json.loads(Path(exported["onnx"]["card_json"]).read_text())
    assert Path(exported["onnx"]["card_json"]).name == "model.onnx.card.json"
    assert [c["name"] for c in card["classes"]] == meta["classes"]
    assert all(c["description"] for c in card["classes"])
    assert [c["dtype"] for c in card["input"]["conventions"]] == ["uint8", "float32"]
    assert card["input"]["conventions"][0]["range"] == [0, 255] and card["input"]["size"] == 112
    assert card["tile"] == {"mpp": meta["tile"]["mpp"], "size": meta["tile"]["size"]}
    assert card["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and card["preprocessing"]["baked_in"]
    assert card["backbone"]["preset"] == "tiny-random"
    assert card["backbone"]["fingerprint"] == meta["backbone"]["fingerprint"]
    assert card["method"] == "pathotune" and card["trainable_parameters"] == meta["trainable_parameters"] > 0
    assert card["training"]["class_counts"] == meta["training"]["class_counts"]
    assert sum(card["training"]["class_counts"]["train"].values()) > 0
    assert card["validation"]["metrics"]["accuracy"]["ci_low"] is not None
    evaluation = card["evaluation"]["metrics"]
    assert (
        evaluation["accuracy"]["ci_low"]
        <= evaluation["accuracy"]["value"]
        <= evaluation["accuracy"]["ci_high"]
    )
    assert card["evaluation"]["n"] == 76
    assert card["pathotune_version"] and card["versions"]["onnxruntime"]
    assert card["check"]["max_abs_diff"] <= 1e-4
    assert "not a medical device" in card["intended_use"]
    assert any("mpp" in line for line in card["limitations"])
    markdown = Path(exported["onnx"]["card_md"]).read_text()
    assert Path(exported["onnx"]["card_md"]).name == "model.onnx.card.md"
    for text in (
        "## Intended use",
        "## Classes",
        "| TUMOR |",
        "uint8 RGB 0-255",
        "float32 RGB 0-1",
        "## Evaluation metrics",
        "95% CI",
        meta["backbone"]["fingerprint"],
    ):
        assert text in markdown, text
    assert (
        Path(exported["torchscript"]["card_json"]).is_file()
        and Path(exported["torchscript"]["card_md"]).is_file()
    )


def test_export_all_skips_onnx_without_the_extra_and_still_exports_torchscript(
    tuned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathotune_cli.runs.export import export_all

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    warnings: list[str] = []
    done = export_all(
        tuned,
        report=lambda event: warnings.append(event.text) if getattr(event, "warning", False) else None,
        out_dir=tmp_path,
    )
    assert "pip install 'pathotune-cli[export]'" in done["onnx"]
    assert any("skipped the onnx export" in w for w in warnings)
    assert done["torchscript"].export == tmp_path / "model.ts"
    assert done["torchscript"].check["max_abs_diff"] <= 1e-4
    assert (tmp_path / "model.ts.card.md").is_file() and not (tmp_path / "model.onnx").exists()
