"""Slide-level models: the two-pass gradient, patient-grouped folds, and the feature files of the field."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pathotune_cli.config.run import MILSettings, PromptSettings
from pathotune_cli.engine.build import build_prompted_model
from pathotune_cli.engine.slide_model import make_slide_model
from pathotune_cli.errors import BadInput
from pathotune_cli.hardware import Placement
from pathotune_cli.training.mil_loop import two_pass_backward

from testdata import assert_close_to_scale, tiny_preset


@pytest.mark.parametrize("aggregator", ["abmil", "clam-sb", "mean"])
def test_the_two_pass_gradient_equals_direct_backpropagation(aggregator: str, demo_task) -> None:
    torch.manual_seed(0)
    built = build_prompted_model(demo_task, tiny_preset(), PromptSettings(method="pathotune"))
    settings = MILSettings(hidden=32, attention=16, dropout=0.0, k_sample=2)
    model = make_slide_model(built.model, 2, settings, aggregator).eval()
    with torch.no_grad():  # non-trivial prompts, as after some training
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    tiles = (torch.rand(10, 3, 64, 64) * 255).to(torch.uint8)
    params = [p for p in model.parameters() if p.requires_grad]
    placement = Placement("cpu", "fp32", "test")

    def same(images: torch.Tensor, chunk: int) -> torch.Tensor:
        return images

    two_pass_backward(model, tiles, 1, None, 3, placement, same)  # chunks of 3, 3, 3, 1
    def grads() -> list[torch.Tensor]:  # CLAM-SB's other-class instance classifier gets none: zeros
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    chunked = grads()
    model.zero_grad(set_to_none=True)
    features = model.tile_features(tiles.float() / 255)
    model.aggregator.loss(features, 1).backward()
    direct = grads()
    tile_params = {id(p) for p in model.tiles.parameters()}
    assert any(float(g.abs().max()) > 0 for g, p in zip(direct, params, strict=True) if id(p) in tile_params)
    # one gradient vector: a tensor whose summed gradient nearly cancels is judged on the scale of the rest
    assert_close_to_scale(torch.cat([g.flatten() for g in chunked]), torch.cat([g.flatten() for g in direct]))


def test_patient_folds_put_every_patient_in_one_fold_and_keep_classes_spread(demo_task) -> None:
    from pathotune_cli.training.slide_data import SlideItem, SlideSet, patient_folds

    items = tuple(SlideItem(f"s{i}", None, i % 2, f"p{i // 3}") for i in range(30))  # 10 patients, 3 slides each
    data = SlideSet(items, ("normal", "tumor"), "test")
    folds = patient_folds(data, 5, seed=0)
    assert sorted(i for f in folds for i in f) == list(range(30))
    for fold in folds:
        patients = {items[i].patient for i in fold}
        others = {items[i].patient for f in folds if f is not fold for i in f}
        assert not patients & others and fold
    assert folds == patient_folds(data, 5, seed=0) != patient_folds(data, 5, seed=1)


def test_trident_and_clam_feature_files_are_read_and_pickles_refused(tmp_path: Path) -> None:
    from pathotune_cli.formats import features_path
    from pathotune_cli.wsi.features_file import read_features

    trident = tmp_path / "trident" / "slide.h5"
    trident.parent.mkdir()
    with h5py.File(trident, "w") as h5:
        feats = h5.create_dataset("features", data=np.random.rand(5, 8).astype(np.float16))
        feats.attrs["encoder"] = "uni_v1"
        coords = h5.create_dataset("coords", data=np.arange(10, dtype=np.int64).reshape(5, 2))
        coords.attrs.update({"patch_size": 256, "patch_size_level0": 512, "level0_magnification": 40})
    clam = tmp_path / "clam" / "h5_files" / "slide.h5"
    clam.parent.mkdir(parents=True)
    with h5py.File(clam, "w") as h5:
        h5["features"] = np.random.rand(4, 8).astype(np.float32)
        h5["coords"] = np.arange(8, dtype=np.int32).reshape(4, 2)
    found = read_features(features_path(tmp_path / "trident", "slide"))
    assert (found.flavor, found.features.dtype, found.features.shape) == ("trident", np.float32, (5, 8))
    assert found.coords_attrs["patch_size_level0"] == 512 and found.fingerprint is None
    found = read_features(features_path(tmp_path / "clam", "slide"))
    assert (found.flavor, found.coords.dtype, found.coords.shape) == ("clam", np.int64, (4, 2))
    (tmp_path / "slide.pt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(BadInput, match="a PyTorch pickle; pathotune reads no pickles"):
        read_features(tmp_path / "slide.pt")
