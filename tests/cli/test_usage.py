"""Usage errors are one line like every other error; --help and --version work as before."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pathotune_cli import __version__
from pathotune_cli.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize("args", [["--help"], ["tile", "--help"], ["presets", "--help"], ["tune", "--help"]])
def test_help_still_prints_and_exits_0(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "Usage" in result.output and "error:" not in result.output


def test_version_prints_and_exits_0() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"pathotune {__version__}"


def test_no_arguments_print_the_help_with_exit_2() -> None:
    result = runner.invoke(app, [])
    assert result.exit_code == 2 and "Usage" in result.output and "error:" not in result.output


def test_the_console_script_gives_one_line_and_exit_2_for_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "pathotune_cli", "tune", "--epochs", "0"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: --epochs 0 is out of range (allowed: 1 or more); see `pathotune tune --help`"
    ]


def test_the_console_script_keeps_exit_code_0_and_1() -> None:
    ok = subprocess.run([sys.executable, "-m", "pathotune_cli", "presets", "list"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    env = {**os.environ, "PATHOTUNE_WEIGHTS": "/nonexistent/weights.yaml"}  # no lab defaults: `get` exits 1
    unset = subprocess.run([sys.executable, "-m", "pathotune_cli", "config", "get", "out"], capture_output=True,
                           text=True, timeout=120, env=env)
    assert unset.returncode == 1, unset.stderr
