"""The I3D's state dict must be exactly the layout of the public `InceptionI3d(400)` (piergiaj/pytorch-i3d, vendored
by VideoGPT/TATS as `pytorch_i3d.py`), so that `i3d_pretrained_400.pt` loads into it.

The table below was derived by reading that public code (not by introspecting ours): stem units, then per Mixed
block the `InceptionModule(in_channels, [b0, b1a, b1b, b2a, b2b, b3b])` arguments, and the logits unit.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from vsyn.errors import VsynError
from vsyn.metrics.i3d import I3D, load_i3d

# (module name, in, out, kernel) of the stem Unit3Ds: conv3d without bias, BatchNorm3d.
PUBLIC_STEM = [
    ("Conv3d_1a_7x7", 3, 64, (7, 7, 7)),
    ("Conv3d_2b_1x1", 64, 64, (1, 1, 1)),
    ("Conv3d_2c_3x3", 64, 192, (3, 3, 3)),
]
# InceptionModule(in_channels, out_channels) calls as they appear in the public InceptionI3d.__init__.
PUBLIC_MIXED = [
    ("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]),
    ("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
    ("Mixed_4b", 128 + 192 + 96 + 64, [192, 96, 208, 16, 48, 64]),
    ("Mixed_4c", 192 + 208 + 48 + 64, [160, 112, 224, 24, 64, 64]),
    ("Mixed_4d", 160 + 224 + 64 + 64, [128, 128, 256, 24, 64, 64]),
    ("Mixed_4e", 128 + 256 + 64 + 64, [112, 144, 288, 32, 64, 64]),
    ("Mixed_4f", 112 + 288 + 64 + 64, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5b", 256 + 320 + 128 + 128, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5c", 256 + 320 + 128 + 128, [384, 192, 384, 48, 128, 128]),
]


def public_layout() -> dict[str, tuple[int, ...]]:
    table: dict[str, tuple[int, ...]] = {}

    def unit(prefix: str, c_in: int, c_out: int, k: tuple[int, int, int]) -> None:
        table[f"{prefix}.conv3d.weight"] = (c_out, c_in, *k)
        for p in ("weight", "bias", "running_mean", "running_var"):
            table[f"{prefix}.bn.{p}"] = (c_out,)

    for name, c_in, c_out, k in PUBLIC_STEM:
        unit(name, c_in, c_out, k)
    for name, c_in, (o0, o1a, o1b, o2a, o2b, o3) in PUBLIC_MIXED:
        unit(f"{name}.b0", c_in, o0, (1, 1, 1))
        unit(f"{name}.b1a", c_in, o1a, (1, 1, 1))
        unit(f"{name}.b1b", o1a, o1b, (3, 3, 3))
        unit(f"{name}.b2a", c_in, o2a, (1, 1, 1))
        unit(f"{name}.b2b", o2a, o2b, (3, 3, 3))
        unit(f"{name}.b3b", c_in, o3, (1, 1, 1))
    table["logits.conv3d.weight"] = (400, 384 + 384 + 128 + 128, 1, 1, 1)
    table["logits.conv3d.bias"] = (400,)
    return table


@lru_cache(maxsize=1)
def ours() -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in I3D().state_dict().items() if not k.endswith("num_batches_tracked")}


def test_state_dict_keys_and_shapes_equal_the_public_layout():
    expected, got = public_layout(), ours()
    assert sorted(got) == sorted(expected)
    assert {k: got[k] for k in expected} == expected
    assert len(expected) == 3 * 5 + 9 * 6 * 5 + 2  # 287 tensors in the converted file


@pytest.mark.parametrize("key,shape", [
    ("Conv3d_1a_7x7.conv3d.weight", (64, 3, 7, 7, 7)),
    ("Conv3d_1a_7x7.bn.running_mean", (64,)),
    ("Conv3d_2c_3x3.conv3d.weight", (192, 64, 3, 3, 3)),
    ("Mixed_3b.b0.conv3d.weight", (64, 192, 1, 1, 1)),
    ("Mixed_3b.b1b.conv3d.weight", (128, 96, 3, 3, 3)),
    ("Mixed_4f.b3b.bn.running_var", (128,)),
    ("Mixed_5c.b2b.conv3d.weight", (128, 48, 3, 3, 3)),
    ("logits.conv3d.weight", (400, 1024, 1, 1, 1)),
    ("logits.conv3d.bias", (400,)),
])
def test_literal_entries(key, shape):
    assert ours()[key] == shape


def test_published_style_file_loads_and_is_checked(tmp_path, monkeypatch):
    """A file saved like convert_tf_pretrained.py does (plain dict, no num_batches_tracked) loads by path or env
    variable; a sha256 mismatch and a missing file are clear errors naming the published file."""
    ref = I3D()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_()
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(state, path)
    model, digest = load_i3d(path)
    assert len(digest) == 64
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v)
    monkeypatch.setenv("VSYN_I3D_PATH", str(tmp_path))  # a directory holding the published file name works too
    assert load_i3d()[1] == digest
    assert load_i3d(path, sha256=digest[:12])[1] == digest
    with pytest.raises(VsynError, match="sha256"):
        load_i3d(path, sha256="0" * 64)
    monkeypatch.delenv("VSYN_I3D_PATH")
    with pytest.raises(VsynError, match="i3d_pretrained_400.pt.*VSYN_I3D_PATH"):
        load_i3d()
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(VsynError, match="unexpected"):
        load_i3d(tmp_path / "bad.pt")


def test_forward_gives_time_averaged_logits():
    """16 frames at 224 px -> (B, 400); the temporal pool leaves one step, so this is the logit vector itself."""
    torch.manual_seed(0)
    model = I3D()
    x = torch.rand(1, 3, 16, 224, 224) * 2 - 1
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 400) and torch.isfinite(out).all()


@pytest.mark.parametrize("size,kernel,stride,expected", [
    (16, 7, 2, (2, 3)),  # Conv3d_1a_7x7 on 16 frames: TF SAME puts the extra pixel at the back
    (224, 7, 2, (2, 3)),
    (15, 7, 2, (3, 3)),  # odd size: kernel - size % stride = 6
    (112, 3, 2, (0, 1)),  # MaxPool3d_2a_3x3 spatially
    (8, 1, 1, (0, 0)),  # MaxPool3d_2a_3x3 temporally (kernel 1)
    (4, 2, 2, (0, 0)),  # MaxPool3d_5a_2x2
    (28, 3, 1, (1, 1)),  # 3x3x3 convs and the branch-3 max pool
])
def test_same_padding_matches_tf(size, kernel, stride, expected):
    from vsyn.metrics.i3d import _same_pad

    assert _same_pad(size, kernel, stride) == expected


def test_feature_map_sizes_for_16_and_128_frames():
    """Temporal length before the [2,7,7] average pool: 16 frames -> 2 (one logit step), 128 -> 16 (15 steps)."""
    model = I3D()
    for t, expected in ((16, 2), (128, 16)):
        x = torch.zeros(1, 3, t, 32, 32)
        with torch.no_grad():
            for module in model.children():
                if module is model.avg_pool:
                    break
                x = module(x)
        assert x.shape[1:3] == (1024, expected)
