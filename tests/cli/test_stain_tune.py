"""A prompt file tuned with ``--stain macenko`` on the real Kather tiles: it carries its normalisation (the same
logits as normalising by hand with torchstain), its exports carry it too, and its stain statistics tell the real
fluorescence slide from the real H&E slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from testdata import KATHER, SLIDES, require_data

FLUORESCENCE = SLIDES / "fluorescence" / "test3-TRITC-2-560.ndpi"
CMU = SLIDES / "cmu-1-small-region.svs"


@pytest.fixture(scope="module")
def stained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tune --stain macenko``, 1 epoch, fp32, tiny-random, on the 76 real Kather tiles."""
    from typer.testing import CliRunner

    from pathotune_cli.cli.app import app

    out = tmp_path_factory.mktemp("stain") / "RUN"
    result = CliRunner().invoke(app, [
        "tune", "--preset", "kather2016", "--data", str(require_data(KATHER)), "--backbone", "tiny-random",
        "--epochs", "1", "--precision", "fp32", "--stain", "macenko", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "stain normalisation macenko fitted to 61 of 61 training tiles (seed 0)" in result.output
    return out / "prompts.safetensors"


def _slide_tiles(path: Path, count: int = 32) -> np.ndarray:
    """A seeded sample of a real slide's tissue tiles at 0.5 µm/px, uint8 (N, 224, 224, 3)."""
    from pathotune_cli.wsi.open import open_slide
    from pathotune_cli.wsi.plan import plan_slide
    from pathotune_cli.wsi.tiles import read_batch

    plan = plan_slide(require_data(path), target_mpp=0.5, tile_size=224)
    index = np.sort(np.random.default_rng(0).permutation(len(plan.coords))[:count])
    with open_slide(path) as reader:
        return read_batch(reader, plan.coords[index], plan.grid.level, plan.grid.read_size, 224)


def _kather_tiles() -> np.ndarray:
    from PIL import Image

    return np.stack([np.array(Image.open(p).convert("RGB")) for p in sorted(require_data(KATHER).rglob("*.png"))])


def test_stain_travels_in_the_prompt_file(stained: Path) -> None:
    from pathotune_cli.engine import load_prompted_model

    model, file = load_prompted_model(stained)
    header = file.header
    assert header.format_version == 3 and header.stain is not None and header.stain.method == "macenko"
    assert header.stain.library.startswith("torchstain ")
    assert set(file.tensors) >= {"stain.he_ref", "stain.max_c_ref"}
    assert model.stain is not None and torch.equal(model.stain.he_ref, file.tensors["stain.he_ref"])
    assert header.stain_stats is not None and header.stain_stats.tiles == 61 and header.stain_stats.threshold > 0


def test_inspect_verifies_and_shows_the_stain_section(stained: Path) -> None:
    from pathotune_cli.runs.inspect import inspect_run

    doc = inspect_run(stained).to_dict()
    assert doc["tensors_verified"] and doc["stain"]["method"] == "macenko" and doc["stain_stats"]["tiles"] == 61
    assert {"stain.he_ref", "stain.max_c_ref"} <= {t["name"] for t in doc["tensors"]}


def test_logits_equal_normalising_by_hand_with_torchstain_then_the_model_without_it(stained: Path) -> None:
    from torchstain.torch.normalizers import TorchMacenkoNormalizer

    from pathotune_cli.engine import load_prompted_model

    model, file = load_prompted_model(stained)
    tiles = torch.from_numpy(_kather_tiles()[::6]).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        inside = model(tiles.float() / 255)
    library = TorchMacenkoNormalizer()
    library.HERef, library.maxCRef = file.tensors["stain.he_ref"], file.tensors["stain.max_c_ref"]
    by_hand = torch.stack([library.normalize(t, stains=False)[0].permute(2, 0, 1) for t in tiles]).float() / 255
    model.stain = None
    with torch.no_grad():
        outside = model(by_hand)
        raw = model(tiles.float() / 255)
    assert torch.equal(inside.argmax(1), outside.argmax(1))
    gap = float((inside - outside).abs().max())
    assert gap < 0.05 * float(raw.std()), gap  # torchstain truncates to integers; nothing more
    assert float((inside - raw).abs().max()) > 10 * gap  # the normalisation does change the logits


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exports_carry_the_normalisation_and_agree_with_the_eager_model(stained: Path, fmt: str) -> None:
    from pathotune_cli.runs.export import ExportOptions, export_run

    doc = export_run(ExportOptions(prompts=stained, format=fmt, check_data=require_data(KATHER))).to_dict()
    assert doc["check"]["passed"] and doc["check"]["max_abs_diff"] <= 1e-4 and doc["check"]["real_tiles"] == 32


def test_fluorescence_slide_is_not_the_kind_the_model_knows_and_he_slide_is(stained: Path) -> None:
    from pathotune_cli.engine.promptfile import read_prompt_file
    from pathotune_cli.engine.stain_stats import check_modality

    stats = read_prompt_file(stained).header.stain_stats
    distance, ok, reason = check_modality(stats, _slide_tiles(FLUORESCENCE))
    assert not ok and distance > stats.threshold and "not a brightfield stain" in reason
    distance_he, ok_he, reason_he = check_modality(stats, _slide_tiles(CMU))
    assert ok_he and reason_he == "" and distance_he < stats.threshold < distance


def test_normalising_another_sources_tiles_brings_their_stain_statistics_towards_training(stained: Path) -> None:
    """Must show: the real CMU slide's tiles, normalised by the prompt file's Macenko reference (fitted to the
    Kather training tiles), have stain vectors and maximum concentrations (torchstain's Macenko estimate over each
    set's pixels) closer to the Kather tiles' than before."""
    from pathotune_cli.engine import load_prompted_model

    model, _ = load_prompted_model(stained)
    kather = _kather_tiles()
    cmu = _slide_tiles(CMU, count=48)
    with torch.no_grad():
        normed = model.stain(torch.from_numpy(cmu).permute(0, 3, 1, 2).float() / 255)
    normed = (normed * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    he_k, max_k = _macenko_estimate(kather)
    he_c, max_c = _macenko_estimate(cmu)
    he_n, max_n = _macenko_estimate(normed)
    before, after = _angles(he_k, he_c), _angles(he_k, he_n)
    conc_before, conc_after = float((max_c / max_k - 1).abs().max()), float((max_n / max_k - 1).abs().max())
    print(f"\nCMU vs Kather stain vectors (H, E): {before[0]:.1f}, {before[1]:.1f} degrees before, "
          f"{after[0]:.1f}, {after[1]:.1f} after; max concentration gap {conc_before:.1%} -> {conc_after:.1%}")
    assert max(after) < 0.5 * min(before) and max(before) > 5
    assert conc_after < conc_before


def _macenko_estimate(tiles: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """torchstain's Macenko stain vectors (3, 2) and 99th-percentile concentrations (2,) over a set's pixels."""
    from pathotune_cli.engine.stain_fit import fit_reference

    fitted = fit_reference("macenko", torch.from_numpy(tiles).permute(3, 0, 1, 2).reshape(3, -1), "tiles")
    return fitted["he_ref"], fitted["max_c_ref"]


def _angles(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    a, b = torch.nn.functional.normalize(a, dim=0), torch.nn.functional.normalize(b, dim=0)
    return torch.rad2deg(torch.acos((a * b).sum(0).clamp(-1, 1))).tolist()


def test_eval_says_when_a_tile_set_is_not_the_kind_the_model_knows(stained: Path, tmp_path: Path) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from pathotune_cli.cli.app import app

    folder = tmp_path / "fluorescence" / "TUMOR"
    folder.mkdir(parents=True)
    for i, tile in enumerate(_slide_tiles(FLUORESCENCE, count=8)):
        Image.fromarray(tile).save(folder / f"tile_{i}.png")
    result = CliRunner().invoke(app, ["eval", str(stained), "--data", str(folder.parent), "--bootstrap", "0",
                                      "--out", str(tmp_path / "eval_fl"), "--json"])
    assert result.exit_code == 0, result.output
    assert "is not the kind of slide this model was tuned on: dark, not a brightfield stain" in result.output
    ok = CliRunner().invoke(app, ["eval", str(stained), "--data", str(require_data(KATHER)), "--bootstrap", "0",
                                  "--out", str(tmp_path / "eval_he")])
    assert ok.exit_code == 0 and "not the kind of slide" not in ok.output


def test_predict_flags_the_fluorescence_slide_and_not_the_he_slide(stained: Path, tmp_path: Path) -> None:
    import csv

    from typer.testing import CliRunner

    from pathotune_cli.cli.app import app

    result = CliRunner().invoke(app, ["predict", "--prompts", str(stained), str(require_data(FLUORESCENCE)),
                                      str(require_data(CMU)), "--out", str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    assert f"{FLUORESCENCE.name} is not the kind of slide this model was tuned on" in result.output
    assert f"{CMU.name} is not the kind" not in result.output
    with (tmp_path / "pred" / "summary.csv").open() as handle:
        rows = {Path(r["slide"]).name: r for r in csv.DictReader(handle)}
    assert rows[FLUORESCENCE.name]["modality_ok"] in ("False", "false", "0")
    assert rows[CMU.name]["modality_ok"] in ("True", "true", "1")
    assert float(rows[FLUORESCENCE.name]["stain_distance"]) > float(rows[CMU.name]["stain_distance"])
    strict = CliRunner().invoke(app, ["predict", "--prompts", str(stained), str(FLUORESCENCE), "--strict",
                                      "--out", str(tmp_path / "strict")])
    assert strict.exit_code == 1


@pytest.mark.slow
def test_wsinfer_runs_the_stained_export_and_agrees_with_predict(stained: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Must show: WSInfer 0.6.1 itself runs the export (normalisation inside) and agrees with predict."""
    import json

    from typer.testing import CliRunner

    from pathotune_cli.cli.app import app

    from wsinfer_env import wsinfer_executable, wsinfer_home

    exe = wsinfer_executable()
    monkeypatch.setenv("HOME", str(wsinfer_home()))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["export", str(stained), "--format", "wsinfer", "--out", str(tmp_path / "ws"),
                                      "--check-wsinfer", str(require_data(CMU)), "--wsinfer", str(exe), "--json"])
    assert result.exit_code == 0, result.output
    checked = json.loads(result.stdout)["wsinfer_check"]
    print(f"\nWSInfer vs predict on {CMU.name}: {checked['shared_tiles']} tiles, top-class agreement "
          f"{checked['top_class_agreement']:.4f}, max |dp| {checked['max_abs_dp']:.2e}")
    assert checked["passed"] and checked["shared_tiles"] >= 40 and checked["top_class_agreement"] >= 0.99
