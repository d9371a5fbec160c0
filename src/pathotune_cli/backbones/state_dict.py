"""Read weight files and load them strictly: a key the model does not expect is an error, not a log line."""

from __future__ import annotations

import errno
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from pathotune_cli.errors import BadInput, os_error

HEAD_PREFIXES = ("head.", "fc.", "classifier.", "head_dist.")


def read_state_dict(path: Path, lazy: bool = False) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file, or from a ``.bin``/``.pth`` with ``weights_only`` (no code runs).

    Args:
        path: the weight file.
        lazy: memory-map the file instead of reading it (checking keys and shapes of a multi-GB file).
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = _torch_load(path, lazy)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR):
            raise os_error(exc, path) from None
        raise _damaged(path, exc) from None
    except Exception as exc:  # every reader failure means the same thing to the user
        raise _damaged(path, exc) from None
    for key in ("state_dict", "model", "teacher", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInput(f"weight file {path} does not hold a flat state dict of tensors", "check the file")
    return state


def load_strict(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    ignore: Iterable[str] = HEAD_PREFIXES,
) -> None:
    """Load ``state`` into ``model``; missing or unexpected keys (other than heads) are errors naming them."""
    expected = model.state_dict()
    check_matches(expected, state, source, ignore)
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


def check_matches(
    expected: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    source: str,
    ignore: Iterable[str] = HEAD_PREFIXES,
) -> int:
    """Raise unless ``state`` has exactly the keys and shapes of ``expected`` (heads aside); returns the count.

    ``expected`` may hold meta tensors: only names and shapes are compared.

    Raises:
        BadInput: naming the first missing, unexpected or wrongly shaped keys.
    """
    ignore = tuple(ignore)
    unexpected = [k for k in state if k not in expected and not k.startswith(ignore)]
    missing = [k for k in expected if k not in state and not k.startswith(ignore)]
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise BadInput(
            f"{source} does not match the architecture: {'; '.join(parts)}",
            "check that the file belongs to this backbone preset (a training-only tensor can be listed under "
            "drop_keys in a copy of the preset)",
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if wrong:
        raise BadInput(f"{source}: tensors of the wrong shape: {_few(wrong)}", "check the backbone preset")
    return sum(1 for k in expected if k in state)


def _torch_load(path: Path, lazy: bool) -> object:
    if lazy:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            pass  # an old-style (non-zip) pickle cannot be memory-mapped; read it whole
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _damaged(path: Path, exc: BaseException) -> BadInput:
    """One line for a weight file that does not read: the readers' own words ("pop from empty list",
    "failed finding central directory") say nothing a user can act on, so only its size is shown."""
    try:
        size = f"{path.stat().st_size:,} bytes"
    except OSError:
        size = "size unknown"
    return BadInput(
        f"weight file {path} is truncated, damaged or not a weight file ({size}; the reader raised "
        f"{type(exc).__name__})",
        "download it again and compare its size (and sha256, where the publisher shows one) with the original",
    )


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")
