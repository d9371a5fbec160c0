"""H&E augmentation on batches: orientation carries no meaning in a tile, and stain varies a little.

Randomness comes from a generator the caller seeds per epoch, so a resumed run augments exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import torch

from pathotune_cli.config.run import AugmentSettings

DRAWS = 7
"""Random numbers per image: flip, rotation, four colour factors, one spare."""


def augment_draws(count: int, generator: torch.Generator) -> torch.Tensor:
    """The random numbers of ``count`` images, (count, DRAWS), drawn for a whole batch in its order: a rank that
    augments a slice of the batch takes the slice's rows and transforms each image as one process would."""
    return torch.rand(count, DRAWS, generator=generator)


def augment(images: torch.Tensor, settings: AugmentSettings, generator: torch.Generator | None = None,
            draws: torch.Tensor | None = None) -> torch.Tensor:
    """Random dihedral transform and mild colour jitter per image; float (B, 3, H, W) in [0, 1] in and out.

    The randomness comes from ``draws`` (``augment_draws``, one row per image) or else from ``generator``.
    """
    b = images.shape[0]
    rand = draws if draws is not None else augment_draws(b, generator)  # type: ignore[arg-type]
    out = images
    if settings.flips:
        flip = rand[:, 0] < 0.5
        out = torch.where(flip.view(b, 1, 1, 1), out.flip(-1), out)
    if settings.rot90 and out.shape[-1] == out.shape[-2]:
        turns = (rand[:, 1] * 4).long().clamp(max=3)
        out = torch.stack([torch.rot90(img, int(k), dims=(-2, -1)) for img, k in zip(out, turns, strict=True)])
    out = _colour_jitter(out, settings, rand[:, 2:6] * 2 - 1)
    return out.clamp_(0.0, 1.0)


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
