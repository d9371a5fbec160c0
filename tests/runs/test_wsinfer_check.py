"""``--check-wsinfer`` compares WSInfer's tiles with predict's where both have one at the same place and size."""

from __future__ import annotations

import pytest

from pathotune_cli.errors import PathotuneError
from pathotune_cli.runs.exports.wsinfer_check import _judge, compare_tiles

CLASSES = ["a", "b"]


def test_only_tiles_at_the_same_place_and_size_are_compared() -> None:
    ours = {(0, 0, 224): [0.9, 0.1], (224, 0, 224): [0.2, 0.8], (448, 0, 224): [0.5, 0.5]}
    theirs = {(0, 0, 224): [0.89, 0.11], (224, 0, 224): [0.6, 0.4], (448, 0, 222): [0.0, 1.0], (9, 9, 224): [1, 0]}
    found = compare_tiles(ours, theirs, CLASSES)
    assert (found["tiles_pathotune"], found["tiles_wsinfer"], found["shared_tiles"]) == (3, 4, 2)
    assert found["top_class_agreement"] == 0.5
    assert found["max_abs_dp"] == pytest.approx(0.4) and found["mean_abs_dp"] == pytest.approx(0.205)


def test_disagreement_fails_in_one_line_with_the_numbers_and_names_a_coarser_level() -> None:
    found = compare_tiles({(0, 0, 1): [0.9, 0.1]}, {(0, 0, 1): [0.5, 0.5]}, CLASSES)
    with pytest.raises(PathotuneError, match=r"disagree on s.svs: the top class agrees on 100.0% of 1 shared tiles "
                                             r"\(needs 99%\), max \|dp\| 0.400 \(allowed 0.02\)") as failed:
        _judge({**found, "pathotune_level": 0}, "s.svs")
    assert "not faithful" in failed.value.fix
    with pytest.raises(PathotuneError) as failed:
        _judge({**found, "pathotune_level": 1}, "s.svs")
    assert "pathotune read pyramid level 1 where WSInfer always reads level 0" in failed.value.fix


def test_no_shared_tiles_fails_saying_how_many_each_kept() -> None:
    found = compare_tiles({(0, 0, 1): [1, 0]}, {(5, 0, 1): [1, 0]}, CLASSES)
    with pytest.raises(PathotuneError, match=r"share no tiles on s.svs \(WSInfer 1, pathotune 1\)"):
        _judge(found, "s.svs")


def test_agreement_within_the_thresholds_passes() -> None:
    found = compare_tiles({(0, 0, 1): [0.7, 0.3]}, {(0, 0, 1): [0.69, 0.31]}, CLASSES)
    _judge(found, "s.svs")
    assert found["passed"]
