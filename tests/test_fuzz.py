"""Fuzzing: every generated input (prompt-file headers, task and backbone YAML, data and slides CSVs, --set values)
ends in success or a one-line error (``BadInput`` / ``PathotuneError``), never an unexpected exception.

Derandomized (the same examples on every run and machine) and kept to a few dozen examples each, so the suite
stays fast; raise ``max_examples`` locally to search harder.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pathotune_cli.errors import PathotuneError

FUZZ = settings(max_examples=int(os.environ.get("PATHOTUNE_FUZZ_EXAMPLES", "40")), derandomize=True, deadline=None,
                database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["", "{classes}", "{name}", "{x}", "tumor", "-1", "1e9"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=10)


def ends_well(action: Callable[[], Any]) -> None:
    """``action`` succeeds or raises a ``PathotuneError`` whose line is one line; anything else fails the test."""
    try:
        action()
    except PathotuneError as exc:
        line = exc.one_line()
        assert line and "\n" not in line, repr(line)
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"unexpected {type(exc).__name__}: {exc}")


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


def mutate(data: Any, draw: Any) -> Any:
    """``data`` with one place replaced by a random value, removed, or given an unknown key."""
    data = copy.deepcopy(data)
    paths = [p for p in _paths(data) if p]
    path = draw(st.sampled_from(paths))
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    if action == "replace" or not isinstance(parent, dict):
        parent[path[-1]] = draw(VALUES)
    elif action == "remove":
        del parent[path[-1]]
    else:
        parent[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
    return data


@pytest.fixture(scope="module")
def prompt_file(tiny_run: Path) -> Any:
    from pathotune_cli.engine.promptfile import read_prompt_file

    return read_prompt_file(tiny_run / "prompts.safetensors")


@FUZZ
@given(st.data())
def test_prompt_file_headers(prompt_file: Any, data: st.DataObject) -> None:
    from pathotune_cli.engine import load_prompted_model
    from pathotune_cli.engine.promptfile import read_prompt_file, write_raw

    header = mutate(prompt_file.header.to_json(), data.draw)
    with tempfile.TemporaryDirectory() as folder:
        path = write_raw(Path(folder) / "p.safetensors", prompt_file.tensors, header)  # the checksum fits
        ends_well(lambda: read_prompt_file(path))
        ends_well(lambda: load_prompted_model(path))


TASK = {"name": "t", "description": "d", "template": "tissue; classes: {classes}", "class_template": "{description}",
        "classes": [{"name": "tumor", "description": "a", "aliases": ["tum"]}, {"name": "stroma", "description": "b"}],
        "tile": {"mpp": 0.5, "size": 224}, "ordinal": False}


def _yaml_file(folder: str, document: Any, raw: str | None) -> Path:
    path = Path(folder) / "preset.yaml"
    try:
        text = raw if raw is not None else yaml.safe_dump(document, allow_unicode=True)
    except yaml.YAMLError:
        text = "{}"
    path.write_text(text, encoding="utf-8")
    return path


@FUZZ
@given(st.data(), st.one_of(st.none(), st.text(max_size=60)))
def test_task_yaml(data: st.DataObject, raw: str | None) -> None:
    from pathotune_cli.config import load_task_preset

    with tempfile.TemporaryDirectory() as folder:
        path = _yaml_file(folder, mutate(TASK, data.draw), raw)
        ends_well(lambda: load_task_preset(path).texts())


@FUZZ
@given(st.sampled_from(["template", "class_template", "name", "description"]),
       st.text(alphabet="{}:!.[]0 aclsesnm", max_size=16))
def test_task_text_templates(key: str, text: str) -> None:
    from pathotune_cli.config.schema import TaskPreset

    ends_well(lambda: _validated(TaskPreset, {**TASK, key: text}).texts())


def _validated(model: Any, data: dict[str, Any]) -> Any:
    from pathotune_cli.config.loader import validate

    return validate(model, data, source="task.yaml")


@FUZZ
@given(st.data(), st.one_of(st.none(), st.text(max_size=60)))
def test_backbone_yaml(data: st.DataObject, raw: str | None) -> None:
    from pathotune_cli.config import load_backbone_preset

    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "presets/backbones/tiny-random.yaml").read_text())
    with tempfile.TemporaryDirectory() as folder:
        path = _yaml_file(folder, mutate(base, data.draw), raw)
        ends_well(lambda: load_backbone_preset(path))


CELLS = st.sampled_from(["path", "label", "split", "tumor", "stroma", "TUMOR", "a.png", "b.png", "missing.png",
                         "train", "val", "test", "bogus", "", " ", '"', "a,b", "../a.png", "\x00", "é"])


def _csv_text(draw: Any) -> str:
    rows = draw(st.lists(st.lists(CELLS, max_size=4), max_size=5))
    return "\n".join(",".join(row) for row in rows) + draw(st.sampled_from(["", "\n", "\r\n"]))


@FUZZ
@given(st.data())
def test_data_csvs(demo_task: Any, data: st.DataObject) -> None:
    from PIL import Image

    from pathotune_cli.training.data import discover

    with tempfile.TemporaryDirectory() as folder:
        for name in ("a.png", "b.png"):
            Image.new("RGB", (8, 8)).save(Path(folder) / name)
        path = Path(folder) / "data.csv"
        path.write_bytes(_csv_text(data.draw).encode("utf-8", "surrogatepass"))
        ends_well(lambda: discover(path, demo_task))


SLIDE_CELLS = st.sampled_from(["slide", "mpp", "wsi", "path", "a.svs", "0.25", "0", "-1", "nan", "inf", "1e400",
                               "abc", "", " ", "a,b", "\x00"])


@FUZZ
@given(st.lists(st.lists(SLIDE_CELLS, max_size=3), max_size=5))
def test_slides_csvs(rows: list[list[str]]) -> None:
    from pathotune_cli.runs.per_slide.inputs import read_slide_list

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "slides.csv"
        path.write_text("\n".join(",".join(row) for row in rows), encoding="utf-8")
        ends_well(lambda: read_slide_list(path))


KEYS = st.sampled_from(["train.lr", "train.epochs", "train.batch_size", "train.shots", "train.val_fraction",
                        "train.augment.hue", "prompt.method", "prompt.tvp.tokens", "prompt.tvp.depth",
                        "prompt.ttp.tokens", "prompt.ivp.tokens", "prompt.pool", "task.tile.mpp", "task.classes",
                        "backbone.input_size", "backbone.width", "seed", "precision", "train", "nope.key", "train.",
                        ".", "train.augment"])


@FUZZ
@given(sets=st.lists(st.tuples(KEYS, st.one_of(st.text(max_size=10), st.sampled_from(
    ["1", "0", "-1", "[]", "{}", "null", "1e-3", "yes", ":"]))), max_size=3), no_equals=st.booleans())
def test_set_values(sets: list[tuple[str, str]], no_equals: bool, tiny_run: Path) -> None:
    from pathotune_cli.runs.tune import TuneOptions, resolve_config

    assignments = [f"{k}{'' if no_equals and i == 0 else '='}{v}" for i, (k, v) in enumerate(sets)]
    ends_well(lambda: resolve_config(TuneOptions(preset="demo", data=tiny_run.parent / "tiles",
                                                 backbone="tiny-random", sets=tuple(assignments))))


def test_the_fuzzers_see_valid_inputs_succeed(prompt_file: Any, tmp_path: Path) -> None:
    from pathotune_cli.config import load_task_preset
    from pathotune_cli.engine.promptfile import read_prompt_file, write_raw

    path = write_raw(tmp_path / "p.safetensors", prompt_file.tensors, json.loads(json.dumps(
        prompt_file.header.to_json())))
    assert read_prompt_file(path).header.classes == prompt_file.header.classes
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(TASK))
    assert load_task_preset(tmp_path / "t.yaml").class_names == ["tumor", "stroma"]
