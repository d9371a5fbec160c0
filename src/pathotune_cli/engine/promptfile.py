"""The prompt file: one ``.safetensors`` with only the trained tensors and JSON metadata in its header.

It loads back only against the backbone it was tuned on (the fingerprint of the frozen weights must match).
No pickle anywhere on the load path; a truncated or tampered file is one line and exit code 2.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pathotune_cli import __version__
from pathotune_cli.errors import BadInput

FORMAT = "pathotune-prompts"
FORMAT_VERSION = 1
META_KEY = "pathotune"


@dataclass
class PromptFile:
    """What a prompt file holds: its metadata and its tensors."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def size_bytes(self) -> int:
        """Size on disk."""
        return self.path.stat().st_size


def save_prompt_file(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write tensors and metadata to ``path`` through a temporary name, so no half file ever looks finished."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import time

    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "pathotune_version": __version__, "created": created, **meta
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(contiguous, str(tmp), metadata={META_KEY: json.dumps(header, default=_json_default)})
    os.replace(tmp, path)
    return path


def read_prompt_file(path: str | Path) -> PromptFile:
    """Read and check a prompt file's header and tensors.

    Raises:
        BadInput: missing, truncated, not a prompt file, metadata that does not parse, or a newer format.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"prompt file {path} does not exist", "pass the prompts.safetensors that `pathotune tune` wrote")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(META_KEY)
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BadInput(
            f"{path} is not a readable prompt file (truncated or damaged: {str(exc).splitlines()[0][:120]})",
            "re-copy it or re-run `pathotune tune`",
        ) from None
    if raw is None:
        raise BadInput(
            f"{path} is a safetensors file without pathotune metadata",
            "pass a file written by `pathotune tune`",
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise BadInput(
            f"{path}: its metadata does not parse",
            "the file was altered; re-run `pathotune tune`",
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BadInput(f"{path} is not a pathotune prompt file", "pass a file written by `pathotune tune`")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise BadInput(
            f"{path} has format version {meta.get('format_version')}, "
            f"newer than this pathotune reads ({FORMAT_VERSION})",
            "upgrade pathotune",
        )
    for key in ("backbone", "task", "prompt"):
        if key not in meta:
            raise BadInput(f"{path}: metadata lacks '{key}'", "the file was altered; re-run `pathotune tune`")
    return PromptFile(path, meta, tensors)


def check_tensors(file: PromptFile, expected: dict[str, torch.Tensor]) -> None:
    """The file's tensors must be exactly the model's trained tensors, with the same shapes."""
    missing = sorted(set(expected) - set(file.tensors))
    extra = sorted(set(file.tensors) - set(expected))
    if missing or extra:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(extra[:3])}"
        raise BadInput(
            f"{file.path}: tensors do not match its metadata ({what})",
            "the file was altered; re-run `pathotune tune`",
        )
    for name, ref in expected.items():
        got = file.tensors[name]
        if got.shape != ref.shape:
            raise BadInput(
                f"{file.path}: tensor '{name}' has shape {tuple(got.shape)}, expected {tuple(ref.shape)}",
                "the file was altered; re-run `pathotune tune`",
            )


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
