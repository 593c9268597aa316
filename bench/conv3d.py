"""How fast cuDNN runs the temporal critic's 3D convolutions, per layer, in each memory layout and formulation.

The sky128 temporal critic (ch 64, 25 frames, full resolution) is most of a 128 px training cycle's FLOPs, and a
profile put its 3D convolutions far below the GPU's bf16 peak. For each of its conv3d layers this times forward
and forward + backward (input and weight gradients) with CUDA events, in NCDHW and channels_last_3d, and for the
stride-2 4×4×4 layers (conv3 → pool folded, `vsyn.nn.layers.conv_then_pool`) also as space-to-depth followed by a
stride-1 2×2×2 convolution (`strided_conv_as_space_to_depth` below), and the RGB input layer also as im2col + one
matmul (`im2col_conv`) and as a conv2d of each frame over its time-stacked neighbours (`time_to_channels_conv`,
not yet timed on a GPU). Each form is checked here against the direct convolution, and in float64 with its
gradients by tests/bench/test_conv3d_forms.py.

What it found on an H100 (bench/RESULTS.md, 2026-11-27): no other form beat the direct convolution in its best
layout; NCDHW was cheaper per layer than channels_last_3d for the stride-2 layers' backward, yet slower in the
whole training step; the RGB layer runs at ~20 TFLOP/s in every form tried.

    python bench/conv3d.py --batch 16 --dtype bf16 [--layers block1.conv1]
"""

from __future__ import annotations

import argparse
import itertools
import math
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import RESULTS, append_report, provenance  # noqa: E402  (bench/record.py)
from timing import timed_ms  # noqa: E402  (bench/timing.py)
from vsyn.nn.layers import CHANNELS_LAST, is_channels_last  # noqa: E402

# (name, in channels, out channels, kernel, stride, padding, input T, input side) of the sky128 temporal critic
LAYERS = [
    ("block1.conv1", 3, 128, 3, 1, 1, 25, 128),
    ("block1.conv2+pool", 128, 128, 4, 2, 1, 25, 128),
    ("block2.conv1", 128, 256, 3, 1, 1, 12, 64),
    ("block2.conv2+pool", 256, 256, 4, 2, 1, 12, 64),
]


