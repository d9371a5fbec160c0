"""The per-slide modality check on real slides, with stain statistics of the real Kather tiles: the fluorescence
NDPI is not the kind of slide an H&E model knows, the CMU H&E slide (SVS and its pyramid TIFF) is."""

from __future__ import annotations

import numpy as np
import pytest

from testdata import KATHER, SLIDES, require_data


@pytest.fixture(scope="module")
def kather_stats():
    from PIL import Image

    from pathotune_cli.engine.stain_stats import fit_stain_stats

    paths = sorted(require_data(KATHER).rglob("*.png"))
    return fit_stain_stats(np.stack([np.array(Image.open(p).convert("RGB")) for p in paths]))


def _check(stats, path):
    from pathotune_cli.runs.trust.modality import slide_modality
    from pathotune_cli.wsi import plan_slide

    plan = plan_slide(require_data(path), target_mpp=0.5, tile_size=224)
    return slide_modality(stats, plan.path, plan.coords, plan.level, plan.read_size, 224, plan.backend)


def test_fluorescence_slide_fails_with_a_named_reason(kather_stats) -> None:
    from pathotune_cli.runs.trust.modality import modality_columns, modality_warning

    check = _check(kather_stats, SLIDES / "fluorescence" / "test3-TRITC-2-560.ndpi")
    assert not check.modality_ok and check.stain_distance > kather_stats.threshold
    columns = modality_columns(check)
    assert columns["modality_ok"] is False and "fluorescence" in columns["modality_reason"]
    line = modality_warning("test3-TRITC-2-560.ndpi", check)
    assert line.startswith("test3-TRITC-2-560.ndpi is not the kind of slide this model was tuned on: dark")


@pytest.mark.parametrize("name", ["cmu-1-small-region.svs", "cmu-1-small-region-pyramid.tiff"])
def test_he_slide_passes(kather_stats, name: str) -> None:
    from pathotune_cli.runs.trust.modality import modality_warning

    check = _check(kather_stats, SLIDES / name)
    assert check.modality_ok and check.reason == "" and check.stain_distance < kather_stats.threshold
    assert modality_warning(name, check) is None


def test_no_statistics_no_check() -> None:
    from pathotune_cli.runs.trust.modality import modality_columns, slide_modality

    assert slide_modality(None, "x.svs", np.zeros((3, 2)), 0, 224, 224) is None
    assert modality_columns(None) == {}
