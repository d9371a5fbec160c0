"""QuiltNet-B-32 and CLIP ViT-B/16 as open_clip checkpoints with their text towers, on faithful small models.

The small configs keep the real towers' structure (patch size, CLS token, CLIP BPE vocabulary and 77-token
context) and shrink widths and depths. QuiltNet's file is ``open_clip_pytorch_model.bin`` in its hub repository,
CLIP's is ``open_clip_model.safetensors`` in timm's; both are found in a Hugging Face cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from testdata import assert_close_to_scale

CASES = {
    "quiltnet-b32": ("test-QuiltNet-B-32-small", 32, 64, "open_clip_pytorch_model.bin"),
    "clip-vit-b16": ("test-CLIP-B-16-small", 16, 32, "open_clip_model.safetensors"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_open_clip_checkpoint_with_text_tower_loads_and_tunes(
    name: str, small_preset, hf_cache, tune, tmp_path: Path
) -> None:
    from pathotune_cli.backbones import load_backbone
    from pathotune_cli.config import load_backbone_preset

    model_name, patch, px, filename = CASES[name]
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": px, "layers": 2, "width": 64, "patch_size": patch},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / f"{model_name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    reference = open_clip.create_model(model_name, pretrained=None).eval()
    real = load_backbone_preset(name)
    path = hf_cache(real.weights.removeprefix("hf-hub:"), filename)
    state = reference.state_dict()
    if filename.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)

    yaml_path = small_preset(name, model=model_name, model_kwargs={"model_cfg": cfg}, width=64, input_size=px,
                             patch_size=patch)
    preset = load_backbone_preset(yaml_path)
    backbone = load_backbone(preset)
    assert backbone.weight_source.kind == "hf-cache"
    images = torch.rand(2, 3, px, px)
    normalised = (images - torch.tensor(preset.mean).view(1, 3, 1, 1)) / torch.tensor(preset.std).view(1, 3, 1, 1)
    texts = ["an H&E patch of tumour", "adipose tissue"]
    tokenizer = open_clip.get_tokenizer(model_name)
    with torch.no_grad():
        assert_close_to_scale(backbone(images) @ reference.visual.proj, reference.encode_image(normalised))
        expected_text = torch.nn.functional.normalize(reference.encode_text(tokenizer(texts)), dim=-1)
    assert_close_to_scale(backbone.encode_text(texts), expected_text)
    tune(yaml_path)
