"""The prompt file: only trained tensors, small, reproduces logits exactly, refuses other backbones and damage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pathotune_cli.backbones.fingerprint import fingerprint
from pathotune_cli.config.run import PromptSettings
from pathotune_cli.engine import build_prompted_model, load_prompted_model, prompt_header, save_prompt_file
from pathotune_cli.engine.promptfile import read_prompt_file, write_raw
from pathotune_cli.errors import BadInput

from testdata import break_prompt_metadata


def _save(tmp_path: Path, task, preset, method: str = "pathotune", name: str = "p.safetensors") -> tuple[Path, object]:
    torch.manual_seed(0)
    built = build_prompted_model(task, preset, PromptSettings(method=method))
    with torch.no_grad():  # make the prompts non-trivial, as after training
        for p in built.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    path = save_prompt_file(tmp_path / name, built.model.trained_state(), prompt_header(built, task, preset))
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
    assert file.header.classes == demo_task.class_names
    assert file.header.backbone.fingerprint == fingerprint(built.model.backbone.frozen_state())
    assert file.header.texts == demo_task.texts()
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
    path, _ = _save(tmp_path, demo_task, tiny_preset())
    file = read_prompt_file(path)
    tensors = dict(file.tensors)
    tensors["head.weight"] = torch.zeros(5, tensors["head.weight"].shape[1])
    altered = write_raw(tmp_path / "altered.safetensors", tensors, file.header.to_json())  # checksum made to fit
    with pytest.raises(BadInput, match=r"tensor 'head.weight' has shape \(5, 64\), expected \(4, 64\)"):
        load_prompted_model(altered)


def _flip(path: Path, at: int, out: Path) -> Path:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x01
    out.write_bytes(bytes(raw))
    return out


def test_a_flipped_byte_anywhere_is_refused(tmp_path: Path, tiny_preset, demo_task) -> None:
    import struct

    path, _ = _save(tmp_path, demo_task, tiny_preset())
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    in_description = raw.index(b"colorectal" if b"colorectal" in raw else b"purple")  # a byte inside a metadata string
    places = {"metadata string": in_description, "tensor data": 8 + header_len + 100, "last byte": len(raw) - 1}
    for what, at in places.items():
        flipped = _flip(path, at, tmp_path / f"flipped-{at}.safetensors")
        with pytest.raises(BadInput, match="checksum does not match|not a readable|does not parse") as info:
            read_prompt_file(flipped)
        assert "\n" not in info.value.one_line() and str(flipped) in info.value.one_line(), what


def test_format_1_files_are_read_and_newer_ones_refused_by_name(tmp_path: Path, tiny_preset, demo_task) -> None:
    path, _ = _save(tmp_path, demo_task, tiny_preset())
    file = read_prompt_file(path)
    old = file.header.to_json()
    old["format_version"] = 1
    old["backbone"].pop("weight_source")
    from safetensors.torch import save_file

    save_file(dict(file.tensors), str(tmp_path / "v1.safetensors"), metadata={"pathotune": json.dumps(old)})
    read_v1 = read_prompt_file(tmp_path / "v1.safetensors")  # no checksum in format 1
    assert read_v1.header.format_version == 1 and read_v1.header.backbone.weight_source is None
    newer = {**file.header.to_json(), "format_version": 7}
    write_raw(tmp_path / "v7.safetensors", dict(file.tensors), newer)
    with pytest.raises(BadInput, match="format version 7; this pathotune reads versions 1, 2") as info:
        read_prompt_file(tmp_path / "v7.safetensors")
    assert info.value.fix == "upgrade pathotune"


def test_prompt_file_with_unparseable_metadata_is_refused(tmp_path: Path, tiny_preset, demo_task) -> None:
    path, _ = _save(tmp_path, demo_task, tiny_preset())
    bad = break_prompt_metadata(path, tmp_path / "bad.safetensors")
    with pytest.raises(BadInput, match="metadata does not parse"):
        read_prompt_file(bad)


def test_prompt_files_get_the_umasks_mode_0644_by_default(
    tmp_path: Path, tiny_preset, demo_task, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setattr("pathotune_cli.files._UMASK", None)  # read again under the umask set here
    old = os.umask(0o022)
    try:
        path, _ = _save(tmp_path, demo_task, tiny_preset())
    finally:
        os.umask(old)
        monkeypatch.setattr("pathotune_cli.files._UMASK", None)
    assert path.stat().st_mode & 0o777 == 0o644  # safetensors itself creates 0600 files
