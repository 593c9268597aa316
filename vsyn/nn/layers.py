"""Building blocks of the generators and critics (method.md §1.4, §2, §3).

Shapes are written as comments in signatures and asserted at entry. Tensors of frames use the 2D layout
(N, C, H, W) with N = B·T: a video's frames are batched, never looped over in Python.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

SQRT2 = math.sqrt(2.0)


def maybe_sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Spectral norm via torch's parametrization (u, v live as buffers, one power iteration per training forward)."""
    return spectral_norm(module) if enabled else module


def sn_vector_count(module: nn.Module) -> int:
    """Elements of the spectral-norm u, v vectors (buffers in torch's parametrization, parameters in the original)."""
    buffers = module.named_buffers()
    return sum(b.numel() for name, b in buffers if ".parametrizations." in name and name.endswith(("._u", "._v")))


def count_params(module: nn.Module, *, with_sn_vectors: bool = False) -> int:
    """Parameter count; `with_sn_vectors=True` adds the SN u, v vectors, the convention of the method doc."""
    n = sum(p.numel() for p in module.parameters())
    return n + sn_vector_count(module) if with_sn_vectors else n


CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}  # tensor rank -> its channels-last format


def to_channels_last(module: nn.Module) -> nn.Module:
    """In place: 4D weights to channels_last, 5D (Conv3d) weights to channels_last_3d.

    `module.to(memory_format=torch.channels_last)` raises on the temporal critic's 5D weights. (Keeping the 3D convs
    NCDHW looked faster per layer but was slower in the whole step: bench/RESULTS.md, 2026-11-27 09:00.)
    """
    for p in module.parameters():
        if p.dim() in CHANNELS_LAST:
            p.data = p.data.contiguous(memory_format=CHANNELS_LAST[p.dim()])
    return module


def is_channels_last(t: Tensor) -> bool:
    """Whether a 4D/5D tensor is laid out channels-last (as `to_channels_last` leaves weights), not merely compatible
    with it the way some plain contiguous tensors (one channel, 1×1 sides) are."""
    fmt = CHANNELS_LAST.get(t.dim())
    return fmt is not None and t.is_contiguous(memory_format=fmt) and not t.is_contiguous()


def compile_blocks(module: nn.Module, backend: str = "inductor") -> nn.Module:
    """In place: torch.compile every residual block, attention, GRU, styled conv and ToRGB inside `module`.

    Regional compilation: a handful of small graphs (one per block kind and shape) compile in a fraction of the time
    of a whole unrolled generator, and fuse what pays on a GPU (the GRU's gate arithmetic over the time loop,
    pre-activations, pools and residual adds). The critics' penalties run these blocks eagerly (their double
    backward cannot go through a compiled graph; vsyn.train.loss). Returns `module`.
    """
    kinds = (DownBlock, BNResBlock, SelfAttention, ConvGRU, StyledConv, ToRGB)
    # One class's forward is one code object: each instance shape, dtype (autocast) and grad mode is a recompile of
    # it. Dynamo's default limit (8) would silently send the rest back to eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for sub in module.modules():
        if isinstance(sub, kinds):
            sub.compile(backend=backend, dynamic=False)  # static shapes: automatic dynamic shapes broke inductor here
    return module


# --------------------------------------------------------------------------------------------------------------
# StyleGAN2 modulated convolution (rosinality's math, equalised learning rate)
# --------------------------------------------------------------------------------------------------------------


