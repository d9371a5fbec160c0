"""``pathotune config set|get|unset|list`` as plain functions: lab defaults, each value checked before it is kept.

A default that would fail later fails here instead: a backbone name must be a preset (its weights may come
later, so they are not required), a prompt file must be one that pathotune reads, an output root must be a
folder or a place where one can be made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from pathotune_cli.config import load_backbone_preset
from pathotune_cli.config.lab import KEYS, check_key, lab_config_path, read_lab_defaults, write_lab_defaults
from pathotune_cli.errors import BadInput


@dataclass(frozen=True)
class DefaultSet:
    """A lab default just set: its key, its checked value, what it was, and the file it lives in."""

    key: str
    value: str
    previous: str | None
    file: str

    def to_dict(self) -> dict[str, object]:
        """The document ``--json`` prints."""
        return asdict(self)


@dataclass(frozen=True)
class DefaultUnset:
    """A lab default just removed: its key, what it was, and the file."""

    key: str
    previous: str | None
    file: str

    def to_dict(self) -> dict[str, object]:
        """The document ``--json`` prints."""
        return asdict(self)


@dataclass(frozen=True)
class LabDefault:
    """One lab default key: its value (None when unset) and what it does."""

    key: str
    value: str | None
    meaning: str


@dataclass(frozen=True)
class DefaultsListed:
    """Every lab default key, in order, and the file they live in."""

    file: str
    defaults: list[LabDefault]

    def to_dict(self) -> dict[str, object]:
        """The document ``--json`` prints: each key maps to its value and meaning."""
        return {"file": self.file,
                "defaults": {d.key: {"value": d.value, "meaning": d.meaning} for d in self.defaults}}


def set_default(key: str, value: str) -> DefaultSet:
    """Check ``value`` for ``key`` and record it; returns what is now set.

    Raises:
        BadInput: an unknown key, or a value that would not work (naming why and what would).
    """
    key = check_key(key)
    checked = _check_value(key, value)
    defaults = read_lab_defaults()
    previous = getattr(defaults, key)
    path = write_lab_defaults(defaults.model_copy(update={key: checked}))
    return DefaultSet(key=key, value=checked, previous=previous, file=str(path))


def get_default(key: str) -> str | None:
    """The value of one lab default, or None when it is not set."""
    return getattr(read_lab_defaults(), check_key(key))


def unset_default(key: str) -> DefaultUnset:
    """Remove one lab default; returns what it was."""
    key = check_key(key)
    defaults = read_lab_defaults()
    previous = getattr(defaults, key)
    path = write_lab_defaults(defaults.model_copy(update={key: None}))
    return DefaultUnset(key=key, previous=previous, file=str(path))


def list_defaults() -> DefaultsListed:
    """Every key with its value (None when unset) and what it does, and the file they live in."""
    defaults = read_lab_defaults()
    return DefaultsListed(
        file=str(lab_config_path()),
        defaults=[LabDefault(key, getattr(defaults, key), meaning) for key, meaning in KEYS.items()],
    )


def _check_value(key: str, value: str) -> str:
    if not value.strip():
        raise BadInput(f"config {key}: empty value", f"give a value, or `pathotune config unset {key}`")
    if key == "backbone":
        return load_backbone_preset(value).name if not value.endswith((".yaml", ".yml")) else _absolute(value)
    if key == "prompts":
        from pathotune_cli.engine.promptfile import read_prompt_file

        path = _absolute(value)
        read_prompt_file(path)  # the same checks (and one-line refusals) as every command that loads it
        return path
    path = Path(_absolute(value))
    if path.exists() and not path.is_dir():
        raise BadInput(f"config out: {path} is a file", "give a folder (it is made when a command first writes)")
    return str(path)


def _absolute(value: str) -> str:
    return str(Path(value).expanduser().resolve())

