"""LPIPS v0.1 with the AlexNet trunk (Zhang et al. 2018), from user-given weights (lower is better).

Two published files, never downloaded: the LPIPS linear heads (`alex.pth` of the `lpips` package, weights/v0.1,
keys `lin{0..4}.model.1.weight`) and torchvision's ImageNet AlexNet (`alexnet-owt-7be5be79.pth`, keys
`features.{0,3,6,8,10}.{weight,bias}`; its classifier is ignored). Distance: scale inputs [0,1] -> [-1,1] ->
(x - shift) / scale, take relu1..relu5 features, unit-normalise over channels, squared difference, 1x1 linear head,
spatial mean, sum over the five layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from vsyn.metrics.utils import WeightsSpec, load_exact, load_state_dict_file, resolve_weights

LPIPS_LINEAR = WeightsSpec(
    what="LPIPS v0.1 linear heads (AlexNet)",
    filename="alex.pth",
    env="VSYN_LPIPS_PATH",
    source="the lpips package (pip install lpips): lpips/weights/v0.1/alex.pth",
    sha256=None,  # not verifiable offline here; its digest goes into the card
    flag="--lpips-weights",
)
ALEXNET = WeightsSpec(
    what="AlexNet ImageNet weights (torchvision)",
    filename="alexnet-owt-7be5be79.pth",
    env="VSYN_ALEXNET_PATH",
    source="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    sha256="7be5be79",  # torch-hub file names carry the sha256 prefix
    flag="--alexnet-weights",
)
_CHANNELS = (64, 192, 384, 256, 256)
_TAPS = (1, 4, 7, 9, 11)  # indices of relu1..relu5 in torchvision's alexnet.features


class LinearHead(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    name = "lpips-alex-v0.1"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        )
        for i, c in enumerate(_CHANNELS):
            self.add_module(f"lin{i}", LinearHead(c))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pairs in [0, 1] -> (B,) distances."""
        a = (2 * fake - 1 - self.shift) / self.scale
        b = (2 * real - 1 - self.shift) / self.scale
        total = torch.zeros(fake.shape[0], device=fake.device, dtype=fake.dtype)
        for i, (fa, fb) in enumerate(zip(self._taps(a), self._taps(b))):
            total = total + getattr(self, f"lin{i}").model((fa - fb) ** 2).mean(dim=(1, 2, 3))
        return total


def load_lpips(linear_path: str | Path | None = None, alexnet_path: str | Path | None = None,
               linear_sha256: str | None = None) -> tuple[LPIPS, str]:
    """LPIPS with the two published files (arguments or $VSYN_LPIPS_PATH, $VSYN_ALEXNET_PATH). Returns (model,
    "<linear sha256>+<alexnet sha256>")."""
    lin_file, lin_digest = resolve_weights(LPIPS_LINEAR, linear_path, linear_sha256)
    alex_file, alex_digest = resolve_weights(ALEXNET, alexnet_path)
    model = LPIPS()
    state = {k: v for k, v in load_state_dict_file(alex_file).items() if k.startswith("features.")}
    state.update({k: v for k, v in load_state_dict_file(lin_file).items() if k.startswith("lin")})
    load_exact(model, state, f"{alex_file} + {lin_file}")
    return model.eval().requires_grad_(False), f"{lin_digest}+{alex_digest}"
