"""``--method lora`` on the real Kather tiles: the frozen backbone stays bit-identical, only adapters and head
train, the prompt file reloads to the same logits, and the ONNX and WSInfer exports agree with ``predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from testdata import require_data

KATHER = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "patches" / "kather2016-dev"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One epoch of ``--method lora`` (rank 4, qkv and proj) on tiny-random; the model as training left it."""
    import pathotune_cli.runs.tune as tune
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    kather = require_data(KATHER)
    built: dict[str, Any] = {}
    build = tune._build

    mp = pytest.MonkeyPatch()
    mp.setattr(tune, "_build", lambda *a, **k: built.setdefault("built", build(*a, **k)))
    try:
        config = resolve_config(TuneOptions(
            preset="kather2016", data=str(kather), backbone="tiny-random", method="lora",
            out=str(tmp_path_factory.mktemp("lora") / "RUN"), epochs=1, precision="fp32", seed=0,
            sets=("lora.rank=4", "lora.targets=[qkv,proj]", "train.lr=1e-2"),
        ))
        result = tune_run(config)
    finally:
        mp.undo()
    return {"result": result, "model": built["built"].model, "kather": kather}


def _pinned(model: Any) -> Any:
    from pathotune_cli.config.run import KernelSpec
    from pathotune_cli.hardware import Placement

    return model.place(Placement("cpu", "fp32", "test"), "inference", KernelSpec.parse("fused,fp32")).eval()


def test_lora_leaves_the_frozen_backbone_bit_identical_and_trains_only_adapters_and_head(lora_run: dict) -> None:
    from pathotune_cli.backbones import load_backbone
    from pathotune_cli.config import load_backbone_preset

    model = lora_run["model"]
    fresh = load_backbone(load_backbone_preset("tiny-random")).frozen_state()
    trained = model.backbone.frozen_state()
    assert fresh.keys() == trained.keys()
    assert all(torch.equal(fresh[k], trained[k]) for k in fresh)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    names = set(model.trained_state())
    assert names == {n for n in names if n.startswith(("lora.", "head."))}
    assert {n for n in names if n.startswith("lora.")} == {
        f"lora.layers.vit_blocks_{i}_attn_{t}.{ab}.weight"
        for i in range(model.backbone.num_blocks) for t in ("qkv", "proj") for ab in ("down", "up")
    }
    assert any(float(model.trained_state()[n].abs().max()) > 0 for n in names if n.endswith("up.weight"))


def test_lora_prompt_file_reloads_to_the_same_logits_and_reports_its_size(lora_run: dict) -> None:
    from pathotune_cli.engine import load_prompted_model, read_prompt_file

    result = lora_run["result"]
    assert result.method == "lora" and result.prompts_bytes == result.prompts.stat().st_size
    assert result.prompts_bytes < 400_000
    header = read_prompt_file(result.prompts).header
    assert header.prompt.lora_rank == 4 and header.prompt.lora.targets == ["qkv", "proj"]
    reloaded, _ = load_prompted_model(result.prompts)
    trained = lora_run["model"]
    images = torch.rand(4, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = _pinned(reloaded)(images), _pinned(trained)(images)
        bare = trained.head(trained.backbone(images))  # the adapters are off outside PromptedModel.features
    assert torch.equal(got, want)
    assert not torch.allclose(got, bare, atol=1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "wsinfer"])
def test_lora_exports_agree_with_predict(lora_run: dict, fmt: str) -> None:
    from pathotune_cli.runs.export import ExportOptions, export_run

    doc = export_run(ExportOptions(prompts=lora_run["result"].prompts, format=fmt,
                                   check_data=lora_run["kather"])).to_dict()
    assert doc["check"]["passed"] and doc["check"]["max_abs_diff"] <= 1e-4 and doc["check"]["real_tiles"] > 0


def test_lora_rank_zero_and_a_backbone_without_targets_are_refused() -> None:
    from pathotune_cli.errors import BadInput
    from pathotune_cli.runs.tune import TuneOptions, resolve_config

    with pytest.raises(BadInput, match="method 'lora' needs lora.rank > 0"):
        resolve_config(TuneOptions(preset="demo", data="x", backbone="tiny-random", method="lora",
                                   sets=("lora.rank=0",)))
    with pytest.raises(BadInput, match="lora.rank is for methods"):
        resolve_config(TuneOptions(preset="demo", data="x", backbone="tiny-random", method="knn",
                                   sets=("lora.rank=8",)))


def test_lora_combines_with_prompts_and_leaves_the_bare_backbone_and_instance_encoder_unadapted() -> None:
    from pathotune_cli.backbones import load_backbone
    from pathotune_cli.config import load_backbone_preset, load_task_preset
    from pathotune_cli.config.run import PromptSettings
    from pathotune_cli.engine import build_prompted_model

    preset = load_backbone_preset("tiny-random")
    settings = PromptSettings(method="pathotune", lora={"rank": 2, "targets": ["mlp"]}, ttp={"encoder": "hash"})
    model = build_prompted_model(load_task_preset("demo"), preset, settings).model.eval()
    names = set(model.trained_state())
    assert "tvp.tokens" in names and any(n.startswith("vrm.") for n in names)
    assert {n for n in names if n.startswith("lora.")} == {
        f"lora.layers.vit_blocks_{i}_mlp_fc{j}.{ab}.weight" for i in range(4) for j in (1, 2) for ab in ("down", "up")
    }
    images = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(images)
        for layer in model.lora.layers.values():
            torch.nn.init.normal_(layer.up.weight, std=0.5)
        after = model(images)
        bare = load_backbone(preset).eval()(images)
        assert torch.allclose(model.backbone(images), bare) and torch.allclose(model.instance_features(images), bare)
    assert not torch.allclose(before, after, atol=1e-4)
