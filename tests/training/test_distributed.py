"""`tune` under torchrun: 2 gloo ranks make the 1-process model, resume from rank 0's checkpoint, stop together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pathotune_cli.demo_data import write_demo_tiles
from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run
from pathotune_cli.training.distributed import SINGLE, Dist, sharded

from testdata import assert_close_to_scale

ROOT = Path(__file__).resolve().parents[2]
TUNE = ["tune", "--preset", "demo", "--backbone", "tiny-random", "--epochs", "3", "--batch-size", "7",
        "--precision", "fp32", "--seed", "0"]
"""20 training tiles in global batches of 7: steps of 7, 7 and 6 tiles, split 4/3, 4/3 and 3/3 over 2 ranks."""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(path)).items() if not k.startswith("trust.")}


def _flat(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([tensors[k].flatten().double() for k in sorted(tensors)])


def _assert_same_model(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    """Every trained tensor within float rounding of the model's scale (Adam's normalised steps carry summation
    differences into small tensors more than into large ones, so the scale is the model's); returns the cosine."""
    assert actual.keys() == expected.keys()
    a, e = _flat(actual), _flat(expected)
    assert_close_to_scale(a, e, what="trained tensors: ")
    cosine = float(F.cosine_similarity(a, e, dim=0))
    assert cosine > 0.999999
    return cosine


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_tiles(tmp_path_factory.mktemp("dist") / "tiles", per_class=6, seed=0)


