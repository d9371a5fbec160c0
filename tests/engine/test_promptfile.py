"""The prompt file: only trained tensors, small, reproduces logits exactly, refuses other backbones and damage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pathotune_cli.backbones.fingerprint import fingerprint
from pathotune_cli.config.run import PromptSettings
from pathotune_cli.engine import build_prompted_model, load_prompted_model, prompt_file_meta, save_prompt_file
from pathotune_cli.engine.promptfile import read_prompt_file
from pathotune_cli.errors import BadInput

from testdata import break_prompt_metadata


def _save(tmp_path: Path, task, preset, method: str = "pathotune", name: str = "p.safetensors") -> tuple[Path, object]:  # noqa: ANN001
    torch.manual_seed(0)
    built = build_prompted_model(task, preset, PromptSettings(method=method))
    with torch.no_grad():  # make the prompts non-trivial, as after training
        for p in built.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    path = save_prompt_file(tmp_path / name, built.model.trained_state(), prompt_file_meta(built, task, preset))
    return path, built


@pytest.mark.parametrize("method", ["linear", "vpt", "pathotune"])
def test_reloaded_prompt_file_reproduces_logits_exactly(tmp_path: Path, tiny_preset, demo_task, method: str) -> None:
    preset = tiny_preset()
    path, built = _save(tmp_path, demo_task, preset, method)
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        expected = built.model.eval()(images)
        model, _ = load_prompted_model(path)
        got = model(images)
    assert torch.equal(expected, got)


def test_prompt_file_holds_only_trained_tensors_and_stored_text(tmp_path: Path, tiny_preset, demo_task) -> None:
    path, built = _save(tmp_path, demo_task, tiny_preset())
    file = read_prompt_file(path)
    trainable = {n for n, p in built.model.named_parameters() if p.requires_grad}
    assert set(file.tensors) == trainable | {"ttp.text_embeddings"}
    assert not any(name.startswith("backbone.") for name in file.tensors)
    assert file.meta["classes"] == demo_task.class_names
    assert file.meta["backbone"]["fingerprint"] == fingerprint(built.model.backbone.frozen_state())
    assert file.meta["texts"] == demo_task.texts()
    assert file.tensors["ttp.text_embeddings"].shape[0] == len(demo_task.texts())


@pytest.mark.parametrize("method", ["vpt", "pathotune"])
def test_prompt_file_is_under_two_percent_of_a_vit_b(tmp_path: Path, tiny_preset, demo_task, method: str) -> None:
    vit_b = tiny_preset(name="vit-b-random", model="vit_base_patch16_224", model_kwargs={}, input_size=224, width=768)
    path, built = _save(tmp_path, demo_task, vit_b, method)
    backbone_bytes = sum(p.numel() * p.element_size() for p in built.model.backbone.parameters())
    assert path.stat().st_size < 0.02 * backbone_bytes
    assert built.model.trainable_parameters() < 0.02 * built.model.backbone_parameters()


def test_prompt_file_refuses_other_backbone(tmp_path: Path, tiny_preset, demo_task) -> None:
    from safetensors.torch import save_file

    from pathotune_cli.backbones import load_backbone

    path, _ = _save(tmp_path, demo_task, tiny_preset())
    other = load_backbone(tiny_preset())
    state = {k: v + 0.01 for k, v in other.vit.state_dict().items()}
    save_file(state, str(tmp_path / "other.safetensors"))
    with pytest.raises(
        BadInput,
        match=r"tuned on backbone 'test-tiny' \(fingerprint [0-9a-f]+\), but the weights loaded here "
        r"\(explicit: .*other.safetensors\) are a different backbone",
    ):
        load_prompted_model(path, weights=tmp_path / "other.safetensors")


def test_truncated_prompt_file_is_refused_in_one_line(tmp_path: Path, tiny_preset, demo_task) -> None:
    path, _ = _save(tmp_path, demo_task, tiny_preset())
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="not a readable prompt file") as info:
        read_prompt_file(cut)
    assert "\n" not in info.value.one_line()


def test_prompt_file_with_altered_tensor_shape_is_refused(tmp_path: Path, tiny_preset, demo_task) -> None:
    from safetensors.torch import save_file

    path, _ = _save(tmp_path, demo_task, tiny_preset())
    file = read_prompt_file(path)
    tensors = dict(file.tensors)
    tensors["head.weight"] = torch.zeros(5, tensors["head.weight"].shape[1])
    altered = tmp_path / "altered.safetensors"
    save_file(tensors, str(altered), metadata={"pathotune": json.dumps(file.meta)})
    with pytest.raises(BadInput, match=r"tensor 'head.weight' has shape \(5, 64\), expected \(4, 64\)"):
        load_prompted_model(altered)


def test_prompt_file_with_unparseable_metadata_is_refused(tmp_path: Path, tiny_preset, demo_task) -> None:
    path, _ = _save(tmp_path, demo_task, tiny_preset())
    bad = break_prompt_metadata(path, tmp_path / "bad.safetensors")
    with pytest.raises(BadInput, match="metadata does not parse"):
        read_prompt_file(bad)
