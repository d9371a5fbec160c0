"""What every run's options type shares: path fields that accept strings from Python callers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def kernel_spec(spec: str) -> Any:
    """``--kernels`` as a ``KernelSpec``.

    Raises:
        BadInput: an unknown name or value, with the allowed ones.
    """
    from pathotune_cli.config.run import KernelSpec
    from pathotune_cli.errors import BadInput

    try:
        return KernelSpec.parse(spec)
    except ValueError as exc:
        raise BadInput(f"--{exc}", "e.g. --kernels auto, plain, or attention=fused,weights=bf16") from None


def coerce_paths(options: Any) -> None:
    """Turn the string values of a frozen dataclass's fields into their types.

    ``Path`` fields (and tuples of them) become ``Path``s; an ``"I/N"`` string in a ``Shard`` field becomes a
    ``cluster.Shard``.
    """
    from pathotune_cli.cluster import parse_shard

    for item in dataclasses.fields(options):
        value = getattr(options, item.name)
        kind = str(item.type)
        if isinstance(value, str) and kind == "Shard":
            object.__setattr__(options, item.name, parse_shard(value))
        elif isinstance(value, str) and "Path" in kind:
            object.__setattr__(options, item.name, Path(value).expanduser())
        elif isinstance(value, (list, tuple)) and "tuple[Path" in kind:
            object.__setattr__(options, item.name, tuple(Path(v).expanduser() for v in value))
        elif isinstance(value, list) and "tuple[str" in kind:
            object.__setattr__(options, item.name, tuple(value))