@pytest.fixture(scope="module")
def one_process(tiles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same run in this one process."""
    out = tmp_path_factory.mktemp("one") / "run"
    config = resolve_config(TuneOptions(preset="demo", data=tiles, backbone="tiny-random", out=out, epochs=3,
                                        batch_size=7, precision="fp32", seed=0))
    return tune_run(config).prompts


def test_bounds_split_every_batch_into_contiguous_slices_that_cover_it() -> None:
    for size in (1, 2, 3, 8):
        for n in (0, 1, 4, 5, 17):
            dist = Dist(rank=0, size=size)
            slices = [dist.bounds(n, r) for r in range(size)]
            assert slices[0][0] == 0 and slices[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(slices, slices[1:], strict=False))
            assert max(hi - lo for lo, hi in slices) - min(hi - lo for lo, hi in slices) <= 1
    assert sharded(SINGLE, 5, lambda lo, hi: (lo, hi)) == (0, 5)


def test_slice_losses_over_the_global_denominator_sum_to_the_global_mean_gradient() -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 6, requires_grad=True)
    x, y = torch.randn(7, 6), torch.tensor([0, 1, 1, 2, 3, 3, 3])
    weights = torch.tensor([1.0, 2.0, 0.5, 1.5])
    F.cross_entropy(x @ w.T, y, weight=weights, label_smoothing=0.1).backward()
    whole = w.grad.clone()
    w.grad = None
    denominator = weights[y].sum()
    for lo, hi in ((0, 4), (4, 7), (7, 7)):  # a rank with nothing adds nothing
        if hi > lo:
            loss = F.cross_entropy(x[lo:hi] @ w.T, y[lo:hi], weight=weights, label_smoothing=0.1, reduction="sum")
            (loss / denominator).backward()
    assert_close_to_scale(w.grad, whole)


@pytest.mark.slow
def test_two_gloo_ranks_make_the_one_process_model(tiles: Path, one_process: Path, tmp_path: Path) -> None:
    out = tmp_path / "two"
    done = subprocess.run(_torchrun("-m", "pathotune_cli", *TUNE, "--data", str(tiles), "--out", str(out)),
                          env=_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = _tensors(one_process), _tensors(out / "prompts.safetensors")
    cosine = _assert_same_model(two, one)
    diff = float((_flat(two) - _flat(one)).abs().max() / _flat(one).abs().max())
    print(f"2 gloo ranks vs 1 process: cosine {cosine:.15f} (1 - cosine {1 - cosine:.1e}), "
          f"max |diff| {diff:.2e} of the scale")
    record = json.loads((out / "run.json").read_text())
    assert record["world_size"] == 2 and record["backend"] == "gloo"
    assert record["batch"] == {"global": 7, "per_rank": [4, 3]}
    assert done.stdout.count("tuned pathotune on tiny-random") == 1  # only rank 0 prints its table
    assert "warning: backbone 'tiny-random' has random weights" in done.stderr
    assert done.stderr.count("has random weights") == 1


@pytest.mark.slow
def test_torchrun_resumes_from_the_checkpoint_rank_0_wrote(tiles: Path, one_process: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    checkpoint = out / "checkpoint.safetensors"
    proc = subprocess.Popen(_torchrun("-m", "pathotune_cli", *TUNE, "--data", str(tiles), "--out", str(out)),
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
                            start_new_session=True)
    try:
        while not checkpoint.exists() and proc.poll() is None:  # rank 0 wrote epoch 1's checkpoint
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, mid-run
        proc.wait()
    assert checkpoint.exists()
    done = subprocess.run(_torchrun("-m", "pathotune_cli", *TUNE, "--data", str(tiles), "--out", str(out),
                                    "--resume"), env=_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed after epoch" in done.stderr
    _assert_same_model(_tensors(out / "prompts.safetensors"), _tensors(one_process))


@pytest.mark.slow
def test_slide_level_end_to_end_shares_each_steps_slides_over_ranks(tmp_path: Path) -> None:
    from pathotune_cli.files import write_csv
    from pathotune_cli.runs.slide_level.demo import write_planted_slides

    slides = write_planted_slides(tmp_path / "slides", count=7, size=(448, 336))
    data = write_csv(tmp_path / "slides.csv", ("slide", "label", "split"),  # 5 to train: steps of 2, 2 and 1
                     [(f"slides/{p.name}", "tumor" if i % 2 else "normal",
                       "val" if i >= 5 else "train") for i, p in enumerate(slides)])
    sets = ["mil.tiles_per_slide=6", "mil.chunk=4", "mil.slides_per_step=2", "mil.hidden=16", "mil.attention=8"]
    args = ["tune", "--preset", "demo-slides", "--data", str(data), "--backbone", "tiny-random", "--epochs", "2",
            "--precision", "fp32", "--seed", "0", *[x for s in sets for x in ("--set", s)]]
    config = resolve_config(TuneOptions(preset="demo-slides", data=data, backbone="tiny-random", out=tmp_path / "one",
                                        epochs=2, precision="fp32", seed=0, sets=tuple(sets)))
    one = tune_run(config).prompts
    done = subprocess.run(_torchrun("-m", "pathotune_cli", *args, "--out", str(tmp_path / "two")), env=_env(),
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_model(_tensors(tmp_path / "two" / "prompts.safetensors"), _tensors(one))
    record = json.loads((tmp_path / "two" / "run.json").read_text())
    assert (record["world_size"], record["backend"], record["batch"]) == (2, "gloo", {"global": 2, "per_rank": [1, 1]})


@pytest.mark.slow
def test_a_failing_rank_stops_the_others_with_one_line_naming_it(tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text(
        "import torch\n"
        "from pathotune_cli.cluster import world_from_env\n"
        "from pathotune_cli.errors import BadInput\n"
        "from pathotune_cli.training.distributed import session\n"
        "with session(world_from_env(), 'cpu') as dist:\n"
        "    if dist.rank == 1:\n"
        "        raise BadInput('tile 7 of rank 1 does not decode', 'replace it')\n"
        "    dist.sum_gradients([torch.nn.Parameter(torch.ones(3))])  # rank 0 waits here for rank 1\n"
    )
    done = subprocess.run(_torchrun(str(script)), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: rank 1 failed: tile 7 of rank 1 does not decode; replace it"]


def test_uneven_global_batches_give_every_rank_a_slice_or_nothing() -> None:
    sizes = [[hi - lo for lo, hi in (Dist(0, 4).bounds(n, r) for r in range(4))] for n in (5, 3)]
    assert sizes == [[2, 1, 1, 1], [1, 1, 1, 0]]
    assert np.sum(sizes[1]) == 3


_CLI = ("import os, sys\n"
        "from pathotune_cli.cli.app import main\n"
        "sys.argv[0] = 'pathotune'\n")


@pytest.mark.slow
def test_a_rank_refusing_before_the_ranks_meet_stops_every_rank_with_its_line(tiles: Path, tmp_path: Path) -> None:
    (tmp_path / "notadir").write_text("")
    script = tmp_path / "refuses.py"
    script.write_text(_CLI + "if os.environ['RANK'] == '1':  # --out not writable from this rank's node\n"
                             "    sys.argv[sys.argv.index('--out') + 1] = 'notadir/run'\n"
                             "main()\n")
    out = tmp_path / "run"
    done = subprocess.run(_torchrun(str(script), *TUNE, "--data", str(tiles), "--out", str(out)), env=_env(),
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: rank 1 refused to start: --out notadir/run: a part of this path is a file, not a "
                     "folder; choose another --out, or move the file away"], done.stderr[-3000:]
    assert "exitcode  : 2" in done.stderr  # rank 0 ended on the refusal (exit 2), not killed mid-wait
    assert not out.exists()  # rank 0 made it, then removed it empty


@pytest.mark.slow
def test_a_run_another_rank_failed_says_so_in_run_json_for_the_rerun(tiles: Path, tmp_path: Path) -> None:
    from pathotune_cli.errors import BadInput
    from pathotune_cli.runs.run_folder import claim

    out = tmp_path / "run"
    script = tmp_path / "fails.py"
    script.write_text(_CLI + "import time\n"
                             "from pathlib import Path\n"
                             "import pathotune_cli.training.loop as loop\n"
                             "from pathotune_cli.errors import BadInput\n"
                             "real = loop.fit\n"
                             "def fit(*args, **kwargs):\n"
                             "    while os.environ['RANK'] == '1':  # once rank 0 has started the run folder\n"
                             f"        if Path({str(out / 'run.json')!r}).exists():\n"
                             "            raise BadInput('tile 7 of rank 1 does not decode', 'replace it')\n"
                             "        time.sleep(0.05)\n"
                             "    time.sleep(120)  # rank 0 busy outside any collective (a long pass of its own)\n"
                             "    return real(*args, **kwargs)\n"
                             "loop.fit = fit\n"
                             "main()\n")
    done = subprocess.run(_torchrun(str(script), *TUNE, "--data", str(tiles), "--out", str(out)), env=_env(),
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode != 0  # the watchdog ended rank 0 mid-sleep: only it could record the failure
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: rank 1 failed: tile 7 of rank 1 does not decode; replace it"], done.stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "failed"
    assert record["error"] == "rank 1 failed: tile 7 of rank 1 does not decode; replace it"
    with pytest.raises(BadInput, match=r"unfinished run \(failed: rank 1 failed: tile 7 of rank 1 does not decode\)"):
        claim(out, resume=False, force=False)
