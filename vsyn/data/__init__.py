"""The WebDataset reading pipeline: shards on disk, HTTP or S3 -> batches of uint8 clips (see ``loader``)."""

from vsyn.data.loader import ShardLoader, dist_info, make_loader, worker_init_fn
from vsyn.data.urls import EVAL_SPLITS, TRAIN_SPLITS, pin_split, resolve

__all__ = ["EVAL_SPLITS", "TRAIN_SPLITS", "ShardLoader", "dist_info", "make_loader", "pin_split", "resolve",
           "worker_init_fn"]
