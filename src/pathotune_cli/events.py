"""What long work tells the user while it runs: small typed events, and one protocol to receive them.

``training``, ``runs`` and ``wsi`` callers emit events; ``cli/progress.py`` draws them on stderr; a Python caller
may pass any function of one event, or nothing (``ignore``). Events carry plain values only, so they can come
from any layer and cross processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Message:
    """A line for the user: a note, or a warning (``warning=True``)."""

    text: str
    warning: bool = False


@dataclass(frozen=True)
class TrainingStarted:
    """``fit`` is about to run ``epochs`` epochs of ``steps_per_epoch`` steps, from ``start_epoch``."""

    epochs: int
    steps_per_epoch: int
    start_epoch: int


@dataclass(frozen=True)
class StepDone:
    """One optimiser step finished."""

    epoch: int
    step: int
    loss: float


@dataclass(frozen=True)
class EpochDone:
    """One epoch finished; ``row`` is its line of ``history.csv``."""

    row: dict[str, Any]

    @property
    def epoch(self) -> int:
        """The epoch's number (from 1)."""
        return int(self.row["epoch"])

    @property
    def train_loss(self) -> float:
        """The epoch's mean training loss."""
        return float(self.row["train_loss"])

    @property
    def best(self) -> bool:
        """Whether this epoch is the best so far (the one kept)."""
        return bool(self.row.get("best"))

    def measured(self, keys: tuple[str, ...]) -> list[tuple[str, float]]:
        """The ``keys`` this epoch measured (validation loss, accuracy, ...), in order, skipping absent ones."""
        return [(key, float(self.row[key])) for key in keys if self.row.get(key) is not None]


@dataclass(frozen=True)
class SlidesStarted:
    """A per-slide command starts on ``total`` slides."""

    total: int


@dataclass(frozen=True)
class SlideStarted:
    """Work on one slide begins (``index`` counts from 0)."""

    index: int
    total: int
    slide: str


@dataclass(frozen=True)
class TilesPlanned:
    """A slide's tiles are planned: ``total`` will be read."""

    slide: str
    total: int


@dataclass(frozen=True)
class TilesDone:
    """``done`` of a slide's tiles are finished."""

    slide: str
    done: int


@dataclass(frozen=True)
class SlideDone:
    """One slide finished (or failed, or was kept): its summary row, and how many slides are done."""

    slide: str
    status: str
    done: int
    total: int
    detail: str = ""
    """What the line says after the slide: the tile count, the error, or the resume word."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Warnings about this slide, shown above the bar."""
    seconds: float = 0.0


Event = (
    Message | TrainingStarted | StepDone | EpochDone
    | SlidesStarted | SlideStarted | TilesPlanned | TilesDone | SlideDone
)


class Reporter(Protocol):
    """Receives events; returns nothing."""

    def __call__(self, event: Event) -> None:
        """Handle one event."""


def ignore(event: Event) -> None:
    """The reporter of a caller who wants no progress."""


def note(report: Reporter, text: str) -> None:
    """Send a note."""
    report(Message(text))


def warn(report: Reporter, text: str) -> None:
    """Send a warning."""
    report(Message(text, warning=True))
