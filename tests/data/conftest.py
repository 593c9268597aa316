"""Fixtures for the data tests: small procedural shard sets and a way to run ``vsyn shards`` in-process."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from shards.cli import register

CLIPS, SIZE, FRAMES, PER_SHARD = 24, 32, 9, 6


def shards_cli(*argv: str) -> int:
    """Run ``vsyn shards ARGV`` through the shards parser alone (the full CLI also loads every other plugin)."""
    parser = argparse.ArgumentParser(prog="vsyn")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["shards", *map(str, argv)])
    return args.func(args)


def pack_procedural(out: Path, *, clips: int = CLIPS, layout: str = "mp4", per_shard: int = PER_SHARD) -> Path:
    assert shards_cli("pack", "procedural", out, "--clips", clips, "--size", SIZE, "--frames", FRAMES,
                      "--shard-samples", per_shard, "--layout", layout, "--workers", 1) == 0
    return out


@pytest.fixture(scope="session")
def procedural_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 procedural clips (32 px, 9 frames, flow + mask) in 4 mp4-layout shards with a manifest. Read-only."""
    return pack_procedural(tmp_path_factory.mktemp("procedural") / "shards")


@pytest.fixture
def shards_copy(procedural_shards: Path, tmp_path: Path) -> Path:
    """A private copy of ``procedural_shards`` that a test may damage."""
    import shutil

    return Path(shutil.copytree(procedural_shards, tmp_path / "shards"))
