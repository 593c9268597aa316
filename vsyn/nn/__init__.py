"""The method's networks: generators, critics and their building blocks."""

from vsyn.nn.critics import Critics, SpatialCritic, TemporalCritic, build_critics, sample_frame_indices
from vsyn.nn.generators import DVDGANGenerator, StyleRNNGenerator, build_generator
from vsyn.nn.layers import compile_blocks, count_params, sn_vector_count, to_channels_last

__all__ = [
    "Critics",
    "DVDGANGenerator",
    "SpatialCritic",
    "StyleRNNGenerator",
    "TemporalCritic",
    "build_critics",
    "build_generator",
    "compile_blocks",
    "count_params",
    "sample_frame_indices",
    "sn_vector_count",
    "to_channels_last",
]
