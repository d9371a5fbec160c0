"""`tune` on a rank other than 0: quiet, except for its own errors, which rank 0 may not be able to tell."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pathotune_cli.cli import render
from pathotune_cli.cli.app import app
from pathotune_cli.errors import BadInput

RANK_1 = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_rank_1_prints_an_error_from_before_the_ranks_meet_naming_itself(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["tune", "--preset", "no-such-task", "--data", str(tmp_path)], env=RANK_1)
    assert result.exit_code == 2, result.output
    errors = _errors(result.output)
    assert len(errors) == 1 and errors[0].startswith("error: rank 1: ") and "no-such-task" in errors[0]
    assert not render.out.quiet and not render.err.quiet  # the next command in this process prints again


def test_rank_1_leaves_to_rank_0_an_error_rank_0_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pathotune_cli.runs.tune as tune
    from pathotune_cli.errors import shown_elsewhere

    def refused(*args: object, **kwargs: object) -> None:
        raise shown_elsewhere(BadInput("rank 1 refused to start: --out is a file", "choose another --out"))

    monkeypatch.setattr(tune, "resolve_config", lambda opts: None)
    monkeypatch.setattr(tune, "tune_run", refused)
    result = CliRunner().invoke(app, ["tune", "--preset", "demo", "--data", str(tmp_path)], env=RANK_1)
    assert result.exit_code == 2 and _errors(result.output) == [], result.output
