"""The last block of a class-token model computes only the class token: the same features and gradients.

``head_rows_of_block`` re-states timm's ``Block`` and ``Attention`` for a subset of query rows; every variant of
those modules the catalogue uses (qkv bias or not, q/k norm, LayerScale, gated attention, registers, fused or
plain attention) must give the whole block's rows, and anything else must run the whole block.
"""

from __future__ import annotations

import pytest
import torch
from timm.layers import Attention
from timm.models.vision_transformer import Block
from torch import nn

from pathotune_cli.backbones.timm_vit import _plain_block, head_rows_of_block

from testdata import assert_close_to_scale

VARIANTS = {
    "plain": {},
    "qkv bias": {"qkv_bias": True},
    "qk norm": {"qk_norm": True},
    "layer scale": {"init_values": 1e-2},
}


def _block(**kwargs: object) -> Block:
    torch.manual_seed(0)
    block = Block(dim=32, num_heads=4, **kwargs).eval()
    for p in block.parameters():  # LayerScale and qk-norm weights start at trivial values: move them
        nn.init.normal_(p, std=0.2)
    return block


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("rows", [1, 5])
def test_head_rows_equal_the_whole_blocks_rows(variant: str, fused: bool, rows: int) -> None:
    block = _block(**VARIANTS[variant])
    block.attn.fused_attn = fused
    x = torch.randn(3, 11, 32, requires_grad=True)
    whole = block(x)[:, :rows]
    head = head_rows_of_block(block, x, rows)
    assert head.shape == (3, rows, 32)
    assert_close_to_scale(head, whole)
    weight = torch.randn_like(head)
    (g_whole,) = torch.autograd.grad((whole * weight).sum(), x)
    (g_head,) = torch.autograd.grad((head * weight).sum(), x)
    assert_close_to_scale(g_head, g_whole)  # every token still feeds the keys


def test_gated_attention_and_bf16_autocast() -> None:
    block = _block()
    block.attn = Attention(32, num_heads=4, gated=True).eval()
    for p in block.attn.parameters():
        nn.init.normal_(p, std=0.2)
    assert _plain_block(block)
    x = torch.randn(2, 9, 32)
    assert_close_to_scale(head_rows_of_block(block, x, 1), block(x)[:, :1])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        whole, head = block(x)[:, :1].float(), head_rows_of_block(block, x, 1).float()
    assert_close_to_scale(head, whole, rel=0.02)  # bf16 rounds at 2^-8: a few roundings


def test_other_blocks_run_whole() -> None:
    class RotaryBlock(Block):
        pass

    assert _plain_block(_block())
    assert not _plain_block(RotaryBlock(dim=32, num_heads=4))
    assert not _plain_block(nn.TransformerEncoderLayer(32, 4))


@pytest.mark.parametrize("pool", ["token", "avg", "token+avg"])
def test_backbone_and_prompted_features_match_whole_blocks(pool: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathotune_cli.backbones import load_backbone
    from pathotune_cli.backbones.base import Backbone
    from pathotune_cli.config import load_task_preset
    from pathotune_cli.config.run import PromptSettings
    from pathotune_cli.engine.build import build_prompted_model

    from testdata import tiny_preset

    torch.manual_seed(0)
    preset = tiny_preset(pool=pool, num_prefix_tokens=5, num_register_tokens=4, model_kwargs={
        "depth": 3, "embed_dim": 64, "num_heads": 2, "reg_tokens": 4, "no_embed_class": True, "init_values": 0.1})
    backbone = load_backbone(preset)
    images = torch.rand(4, 3, 64, 64)
    task = load_task_preset("demo")
    model = build_prompted_model(task, preset, PromptSettings(method="pathotune")).model.eval()
    fast_feats = backbone(images)
    fast_logits = model(images)
    fast_grads = torch.autograd.grad(fast_logits.square().sum(), [p for p in model.parameters() if p.requires_grad])
    monkeypatch.setattr(type(backbone), "block_head", Backbone.block_head)  # the whole last block
    assert_close_to_scale(backbone(images), fast_feats)
    slow_logits = model(images)
    assert_close_to_scale(slow_logits, fast_logits)
    slow_grads = torch.autograd.grad(slow_logits.square().sum(), [p for p in model.parameters() if p.requires_grad])
    for fast, slow in zip(fast_grads, slow_grads, strict=True):
        assert_close_to_scale(fast, slow)
