"""The FID Inception must have pytorch-fid's `pt_inception-2015-12-05` layout (torchvision Inception3 names,
num_classes=1008, no aux head) so the published file loads strictly, and 2048-d pool3 outputs."""

from __future__ import annotations

import pytest
import torch

from vsyn.errors import VsynError
from vsyn.metrics.inception import FIDInception, load_fid_inception


@pytest.fixture(scope="module")
def model() -> FIDInception:
    torch.manual_seed(0)
    return FIDInception()


def test_parameter_count_equals_torchvision_inception_v3_without_aux_with_1008_classes(model):
    # torchvision inception_v3: 27,161,264 parameters (aux head + 1000 classes). Without the aux head (-3,326,696)
    # and with 1008 classes (+8*2048+8): 23,850,960.
    assert sum(p.numel() for p in model.parameters()) == 27_161_264 - 3_326_696 + 8 * 2048 + 8


@pytest.mark.parametrize("key,shape", [
    ("Conv2d_1a_3x3.conv.weight", (32, 3, 3, 3)),
    ("Conv2d_4a_3x3.bn.running_var", (192,)),
    ("Mixed_5b.branch_pool.conv.weight", (32, 192, 1, 1)),
    ("Mixed_5d.branch5x5_2.conv.weight", (64, 48, 5, 5)),
    ("Mixed_6a.branch3x3.conv.weight", (384, 288, 3, 3)),
    ("Mixed_6e.branch7x7dbl_5.conv.weight", (192, 192, 1, 7)),
    ("Mixed_7a.branch7x7x3_4.conv.weight", (192, 192, 3, 3)),
    ("Mixed_7b.branch3x3dbl_3b.conv.weight", (384, 384, 3, 1)),
    ("Mixed_7c.branch_pool.conv.weight", (192, 2048, 1, 1)),
    ("fc.weight", (1008, 2048)),
    ("fc.bias", (1008,)),
])
def test_literal_entries(model, key, shape):
    assert tuple(model.state_dict()[key].shape) == shape


def test_no_aux_head(model):
    assert not any(k.startswith("AuxLogits") for k in model.state_dict())


def test_features_are_2048d_for_any_input_size(model):
    with torch.no_grad():
        out = model(torch.rand(2, 3, 48, 64))
    assert out.shape == (2, 2048) and (out >= 0).all()  # post-ReLU average


def test_load_checks_published_hash_prefix(tmp_path, model, monkeypatch):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(VsynError, match="6726825d"):  # our random file is not the published one
        load_fid_inception(path)
    from vsyn.metrics.utils import sha256_file

    digest = sha256_file(path)
    monkeypatch.setenv("VSYN_INCEPTION_PATH", str(path))
    loaded, got = load_fid_inception(sha256=digest)  # an explicit override accepts this file
    assert got == digest
    assert torch.equal(loaded.state_dict()["fc.weight"], model.state_dict()["fc.weight"])
    monkeypatch.delenv("VSYN_INCEPTION_PATH")
    with pytest.raises(VsynError, match="pt_inception-2015-12-05-6726825d.pth.*VSYN_INCEPTION_PATH"):
        load_fid_inception()
