"""One timed tuning run for the ``cluster`` group, alone or as one rank under ``torchrun``.

    python -m benchmarks.cluster_step --size vit_small --batch 32 --steps 3 --threads 2 --result F
    python -m torch.distributed.run --standalone --nproc-per-node 2 -m benchmarks.cluster_step ... --threads 1

Every rank runs ``training.loop.fit`` on its slice of each global batch of ``--batch`` (``training.distributed``);
rank 0 writes the images/s of the global step (the fastest timed step, as in the ``tuning`` group) to ``--result``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    """Entry point."""
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="vit_small")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--result", type=Path, required=True)
    args = p.parse_args()
    import torch

    from benchmarks.models import random_images
    from benchmarks.tuning import step_rates
    from pathotune_cli.cluster import world_from_env
    from pathotune_cli.hardware import place
    from pathotune_cli.training.distributed import session

    torch.set_num_threads(args.threads)
    images = random_images(args.batch * (args.steps + 1))
    labels = torch.arange(images.shape[0]) % 4
    placement = place("cpu", "auto")
    with session(world_from_env(), "cpu") as dist:
        rates, detail = step_rates(args.size, "pathotune", args.batch, args.steps, placement, images, labels,
                                   dist=dist)
        if dist.main:  # the least disturbed step, as in the tuning group
            args.result.write_text(json.dumps({"rate": max(rates), "world_size": dist.size, "threads": args.threads,
                                               "precision": placement.precision, **detail}))


if __name__ == "__main__":
    main()
