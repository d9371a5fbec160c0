"""Progress on stderr for long work, fed by the ``report(kind, info)`` callbacks of ``runs``."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pathotune_cli.cli.render import err, info, warn


class EpochProgress:
    """A bar per epoch of steps, one printed line per finished epoch, warnings and notes above the bar."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True, disable=quiet,
        )
        self.task = None
        self.epochs = 0
        self.steps = 0

    def __enter__(self) -> EpochProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "warning":
            warn(data["message"])
        elif kind == "info":
            info(data["message"])
        elif kind == "start":
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
