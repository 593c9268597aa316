"""The FVD detector: Inception-v1 inflated to 3D (I3D), Kinetics-400, output = the 400 logits averaged over time.

Two published weight files are supported, never downloaded:

- `i3d_pretrained_400.pt`, the VideoGPT/TATS PyTorch port (converted from TF-Hub `deepmind/i3d-kinetics-400/1`).
  `I3D` below is written so that its state dict has exactly the parameter names and shapes of that port's
  `InceptionI3d(400, in_channels=3)` (`Conv3d_1a_7x7.conv3d.weight`, `Mixed_3b.b1b.bn.running_mean`, ...,
  `logits.conv3d.bias`); tests/metrics/test_i3d_layout.py pins the whole table. Input: float (B, 3, T, 224, 224)
  in [-1, 1].
- `i3d_torchscript.pt`, StyleGAN-V's TorchScript detector, called as StyleGAN-V does:
  `detector(x, rescale=True, resize=True, return_features=True)` with x float [B, C, T, H, W] holding 0..255.

Numerics: TF 'SAME' padding computed per input size (as the port does); BatchNorm eps 1e-5 as in the
VideoGPT/TATS port that published numbers come from (the TF original uses 1e-3; pass `bn_eps=1e-3` for TF parity).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from vsyn.errors import VsynError
from vsyn.metrics.utils import WeightsSpec, load_exact, load_state_dict_file, resolve_weights

# The sha256 of neither published file could be verified offline here, so none is pinned: the file's digest is
# recorded in every protocol card, and users pin it with --detector-sha256 / VSYN_I3D_SHA256. When someone verifies
# the published digest, put it here (full 64 hex) and every later run checks it.
I3D_VIDEOGPT_SHA256: str | None = None
I3D_STYLEGANV_SHA256: str | None = None

I3D_VIDEOGPT = WeightsSpec(
    what="I3D (VideoGPT/TATS port, Kinetics-400)",
    filename="i3d_pretrained_400.pt",
    env="VSYN_I3D_PATH",
    source="TATS repo tats/fvd/i3d_pretrained_400.pt, or VideoGPT's Google Drive id 1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT",
    sha256=I3D_VIDEOGPT_SHA256,
    flag="--i3d-weights",
)
I3D_STYLEGANV = WeightsSpec(
    what="I3D (StyleGAN-V TorchScript)",
    filename="i3d_torchscript.pt",
    env="VSYN_I3D_TORCHSCRIPT_PATH",
    source="https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt (StyleGAN-V src/metrics/frechet_video_distance.py)",
    sha256=I3D_STYLEGANV_SHA256,
    flag="--i3d-weights",
)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding along one axis: (front, back), the extra pixel at the back."""
    total = max(kernel - (size % stride if size % stride else stride), 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    pt, ph, pw = (_same_pad(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt))


class Unit3D(nn.Module):
    """Conv3d (no bias) -> BatchNorm3d -> ReLU with TF 'SAME' padding; the logits unit has bias and no BN/ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: Sequence[int] = (1, 1, 1), stride: Sequence[int] = (1, 1, 1),
                 *, bn: bool = True, bias: bool = False, relu: bool = True, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(c_in, c_out, self.kernel, self.stride, padding=0, bias=bias)
        if bn:
            self.bn = nn.BatchNorm3d(c_out, eps=bn_eps, momentum=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if hasattr(self, "bn"):
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max pool with TF 'SAME' padding. Zero padding equals TF's (-inf) because every input here is post-ReLU."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four branches concatenated: 1x1 | 1x1->3x3 | 1x1->3x3 | maxpool->1x1 (names b0, b1a/b1b, b2a/b2b, b3b)."""

    def __init__(self, c_in: int, widths: Sequence[int], bn_eps: float) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(c_in, w0, bn_eps=bn_eps)
        self.b1a = Unit3D(c_in, w1a, bn_eps=bn_eps)
        self.b1b = Unit3D(w1a, w1b, (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(c_in, w2a, bn_eps=bn_eps)
        self.b2b = Unit3D(w2a, w2b, (3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(c_in, w3, bn_eps=bn_eps)
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, input channels, branch widths) of the Inception blocks, in order (Carreira & Zisserman 2017, Fig. 3).
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class I3D(nn.Module):
    """I3D returning (B, num_classes) Kinetics logits averaged over time, from (B, 3, T, 224, 224) in [-1, 1].

    T >= 9 is needed so that the last 2-frame temporal average pool has input (16 frames -> 1 step, 128 -> 15).
    """

    name = "i3d-videogpt"
    input_range = (-1.0, 1.0)
    feature_dim = 400

    def __init__(self, num_classes: int = 400, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        for name in ("Mixed_3b", "Mixed_3c"):
            self.add_module(name, InceptionBlock(*_MIXED[name], bn_eps=bn_eps))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            self.add_module(name, InceptionBlock(*_MIXED[name], bn_eps=bn_eps))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        for name in ("Mixed_5b", "Mixed_5c"):
            self.add_module(name, InceptionBlock(*_MIXED[name], bn_eps=bn_eps))
        self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=(1, 1, 1))
        self.logits = Unit3D(1024, num_classes, bn=False, bias=True, relu=False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"I3D expects (B, 3, T, H, W), got {tuple(x.shape)}")
        for module in self.children():
            if module is self.avg_pool:
                break
            x = module(x)
        x = self.logits(self.avg_pool(x))  # dropout of the original is the identity in eval mode
        return x.squeeze(4).squeeze(3).mean(dim=2)  # (B, classes, T') -> mean over time


def load_i3d(path: str | Path | None = None, sha256: str | None = None, *, bn_eps: float = 1e-5) -> tuple[I3D, str]:
    """I3D with the published `i3d_pretrained_400.pt` (argument or $VSYN_I3D_PATH). Returns (model, sha256)."""
    resolved, digest = resolve_weights(I3D_VIDEOGPT, path, sha256 or None)
    model = I3D(bn_eps=bn_eps)
    load_exact(model, load_state_dict_file(resolved), str(resolved))
    return model.eval().requires_grad_(False), digest


class StyleGANVDetector(nn.Module):
    """Wraps StyleGAN-V's TorchScript I3D; takes float (B, 3, T, H, W) holding 0..255, returns (B, 400)."""

    name = "i3d-stylegan-v"
    input_range = (0.0, 255.0)
    feature_dim = 400

    def __init__(self, scripted: torch.nn.Module) -> None:
        super().__init__()
        self.scripted = scripted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.scripted(x, rescale=True, resize=True, return_features=True)
        if feats.ndim != 2:
            raise VsynError(f"StyleGAN-V detector returned shape {tuple(feats.shape)}, expected (B, 400)")
        return feats


def load_stylegan_v_i3d(path: str | Path | None = None, sha256: str | None = None) -> tuple[StyleGANVDetector, str]:
    """StyleGAN-V's `i3d_torchscript.pt` (argument or $VSYN_I3D_TORCHSCRIPT_PATH). Returns (detector, sha256)."""
    resolved, digest = resolve_weights(I3D_STYLEGANV, path, sha256 or None)
    scripted = torch.jit.load(str(resolved), map_location="cpu").eval()
    return StyleGANVDetector(scripted).eval().requires_grad_(False), digest
