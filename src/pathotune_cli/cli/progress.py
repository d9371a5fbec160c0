"""Progress on stderr for long work, drawn from the typed events of ``pathotune_cli.events``.

One display serves every command: a bar per epoch (``tune``), a bar over the slides and one per slide's tiles
(``tile``, ``predict``), and the runs' notes and warnings printed above the bars. On a terminal only; piped,
only the lines are printed.
"""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pathotune_cli.cli.render import err, info, warn
from pathotune_cli.events import (
    EpochDone,
    Event,
    Message,
    SlideDone,
    SlidesStarted,
    StepDone,
    TilesDone,
    TilesPlanned,
    TrainingStarted,
)

HISTORY_KEYS = ("val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1")


class ProgressDisplay:
    """A reporter (``events.Reporter``) that draws events on stderr; use it as a context manager."""

    def __init__(self, quiet: bool = False) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[extra]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True,
            disable=quiet or not err.is_terminal,
        )
        self.bars: dict[str, int] = {}
        self.epochs = 0
        self.steps = 0

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        """Draw one event."""
        if isinstance(event, Message):
            (warn if event.warning else info)(event.text)
        elif isinstance(event, TrainingStarted):
            self.epochs, self.steps = event.epochs, event.steps_per_epoch
        elif isinstance(event, StepDone):
            if event.step == 1:
                self._bar("steps", f"epoch {event.epoch}/{self.epochs}", self.steps)
            self._advance("steps", event.step, f"loss {event.loss:.3f}")
        elif isinstance(event, EpochDone):
            info(_epoch_line(event, self.epochs))
        elif isinstance(event, SlidesStarted):
            self._bar("slides", "slides", event.total)
        elif isinstance(event, TilesPlanned):
            self._bar("tiles", event.slide, event.total)
        elif isinstance(event, TilesDone):
            self._advance("tiles", event.done)
        elif isinstance(event, SlideDone):
            self._slide_done(event)

    def _slide_done(self, event: SlideDone) -> None:
        told = event.status in ("failed", "locked")  # their detail is a line naming the slide
        if told:
            warn(event.detail)
        for line in event.notes:
            warn(line)
        if not told:
            info(f"{event.slide}: {event.detail} ({event.seconds} s)")
        self._drop("tiles")
        self._advance("slides", event.done)

    def _bar(self, name: str, description: str, total: int) -> None:
        self._drop(name)
        self.bars[name] = self.progress.add_task(description, total=total, extra="")

    def _advance(self, name: str, completed: int, extra: str = "") -> None:
        if name in self.bars:
            self.progress.update(self.bars[name], completed=completed, extra=extra)

    def _drop(self, name: str) -> None:
        if name in self.bars:
            self.progress.remove_task(self.bars.pop(name))


def _epoch_line(event: EpochDone, epochs: int) -> str:
    parts = [f"epoch {event.epoch:>3}/{epochs}", f"train_loss {event.train_loss:.4f}"]
    parts += [f"{key} {value:.4f}" for key, value in event.measured(HISTORY_KEYS)]
    return "  ".join(parts) + ("  *" if event.best else "")
