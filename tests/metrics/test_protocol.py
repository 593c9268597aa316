"""Protocols are explicit and validated; cards round-trip; the real-statistics cache is keyed correctly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vsyn.errors import VsynError
from vsyn.metrics.protocol import (Protocol, ProtocolCard, data_digest, load_stats, save_stats, standard_protocol,
                                   stats_path)


def test_standard_protocols():
    p16 = standard_protocol("fvd16")
    assert (p16.n, p16.frames, p16.start, p16.resize, p16.size, p16.value_range) == (2048, 16, 1, "direct", 224, "[-1,1]")
    assert p16.indices == list(range(1, 17)) and p16.clip_length == 17
    p128 = standard_protocol("fvd128", stride=1)
    assert p128.clip_length == 129
    sgv = standard_protocol("fvd16", detector="i3d-stylegan-v")
    assert (sgv.resize, sgv.value_range) == ("none", "[0,255]")
    fid = standard_protocol("fid")
    assert fid.detector == "inception-fid" and fid.start == 1  # frame 0 (the input) excluded
    strided = standard_protocol("fvd16", stride=8, start=0)
    assert strided.indices == [8 * i for i in range(16)]


@pytest.mark.parametrize("kwargs", [
    dict(detector="nope"), dict(resize="bicubic"), dict(value_range="[0,1]"), dict(frames=8),
    dict(detector="i3d-stylegan-v", value_range="[0,255]", resize="direct"), dict(n=1),
])
def test_invalid_protocols_raise(kwargs):
    with pytest.raises(VsynError):
        Protocol(name="x", **kwargs)


def test_card_round_trip(tmp_path):
    card = ProtocolCard(protocol=standard_protocol("fvd16", split="sky-test", stride=2), detector_sha256="ab" * 32,
                        data="s3://bucket/sky/manifest.json", data_digest="cd" * 32, checkpoint="runs/x",
                        result={"value": 123.456, "value_eig": 123.4561})
    path = card.save(tmp_path / "fvd16.card.json")
    back = ProtocolCard.from_json(path.read_text())
    assert back == card
    d = json.loads(path.read_text())
    for key in ("split", "n", "frames", "stride", "resize", "detector"):
        assert key in d["protocol"]
    assert {"torch", "numpy", "scipy", "python"} <= set(d["versions"])


def test_stats_cache_key_and_round_trip(tmp_path):
    p = standard_protocol("fvd16", n=64)
    a = stats_path(tmp_path, "d1", p, "s1")
    assert a != stats_path(tmp_path, "d2", p, "s1")  # other data
    assert a != stats_path(tmp_path, "d1", p, "s2")  # other detector file
    assert a != stats_path(tmp_path, "d1", standard_protocol("fvd16", n=128), "s1")  # other protocol
    assert a == stats_path(tmp_path, "d1", standard_protocol("fvd16", n=64), "s1")
    mu, sigma = np.arange(3.0), np.eye(3)
    card = ProtocolCard(protocol=p, detector_sha256="s1", data="x", data_digest="d1")
    save_stats(a, mu, sigma, 64, card)
    got = load_stats(a)
    assert got is not None and np.array_equal(got[0], mu) and np.array_equal(got[1], sigma) and got[2] == 64
    assert load_stats(tmp_path / "missing.npz") is None


def test_data_digest_uses_the_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text('{"shards": []}')
    d1 = data_digest(str(tmp_path / "manifest.json"))
    assert d1 == data_digest(str(tmp_path)) == data_digest(str(tmp_path) + "/")
    pattern = data_digest(str(tmp_path / "shard-{000000..000003}.tar"))
    assert pattern != d1 and pattern != data_digest(str(tmp_path / "shard-{000000..000001}.tar"))
    assert data_digest(str(tmp_path / "manifest.json#val")) != d1
    (tmp_path / "manifest.json").write_text('{"shards": [1]}')
    assert data_digest(str(tmp_path / "manifest.json")) != d1
    assert data_digest("s3://b/x.tar") == data_digest("s3://b/x.tar") != data_digest("s3://b/y.tar")
