"""FVD input path: frame selection, value ranges, resize modes, and StyleGAN-V's TorchScript calling convention."""

from __future__ import annotations

import pytest
import torch

from vsyn.errors import VsynError
from vsyn.metrics.fvd import prepare_clips, video_features
from vsyn.metrics.i3d import load_stylegan_v_i3d
from vsyn.metrics.protocol import standard_protocol
from vsyn.metrics.utils import resize_frames, to_uint8_values


def test_prepare_clips_selects_generated_frames_and_maps_to_minus1_1():
    clips = torch.zeros(2, 20, 3, 32, 48, dtype=torch.uint8)
    for t in range(20):
        clips[:, t] = t * 10
    p = standard_protocol("fvd16")
    x = prepare_clips(clips, p)
    assert x.shape == (2, 3, 16, 224, 224)
    expected = torch.tensor([t * 10 * 2 / 255 - 1 for t in range(1, 17)])  # frame 0 (the input) is skipped
    torch.testing.assert_close(x[0, 0, :, 100, 100], expected)
    with pytest.raises(VsynError, match="17 frames"):
        prepare_clips(clips[:, :16], p)


def test_generated_frames_are_quantised_like_real_ones():
    real = torch.randint(0, 256, (1, 17, 3, 8, 8), dtype=torch.uint8)
    fake = real.float() / 255 + 0.001  # within half a level: same 8-bit video
    p = standard_protocol("fvd16", resize="none", size=8)
    assert torch.equal(prepare_clips(real, p), prepare_clips(fake, p))
    assert torch.equal(to_uint8_values(torch.tensor([0.0, 0.5 / 255, 1.0, 1.5])), torch.tensor([0.0, 1.0, 255.0, 255.0]))


def test_resize_modes():
    x = torch.rand(2, 3, 36, 64)
    assert resize_frames(x, 224, "direct").shape == (2, 3, 224, 224)
    crop = resize_frames(x, 24, "short_side_crop")
    assert crop.shape == (2, 3, 24, 24)
    # short side 36 -> 24, width 64 -> ceil(42.67) = 43, centre crop columns (43-24)//2 = 9 ..
    full = torch.nn.functional.interpolate(x, size=(24, 43), mode="bilinear", align_corners=False)
    torch.testing.assert_close(crop, full[..., :, 9:33])
    assert resize_frames(x, 224, "none") is x


class StandInTorchScriptI3D(torch.nn.Module):
    """A STAND-IN for StyleGAN-V's i3d_torchscript.pt (the real file cannot be downloaded here): same call signature;
    it reports what it received so the test can check the calling convention."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 400)
        out[:, 0] = x.amin(dim=(1, 2, 3, 4))
        out[:, 1] = x.amax(dim=(1, 2, 3, 4))
        out[:, 2] = float(x.shape[2])
        out[:, 3] = float(x.shape[3])
        out[:, 4] = float(rescale) + 2 * float(resize) + 4 * float(return_features)
        out[:, 5] = (x - torch.round(x)).abs().amax(dim=(1, 2, 3, 4))
        return out


def test_stylegan_v_torchscript_is_called_as_stylegan_v_does(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(StandInTorchScriptI3D()), str(path))
    det, digest = load_stylegan_v_i3d(path)
    assert len(digest) == 64
    p = standard_protocol("fvd16", detector="i3d-stylegan-v")
    clips = torch.rand(3, 17, 3, 40, 56)  # generated-style float input
    clips[:, :, :, 0, 0] = 0.0
    clips[:, :, :, 0, 1] = 1.0
    f = video_features(det, clips, p, batch=2)
    assert f.shape == (3, 400) and f.dtype.name == "float64"
    assert (f[:, 0] == 0).all() and (f[:, 1] == 255).all()  # uint8-range values ...
    assert (f[:, 5] == 0).all()  # ... that are integers (quantised)
    assert (f[:, 2] == 16).all() and (f[:, 3] == 40).all()  # native size: the TorchScript resizes itself
    assert (f[:, 4] == 7).all()  # rescale=True, resize=True, return_features=True
