"""The WebDataset reading pipeline: shards on disk, HTTP or S3 -> batches of uint8 clips (see ``loader``)."""

from vsyn.data.loader import ShardLoader, dist_info, make_loader, worker_init_fn
from vsyn.data.urls import resolve

__all__ = ["ShardLoader", "dist_info", "make_loader", "resolve", "worker_init_fn"]
