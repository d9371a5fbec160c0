"""Progress on stderr for long work, fed by the ``report(kind, info)`` callbacks of ``runs``."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pathotune_cli.cli.render import err, info, warn


class _Progress:
    """A rich progress display on stderr that also prints the runs' warnings and notes above the bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None

    def __enter__(self):  # noqa: ANN204
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "warning":
            warn(data["message"])
        elif kind == "info":
            info(data["message"])
        else:
            self.update(kind, data)

    def update(self, kind: str, data: dict[str, Any]) -> None:
        """Handle the run-specific events."""


class SlideProgress(_Progress):
    """A bar per slide's tiles and one line per finished slide (``predict``)."""

    def __init__(self) -> None:
        super().__init__(Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=err, transient=True))

    def update(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "tiles":
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(data["slide"], total=data["total"])
        elif kind == "tiles_done" and self.task is not None:
            self.progress.update(self.task, completed=data["done"])
        elif kind == "slide_done":
            status = data["status"] if data["status"] != "ok" else f"{data.get('tiles', 0)} tiles"
            info(f"{data['slide']}: {status} ({data['seconds']} s)")


class EpochProgress(_Progress):
    """A bar per epoch of steps, one printed line per finished epoch, warnings and notes above the bar."""

    def __init__(self, quiet: bool = False) -> None:
        super().__init__(Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True, disable=quiet,
        ))
        self.epochs = 0
        self.steps = 0

    def update(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "start":
            self.epochs, self.steps = data["epochs"], data["steps_per_epoch"]
        elif kind == "step":
            if self.task is None or data["step"] == 1:
                if self.task is not None:
                    self.progress.remove_task(self.task)
                self.task = self.progress.add_task(f"epoch {data['epoch']}/{self.epochs}", total=self.steps, loss="-")
            self.progress.update(self.task, completed=data["step"], loss=f"{data['loss']:.3f}")
        elif kind == "epoch":
            parts = [f"epoch {data['epoch']:>3}/{self.epochs}", f"train_loss {data['train_loss']:.4f}"]
            for key in ("val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1"):
                if key in data:
                    parts.append(f"{key} {data[key]:.4f}")
            if data.get("best"):
                parts.append("*")
            info("  ".join(parts))
