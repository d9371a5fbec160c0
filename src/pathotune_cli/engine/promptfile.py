"""The prompt file: one ``.safetensors`` with only the trained tensors, the JSON header, and their checksum.

It loads back only against the backbone it was tuned on (the fingerprint of the frozen weights must match).
No pickle anywhere on the load path. The header (``engine.header.PromptHeader``) and every tensor's name,
dtype, shape and bytes are covered by a sha256 stored beside the header, checked on every read: a truncated,
damaged or altered file is one line and exit code 2, whichever byte changed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from pathotune_cli import __version__
from pathotune_cli.backbones.fingerprint import content_checksum
from pathotune_cli.config.loader import explain
from pathotune_cli.engine.header import FORMAT, FORMAT_VERSION, READABLE_VERSIONS, PromptHeader
from pathotune_cli.engine.trust import TENSOR_PREFIX as TRUST_PREFIX
from pathotune_cli.errors import BadInput
from pathotune_cli.files import atomic_write

META_KEY = "pathotune"
CHECKSUM_KEY = "pathotune_sha256"
ALTERED = "the file was altered or damaged; copy it again or re-run `pathotune tune`"


@dataclass(frozen=True)
class PromptFile:
    """What a prompt file holds: its header and its tensors."""

    path: Path
    header: PromptHeader
    tensors: dict[str, torch.Tensor]

    @property
    def size_bytes(self) -> int:
        """Size on disk."""
        return self.path.stat().st_size


def save_prompt_file(path: Path, tensors: dict[str, torch.Tensor], header: PromptHeader) -> Path:
    """Write tensors and header to ``path`` atomically, stamped with the format, version, time and checksum."""
    stamped = header.model_copy(
        update={"format_version": FORMAT_VERSION, "pathotune_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    )
    return write_raw(path, tensors, stamped.to_json())


def write_raw(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Path:
    """Write a header given as JSON-ready data, its checksum and the tensors.

    ``save_prompt_file`` validates the header first; tests use this to make files whose content is wrong but
    whose checksum fits, to reach the checks behind the checksum.
    """
    from safetensors.torch import save_file

    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    text = json.dumps(header)
    metadata = {META_KEY: text, CHECKSUM_KEY: content_checksum(text, contiguous)}
    return atomic_write(Path(path), lambda temp: save_file(contiguous, str(temp), metadata=metadata))


def read_prompt_file(path: str | Path) -> PromptFile:
    """Read a prompt file, check its checksum, and validate its header.

    Raises:
        BadInput: missing, truncated, not a prompt file, a checksum that does not match, a header that does not
            validate, or a newer format.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"prompt file {path} does not exist", "pass the prompts.safetensors that `pathotune tune` wrote")
    text, stored, tensors = _read_safetensors(path)
    meta = _parse(path, text)
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise BadInput(
            f"{path} has prompt-file format version {version!r}; this pathotune reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}",
            "upgrade pathotune" if newer else ALTERED,
        )
    if version >= 2 and stored != content_checksum(text, tensors):
        raise BadInput(f"{path}: its checksum does not match its content", ALTERED)
    try:
        header = PromptHeader.model_validate(meta)
    except ValidationError as exc:
        raise BadInput(explain(exc, PromptHeader, str(path)), ALTERED) from None
    return PromptFile(path, header, tensors)


def check_tensors(file: PromptFile, expected: dict[str, torch.Tensor]) -> None:
    """The file's tensors must be exactly the model's trained tensors, with the same shapes.

    The trust section's tensors (``trust.*``) are not the model's; ``engine.load`` checks them against the header.
    """
    model_tensors = {k for k in file.tensors if not k.startswith(TRUST_PREFIX)}
    missing = sorted(set(expected) - model_tensors)
    extra = sorted(model_tensors - set(expected))
    if missing or extra:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(extra[:3])}"
        raise BadInput(f"{file.path}: tensors do not match its metadata ({what})", ALTERED)
    for name, ref in expected.items():
        got = file.tensors[name]
        if got.shape != ref.shape:
            raise BadInput(
                f"{file.path}: tensor '{name}' has shape {tuple(got.shape)}, expected {tuple(ref.shape)}", ALTERED
            )


def _read_safetensors(path: Path) -> tuple[str | None, str | None, dict[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BadInput(
            f"{path} is not a readable prompt file (truncated or damaged: {str(exc).splitlines()[0][:120]})",
            "re-copy it or re-run `pathotune tune`",
        ) from None
    return metadata.get(META_KEY), metadata.get(CHECKSUM_KEY), tensors


def _parse(path: Path, text: str | None) -> dict[str, Any]:
    if text is None:
        raise BadInput(
            f"{path} is a safetensors file without pathotune metadata", "pass a file written by `pathotune tune`"
        )
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        raise BadInput(f"{path}: its metadata does not parse", ALTERED) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BadInput(f"{path} is not a pathotune prompt file", "pass a file written by `pathotune tune`")
    return meta
