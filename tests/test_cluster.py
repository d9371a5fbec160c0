"""Ranks and shards from the command line and the environment: torchrun, srun, SLURM arrays, --shard."""

from __future__ import annotations

import pytest

from pathotune_cli.cluster import WHOLE, Shard, parse_shard, resolve_shard, shard_from_env, world_from_env
from pathotune_cli.errors import BadInput


def test_a_shard_takes_every_nth_slide_from_its_index_sorted_by_path() -> None:
    names = ["c.svs", "a.svs", "e.svs", "b.svs", "d.svs"]
    assert Shard(0, 2).take(names) == ["a.svs", "c.svs", "e.svs"]
    assert Shard(1, 2).take(names) == ["b.svs", "d.svs"]
    assert WHOLE.take(names) == sorted(names)
    assert Shard(4, 8).take(names) == ["e.svs"] and Shard(5, 8).take(names) == []


def test_splitting_a_shard_deals_out_exactly_its_slides() -> None:
    names = [f"s{i:02d}" for i in range(23)]
    outer = Shard(1, 3)
    parts = [outer.split(j, 4) for j in range(4)]
    assert sorted(n for part in parts for n in part.take(names)) == outer.take(names)
    assert [p.label for p in parts] == ["1/12", "4/12", "7/12", "10/12"]
    assert Shard(1, 2).run_record_name() == "run-1-of-2.json" and WHOLE.run_record_name() == "run.json"


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "1/0", "0/2/3"])
def test_a_bad_shard_is_refused_with_its_form(text: str) -> None:
    with pytest.raises(BadInput, match="is not I/N with 0 <= I < N"):
        parse_shard(text)


def test_the_shard_comes_from_the_flag_then_a_slurm_array_then_a_rank() -> None:
    array = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "RANK": "0", "WORLD_SIZE": "4"}
    assert resolve_shard("0/3", array) == Shard(0, 3, "--shard")
    assert resolve_shard(None, array) == Shard(1, 2, "SLURM_ARRAY_TASK_ID")
    assert resolve_shard(None, {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "10",
                                "SLURM_ARRAY_TASK_MIN": "1"}) == Shard(6, 10, "SLURM_ARRAY_TASK_ID")
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "20", "SLURM_ARRAY_TASK_COUNT": "6", "SLURM_ARRAY_TASK_MIN": "10",
                           "SLURM_ARRAY_TASK_STEP": "2"}) == Shard(5, 6, "SLURM_ARRAY_TASK_ID")
    assert shard_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Shard(3, 4, "RANK", 1)
    assert shard_from_env({}) == WHOLE


def test_an_array_of_uneven_ids_asks_for_shard() -> None:
    with pytest.raises(BadInput, match="is not the n-th of 3 evenly spaced ids") as caught:
        shard_from_env({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"})
    assert "pin the shard in the script (--shard $SLURM_ARRAY_TASK_ID/N)" in caught.value.fix
    resubmitted = {"SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "7", "SLURM_ARRAY_TASK_MAX": "30"}
    for task in ("7", "19", "30"):  # --array=7,19,30 of a 0-49 job: every task refuses, none takes a wrong share
        with pytest.raises(BadInput, match=f"task {task} is not the n-th of 3 evenly spaced ids from 7"):
            shard_from_env({**resubmitted, "SLURM_ARRAY_TASK_ID": task})


def test_the_world_comes_from_torchrun_or_an_srun_step_never_from_a_batch_script() -> None:
    assert world_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}).launcher == "torchrun"
    srun = world_from_env({"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1"})
    assert (srun.rank, srun.size, srun.local_rank, srun.launcher, srun.main) == (5, 8, 1, "srun", False)
    batch = world_from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "12"})
    assert not batch.distributed and batch.main
    with pytest.raises(BadInput, match="RANK='x' is not an integer"):
        world_from_env({"RANK": "x", "WORLD_SIZE": "2"})
