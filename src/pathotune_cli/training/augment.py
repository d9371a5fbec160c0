"""H&E augmentation on batches: orientation carries no meaning in a tile, and stain varies a little.

Randomness comes from a generator the caller seeds per epoch, so a resumed run augments exactly as an
uninterrupted one would. Stain augmentation (``hed``, ``stain_matrix``) works in optical density: each pixel is
split into haematoxylin, eosin and DAB concentrations with Ruifrok and Johnston's stain vectors (as
``skimage.color.rgb2hed``); HED jitter scales and shifts each concentration per image (Tellez et al. 2018), the
stain-matrix perturbation rebuilds the pixel from stain vectors moved a little. Its random numbers are drawn only
when one of the two is on, so runs without it draw exactly what they drew before it existed.
"""

from __future__ import annotations

import torch

from pathotune_cli.config.run import AugmentSettings

DRAWS = 7
"""Random numbers per image: flip, rotation, four colour factors, one spare."""
STAIN_DRAWS = 12
"""More per image when stain augmentation is on: scale and shift of three concentrations, six stain-vector entries."""
RGB_FROM_HED = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))
"""Optical-density vectors of haematoxylin, eosin and DAB (Ruifrok and Johnston 2001; rows normalised below)."""


def augment_draws(count: int, generator: torch.Generator, settings: AugmentSettings | None = None) -> torch.Tensor:
    """The random numbers of ``count`` images, (count, DRAWS [+ STAIN_DRAWS]), drawn for a whole batch in its order.

    A rank that augments a slice of the batch takes the slice's rows and transforms each image as one process
    would. The stain columns are drawn only when ``settings`` turn stain augmentation on.
    """
    return torch.rand(count, DRAWS + (STAIN_DRAWS if _stain_on(settings) else 0), generator=generator)


def augment(images: torch.Tensor, settings: AugmentSettings, generator: torch.Generator | None = None,
            draws: torch.Tensor | None = None) -> torch.Tensor:
    """Random dihedral transform and mild colour jitter per image; float (B, 3, H, W) in [0, 1] in and out.

    The randomness comes from ``draws`` (``augment_draws``, one row per image) or else from ``generator``.
    """
    b = images.shape[0]
    rand = draws if draws is not None else augment_draws(b, generator, settings)  # type: ignore[arg-type]
    out = images
    if settings.flips:
        flip = rand[:, 0] < 0.5
        out = torch.where(flip.view(b, 1, 1, 1), out.flip(-1), out)
    if settings.rot90 and out.shape[-1] == out.shape[-2]:
        turns = (rand[:, 1] * 4).long().clamp(max=3)
        out = torch.stack([torch.rot90(img, int(k), dims=(-2, -1)) for img, k in zip(out, turns, strict=True)])
    if _stain_on(settings):
        out = stain_jitter(out, rand[:, DRAWS : DRAWS + STAIN_DRAWS] * 2 - 1, settings.hed, settings.stain_matrix)
    out = _colour_jitter(out, settings, rand[:, 2:6] * 2 - 1)
    return out.clamp_(0.0, 1.0)


def stain_jitter(images: torch.Tensor, u: torch.Tensor, hed: float, matrix: float) -> torch.Tensor:
    """HED jitter and stain-matrix perturbation; ``u`` (B, 12) uniform in [-1, 1]; float (B, 3, H, W) in [0, 1].

    Concentrations ``c`` become ``c * (1 + hed * u[:, 0:3]) + hed * u[:, 3:6] * mean(c)``; the haematoxylin and
    eosin vectors are multiplied entry-wise by ``1 + matrix * u[:, 6:12]`` and renormalised.
    """
    b = images.shape[0]
    stains = torch.nn.functional.normalize(images.new_tensor(RGB_FROM_HED), dim=1)  # (3 stains, 3 channels)
    od = -torch.log(images.clamp(min=1e-6))  # (B, 3, H, W)
    conc = torch.einsum("sc,bchw->bshw", torch.linalg.inv(stains).T, od)
    if hed:
        mean = conc.mean(dim=(2, 3), keepdim=True)
        conc = conc * (1 + hed * u[:, 0:3]).view(b, 3, 1, 1) + hed * u[:, 3:6].view(b, 3, 1, 1) * mean
    moved = stains.expand(b, 3, 3).clone()
    if matrix:
        moved[:, :2] = torch.nn.functional.normalize(moved[:, :2] * (1 + matrix * u[:, 6:12]).view(b, 2, 3), dim=2)
    return torch.exp(-torch.einsum("bshw,bsc->bchw", conc, moved)).clamp(0.0, 1.0)


def _stain_on(settings: AugmentSettings | None) -> bool:
    return settings is not None and bool(settings.hed or settings.stain_matrix)


def _colour_jitter(images: torch.Tensor, s: AugmentSettings, u: torch.Tensor) -> torch.Tensor:
    b = images.shape[0]
    view = (b, 1, 1, 1)
    out = images
    if s.brightness:
        out = out * (1 + s.brightness * u[:, 0]).view(view)
    if s.contrast:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * (1 + s.contrast * u[:, 1]).view(view) + mean
    if s.saturation:
        grey = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])
        out = (out - grey) * (1 + s.saturation * u[:, 2]).view(view) + grey
    if s.hue:
        out = _rotate_hue(out, torch.pi * 2 * s.hue * u[:, 3])
    return out


def _rotate_hue(images: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate chroma in YIQ space: a cheap, smooth hue shift without an HSV round trip."""
    to_yiq = images.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = torch.linalg.inv(to_yiq)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(images.shape[0], 3, 3, dtype=images.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    matrix = from_yiq @ rot @ to_yiq
    return torch.einsum("bij,bjhw->bihw", matrix, images)
