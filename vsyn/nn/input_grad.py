"""Convolutions for gradient penalties: ∇x D built from ops whose own derivatives run on fast kernels.

A gradient penalty differentiates ∇x D(x) with respect to the critic's weights (a double backward). PyTorch's
derivative of a convolution's backward (`_convolution_double_backward`) gets the weight term by a convolution whose
*filter* is the whole output gradient (e.g. 25×128×128) and whose batch is the input channels; cuDNN runs that shape
on generic "indexed" kernels. On an H100 those few calls were 38% of a sky128 training cycle (bench/RESULTS.md).

Under `input_grad_convolutions()`, every conv2d/conv3d whose input requires grad is split in two autograd paths with
the same value: the ordinary convolution of the *detached* input (weight and bias gradients, computed only when a
pass asks for them), and an identity that sends ∂L/∂x back as a transposed convolution. That transposed convolution
is what ∇x D is built from, and its derivative is an ordinary weight-gradient kernel (with respect to the weight) and
an ordinary forward convolution (with respect to the output gradient). Values and gradients of every order are the
same as plain autograd's: checked in float64 in tests/nn/test_input_grad.py.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

_CONV_T = {2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _tuple(v: Any, dims: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims


def conv_input_grad(x_shape: tuple[int, ...], weight: Tensor, grad_out: Tensor, stride, padding, dilation,
                    groups: int) -> Tensor:
    """∂L/∂x of conv(x, weight) as a transposed convolution: differentiable by ordinary convolution kernels.

    (`torch.nn.grad.conv*_input` calls `aten.convolution_backward`, whose derivative is the slow path.)
    """
    dims = weight.ndim - 2
    stride, padding, dilation = (_tuple(v, dims) for v in (stride, padding, dilation))
    spatial_in, spatial_out, kernel = x_shape[2:], grad_out.shape[2:], weight.shape[2:]
    output_padding = tuple(
        i - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
        for i, o, s, p, d, k in zip(spatial_in, spatial_out, stride, padding, dilation, kernel)
    )
    return _CONV_T[dims](grad_out, weight, None, stride, padding, output_padding, groups, dilation)


def _conv_args(args: tuple, kwargs: dict) -> tuple[Tensor, Tensor, Tensor | None, Any, Any, Any, int]:
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = (None, None, None, 1, 0, 1, 1)
    values = dict(zip(names, defaults)) | dict(zip(names, args)) | kwargs
    return tuple(values[n] for n in names)  # type: ignore[return-value]


class _InputPath(torch.autograd.Function):
    """Identity on y = conv(x.detach(), w, b) that routes ∂L/∂x = convᵀ(∂L/∂y, w) back to x.

    The weight and bias gradients stay with the ordinary convolution node (a plain weight-gradient kernel, run only
    when a weight gradient is asked for); the x-gradient is a differentiable transposed convolution.
    """

    @staticmethod
    def forward(ctx, y, x, weight, stride, padding, dilation, groups):  # type: ignore[override]
        device = x.device.type
        ctx.autocast = (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device), device)
        ctx.conf = (tuple(x.shape), stride, padding, dilation, groups)
        ctx.save_for_backward(weight)
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        x_shape, stride, padding, dilation, groups = ctx.conf
        enabled, dtype, device = ctx.autocast
        with torch.autocast(device, dtype=dtype, enabled=enabled):  # the forward's precision, for both backwards
            grad_x = conv_input_grad(x_shape, weight, grad_y, stride, padding, dilation, groups)
        return grad_y, grad_x, None, None, None, None, None


class _InputGradMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.conv2d, F.conv3d, torch.conv2d, torch.conv3d):
            x, weight, bias, stride, padding, dilation, groups = _conv_args(args, kwargs)
            if isinstance(padding, str) or not x.requires_grad:  # "same"/"valid", or no ∇x wanted: the plain op
                return func(*args, **kwargs)
            y = func(x.detach(), weight, bias, stride, padding, dilation, groups)
            return _InputPath.apply(y, x, weight, stride, padding, dilation, groups)
        return func(*args, **kwargs)


@contextlib.contextmanager
def input_grad_convolutions() -> Iterator[None]:
    """Convolutions inside record only what ∇x needs, in a form whose double backward is fast (see module doc)."""
    with _InputGradMode():
        yield