def blur_kernel() -> Tensor:
    """[1,3,3,1]⊗[1,3,3,1], normalised, ×4 gain (the 2× upsampling's zero-stuffing quarters the signal), (4, 4)."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k2 = torch.outer(k, k)
    return k2 / k2.sum() * 4.0


def blur_upsampled(x: Tensor, kernel: Tensor) -> Tensor:
    """FIR `kernel` (4, 4) with padding (1, 1): maps the (2H+1)-sized transposed-conv output to exactly 2H."""
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1)), kernel.to(x.dtype).expand(c, 1, 4, 4), groups=c)


def fold_blur(weight: Tensor, kernel: Tensor) -> Tensor:
    """(O, I, 3, 3) transposed-conv weight ⊛ (4, 4) blur FIR -> (O, I, 6, 6): both filters as one.

    Computed in the weight's own dtype with autocast off: the fold is a few hundred thousand multiply-adds, and
    its rounding should be the weight's, not bf16's.
    """
    o, i, kh, kw = weight.shape
    with torch.autocast(weight.device.type, enabled=False):
        folded = F.conv_transpose2d(weight.reshape(o * i, 1, kh, kw), kernel.to(weight.dtype)[None, None])
    return folded.reshape(o, i, kh + kernel.shape[0] - 1, kw + kernel.shape[1] - 1)


# Devices where upsample_conv folds the blur into the transposed conv: memory-bound GPUs gain, compute-bound CPUs
# lose (4x the transposed conv's FLOPs; sky128 at batch 1 on a 2-core CPU was no faster folded, one run: RESULTS.md).
FOLD_BLUR_DEVICES = {"cuda"}


def upsample_conv(x: Tensor, weight: Tensor, kernel: Tensor, *, fold: bool | None = None) -> Tensor:
    """2× upsampling conv: `blur_upsampled(conv_transpose2d(x, weight, stride=2), kernel)`.

    `fold` (default: on the devices in FOLD_BLUR_DEVICES) computes it as one convolution. The transposed conv with
    the 3×3 weight and the 4×4 blur after it are both linear and shift-invariant, so they compose into one stride-2
    transposed conv with their full convolution (6×6), padding 2 cropping the same border. One cuDNN call replaces
    a transposed conv, a pad copy and a depthwise blur over the 2H×2H output (the blur alone was 18% of the sky128
    generator's device time, H200, bf16); its FLOPs equal a 3×3 conv at the output resolution. Both forms are the
    same map up to rounding (tests/nn/test_modulated_conv.py, float64).
    """
    if not (fold if fold is not None else x.device.type in FOLD_BLUR_DEVICES):
        return blur_upsampled(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2), kernel)
    kh = weight.shape[-1]
    assert kh == 3 and kernel.shape == (4, 4), (weight.shape, kernel.shape)
    return F.conv_transpose2d(x, fold_blur(weight, kernel).transpose(0, 1), stride=2, padding=2)


def modulated_conv2d(
    x: Tensor,  # (N, I, H, W), N = B·T frames
    weight: Tensor,  # (O, I, k, k), already scaled by the equalised-LR constant
    styles: Tensor,  # (B, I) modulation, one per video, shared by its T = N / B frames
    *,
    demodulate: bool = True,
    up_kernel: Tensor | None = None,  # (4, 4) blur FIR: upsample ×2 (transposed conv, then blur); None: no upsampling
    grouped: bool = False,
    bias: Tensor | None = None,  # (O,) added after demodulation
    lrelu: bool = False,  # then leaky ReLU (slope 0.2) × √2: StyledConv's activation
) -> Tensor:  # (N, O, H', W'), H' = 2H if upsampling else H
    """StyleGAN2 modulated conv.

    Default: the efficient form. Scale the inputs by the style, run one ordinary conv over all N frames, demodulate
    the outputs; exact because modulation and demodulation are per (video, channel) scalings. Demodulation, bias and
    activation then take one pass over the output (addcmul, in-place leaky ReLU; √2 folded into both factors, as
    lrelu(z)·√2 = lrelu(√2·z)) instead of four. `grouped=True` is the reference, each step as written: per-frame
    modulated weights in a grouped conv with N groups (what NVlabs calls fused_modconv), transposed conv then blur,
    bias, activation.
    """
    n, i, h, w = x.shape
    o, wi, kh, kw = weight.shape
    b = styles.shape[0]
    assert wi == i and styles.shape == (b, i) and n % b == 0 and kh == kw, (x.shape, weight.shape, styles.shape)
    t = n // b
    pad = kh // 2
    up = up_kernel is not None
    if grouped:
        return _activate(_grouped_modulated_conv2d(x, weight, styles, demodulate, up_kernel), bias, lrelu)
    y = x * styles.repeat_interleave(t, dim=0)[:, :, None, None]
    y = upsample_conv(y, weight, up_kernel) if up else F.conv2d(y, weight, padding=pad)
    if not demodulate:
        return _activate(y, bias, lrelu)
    # Σ_{i,kh,kw} (w_oi · s_i)² = Σ_i s_i² · Σ_k w_oik²: a (B, I) × (I, O) product, no per-sample weights.
    d = torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)  # (B, O)
    d = d.repeat_interleave(t, dim=0)[:, :, None, None]
    if bias is None:
        return _activate(y * d, None, lrelu)
    gain = SQRT2 if lrelu else 1.0
    y = torch.addcmul(bias[:, None, None] * gain, y, d * gain)
    return F.leaky_relu_(y, 0.2) if lrelu else y


def _activate(y: Tensor, bias: Tensor | None, lrelu: bool) -> Tensor:
    """The reference epilogue, op by op: + bias, then leaky ReLU (0.2) × √2."""
    if bias is not None:
        y = y + bias[:, None, None]
    return F.leaky_relu(y, 0.2) * SQRT2 if lrelu else y


def _grouped_modulated_conv2d(
    x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool, up_kernel: Tensor | None
) -> Tensor:
    """Reference: per-frame modulated (and demodulated) weights, one grouped conv with a group per frame."""
    n, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    frame_styles = styles.repeat_interleave(n // styles.shape[0], dim=0)  # (N, I)
    wm = weight[None] * frame_styles[:, None, :, None, None]  # (N, O, I, k, k)
    if demodulate:
        wm = wm * torch.rsqrt(wm.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    xg = x.reshape(1, n * i, h, w)
    if up_kernel is not None:
        wt = wm.transpose(1, 2).reshape(n * i, o, kh, kw)
        y = F.conv_transpose2d(xg, wt, stride=2, groups=n)
        return blur_upsampled(y.reshape(n, o, y.shape[-2], y.shape[-1]), up_kernel)
    y = F.conv2d(xg, wm.reshape(n * o, i, kh, kw), padding=kh // 2, groups=n)
    return y.reshape(n, o, h, w)


class EqualLinear(nn.Module):
    """Linear layer with N(0,1) weights scaled at runtime by 1/√in (equalised LR)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.scale = 1.0 / math.sqrt(in_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class ModulatedConv2d(nn.Module):
    """Conv whose input channels are scaled by an affine map of the style (bias init 1), optionally demodulated."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, style_dim: int, *, demodulate: bool = True, up: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.affine = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.demodulate = demodulate
        self.grouped = False  # True selects the grouped-conv reference form
        self.register_buffer("blur", blur_kernel() if up else None, persistent=False)

    def forward(
        self, x: Tensor, style: Tensor, *, bias: Tensor | None = None, lrelu: bool = False
    ) -> Tensor:  # x (B·T, I, H, W), style (B, style_dim)
        return modulated_conv2d(
            x,
            self.weight * self.scale,
            self.affine(style),
            demodulate=self.demodulate,
            up_kernel=self.blur,
            grouped=self.grouped,
            bias=bias,
            lrelu=lrelu,
        )


class FusedLeakyReLU(nn.Module):
    """Per-channel bias (init 0), leaky ReLU with slope 0.2, ×√2 to keep the activation variance."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return _activate(x, self.bias, lrelu=True)


class StyledConv(nn.Module):
    """3×3 modulated/demodulated conv (optionally ×2 upsampling) + fused leaky ReLU; no noise injection (§1.6)."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, *, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, up=up)
        self.act = FusedLeakyReLU(out_ch)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        # the activation's bias and gain go into the conv's demodulation pass (modulated_conv2d)
        return self.conv(x, style, bias=self.act.bias, lrelu=True)


class ToRGB(nn.Module):
    """1×1 modulated conv without demodulation plus a per-channel bias (init 0). Three channels for the pixel head;
    the motion head reads its fields through the same layer with more channels (vsyn.nn.motion)."""

    def __init__(self, in_ch: int, style_dim: int, out_ch: int = 3):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        return self.conv(x, style) + self.bias[:, None, None]


# --------------------------------------------------------------------------------------------------------------
# ConvGRU
# --------------------------------------------------------------------------------------------------------------


class ConvGRU(nn.Module):
    """One ConvGRU cell (3×3 gates over [x; h]) unrolled over a sequence.

    The gate convs act on the concatenation [x; h], so their weights split into an x-part and an h-part. The x-part
    (and the bias) is computed for all steps in one batched conv; only the h-part runs inside the time loop.
    """

    def __init__(self, in_ch: int, hidden_ch: int, kernel: int = 3, gate_gain: float = 1.0):
        super().__init__()
        self.in_ch, self.hidden_ch = in_ch, hidden_ch
        self.gates = nn.Conv2d(in_ch + hidden_ch, 2 * hidden_ch, kernel, padding=kernel // 2)  # update z, reset r
        self.candidate = nn.Conv2d(in_ch + hidden_ch, hidden_ch, kernel, padding=kernel // 2)
        with torch.no_grad():
            for w in (*self.gates.weight.chunk(2, dim=0), self.candidate.weight):
                w.copy_(nn.init.orthogonal_(torch.empty_like(w), gain=gate_gain))
            self.gates.bias.zero_()
            self.candidate.bias.zero_()

    def forward(
        self,
        inputs: Tensor,  # (B, T_in, I, H, W); T_in = steps, or 1 to feed the same input at every step
        h0: Tensor,  # (B, C, H, W)
        steps: int,
    ) -> Tensor:  # (B, steps, C, H, W): h_1 … h_steps (h0 is not emitted)
        b, t_in, i, hh, ww = inputs.shape
        assert i == self.in_ch and t_in in (1, steps) and h0.shape == (b, self.hidden_ch, hh, ww), (
            inputs.shape,
            h0.shape,
        )
        c = self.hidden_ch
        pad = self.gates.padding
        x = inputs.reshape(b * t_in, i, hh, ww)
        gx = F.conv2d(x, self.gates.weight[:, :i], self.gates.bias, padding=pad).reshape(b, t_in, 2 * c, hh, ww)
        cx = F.conv2d(x, self.candidate.weight[:, :i], self.candidate.bias, padding=pad).reshape(b, t_in, c, hh, ww)
        wg_h, wc_h = self.gates.weight[:, i:], self.candidate.weight[:, i:]
        h, out = h0, []
        for step in range(steps):
            k = step if t_in > 1 else 0
            z, r = torch.sigmoid(gx[:, k] + F.conv2d(h, wg_h, padding=pad)).chunk(2, dim=1)
            cand = torch.tanh(cx[:, k] + F.conv2d(r * h, wc_h, padding=pad))
            h = h + z * (cand - h)  # (1−z)·h + z·ĥ
            out.append(h)
        return torch.stack(out, dim=1)


# --------------------------------------------------------------------------------------------------------------
# Residual blocks and attention
# --------------------------------------------------------------------------------------------------------------


@functools.cache
def _box_fold_matrix(kernel: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """M with w.flatten() @ M = (w ⊛ 2-tap box).flatten(): (∏k, ∏(k+1)), entries 0 or 2^−d (exact in any dtype)."""
    dims = len(kernel)
    eye = torch.eye(math.prod(kernel), dtype=torch.float64).reshape(-1, 1, *kernel)
    box = torch.full((1, 1) + (2,) * dims, 0.5**dims, dtype=torch.float64)
    transpose = F.conv_transpose2d if dims == 2 else F.conv_transpose3d
    return transpose(eye, box).flatten(1).to(device=device, dtype=dtype)


def conv_then_pool(x: Tensor, conv: nn.Module) -> Tensor:
    """avg_pool(conv(x), 2) for a stride-1 k×k(×k) `conv`, computed as one stride-2 (k+1)-tap convolution.

    The same linear map, exactly (pool output i averages conv outputs 2i and 2i+1, which read inputs 2i−p … 2i+k−p):
    the folded kernel is the conv kernel convolved with the 2-tap box (one small matmul). It visits 1/2^d of the
    output positions with ((k+1)/k)^d larger kernels: for 3×3×3, 64/216 of the FLOPs of conv then pool, and no
    full-resolution output. The parameters are untouched (spectral norm still normalises the 3×3(×3) kernel).
    """
    weight, bias = conv.weight, conv.bias
    dims = weight.ndim - 2
    o, i, *kernel = weight.shape
    fold = _box_fold_matrix(tuple(kernel), weight.device, weight.dtype)
    folded = (weight.reshape(o * i, -1) @ fold).reshape(o, i, *(k + 1 for k in kernel))
    if is_channels_last(weight):  # keep the layout: no cuDNN transpose
        folded = folded.contiguous(memory_format=CHANNELS_LAST[folded.dim()])
    run = F.conv2d if dims == 2 else F.conv3d
    return run(x, folded, bias, stride=2, padding=conv.padding)


class DownBlock(nn.Module):
    """Pre-activation residual block with 2× average-pool down-sampling, 2D or 3D, no normalisation.

    main: ReLU → conv3 → ReLU → conv3 → pool;  shortcut: conv1 → pool.
    `first=True` is the critics' input block: no leading ReLU, shortcut pools before its 1×1 conv.

    Computed in an equal, cheaper order: conv3 → pool as one strided convolution (`conv_then_pool`), and the
    shortcut's pool before its 1×1 conv in both variants (a 1×1 conv and an average pool commute).
    """

    def __init__(self, in_ch: int, out_ch: int, *, sn: bool = False, first: bool = False, dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
        self.first = first
        self.conv1 = maybe_sn(conv(in_ch, out_ch, 3, padding=1), sn)
        self.conv2 = maybe_sn(conv(out_ch, out_ch, 3, padding=1), sn)
        self.shortcut = maybe_sn(conv(in_ch, out_ch, 1), sn)

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = conv_then_pool(F.relu(self.conv1(h)), self.conv2)
        return h + self.shortcut(self.pool(x, 2))


class BNResBlock(nn.Module):
    """DVD-GAN-S decoder block: BN → ReLU → (nearest ×2) → SN-conv3 → BN → ReLU → SN-conv3, shortcut (×2) → SN-conv1.

    BatchNorm is unconditional with momentum 0.01; its statistics run over all B·T frames of the batch.
    """

    def __init__(self, in_ch: int, out_ch: int, *, up: bool):
        super().__init__()
        self.up = up
        self.bn1 = nn.BatchNorm2d(in_ch, momentum=0.01)
        self.conv1 = spectral_norm(nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.bn2 = nn.BatchNorm2d(out_ch, momentum=0.01)
        self.conv2 = spectral_norm(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.shortcut = spectral_norm(nn.Conv2d(in_ch, out_ch, 1))

    def _up(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.up else x

    def forward(self, x: Tensor) -> Tensor:  # (N, I, H, W) -> (N, O, H', W')
        h = self.conv1(self._up(F.relu(self.bn1(x))))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + self.shortcut(self._up(x))


class SelfAttention(nn.Module):
    """SAGAN self-attention: q, k 1×1 C→C/8, v 1×1 C→C, softmax over H·W positions, out = γ·attn + x with γ = 0."""

    def __init__(self, ch: int, *, sn: bool = True):
        super().__init__()
        self.query = maybe_sn(nn.Conv2d(ch, ch // 8, 1), sn)
        self.key = maybe_sn(nn.Conv2d(ch, ch // 8, 1), sn)
        self.value = maybe_sn(nn.Conv2d(ch, ch, 1), sn)
        # shape (1,), not (): DeepSpeed 0.19.8's initial broadcast views params as uint8, which fails on 0-dim
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W)
        n, c, h, w = x.shape

        def tokens(t: Tensor) -> Tensor:  # (N, C', H, W) -> (N, H·W, C')
            return t.flatten(2).transpose(1, 2)

        # SAGAN has no 1/√d temperature: scale=1.
        attn = F.scaled_dot_product_attention(
            tokens(self.query(x)), tokens(self.key(x)), tokens(self.value(x)), scale=1.0
        )
        return x + self.gamma * attn.transpose(1, 2).reshape(n, c, h, w)
