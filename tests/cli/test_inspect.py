"""`pathotune inspect`: what a prompt file holds; a damaged one is refused in one line; weights never load."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

from testdata import break_prompt_metadata, tiny_preset

runner = CliRunner()




@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``pathotune`` prompt file on a tiny random backbone, with validation metrics in its header."""
    import torch

    from pathotune_cli.config import load_task_preset
    from pathotune_cli.config.run import PromptSettings
    from pathotune_cli.engine import build_prompted_model, prompt_header, save_prompt_file

    task, preset = load_task_preset("demo"), tiny_preset()
    torch.manual_seed(0)
    built = build_prompted_model(task, preset, PromptSettings(method="pathotune"))
    meta = prompt_header(built, task, preset, metrics={"split": "validation", "accuracy": 0.5})
    return save_prompt_file(
        tmp_path_factory.mktemp("inspect") / "prompts.safetensors", built.model.trained_state(), meta
    )


def _rewrite(src: Path, dst: Path, tensors=None, meta=None, sign: bool = True) -> Path:
    """A copy of a prompt file with some tensors or metadata replaced: as a tamperer would write it
    (``sign=False``: the checksum no longer fits), or as a buggy writer would (the checksum made to fit, so the
    checks behind it are reached)."""
    from safetensors.torch import save_file

    from pathotune_cli.engine.promptfile import read_prompt_file, write_raw

    file = read_prompt_file(src)
    tensors = {**file.tensors, **(tensors or {})}
    header = {**file.header.to_json(), **(meta or {})}
    if sign:
        return write_raw(dst, tensors, header)
    save_file(tensors, str(dst), metadata={"pathotune": json.dumps(header)})
    return dst


def _flat(output: str) -> str:
    """Table text with borders and wrapping removed, so a check does not depend on the terminal width."""
    return " ".join(re.sub(r"[│┃┏┓┗┛┡┩└┘━─┳┻╇┴┬╈]", " ", output).split())


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_inspect_shows_metadata_tensors_and_that_the_backbone_resolves(good: Path) -> None:
    result = runner.invoke(app, ["inspect", str(good)])
    assert result.exit_code == 0, result.output
    flat = _flat(result.output)
    for text in (
        "demo: tumor, stroma, lymphocytes, adipose",
        "pathotune",
        "test-tiny",
        "resolves (random)",
        "tvp.tokens",
        "ttp.text_embeddings",
        "vrm.net.3.weight",
        "head.weight",
        "shapes match the metadata",
        "0.5 mpp, 112 px",
        "accuracy 0.500",
    ):
        assert text in flat, text


def test_inspect_json_lists_tensors_size_and_sha256(good: Path) -> None:
    import hashlib

    result = runner.invoke(app, ["inspect", str(good), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["file"]["bytes"] == good.stat().st_size
    assert doc["file"]["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert doc["tensors_verified"] and doc["backbone"]["resolves"] == {"ok": True, "source": "random"}
    shapes = {t["name"]: t["shape"] for t in doc["tensors"]}
    assert shapes["head.weight"] == [4, 64] and shapes["tvp.tokens"] == [2, 8, 64]
    assert doc["method"] == "pathotune" and doc["text_encoder"] == "hash" and len(doc["texts"]) == 5
    assert len(doc["backbone"]["fingerprint"]) == 16


def test_inspect_truncated_file_exits_2_with_one_line(good: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    result = runner.invoke(app, ["inspect", str(cut)])
    assert result.exit_code == 2
    assert "not a readable prompt file" in _one_error_line(result)


def test_inspect_altered_tensor_shape_exits_2_with_one_line(good: Path, tmp_path: Path) -> None:
    import torch

    altered = _rewrite(good, tmp_path / "altered.safetensors", tensors={"head.weight": torch.zeros(5, 64)})
    result = runner.invoke(app, ["inspect", str(altered)])
    assert result.exit_code == 2
    assert re.search(r"tensor 'head.weight' has shape \(5, 64\), expected \(4, 64\)", _one_error_line(result))


def test_inspect_text_embeddings_that_do_not_match_the_texts_exit_2(good: Path, tmp_path: Path) -> None:
    from pathotune_cli.engine.promptfile import read_prompt_file

    stored = read_prompt_file(good).tensors["ttp.text_embeddings"]
    altered = _rewrite(
        good, tmp_path / "texts.safetensors", tensors={"ttp.text_embeddings": stored[:3].clone()}
    )
    result = runner.invoke(app, ["inspect", str(altered)])
    assert result.exit_code == 2
    assert "(3, 256) stored text embeddings for 5 texts" in _one_error_line(result)


def test_inspect_unparseable_metadata_exits_2_with_one_line(good: Path, tmp_path: Path) -> None:
    bad = break_prompt_metadata(good, tmp_path / "bad.safetensors")
    result = runner.invoke(app, ["inspect", str(bad)])
    assert result.exit_code == 2
    assert "metadata does not parse" in _one_error_line(result)


def test_inspect_reports_missing_weights_and_still_verifies_tensors(good: Path, tmp_path: Path) -> None:
    from pathotune_cli.engine.promptfile import read_prompt_file

    meta = read_prompt_file(good).header.to_json()
    gated = {
        **meta["backbone"],
        "preset": {**meta["backbone"]["preset"], "name": "test-gated", "weights": "hf-hub:nobody/not-cached"},
    }
    missing = _rewrite(good, tmp_path / "missing.safetensors", meta={"backbone": gated})
    result = runner.invoke(app, ["inspect", str(missing), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["tensors_verified"]
    assert doc["backbone"]["resolves"]["ok"] is False
    assert "hf download nobody/not-cached" in doc["backbone"]["resolves"]["fix"]
    result = runner.invoke(app, ["inspect", str(missing)])
    assert result.exit_code == 0 and "missing: fetch them with `hf download nobody/not-cached" in _flat(
        result.output
    )
