"""Two processes x two DataLoader workers under torch.distributed (gloo): one eval pass reads every clip once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from .helpers import CLIPS, FRAMES, pack_procedural

WORLD = 2


def _rank_main(rank: int, shards: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        from vsyn.data import make_loader

        loader = make_loader(shards, frames=FRAMES, batch_size=3, mode="eval", workers=2)
        keys = [k for batch in loader for k in batch["__key__"]]
        Path(out, f"rank{rank}.json").write_text(json.dumps(keys))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("per_shard", [6, 12], ids=["4-shards-split-by-shard", "2-shards-split-by-sample"])
def test_eval_epoch_covers_every_sample_once(tmp_path, per_shard, free_port):
    shards = pack_procedural(tmp_path / "shards", per_shard=per_shard)
    mp.spawn(_rank_main, args=(str(shards), free_port, str(tmp_path)), nprocs=WORLD, join=True)
    per_rank = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    everything = [k for keys in per_rank for k in keys]
    assert all(per_rank) and len(everything) == len(set(everything)) == CLIPS
