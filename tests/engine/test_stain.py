"""The stain normaliser inside the model against torchstain (and torchstain against torch-staintools) on real
tiles; tiles it cannot normalise pass through without NaN; the reference fit refuses a reference with no stain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from testdata import KATHER, require_data


def _real_tiles(step: int = 5) -> tuple[list[Path], torch.Tensor]:
    """Every ``step``-th real Kather tile as uint8 (N, 3, 224, 224)."""
    from PIL import Image

    paths = sorted(require_data(KATHER).rglob("*.png"))[::step]
    tiles = np.stack([np.array(Image.open(p).convert("RGB")) for p in paths])
    return paths, torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def tiles() -> torch.Tensor:
    return _real_tiles()[1]


def _fitted(method: str, reference: torch.Tensor):
    from pathotune_cli.engine.stain import StainNormaliser
    from pathotune_cli.engine.stain_fit import fit_reference

    return StainNormaliser(method, fit_reference(method, reference.reshape(3, -1), "test tile"))


def test_macenko_module_matches_torchstain_per_tile_on_real_tiles(tiles: torch.Tensor) -> None:
    from torchstain.torch.normalizers import TorchMacenkoNormalizer

    module = _fitted("macenko", tiles[3])
    library = TorchMacenkoNormalizer()
    library.HERef, library.maxCRef = module.he_ref.clone(), module.max_c_ref.clone()
    ours = module(tiles.float() / 255) * 255
    for i, tile in enumerate(tiles):
        theirs, _, _ = library.normalize(tile, stains=False)  # int (H, W, 3), truncated from float
        diff = (ours[i] - theirs.permute(2, 0, 1).float()).abs()
        assert float(diff.mean()) < 0.75 and float(diff.max()) <= 3.0, (i, float(diff.mean()), float(diff.max()))
    assert not torch.equal(ours.round(), tiles.float())  # it did change the tiles


def test_reinhard_module_matches_torchstain_per_tile_on_real_tiles(tiles: torch.Tensor) -> None:
    from torchstain.torch.normalizers import TorchReinhardNormalizer

    module = _fitted("reinhard", tiles[3])
    library = TorchReinhardNormalizer()
    library.fit(tiles[3].reshape(3, 1, -1))
    ours = module(tiles.float() / 255) * 255
    for i, tile in enumerate(tiles):
        theirs = library.normalize(tile).permute(2, 0, 1).float()  # uint8 (H, W, 3), truncated
        diff = (ours[i] - theirs).abs()
        assert float(diff.mean()) < 0.75 and float(diff.max()) <= 2.0, (i, float(diff.mean()), float(diff.max()))


def test_torchstain_and_torch_staintools_find_the_same_stain_vectors(tiles: torch.Tensor) -> None:
    from torch_staintools.normalizer import NormalizerBuilder
    from torchstain.torch.normalizers import TorchMacenkoNormalizer

    for tile in tiles[:: max(1, len(tiles) // 4)]:
        ours = TorchMacenkoNormalizer()
        ours.fit(tile)
        other = NormalizerBuilder.build("macenko", concentration_solver="ls", luminosity_threshold=None)
        other.fit(tile[None].float() / 255)
        a = torch.nn.functional.normalize(ours.HERef.T.float(), dim=1)
        b = torch.nn.functional.normalize(other.stain_matrix_target[0].float(), dim=1)
        assert (a * b).sum(1).min() > 0.99


def test_batch_result_equals_one_tile_at_a_time(tiles: torch.Tensor) -> None:
    for method in ("macenko", "reinhard"):
        module = _fitted(method, tiles[0])
        x = tiles[:6].float() / 255
        together = module(x)
        alone = torch.cat([module(x[i : i + 1]) for i in range(len(x))])
        assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_empty_saturated_and_uniform_tiles_pass_through_without_nan(tiles: torch.Tensor, method: str) -> None:
    module = _fitted(method, tiles[0])
    size = 64
    white = torch.ones(1, 3, size, size)
    black = torch.zeros(1, 3, size, size)
    grey = torch.full((1, 3, size, size), 0.5)
    speck = white.clone()
    speck[0, :, :3, :3] = torch.tensor([0.4, 0.1, 0.5])[:, None, None]  # 9 stained pixels on glass
    saturated = torch.zeros(1, 3, size, size)
    saturated[0, 0] = 1.0  # pure red: one channel of no density at all, two of full
    batch = torch.cat([white, black, grey, speck, saturated, tiles[:1, :, :size, :size].float() / 255])
    out = module(batch)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    for i in range(3):  # nothing to normalise: as given
        assert torch.equal(out[i], batch[i]), i
    if method == "macenko":
        assert torch.equal(out[3], batch[3])  # too few stained pixels
    grads = batch.clone().requires_grad_(True)
    module(grads).sum().backward()  # explain's attributions go through it
    assert torch.isfinite(grads.grad).all()


def test_reference_without_stain_is_refused_with_the_fix() -> None:
    from pathotune_cli.engine.stain_fit import fit_reference
    from pathotune_cli.errors import BadInput

    glass = torch.full((3, 4096), 250, dtype=torch.uint8)
    for method in ("macenko", "reinhard"):
        with pytest.raises(BadInput, match="stain") as info:
            fit_reference(method, glass, "glass.png")
        assert "--stain-reference" in info.value.fix


def test_reference_from_a_folder_fits_the_pixels_of_every_image(tmp_path: Path) -> None:
    from pathotune_cli.engine.stain_fit import image_reference

    paths, _ = _real_tiles(step=19)
    folder = tmp_path / "ref"
    folder.mkdir()
    for p in paths:
        (folder / p.name).write_bytes(p.read_bytes())
    module, spec = image_reference("macenko", folder)
    assert spec.method == "macenko" and spec.reference.startswith(f"{len(paths)} images in")
    assert spec.library.startswith("torchstain ")
    assert module.he_ref.shape == (3, 2) and torch.isfinite(module.he_ref).all()
