"""Stain normalisation inside the model: a torch module on the RGB input, before the backbone's normalisation.

The prompt file stores the method and its fitted reference (``stain.*`` tensors, covered by the checksum), and
``PromptedModel.features`` applies it first, so ``eval``, ``predict``, ``features``, ``explain`` and every export
apply it without knowing. The reference is fitted with torchstain (``engine.stain_fit``); torchstain's
normalisers work on one uint8 image at a time with ``eigh``, ``kthvalue``, boolean indexing and ``lstsq``, which
neither a batch nor a traced or exported graph can carry. This module applies the same mathematics per image of
a batch with plain tensor operations (sorting for percentiles, matrix powers for the two leading eigenvectors of
the 3x3 optical-density covariance, a closed-form 2x2 inverse for the least squares), in float32 elementwise
operations that autocast leaves alone. ``tests/engine/test_stain.py`` checks it against torchstain on real tiles.

A tile that cannot be normalised (too few stained pixels, a saturated or uniform tile) passes through unchanged:
never a NaN.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

StainMethod = Literal["none", "macenko", "reinhard"]
IO = 240.0
"""Transmitted light intensity (torchstain's default)."""
ALPHA = 1.0
"""Macenko: percentile of the stain angles taken as the two stain vectors (torchstain's default)."""
BETA = 0.15
"""Macenko: optical density below which a pixel counts as transparent (torchstain's default)."""
MIN_STAINED = 64
"""Macenko: a tile with fewer stained pixels passes through unchanged (ours)."""
EPS = 1e-6
REFERENCE_TENSORS: dict[str, tuple[str, ...]] = {
    "macenko": ("he_ref", "max_c_ref"),
    "reinhard": ("lab_mean", "lab_std"),
}
"""The reference tensors each method stores (prefixed ``stain.`` in the prompt file)."""
_SQUARINGS = 10
"""Power iteration by repeated squaring: the covariance to the power 1024."""


class StainNormaliser(nn.Module):
    """RGB floats in [0, 1], (B, 3, H, W), normalised per image towards a fitted reference; same shape out."""

    def __init__(self, method: str, reference: dict[str, torch.Tensor]) -> None:
        super().__init__()
        if method not in REFERENCE_TENSORS:
            raise ValueError(f"stain method must be one of {', '.join(REFERENCE_TENSORS)}, got {method!r}")
        self.method = method
        for name in REFERENCE_TENSORS[method]:
            self.register_buffer(name, reference[name].detach().to(torch.float32).clone())

    def reference(self) -> dict[str, torch.Tensor]:
        """The fitted reference tensors, by name."""
        return {name: getattr(self, name).detach() for name in REFERENCE_TENSORS[self.method]}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images; tiles that cannot be normalised come back as they were."""
        x = images.float()
        out = _macenko(x, self.he_ref, self.max_c_ref) if self.method == "macenko" else _reinhard(
            x, self.lab_mean, self.lab_std)
        return out.to(images.dtype)


def reference_shapes(method: str) -> dict[str, tuple[int, ...]]:
    """The shape of each reference tensor of ``method``."""
    return {"macenko": {"he_ref": (3, 2), "max_c_ref": (2,)},
            "reinhard": {"lab_mean": (3,), "lab_std": (3,)}}[method]


# -- Macenko (ISBI 2009), as torchstain's TorchMacenkoNormalizer.normalize, per image of a batch -------------------
def _macenko(x: torch.Tensor, he_ref: torch.Tensor, max_c_ref: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    od = -torch.log((x.flatten(2).transpose(1, 2) * 255.0 + 1.0) / IO)  # (B, N, 3)
    stained = (od >= BETA).all(dim=-1)
    count = stained.sum(dim=1)
    v1, v2, spread = _leading_eigenvectors(_weighted_cov(od, stained.to(od.dtype), count))
    t1, t2 = (od * v1[:, None]).sum(-1), (od * v2[:, None]).sum(-1)
    phi = torch.atan2(t1, t2)
    ranked = torch.sort(torch.where(stained, phi, torch.full_like(phi, 1e4)), dim=1).values
    span = (count - 1).clamp(min=0).to(od.dtype)
    low = _take(ranked, torch.round(span * (ALPHA / 100)))
    high = _take(ranked, torch.round(span * (1 - ALPHA / 100)))
    v_min = v2 * torch.cos(low)[:, None] + v1 * torch.sin(low)[:, None]
    v_max = v2 * torch.cos(high)[:, None] + v1 * torch.sin(high)[:, None]
    h_first = (v_min[:, 0] > v_max[:, 0])[:, None]
    haem, eosin = torch.where(h_first, v_min, v_max), torch.where(h_first, v_max, v_min)
    conc = _concentrations(od, haem, eosin)  # (B, 2, N)
    pixels = torch.ones_like(phi).sum(dim=1)  # N as a tensor: a trace keeps it symbolic
    index = torch.round((pixels - 1) * 0.99).long()[:, None, None].expand(-1, 2, 1)
    max_c = torch.sort(conc, dim=-1).values.gather(2, index)[:, :, 0]
    scale = max_c_ref.to(od.dtype)[None] / max_c.clamp(min=EPS)
    conc = conc * scale[:, :, None]
    ref = he_ref.to(od.dtype)
    optical = ref[None, :, 0, None] * conc[:, 0:1] + ref[None, :, 1, None] * conc[:, 1:2]
    normed = (IO * torch.exp(-optical.clamp(min=-10.0))).clamp(max=255.0) / 255.0
    normed = normed.reshape(b, c, h, w)
    ok = (count >= MIN_STAINED) & (spread > EPS) & (max_c > EPS).all(dim=1)
    ok = ok & torch.isfinite(normed).flatten(1).all(dim=1)
    return torch.where(ok[:, None, None, None], torch.nan_to_num(normed), x)


def _weighted_cov(od: torch.Tensor, weight: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) covariance of the stained pixels' optical densities (unbiased, as torchstain's ``cov``)."""
    total = count.clamp(min=1).to(od.dtype)[:, None]
    mean = (od * weight[..., None]).sum(1) / total
    centred = (od - mean[:, None]) * weight[..., None]
    rows = [torch.stack([(centred[..., i] * centred[..., j]).sum(1) for j in range(3)], -1) for i in range(3)]
    return torch.stack(rows, 1) / (count - 1).clamp(min=1).to(od.dtype)[:, None, None]


def _leading_eigenvectors(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two leading eigenvectors of each (3, 3) covariance, and the second eigenvalue.

    The first vector points to positive densities; a second eigenvalue near zero means the tile has one colour.
    """
    v1 = _dominant(cov)
    v1 = v1 * torch.where(v1.sum(-1, keepdim=True) < 0, -1.0, 1.0)
    lam1 = (v1 * _mv(cov, v1)).sum(-1)
    deflated = cov - lam1[:, None, None] * v1[:, :, None] * v1[:, None, :]
    v2 = _dominant(deflated)
    v2 = v2 - (v2 * v1).sum(-1, keepdim=True) * v1
    v2 = v2 / v2.norm(dim=-1, keepdim=True).clamp(min=EPS)
    lam2 = (v2 * _mv(cov, v2)).sum(-1)
    return v1, v2, lam2


def _dominant(matrix: torch.Tensor) -> torch.Tensor:
    """The dominant eigenvector of each symmetric PSD (3, 3) matrix, by repeated squaring."""
    power = matrix
    for _ in range(_SQUARINGS):
        power = power / power.flatten(1).norm(dim=-1).clamp(min=EPS)[:, None, None]
        power = _mm(power, power)
    columns = power.norm(dim=1)  # (B, 3): each column of P is a multiple of the eigenvector
    pick = nn.functional.one_hot(columns.argmax(dim=-1), 3).to(matrix.dtype)
    v = _mv(power, pick)
    return v / v.norm(dim=-1, keepdim=True).clamp(min=EPS)


def _concentrations(od: torch.Tensor, haem: torch.Tensor, eosin: torch.Tensor) -> torch.Tensor:
    """Least-squares stain concentrations (B, 2, N) of every pixel for the stain vectors (B, 3) each."""
    a, d, off = (haem * haem).sum(-1), (eosin * eosin).sum(-1), (haem * eosin).sum(-1)
    det = (a * d - off * off)
    det = torch.where(det.abs() < EPS, torch.full_like(det, EPS), det)
    pinv_h = (d[:, None] * haem - off[:, None] * eosin) / det[:, None]  # rows of (HE^T HE)^-1 HE^T
    pinv_e = (a[:, None] * eosin - off[:, None] * haem) / det[:, None]
    return torch.stack([(od * pinv_h[:, None]).sum(-1), (od * pinv_e[:, None]).sum(-1)], dim=1)


def _take(ranked: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``ranked[b, index[b]]`` for each image."""
    return ranked.gather(1, index.long().clamp(0, ranked.shape[1] - 1)[:, None])[:, 0]


def _mv(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    return (matrix * vector[:, None, :]).sum(-1)


def _mm(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return (left[:, :, :, None] * right[:, None, :, :]).sum(2)


# -- Reinhard (2001) in CIE LAB, as torchstain's TorchReinhardNormalizer.normalize, per image of a batch ----------
_RGB2XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_WHITE = (0.95047, 1.0, 1.08883)


def _reinhard(x: torch.Tensor, lab_mean: torch.Tensor, lab_std: torch.Tensor) -> torch.Tensor:
    lab = rgb_to_lab(x)
    mean = lab.mean(dim=(2, 3), keepdim=True)
    std = lab.flatten(2).std(dim=-1)[:, :, None, None]
    target_mean, target_std = lab_mean.to(x.dtype).view(1, 3, 1, 1), lab_std.to(x.dtype).view(1, 3, 1, 1)
    normed = lab_to_rgb((lab - mean) / std.clamp(min=EPS) * target_std + target_mean)
    ok = (std.flatten(1) > 1e-3).all(dim=1) & torch.isfinite(normed).flatten(1).all(dim=1)
    return torch.where(ok[:, None, None, None], torch.nan_to_num(normed), x)


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] to CIE LAB, L in 0-100 (torchstain's ``rgb2lab`` then ``lab_split``)."""
    lin = torch.where(x > 0.04045, ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, x / 12.92)
    xyz = [sum(_RGB2XYZ[i][j] * lin[:, j] for j in range(3)) / _WHITE[i] for i in range(3)]
    f = [torch.where(v > 0.008856, v.clamp(min=0.008856) ** (1 / 3), 7.787 * v + 16 / 116) for v in xyz]
    return torch.stack([116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])], 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """The inverse of ``rgb_to_lab``, clamped to [0, 1] (torchstain's ``lab2rgb``)."""
    y = (lab[:, 0] + 16.0) / 116.0
    parts = [lab[:, 1] / 500.0 + y, y, y - lab[:, 2] / 200.0]
    xyz = [torch.where(v > 0.2068966, v.clamp(min=0.2068966) ** 3, (v - 16 / 116) / 7.787) * _WHITE[i]
           for i, v in enumerate(parts)]
    inverse = torch.linalg.inv(torch.tensor(_RGB2XYZ, dtype=torch.float64)).tolist()
    rgb = [sum(inverse[i][j] * xyz[j] for j in range(3)) for i in range(3)]
    out = [torch.where(v > 0.0031308, 1.055 * v.clamp(min=0.0031308) ** (1 / 2.4) - 0.055, v * 12.92) for v in rgb]
    return torch.stack(out, 1).clamp(0.0, 1.0)
