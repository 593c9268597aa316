"""LPIPS: the loading contract (two published files, checked) and the distance's basic properties, with random
weights (the real ones cannot be downloaded here)."""

from __future__ import annotations

import pytest
import torch

from vsyn.errors import VsynError
from vsyn.metrics.lpips import LPIPS, load_lpips
from vsyn.metrics.utils import sha256_file


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    model = LPIPS()
    d = tmp_path_factory.mktemp("lpips")
    alex = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    alex["classifier.1.weight"] = torch.zeros(4096, 9216)  # torchvision's file also has the classifier: ignored
    torch.save(alex, d / "alexnet-owt-7be5be79.pth")
    lin = {k: v.abs() for k, v in model.state_dict().items() if k.startswith("lin")}  # published heads are >= 0
    torch.save(lin, d / "alex.pth")
    return d


def test_missing_weights_name_the_files(monkeypatch):
    monkeypatch.delenv("VSYN_LPIPS_PATH", raising=False)
    with pytest.raises(VsynError, match="alex.pth.*VSYN_LPIPS_PATH"):
        load_lpips()


def test_alexnet_hash_prefix_is_checked(files):
    with pytest.raises(VsynError, match="7be5be79"):
        load_lpips(files / "alex.pth", files / "alexnet-owt-7be5be79.pth")


def test_loads_and_measures(files, monkeypatch):
    import vsyn.metrics.lpips as lp

    monkeypatch.setattr(lp, "ALEXNET", lp.ALEXNET.__class__(**{**lp.ALEXNET.__dict__,
                                                               "sha256": sha256_file(files / "alexnet-owt-7be5be79.pth")}))
    model, digest = load_lpips(files / "alex.pth", files / "alexnet-owt-7be5be79.pth")
    assert "+" in digest
    x, y = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        d_xx, d_xy, d_yx = model(x, x), model(x, y), model(y, x)
    assert d_xx.shape == (3,) and torch.allclose(d_xx, torch.zeros(3))
    assert (d_xy > 0).all() and torch.allclose(d_xy, d_yx, rtol=1e-5)
