"""`pathotune weights list|add` and `pathotune doctor`: offline, fast, and truthful about every backbone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

runner = CliRunner()


def _json(result) -> dict:
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def _fake_hf_cache(root: Path, repo: str, filename: str) -> Path:
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("a" * 40)
    path = folder / "snapshots" / ("a" * 40) / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not read by list")
    return path


def _tiny_uni(tmp_path: Path, **extra) -> tuple[Path, Path]:
    """A small UNI preset (same flags) and a matching checkpoint file."""
    from pathotune_cli.config import find_preset
    from pathotune_cli.config.loader import read_yaml

    data = read_yaml(find_preset("backbones", "uni"))
    data.update(name="uni-small", model_kwargs={**data["model_kwargs"], "depth": 2, "embed_dim": 64, "num_heads": 2},
                width=64, input_size=32, **extra)
    preset = tmp_path / "uni-small.yaml"
    preset.write_text(yaml.safe_dump(data))
    model = timm.create_model("vit_large_patch16_224", pretrained=False, num_classes=0, img_size=32, depth=2,
                              embed_dim=64, num_heads=2, init_values=1e-5)
    file = tmp_path / "pytorch_model.bin"
    torch.save(model.state_dict(), file)
    return preset, file


def test_weights_list_tells_the_truth_for_every_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathotune_cli.backbones.weights import write_weight_map
    from pathotune_cli.config import list_presets

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    uni = _fake_hf_cache(tmp_path / "hub", "MahmoodLab/UNI", "pytorch_model.bin")
    optimus = _fake_hf_cache(tmp_path / "hub", "bioptimus/H-optimus-0", "pytorch_model.bin")  # main, not pinned
    local = tmp_path / "checkpoint_HE.pth"
    local.write_bytes(b"x")
    write_weight_map({"pathoduet-he": str(local), "virchow2": str(tmp_path / "gone.safetensors")})

    rows = {r["preset"]: r for r in _json(runner.invoke(app, ["weights", "list", "--json"]))["backbones"]}
    assert set(rows) == set(list_presets("backbones"))
    assert (rows["uni"]["status"], rows["uni"]["found_in"], rows["uni"]["path"]) == ("found", "hf-cache", str(uni))
    assert rows["h-optimus-0"]["status"] == "missing"  # only `main` is cached: never taken for the pinned commit
    assert "not the pinned commit d7e1f8884c29" in rows["h-optimus-0"]["problem"] and optimus.is_file()
    assert (rows["pathoduet-he"]["found_in"], rows["pathoduet-he"]["path"]) == ("weight-map", str(local))
    assert rows["virchow2"]["status"] == "broken" and "does not exist" in rows["virchow2"]["problem"]
    assert rows["tiny-random"]["status"] == "random"
    missing = {n for n, r in rows.items() if r["status"] == "missing"}
    assert missing == set(rows) - {"uni", "pathoduet-he", "virchow2", "tiny-random"}
    assert rows["uni2-h"]["fetch"] == "hf download MahmoodLab/UNI2-h pytorch_model.bin"
    assert rows["conch"]["gated"] and not rows["phikon"]["gated"]
    assert "github.com/openmedlab/PathoDuet" in rows["pathoduet-ihc"]["fetch"]

    table = runner.invoke(app, ["weights", "list"])
    assert table.exit_code == 0 and f"uni: {uni}" in table.stdout
    assert "uni2-h: hf download MahmoodLab/UNI2-h pytorch_model.bin" in table.stdout


def test_weights_add_checks_keys_and_records_atomically(tmp_path: Path) -> None:
    from pathotune_cli.backbones.weights import read_weight_map, weight_map_path, write_weight_map

    write_weight_map({"phikon": "/models/phikon.bin"})
    preset, file = _tiny_uni(tmp_path)
    result = runner.invoke(app, ["weights", "add", str(preset), str(file), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tensors"] == len(torch.load(file, weights_only=True)) and len(report["sha256"]) == 64
    assert read_weight_map() == {"phikon": "/models/phikon.bin", "uni-small": str(file.resolve())}
    assert not [p for p in weight_map_path().parent.iterdir() if p.name.startswith(".weights-")]  # no temp left

    state = torch.load(file, weights_only=True)
    state["blocks.0.attn.qkv.lora_a"] = torch.zeros(1)
    del state["blocks.1.ls2.gamma"]
    torch.save(state, tmp_path / "bad.bin")
    bad = runner.invoke(app, ["weights", "add", str(preset), str(tmp_path / "bad.bin")])
    assert bad.exit_code == 2
    error = [line for line in bad.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert "missing keys blocks.1.ls2.gamma; unexpected keys blocks.0.attn.qkv.lora_a" in error[0]


def test_weights_add_refuses_a_file_whose_hash_differs_from_the_published_one(tmp_path: Path) -> None:
    from pathotune_cli.backbones.weights import read_weight_map

    preset, file = _tiny_uni(tmp_path, sha256="0" * 64)
    result = runner.invoke(app, ["weights", "add", str(preset), str(file)])
    assert result.exit_code == 2
    assert f"published file has {'0' * 64}" in result.output and "download it again with" in result.output
    assert "uni-small" not in read_weight_map()


def test_weights_add_on_a_random_preset_is_bad_input() -> None:
    result = runner.invoke(app, ["weights", "add", "tiny-random", "x.bin"])
    assert result.exit_code == 2 and "uses random weights" in result.output


def test_doctor_reports_versions_accelerator_cache_and_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    report = _json(runner.invoke(app, ["doctor", "--json"]))  # its speed is a benchmark figure (startup)
    assert {"pathotune", "python", "torch", "timm", "open_clip_torch", "openslide-python", "tifffile", "h5py"} <= set(
        report["versions"]
    )
    assert report["openslide_library"] and report["accelerator"]["precision"] in ("fp32", "bf16", "fp16")
    assert report["huggingface"]["offline"] is True and report["huggingface"]["cache"] == str(tmp_path / "hub")
    assert report["huggingface"]["free_gib"] > 0
    assert report["problems"] == [] and len(report["weights"]) >= 16


def test_doctor_exits_1_when_a_requested_backbone_lacks_its_weights() -> None:
    result = runner.invoke(app, ["doctor", "--backbone", "uni", "--backbone", "tiny-random"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "uni: weights missing" in errors[0]
    assert "hf download MahmoodLab/UNI pytorch_model.bin" in errors[0]
    assert runner.invoke(app, ["doctor", "--backbone", "tiny-random", "--json"]).exit_code == 0


def test_tune_without_weights_fails_at_once_with_the_fetch_command(
    kather_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("tune did work before finding that the weights are missing")

    monkeypatch.setattr("pathotune_cli.training.data.discover", no_work)  # "at once": before reading data
    monkeypatch.setattr("pathotune_cli.engine.build.load_backbone", no_work)  # or building a model
    result = runner.invoke(app, ["tune", "--preset", "kather2016", "--data", str(kather_dir),
                                 "--backbone", "vit-b16-in21k", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "weights for backbone 'vit-b16-in21k'" in lines[0]
    assert "hf download timm/vit_base_patch16_224.augreg2_in21k_ft_in1k model.safetensors" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["weights", "list", "--json"], ["doctor", "--json"]])
def test_a_cold_start_offline_answers_in_json(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = subprocess.run([sys.executable, "-m", "pathotune_cli", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), dict)  # how fast it answers is a benchmark figure (startup)


def test_a_download_without_network_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            kather_dir: Path) -> None:
    import huggingface_hub
    from typer.testing import CliRunner

    from pathotune_cli.cli.app import app

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("An error happened while trying to locate the file on the Hub and we cannot find the "
                      "requested files in the local cache. Please check your connection and try again.")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    result = CliRunner().invoke(app, ["tune", "--preset", "kather2016", "--data", str(kather_dir), "--backbone",
                                      "uni", "--download", "--epochs", "1", "--out", str(tmp_path / "R")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: could not download the weights of backbone 'uni' (MahmoodLab/UNI/")
    assert "we cannot find the requested files in the local cache;" in lines[0] and "--weights FILE" in lines[0]
