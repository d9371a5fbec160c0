"""Lab defaults, set once with ``pathotune config set KEY VALUE``: the backbone, the prompt file, the output root.

They live in ``config.yaml`` beside the weight map (``~/.config/pathotune/``, or the folder of the file that
``PATHOTUNE_WEIGHTS`` names), so a lab that points everyone at one weight map shares its defaults too, and no
other environment variable is needed. A command's own option always wins over a lab default.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from pathotune_cli.config.schema import Strict
from pathotune_cli.errors import BadInput

CONFIG_NAME = "config.yaml"
KEYS: dict[str, str] = {
    "backbone": "backbone preset that `tune` uses without --backbone (e.g. uni)",
    "prompts": "prompt file that `predict`, `eval`, `export` and `inspect` use without --prompts",
    "out": "folder under which commands write without --out (tune: OUT/runs/tune, predict: OUT/predictions, ...)",
}
DEFAULT_OUTS: dict[str, str] = {
    "tune": "runs/tune",
    "predict": "predictions",
    "tile": "tiles",
    "features": "features",
    "demo": "demo-out",
}
"""Where each command writes without ``--out``, under the lab's ``out`` root (the current folder if unset)."""


class LabDefaults(Strict):
    """The lab's defaults; None means not set."""

    backbone: str | None = None
    prompts: str | None = None
    out: str | None = None


def config_dir() -> Path:
    """The folder of the weight map and the lab defaults: that of ``$PATHOTUNE_WEIGHTS``, else
    ``$XDG_CONFIG_HOME/pathotune`` (``~/.config/pathotune`` when it is unset)."""
    env = os.environ.get("PATHOTUNE_WEIGHTS")
    if env:
        return Path(env).expanduser().parent
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config").expanduser() / "pathotune"


def lab_config_path() -> Path:
    """The lab defaults file."""
    return config_dir() / CONFIG_NAME


def read_lab_defaults() -> LabDefaults:
    """The lab defaults (all unset when the file does not exist).

    Raises:
        BadInput: the file does not parse or holds an unknown key.
    """
    path = lab_config_path()
    if not path.is_file():
        return LabDefaults()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        raise BadInput(
            f"lab defaults {path} do not parse", "fix the file, or remove it and `pathotune config set` again"
        ) from None
    if not isinstance(data, dict):
        raise BadInput(f"lab defaults {path} must map keys to values", f"keys: {', '.join(KEYS)}")
    try:
        return LabDefaults.model_validate({str(k): None if v is None else str(v) for k, v in data.items()})
    except ValidationError:
        unknown = sorted(set(map(str, data)) - set(KEYS))
        raise BadInput(f"lab defaults {path}: unknown key '{unknown[0]}'", f"keys: {', '.join(KEYS)}") from None


def check_key(key: str) -> str:
    """``key`` if it is a lab default's name.

    Raises:
        BadInput: an unknown key, with the closest one and every allowed key.
    """
    if key in KEYS:
        return key
    close = difflib.get_close_matches(key, list(KEYS), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise BadInput(f"unknown config key '{key}'", f"{hint}keys: {', '.join(KEYS)}")


def write_lab_defaults(defaults: LabDefaults) -> Path:
    """Replace the lab defaults file atomically (unset keys are left out)."""
    from pathotune_cli.files import write_text

    values = {k: v for k, v in defaults.model_dump().items() if v is not None}
    text = "# pathotune lab defaults (written by `pathotune config set`)\n"
    text += yaml.safe_dump(values, sort_keys=False, allow_unicode=True) if values else ""
    return write_text(lab_config_path(), text)


def output_folder(command: str, given: str | os.PathLike[str] | None) -> Path:
    """``--out`` if given, else the command's default folder under the lab's ``out`` root."""
    if given is not None:
        return Path(given)
    root = read_lab_defaults().out
    default = Path(DEFAULT_OUTS[command])
    return Path(root).expanduser() / default if root else default
