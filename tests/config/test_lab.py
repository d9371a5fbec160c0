"""Lab defaults: one file beside the weight map, read strictly, and the output root they give."""

from __future__ import annotations

from pathlib import Path

import pytest

from pathotune_cli.config.lab import (
    LabDefaults,
    check_key,
    lab_config_path,
    output_folder,
    read_lab_defaults,
    write_lab_defaults,
)
from pathotune_cli.errors import BadInput


def test_the_defaults_live_beside_the_weight_map_and_round_trip(tmp_path: Path) -> None:
    from pathotune_cli.backbones.weights import weight_map_path

    assert lab_config_path().parent == weight_map_path().parent
    assert read_lab_defaults() == LabDefaults()
    write_lab_defaults(LabDefaults(backbone="uni", out=str(tmp_path)))
    assert read_lab_defaults() == LabDefaults(backbone="uni", out=str(tmp_path))
    assert oct(lab_config_path().stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_an_unknown_key_in_the_file_or_on_the_command_line_is_named(tmp_path: Path) -> None:
    lab_config_path().parent.mkdir(parents=True, exist_ok=True)
    lab_config_path().write_text("backbone: uni\ncolour: blue\n")
    with pytest.raises(BadInput, match="unknown key 'colour'"):
        read_lab_defaults()
    with pytest.raises(BadInput, match="unknown config key 'prompt'") as info:
        check_key("prompt")
    assert "did you mean 'prompts'" in info.value.fix


def test_commands_write_under_the_out_root_unless_told_otherwise(tmp_path: Path) -> None:
    assert output_folder("predict", None) == Path("predictions")
    write_lab_defaults(LabDefaults(out=str(tmp_path)))
    assert output_folder("tune", None) == tmp_path / "runs" / "tune"
    assert output_folder("tile", tmp_path / "mine") == tmp_path / "mine"


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_config_folder_follows_xdg_config_home_unless_pathotune_weights_names_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathotune_cli.backbones.weights import weight_map_path
    from pathotune_cli.config.lab import lab_config_path

    monkeypatch.delenv("PATHOTUNE_WEIGHTS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert weight_map_path() == tmp_path / "xdg" / "pathotune" / "weights.yaml"
    assert lab_config_path().parent == tmp_path / "xdg" / "pathotune"
    monkeypatch.setenv("PATHOTUNE_WEIGHTS", str(tmp_path / "lab" / "map.yaml"))
    assert lab_config_path().parent == tmp_path / "lab"
