"""Find presets by name or path, read YAML, apply ``--set`` overrides, and explain validation errors.

A mistake names the file, the key and the allowed values, never pydantic's own wording.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pathotune_cli.config.schema import BackbonePreset, TaskPreset
from pathotune_cli.errors import BadInput

Kind = Literal["backbones", "tasks"]
M = TypeVar("M", bound=BaseModel)

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def preset_dirs() -> list[Path]:
    """Folders that hold presets: the copy inside the wheel, else the source tree's ``presets/``."""
    candidates = [_PACKAGE_DIR / "presets", _PACKAGE_DIR.parents[1] / "presets"]
    return [d for d in candidates if d.is_dir()][:1]


def list_presets(kind: Kind) -> list[str]:
    """Names of the shipped presets of one kind, sorted."""
    names: set[str] = set()
    for d in preset_dirs():
        names.update(p.stem for p in (d / kind).glob("*.yaml"))
    return sorted(names)


def find_preset(kind: Kind, name_or_path: str | Path) -> Path:
    """The YAML file for a preset name, or the user's own YAML path.

    Raises:
        BadInput: the name is unknown (the two closest names are suggested) or the path does not exist.
    """
    text = str(name_or_path)
    as_path = Path(text).expanduser()
    if text.endswith((".yaml", ".yml")) or as_path.is_file():
        if not as_path.is_file():
            raise BadInput(f"preset file {as_path} does not exist", "check the path")
        return as_path
    for d in preset_dirs():
        candidate = d / kind / f"{text}.yaml"
        if candidate.is_file():
            return candidate
    singular = "backbone" if kind == "backbones" else "task"
    names = list_presets(kind)
    close = difflib.get_close_matches(text, names, n=2, cutoff=0.4)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"choose one of: {', '.join(names)}"
    raise BadInput(
        f"unknown {singular} preset '{text}'",
        f"{hint} (`pathotune presets list` shows all; a path to your own YAML works too)",
    )


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping, with a clear message when it does not parse."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BadInput(f"{path}: not valid YAML{where}", "fix the syntax") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror})", "check the path and permissions") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping of keys to values", "see `pathotune presets show`")
    return data


def load_backbone_preset(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> BackbonePreset:
    """Load and validate a backbone preset."""
    path = find_preset("backbones", name_or_path)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    return validate(BackbonePreset, {**data, **(overrides or {})}, source=str(path))


def load_task_preset(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> TaskPreset:
    """Load and validate a task preset."""
    path = find_preset("tasks", name_or_path)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    return validate(TaskPreset, {**data, **(overrides or {})}, source=str(path))


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    """Build ``model`` from ``data``; the first error becomes one line naming ``source`` and the key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadInput(explain(exc, model, source)) from None


def explain(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """Rewrite pydantic's first error into ours: file, key, problem and the allowed values."""
    errors = exc.errors()
    # a typo'd key also makes the real key "missing": name the typo, it is the cause
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc) or "(top level)"
    key = key if key.isprintable() else repr(key)[1:-1]
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=2, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else (
            f" (allowed: {', '.join(allowed)})" if allowed else ""
        )
        return f"{source}: unknown key '{key}'{hint}"
    if kind == "missing":
        return f"{source}: missing key '{key}'"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"{source}: key '{key}' must be one of {expected}; got {error.get('input')!r}"
    if kind == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        return f"{source}: {message}" if not loc else f"{source}: '{key}': {message}"
    return f"{source}: key '{key}': {error['msg'].lower()}; got {error.get('input')!r}"


def apply_overrides(data: dict[str, Any], assignments: list[str], source: str = "--set") -> dict[str, Any]:
    """Apply ``key.sub=value`` assignments to a nested mapping; values are parsed as YAML scalars."""
    result = _deep_copy(data)
    for item in assignments:
        if "=" not in item:
            raise BadInput(f"{source} '{item}' is not key=value", "write e.g. --set train.lr=1e-3")
        key, _, raw = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise BadInput(f"{source} '{item}' has an empty key", "write e.g. --set train.lr=1e-3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise BadInput(f"{source} '{item}': '{part}' is a value, not a group of keys", "check the key")
            node = child
        node[parts[-1]] = value
    return result


def _allowed_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    current: Any = model
    for part in loc:
        if part.isdigit():
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _unwrap(field.annotation)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def _unwrap(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _unwrap(arg)
        if found is not None:
            return found
    return None


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