def strided_conv_as_space_to_depth(x: Tensor, weight: Tensor, padding: int, bias: Tensor | None = None) -> Tensor:
    """conv(x, weight, stride=2, padding) for an even kernel, as space-to-depth then a stride-1 convolution.

    The same linear map: output i reads padded inputs 2i … 2i+K−1, i.e. K/2 whole 2-blocks, so folding each 2-block
    (2^d phases) into channels turns it into a (K/2)-tap stride-1 convolution over C·2^d channels. cuDNN may run
    that dense form faster than the strided one. Keeps x's memory format.
    """
    dims = weight.ndim - 2
    n, c, *size = x.shape
    o, _, *kernel = weight.shape
    assert all(k % 2 == 0 for k in kernel), kernel
    blocks = [(s + 2 * padding - k) // 2 + k // 2 for s, k in zip(size, kernel)]  # 2-blocks the outputs read
    pads: list[int] = []
    for s, b in zip(reversed(size), reversed(blocks)):  # F.pad's order: last dim first; negative crops
        pads += [padding, 2 * b - s - padding]
    xp = F.pad(x, pads)
    channels_last = is_channels_last(x)
    # (N, C, B1, 2, B2, 2, …) -> channel index c·2^d + phase (phases in dim order)
    split = xp.reshape(n, c, *[v for b in blocks for v in (b, 2)])
    phase_dims = [3 + 2 * i for i in range(dims)]
    block_dims = [2 + 2 * i for i in range(dims)]
    if channels_last:
        xs = split.permute(0, *block_dims, 1, *phase_dims).contiguous()
        xs = xs.reshape(n, *blocks, c * 2**dims).permute(0, dims + 1, *range(1, dims + 1))
    else:
        xs = split.permute(0, 1, *phase_dims, *block_dims).reshape(n, c * 2**dims, *blocks)
    w = weight.reshape(o, -1, *[v for k in kernel for v in (k // 2, 2)])
    w = w.permute(0, 1, *phase_dims, *block_dims).reshape(o, -1, *(k // 2 for k in kernel))
    if channels_last:
        w = w.contiguous(memory_format=CHANNELS_LAST[w.dim()])
    return (F.conv3d if dims == 3 else F.conv2d)(xs, w, bias)


def im2col_conv(x: Tensor, weight: Tensor, padding: int, bias: Tensor | None = None) -> Tensor:
    """conv(x, weight, stride=1, padding) as the stacked shifted windows of the padded input (N, *S, C·∏k, padded to
    a multiple of 8 for tensor cores) times the flattened weight: one matmul, whose derivatives are matmuls and slice
    sums. For few input channels (the critic's RGB layer) it avoids cuDNN's small-channel kernels. Output is
    channels-last in memory.
    """
    o, c, *kernel = weight.shape
    n, _, *size = x.shape
    taps = math.prod(kernel)
    width = -(-taps * c // 8) * 8
    xp = F.pad(x, [padding] * 2 * len(size)).movedim(1, -1)  # (N, *S+2p, C)
    out_size = [s + 2 * padding - k + 1 for s, k in zip(size, kernel)]
    windows = [xp[(slice(None), *(slice(d, d + s) for d, s in zip(offset, out_size)))]
               for offset in itertools.product(*(range(k) for k in kernel))]
    if width > taps * c:
        windows.append(x.new_zeros(n, *out_size, width - taps * c))
    w = F.pad(weight.movedim(1, -1).reshape(o, taps * c), (0, width - taps * c))  # (O, tap·C) as the columns
    return F.linear(torch.cat(windows, dim=-1), w, bias).movedim(-1, 1)


def time_to_channels_conv(x: Tensor, weight: Tensor, padding: int, bias: Tensor | None = None) -> Tensor:
    """conv3d(x, weight, stride=1, padding) as a 2D convolution of every output frame: the kt input frames it reads
    are stacked into channels (C·kt, zero-padded to a multiple of 8), so an RGB 3×3×3 conv becomes a 3×3 conv2d over
    N·T images of 16 channels instead of a 3D conv over 3. The copy is kt× the (small) input. Keeps x's layout.
    """
    o, c, kt, kh, kw = weight.shape
    n, _, t, h, w_ = x.shape
    t_out = t + 2 * padding - kt + 1
    channels_last = is_channels_last(x)
    xp = F.pad(x, (0, 0, 0, 0, padding, padding))
    stacked = torch.stack([xp[:, :, j:j + t_out] for j in range(kt)], dim=2)  # (N, C, kt, T, H, W)
    frames = stacked.permute(0, 3, 1, 2, 4, 5).reshape(n * t_out, c * kt, h, w_)
    width = -(-c * kt // 8) * 8
    frames = F.pad(frames, (0, 0, 0, 0, 0, width - c * kt))
    w2 = F.pad(weight.reshape(o, c * kt, kh, kw), (0, 0, 0, 0, 0, width - c * kt))
    if channels_last:
        frames = frames.contiguous(memory_format=torch.channels_last)
        w2 = w2.contiguous(memory_format=torch.channels_last)
    out = F.conv2d(frames, w2, bias, padding=padding)  # (N·T, O, H', W')
    return out.reshape(n, t_out, o, *out.shape[2:]).transpose(1, 2)


def cuda_ms(fn: Callable[[], object], reps: int) -> float:
    """Median device time of `fn` over `reps` calls, after two warm-up calls (cuDNN autotuning happens there)."""
    for _ in range(2):
        fn()
    return timed_ms(fn, reps, torch.device("cuda"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="clips (16: real + fake of a batch of 8)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--layers", default="", help=f"comma list of {', '.join(n for n, *_ in LAYERS)} (default: all)")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench/conv3d.py times cuDNN: it needs a CUDA device")
    torch.backends.cudnn.benchmark = True
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    dev = torch.device("cuda")
    rows: list[str] = []
    # a `timeout` (SIGTERM) still records the rows measured so far
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        measure(args, dtype, dev, rows)
    finally:
        record(args, rows)
    return 0


def measure(args: argparse.Namespace, dtype: torch.dtype, dev: torch.device, rows: list[str]) -> None:
    for name, cin, cout, k, stride, pad, t, side in LAYERS:
        if args.layers and name not in args.layers.split(","):
            continue
        x0 = torch.randn(args.batch, cin, t, side, side, device=dev, dtype=dtype)
        w0 = torch.randn(cout, cin, k, k, k, device=dev, dtype=dtype) / (cin * k**3) ** 0.5
        out_shape = F.conv3d(x0[:1], w0, stride=stride, padding=pad).shape
        flops = 2 * cin * cout * k**3 * args.batch * out_shape[2:].numel()
        forms = {"direct": lambda x, w: F.conv3d(x, w, stride=stride, padding=pad)}
        if stride == 2:
            forms["space-to-depth"] = lambda x, w: strided_conv_as_space_to_depth(x, w, pad)
        if cin < 8 and stride == 1:
            forms["im2col + matmul"] = lambda x, w: im2col_conv(x, w, pad)
            forms["time-to-channels conv2d"] = lambda x, w: time_to_channels_conv(x, w, pad)
        if cin < 8:  # zero channels up to 8: 16-byte rows for the NDHWC kernels
            forms["channels padded to 8"] = lambda x, w: F.conv3d(
                F.pad(x, (0, 0, 0, 0, 0, 0, 0, 8 - cin)), F.pad(w, (0, 0, 0, 0, 0, 0, 0, 8 - cin)), stride=stride,
                padding=pad)
        reference = F.conv3d(x0.float()[:2], w0.float(), stride=stride, padding=pad)
        for layout, fmt in (("ncdhw", torch.contiguous_format), ("cl3d", torch.channels_last_3d)):
            x = x0.contiguous(memory_format=fmt).requires_grad_(True)
            w = w0.contiguous(memory_format=fmt).requires_grad_(True)
            for form, run in forms.items():
                err = (run(x[:2], w).float() - reference).abs().max().item() / reference.abs().max().item()
                grad = torch.randn(args.batch, *out_shape[1:], device=dev, dtype=dtype)

                def forward():
                    with torch.no_grad():
                        return run(x, w)

                def forward_backward(inputs=(x, w)):
                    torch.autograd.backward(run(x, w), grad, inputs=list(inputs))

                fwd = cuda_ms(forward, args.reps)
                both = cuda_ms(forward_backward, args.reps)
                wgrad = cuda_ms(lambda: forward_backward((w,)), args.reps) - fwd
                x.grad = w.grad = None
                rows.append(f"| {name} | {layout} | {form} | {fwd:.2f} | {flops / fwd / 1e9:.0f} | "
                            f"{both - fwd - wgrad:.2f} | {wgrad:.2f} | {both:.2f} | {3 * flops / both / 1e9:.0f} | "
                            f"{err:.1e} |")
                print(rows[-1], flush=True)
        del x0, w0
        torch.cuda.empty_cache()


def record(args: argparse.Namespace, rows: list[str]) -> None:
    if not rows:
        return
    report = "\n".join([
        f"\n## bench/conv3d.py: the sky128 temporal critic's 3D convolutions, batch {args.batch}, {args.dtype} — "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "", *provenance(),
        "- device time per call (median of CUDA events), cuDNN autotuned; TFLOP/s from the direct convolution's "
        "FLOPs (forward + backward counted as 3x the forward); input grad = fwd+bwd − fwd − weight grad, "
        "weight grad = (fwd + weight-only bwd) − fwd; error: max |form − fp32 direct| / max |fp32 direct|",
        "", "| layer | layout | form | forward ms | TFLOP/s | input grad ms | weight grad ms | fwd + bwd ms | "
        "TFLOP/s | rel. error |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|", *rows, ""])
    print(report)
    if not args.no_record:
        append_report(report)


if __name__ == "__main__":
    sys.exit(main())
