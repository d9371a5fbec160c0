"""The progress display draws every event the runs send, and prints their notes and warnings."""

from __future__ import annotations

import pytest

from pathotune_cli import events
from pathotune_cli.cli.progress import ProgressDisplay


def test_every_event_is_drawn_and_messages_reach_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    sent = [
        events.Message("a note"),
        events.Message("a warning", warning=True),
        events.TrainingStarted(2, 3, 1),
        events.StepDone(1, 1, 0.5),
        events.EpochDone({"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.75, "best": True}),
        events.SlidesStarted(2),
        events.SlideStarted(0, 2, "a.svs"),
        events.TilesPlanned("a.svs", 10),
        events.TilesDone("a.svs", 10),
        events.SlideDone("a.svs", "ok", 1, 2, "10 tiles", ("a.svs: the slides CSV says mpp 0.25",), 1.5),
        events.SlideDone("b.svs", "failed", 2, 2, "b.svs: the file is truncated"),
    ]
    with ProgressDisplay() as display:
        for event in sent:
            display(event)
    err = capsys.readouterr().err
    for text in ("a note", "warning: a warning", "epoch   1/2", "val_accuracy 0.7500", "a.svs: 10 tiles (1.5 s)",
                 "warning: a.svs: the slides CSV says mpp 0.25", "warning: b.svs: the file is truncated"):
        assert text in err, text
