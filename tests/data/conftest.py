"""Fixtures for the data tests: small procedural shard sets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .helpers import pack_procedural


@pytest.fixture(scope="session")
def procedural_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 procedural clips (32 px, 9 frames, flow + mask) in 4 mp4-layout shards with a manifest. Read-only."""
    return pack_procedural(tmp_path_factory.mktemp("procedural") / "shards")


@pytest.fixture
def shards_copy(procedural_shards: Path, tmp_path: Path) -> Path:
    """A private copy of ``procedural_shards`` that a test may damage."""
    return Path(shutil.copytree(procedural_shards, tmp_path / "shards"))
