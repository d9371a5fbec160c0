"""The grid of an accuracy run: what the command line asks for (``GridSpec``) and the cells it expands into.

A cell is one tuning run and its evaluation: a backbone, a method (with, for ``pathotune``, the prompts an
ablation keeps), a TVP token count, a shot count and a seed. Methods and ablations are engine settings only
(``--set prompt.ttp.tokens=0`` and ``prompt.ivp.tokens=0`` switch TTP and IVP off), so every cell runs through
the same code as ``pathotune tune`` and ``pathotune eval``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from pathotune_cli.errors import BadInput

METHODS = ("linear", "prototypes", "knn", "lora", "vpt", "pathotune", "full", "zeroshot")
"""Every method the grid runs, in table order; ``zeroshot`` only on backbones with a text tower."""
DEFAULT_METHODS = ("linear", "vpt", "pathotune", "full")
PROMPT_PARTS = ("tvp", "ttp", "ivp")
FULL_ARM = "tvp+ttp+ivp"
"""The ablation arm with every prompt: plain ``pathotune``."""
ARM_SETS = {
    "tvp": ("prompt.ttp.tokens=0", "prompt.ivp.tokens=0"),
    "tvp+ttp": ("prompt.ivp.tokens=0",),
    "tvp+ivp": ("prompt.ttp.tokens=0",),
    FULL_ARM: (),
}
GRID_KEYS = ("prompt.method", "train.shots", "seed", "data", "val_data", "out")
"""Run settings the grid sets per cell: a ``--set`` of one of them would run another grid than the one reported."""
ARM_TITLES = {"tvp": "TVP", "tvp+ttp": "TVP+TTP", "tvp+ivp": "TVP+IVP", FULL_ARM: "TVP+TTP+IVP"}


@dataclass(frozen=True)
class GridSpec:
    """Everything an accuracy run asks for, after the protocol preset and the command line are merged."""

    task: str
    train: Path
    test: Path
    backbones: tuple[str, ...]
    out: Path
    methods: tuple[str, ...] = DEFAULT_METHODS
    shots: tuple[int | None, ...] = (None,)
    """Shots per class; None is every training tile ("all")."""
    seeds: int = 5
    ablate: tuple[str, ...] = ()
    """Prompt kinds the ablation compares (``tvp`` always among them); empty: no ablation arms."""
    tokens: tuple[int | None, ...] = (None,)
    """TVP token counts for ``vpt`` and ``pathotune``; None is the engine's default."""
    val: Path | None = None
    epochs: int | None = None
    sets: tuple[str, ...] = ()
    bootstrap: int = 1000
    precision: str | None = None
    device: str | None = None
    protocol: str | None = None
    keep_checkpoints: bool = False
    """Keep each finished run's ``checkpoint.safetensors`` (a full fine-tuning one holds the backbone twice over)."""

    def __post_init__(self) -> None:
        """Each list holds something, and only what the engine knows."""
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise BadInput(f"--methods {','.join(self.methods) or '(empty)'}", f"choose from {','.join(METHODS)}")
        bad = [p for p in self.ablate if p not in PROMPT_PARTS]
        if bad:
            raise BadInput(f"--ablate: unknown prompt kind(s) {','.join(bad)}", f"choose from {','.join(PROMPT_PARTS)}")
        if self.ablate and "tvp" not in self.ablate:
            raise BadInput("--ablate without tvp", "every ablation arm keeps TVP: write e.g. --ablate tvp,ttp,ivp")
        if self.seeds < 1:
            raise BadInput(f"--seeds {self.seeds}", "run at least 1 seed")
        if not self.backbones:
            raise BadInput("no backbones given", "pass --backbones NAME[,NAME...]")
        grid_keys = [s for s in self.sets if s.partition("=")[0].strip() in GRID_KEYS]
        if grid_keys:
            raise BadInput(f"--set {grid_keys[0]} would override the grid",
                           "use --methods, --shots, --seeds, --train, --val and --out for these")
        if any(t is not None and t < 1 for t in self.tokens):
            raise BadInput("--tokens must be counts of at least 1", "write e.g. --tokens 4,8,16,50")

    @property
    def arms(self) -> tuple[str, ...]:
        """The ablation arms: TVP with every subset of the other kinds listed (TVP only ... all of them)."""
        if not self.ablate:
            return ()
        others = [p for p in PROMPT_PARTS if p in self.ablate and p != "tvp"]
        subsets = [c for r in range(len(others) + 1) for c in itertools.combinations(others, r)]
        return tuple("+".join(("tvp", *c)) for c in subsets)


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    backbone: str
    method: str
    ablation: str = ""
    """``pathotune`` only: the prompts it keeps (``tvp``, ``tvp+ttp``, ``tvp+ivp``, ``tvp+ttp+ivp``)."""
    tokens: int | None = None
    """TVP tokens asked for (``vpt`` and ``pathotune``); None: the engine's default."""
    shots: int | None = None
    seed: int = 0
    backbone_name: str = ""
    """The preset's name (the same as ``backbone`` unless that is a YAML path)."""

    @property
    def variant(self) -> str:
        """Method, ablation and tokens, as a folder name: ``linear``, ``pathotune-tvp_ttp-t8``."""
        name = self.method
        if self.ablation and self.ablation != FULL_ARM:
            name += "-" + self.ablation.replace("+", "_")
        if self.tokens is not None:
            name += f"-t{self.tokens}"
        return name

    @property
    def title(self) -> str:
        """Method and ablation for a table: ``pathotune (TVP+TTP)``."""
        if self.method == "pathotune" and self.ablation and self.ablation != FULL_ARM:
            return f"pathotune ({ARM_TITLES[self.ablation]})"
        return self.method

    @property
    def shots_label(self) -> str:
        """``all`` or the count."""
        return "all" if self.shots is None else str(self.shots)

    def folder(self, out: Path) -> Path:
        """The cell's run folder: ``OUT/runs/BACKBONE/VARIANT/shots-K/seed-S``."""
        return out / "runs" / (self.backbone_name or self.backbone) / self.variant / f"shots-{self.shots_label}" / (
            f"seed-{self.seed}")

    def sets(self, user_sets: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The ``--set`` overrides of this cell: the user's, then the ablation's and the token count's."""
        own: list[str] = list(ARM_SETS[self.ablation]) if self.ablation else []
        if self.tokens is not None:
            own.append(f"prompt.tvp.tokens={self.tokens}")
        return (*user_sets, *own)


def expand(spec: GridSpec, names: dict[str, str] | None = None) -> list[Cell]:
    """Every cell of the grid, in running order: per backbone, shots, seed, then method and its variants.

    ``names`` maps each ``--backbones`` entry to its preset name (for YAML paths).
    """
    names = names or {}
    variants: list[tuple[str, str, int | None]] = []
    for method in spec.methods:
        if method in ("vpt", "pathotune"):
            arm = FULL_ARM if method == "pathotune" else ""
            variants.extend((method, arm, t) for t in spec.tokens)
        else:
            variants.append((method, "", None))
    for arm in spec.arms:
        variants.extend(("pathotune", arm, t) for t in spec.tokens if ("pathotune", arm, t) not in variants)
    cells = []
    texts = {b for b in spec.backbones if "zeroshot" in spec.methods and _has_text_tower(b)}
    for backbone, shots, seed in itertools.product(spec.backbones, spec.shots, range(spec.seeds)):
        for method, arm, tokens in variants:
            if method == "zeroshot" and backbone not in texts:
                continue  # zero-shot needs the backbone's own text tower
            cells.append(Cell(backbone, method, arm, tokens, shots, seed, names.get(backbone, backbone)))
    return cells


def parse_list(text: str | None, what: str) -> tuple[str, ...]:
    """``a,b , c`` -> ``("a", "b", "c")``."""
    items = tuple(part.strip() for part in (text or "").split(",") if part.strip())
    if text is not None and not items:
        raise BadInput(f"{what} is empty", f"pass a comma-separated list to {what}")
    return items


def parse_counts(text: str | None, what: str, allow_all: bool = False) -> tuple[int | None, ...] | None:
    """``1,2,all`` -> ``(1, 2, None)``; None when the option was not given."""
    if text is None:
        return None
    counts: list[int | None] = []
    for item in parse_list(text, what):
        if allow_all and item.lower() == "all":
            counts.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            raise BadInput(f"{what} '{item}' is not a whole number", f"write e.g. {what} 1,2,4"
                           + (",all" if allow_all else "")) from None
        if value < 1:
            raise BadInput(f"{what} {value} must be at least 1")
        counts.append(value)
    return tuple(dict.fromkeys(counts))


@dataclass
class Tally:
    """How the cells of one invocation went."""

    ran: list[Cell] = field(default_factory=list)
    kept: list[Cell] = field(default_factory=list)
    failed: list[tuple[Cell, str]] = field(default_factory=list)


def _has_text_tower(backbone: str) -> bool:
    """Whether a backbone preset (name or YAML path) has its own text tower (zero-shot)."""
    from pathotune_cli.config import load_backbone_preset
    from pathotune_cli.config.run import TEXT_FAMILIES

    return load_backbone_preset(backbone).family in TEXT_FAMILIES
