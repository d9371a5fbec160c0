"""PathoDuet HE and IHC on faithful small checkpoints in the original ``VisionTransformerMoCo`` layout.

The small checkpoint has what the released ``checkpoint_HE.pth`` has: ``pretext_token``, ``cls_token``, a
``pos_embed`` with two prefix rows, ``fc_norm`` (the model was trained with ``global_pool='avg'``) and the MoCo
projector under ``head.*``; the IHC one also carries the training-only token its preset drops. Features through
``pathotune`` must equal the original forward: ``[pretext, cls, patches] + pos_embed``, blocks, the mean of the
patch tokens, then ``fc_norm``, on unnormalised pixels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from pathotune_cli.errors import BadInput

from testdata import assert_close_to_scale

D, PX = 64, 32


def _checkpoint(extra: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, global_pool="avg",
                            img_size=PX, depth=2, embed_dim=D, num_heads=2)
    state = {k: v for k, v in vit.state_dict().items() if k != "pos_embed"}
    state["pretext_token"] = torch.randn(1, 1, D)
    # non-zero prefix rows (the release has zeros) so the test proves each token meets its own row
    state["pos_embed"] = torch.randn(1, 2 + (PX // 16) ** 2, D)
    state["head.0.weight"] = torch.randn(128, D)  # MoCo v3 projector: a training head
    state["head.1.running_mean"] = torch.zeros(128)
    state.update(extra or {})
    return state


def _original_forward(state: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """PathoDuet's own order of operations, on its own keys."""
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, global_pool="avg",
                            img_size=PX, depth=2, embed_dim=D, num_heads=2).eval()
    vit.load_state_dict({k: v for k, v in state.items() if k in vit.state_dict() and k != "pos_embed"}, strict=False)
    with torch.no_grad():
        x = vit.patch_embed(images)
        batch = x.shape[0]
        x = torch.cat([state["pretext_token"].expand(batch, -1, -1), state["cls_token"].expand(batch, -1, -1), x], 1)
        x = vit.blocks(x + state["pos_embed"])
        return vit.fc_norm(x[:, 2:].mean(dim=1))


@pytest.mark.parametrize("name, extra", [("pathoduet-he", {}), ("pathoduet-ihc", {"mask_token": torch.zeros(1, 1, D)})])
def test_pathoduet_checkpoint_loads_like_the_original_and_tunes(
    name: str, extra: dict, small_preset, tune, features_of, tmp_path: Path
) -> None:
    from pathotune_cli.runs.weights import add_weights

    state = _checkpoint(extra)
    file = tmp_path / ("checkpoint_HE.pth" if name.endswith("he") else "checkpoint_IHC.pth")
    torch.save(state, file)
    yaml_path = small_preset(name, model_kwargs={"depth": 2, "embed_dim": D, "num_heads": 2}, width=D, input_size=PX)
    images = torch.rand(2, 3, PX, PX)
    assert_close_to_scale(features_of(yaml_path, images, file), _original_forward(state, images))

    # the lab's path: record the local file once (`pathotune weights add`), then tune without --weights
    result = add_weights(str(yaml_path), file)
    assert result.tensors == len(state) - 2 - len(extra) and result.sha256_check == "no published hash to compare"
    tune(yaml_path)


def test_an_unknown_key_in_a_pathoduet_checkpoint_is_named(small_preset, tmp_path: Path) -> None:
    from pathotune_cli.backbones import load_backbone
    from pathotune_cli.config import load_backbone_preset

    file = tmp_path / "checkpoint_IHC.pth"
    state = _checkpoint({"mask_token": torch.zeros(1, 1, D), "decoder_embed.weight": torch.zeros(4, D)})
    del state["blocks.1.norm2.bias"]
    torch.save(state, file)
    preset = load_backbone_preset(
        small_preset("pathoduet-ihc", model_kwargs={"depth": 2, "embed_dim": D, "num_heads": 2}, width=D, input_size=PX)
    )
    with pytest.raises(BadInput, match=r"missing keys blocks\.1\.norm2\.bias; unexpected keys decoder_embed\.weight"):
        load_backbone(preset, file)


def test_a_non_pathoduet_checkpoint_is_refused_by_name(small_preset, tmp_path: Path) -> None:
    from pathotune_cli.backbones import load_backbone
    from pathotune_cli.config import load_backbone_preset

    file = tmp_path / "vit.pth"
    torch.save({"cls_token": torch.zeros(1, 1, D)}, file)
    preset = load_backbone_preset(
        small_preset("pathoduet-he", model_kwargs={"depth": 2, "embed_dim": D, "num_heads": 2}, width=D, input_size=PX)
    )
    with pytest.raises(BadInput, match="has no pretext_token, so it is not a PathoDuet checkpoint"):
        load_backbone(preset, file)
