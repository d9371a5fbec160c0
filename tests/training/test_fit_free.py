"""``--method prototypes``, ``knn`` and ``zeroshot``: fitted without a gradient step, stored in the prompt file,
and run through ``eval`` like any other method; zero-shot needs no training data at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml

from testdata import require_data

KATHER = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "patches" / "kather2016-dev"


def _no_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any optimiser step or backward pass fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a gradient step was taken")

    for cls in (torch.optim.AdamW, torch.optim.SGD, torch.optim.Adam):
        monkeypatch.setattr(cls, "step", refuse)
    monkeypatch.setattr(torch.Tensor, "backward", refuse)


@pytest.mark.parametrize("method", ["prototypes", "knn"])
def test_training_free_methods_fit_without_a_gradient_step_and_eval_reports_metrics(
    method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pathotune_cli.runs.tune as tune
    from pathotune_cli.engine import read_prompt_file
    from pathotune_cli.runs.evaluate import EvalOptions, eval_run
    from pathotune_cli.runs.export import ExportOptions, export_run

    kather = require_data(KATHER)
    _no_gradients(monkeypatch)
    built: dict[str, Any] = {}
    build = tune._build
    monkeypatch.setattr(tune, "_build", lambda *a, **k: built.setdefault("built", build(*a, **k)))
    config = tune.resolve_config(tune.TuneOptions(
        preset="kather2016", data=str(kather), backbone="tiny-random", method=method, out=str(tmp_path / "RUN"),
        precision="fp32", seed=0, sets=("knn.k=5",),
    ))
    result = tune.tune_run(config)
    model = built["built"].model
    assert all(p.grad is None for p in model.parameters())
    assert result.trainable_parameters == 0 and result.epochs_run == 1
    file = read_prompt_file(result.prompts)
    assert result.prompts_bytes == result.prompts.stat().st_size
    if method == "knn":
        assert file.tensors["head.bank"].shape == (result.train_images, 192)
        assert file.header.prompt.knn.k == 5
    else:
        assert file.tensors["head.prototypes"].shape == (8, 192)
    evaluated = eval_run(EvalOptions(prompts=result.prompts, data=str(kather), bootstrap=50, precision="fp32",
                                     out=str(tmp_path / "eval")))
    metrics = evaluated.scores["metrics"]
    assert 0 <= metrics["balanced_accuracy"]["value"] <= 1
    assert metrics["balanced_accuracy"]["value"] > 0.2  # well above chance (1/8) on the tiles it stores
    monkeypatch.undo()  # the exporters may take gradient-free steps of their own; only tuning is under test
    exported = export_run(ExportOptions(prompts=result.prompts, format="onnx", check_data=kather)).to_dict()
    assert exported["check"]["passed"] and exported["check"]["max_abs_diff"] <= 1e-4


def _tiny_clip_preset(tmp_path: Path) -> Path:
    """clip-vit-b16 shrunk to 2 blocks of width 64 at 32 px, random weights: a real open_clip text tower."""
    from pathotune_cli.config import find_preset
    from pathotune_cli.config.loader import read_yaml

    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    data = read_yaml(find_preset("backbones", "clip-vit-b16"))
    data.update(name="test-clip-zeroshot", model="test-CLIP-zeroshot", model_kwargs={"model_cfg": cfg},
                weights="random", weight_files=[], width=64, input_size=32, patch_size=16)
    path = tmp_path / "test-clip-zeroshot.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_zeroshot_on_an_open_clip_preset_runs_end_to_end_with_no_training_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathotune_cli.engine import load_prompted_model, read_prompt_file
    from pathotune_cli.runs.export import ExportOptions, export_run
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    _no_gradients(monkeypatch)
    config = resolve_config(TuneOptions(preset="kather2016", backbone=str(_tiny_clip_preset(tmp_path)),
                                        method="zeroshot", out=str(tmp_path / "RUN"), precision="fp32"))
    assert config.data is None
    result = tune_run(config)
    assert result.train_images == 0 and result.validation is None
    file = read_prompt_file(result.prompts)
    assert file.header.method == "zeroshot" and file.header.text_encoder == "self"
    assert file.header.texts == config.task.texts()[1:]  # one description per class, as TTP uses them
    assert file.tensors["head.text"].shape == (8, 32)
    model, _ = load_prompted_model(result.prompts)
    bb = model.backbone
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probs = torch.softmax(model(images), dim=-1)
        ours = F.normalize(model.features(images) @ model.head.projection, dim=-1)
        clip_image = F.normalize(bb.clip.encode_image(bb.normalise(images)), dim=-1)  # open_clip's own
        clip_logits = bb.clip.logit_scale.exp().clamp(max=100) * clip_image @ bb.encode_text(file.header.texts).t()
    assert probs.shape == (3, 8) and torch.allclose(probs.sum(-1), torch.ones(3))
    assert torch.allclose(ours, clip_image, atol=1e-5)
    assert torch.allclose(model(images), clip_logits, atol=1e-3)
    exported = export_run(ExportOptions(prompts=result.prompts, format="torchscript")).to_dict()
    assert exported["check"]["passed"] and exported["check"]["max_abs_diff"] <= 1e-4


def test_zeroshot_on_a_backbone_without_a_text_tower_is_refused() -> None:
    from pathotune_cli.errors import BadInput
    from pathotune_cli.runs.tune import TuneOptions, resolve_config

    with pytest.raises(BadInput, match="method 'zeroshot' needs a backbone with a text tower; 'tiny-random'"):
        resolve_config(TuneOptions(preset="kather2016", backbone="tiny-random", method="zeroshot"))
