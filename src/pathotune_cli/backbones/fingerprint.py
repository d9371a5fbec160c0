"""A fingerprint of frozen weights, so a prompt file is only ever loaded against the backbone it was tuned on."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch


def fingerprint_of(backbone: Any) -> str:
    """A backbone's fingerprint, computed once per weight file: about 1 s for a ViT-B and 10 s for a ViT-g.

    The cache (``$XDG_CACHE_HOME/pathotune/fingerprints.json``) is keyed by the preset (everything that decides
    how the file's tensors are converted) and the file's resolved path, size and modification time, so a file
    that changes is hashed again. Random weights have no file and are hashed each time (they are small).
    """
    from pathotune_cli.files import cache_dir, read_json_cache, update_json_cache

    path = backbone.weight_source.path
    if path is None:
        return fingerprint(backbone.frozen_state())
    stat = Path(path).stat()
    preset = hashlib.sha256(backbone.preset.model_dump_json().encode()).hexdigest()[:16]
    key = f"{preset}|{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = cache_dir() / "fingerprints.json"
    found = read_json_cache(cache).get(key)
    if isinstance(found, str):
        return found
    value = fingerprint(backbone.frozen_state())
    update_json_cache(cache, key, value)
    return value


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    """The first 16 hex digits of ``state_digest``: what a prompt file records of its frozen backbone."""
    return state_digest(state)[:16]


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order (hex).

    The bytes are hashed in place, not copied: 0.19 s instead of 0.32 s for a ViT-B (343 MB).
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        if tensor.numel():  # 0-d tensors too
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def content_checksum(header_text: str, tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of a safetensors file's header text and of every tensor (``state_digest``): what prompt files and
    checkpoints store beside their header, so a flipped byte anywhere is found on load."""
    return hashlib.sha256(header_text.encode("utf-8") + state_digest(tensors).encode()).hexdigest()
