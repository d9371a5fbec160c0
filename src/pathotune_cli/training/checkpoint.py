"""Checkpoints for ``--resume``: safetensors with a JSON header, no pickle.

Holds the current and the best trained tensors, the optimiser's state tensors, and the loop's counters.
Written every epoch through a temporary name, so a run killed mid-write keeps the previous checkpoint; a
checksum over header and tensors (as in prompt files) refuses a damaged one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pathotune_cli.backbones.fingerprint import content_checksum
from pathotune_cli.errors import BadInput
from pathotune_cli.files import atomic_write

META_KEY = "pathotune_checkpoint"
CHECKSUM_KEY = "pathotune_sha256"


def save_checkpoint(
    path: Path,
    current: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> None:
    """Write a checkpoint atomically."""
    from safetensors.torch import save_file

    tensors = {f"model/{k}": v for k, v in current.items()}
    tensors.update({f"best/{k}": v for k, v in best.items()})
    opt_state = optimizer.state_dict()
    for index, per_param in opt_state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{key}"] = value
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    text = json.dumps({**state, "param_groups": opt_state["param_groups"]})
    metadata = {META_KEY: text, CHECKSUM_KEY: content_checksum(text, tensors)}
    atomic_write(path, lambda temp: save_file(tensors, str(temp), metadata=metadata))


def load_checkpoint(
    path: Path, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint, restore the optimiser in place; returns (current, best, loop state)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            text = metadata[META_KEY]
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        header = json.loads(text)
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise BadInput(f"checkpoint {path} is damaged ({type(exc).__name__})", "start again without --resume") from None
    if metadata.get(CHECKSUM_KEY) != content_checksum(text, tensors):
        raise BadInput(f"checkpoint {path}: its checksum does not match its content", "start again without --resume")
    current = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    best = {k.removeprefix("best/"): v for k, v in tensors.items() if k.startswith("best/")}
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": header.pop("param_groups")})
    return current, best, header
