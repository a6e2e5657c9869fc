"""A stride-2 transposed convolution computed as four stride-1 convolutions and a pixel shuffle.

The output pixel ``o = 2 i + t`` of a stride-2 transposed convolution with a ``k x k`` kernel
receives input pixel ``i`` through kernel tap ``t``; the taps that reach the output pixels of
one parity ``p = o mod 2`` are ``t = p, p + 2, ...``. So each of the four output phases
``(p_y, p_x)`` is an ordinary stride-1 correlation of the input with the flipped sub-kernel
``w[..., p_y::2, p_x::2]`` of ``m x m = ceil(k/2)^2`` taps (an odd kernel is padded with a zero
row and column), the four phases are one convolution with ``4 C_out`` filters, and
:func:`torch.nn.functional.pixel_shuffle` interleaves them ("sub-pixel convolution",
Shi et al. 2016, "Real-Time Single Image and Video Super-Resolution Using an Efficient
Sub-Pixel Convolutional Neural Network"). Same arithmetic, same result up to rounding.

On CPU the forward pass of a transposed convolution with few output channels (the decoder's
output layer, 3 channels) is about twice as fast this way, while the backward pass of the native
transposed convolution is the faster one; :func:`conv_transpose2d_subpixel` therefore runs the
forward pass as above and the backward pass as the native one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["phase_kernels", "conv_transpose2d_subpixel"]


def phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """The four phase kernels of a stride-2 transposed-convolution weight, as one conv weight.

    Args:
        weight: ``[C_in, C_out, k, k]`` (the layout of ``nn.ConvTranspose2d``).

    Returns:
        ``[4 C_out, C_in, m, m]`` with ``m = ceil(k / 2)``; filter ``4 c + 2 p_y + p_x`` is output
        channel ``c`` at phase ``(p_y, p_x)`` (the order :func:`~torch.nn.functional.pixel_shuffle`
        expects).

    >>> phase_kernels(torch.zeros(8, 3, 6, 6)).shape
    torch.Size([12, 8, 3, 3])
    >>> phase_kernels(torch.zeros(8, 3, 5, 5)).shape  # odd kernels get a zero row and column
    torch.Size([12, 8, 3, 3])
    """
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"weight must be [C_in, C_out, k, k], got {tuple(weight.shape)}")
    if weight.shape[-1] % 2:
        weight = F.pad(weight, (0, 1, 0, 1))  # [C_in, C_out, k + 1, k + 1]
    c_in, c_out, k, _ = weight.shape
    m = k // 2
    w = weight.reshape(c_in, c_out, m, 2, m, 2).flip(2, 4)  # [C_in, C_out, ty, py, tx, px]
    return w.permute(1, 3, 5, 0, 2, 4).reshape(4 * c_out, c_in, m, m)


class _SubPixelTransposedConv(torch.autograd.Function):
    """Forward: phase convolutions and pixel shuffle. Backward: the native transposed conv's."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        k = weight.shape[-1]
        kernels = phase_kernels(weight)  # [4 C_out, C_in, m, m]
        m = kernels.shape[-1]
        phase_bias = None if bias is None else bias.repeat_interleave(4)  # [4 C_out]
        y = F.conv2d(x, kernels, phase_bias, padding=m - 1)  # [N, 4 C_out, h + m - 1, w + m - 1]
        y = F.pixel_shuffle(y, 2)  # [N, C_out, 2 (h + m - 1), 2 (w + m - 1)]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out_h, out_w = 2 * (x.shape[-2] - 1) + k, 2 * (x.shape[-1] - 1) + k
        if y.shape[-2:] == (out_h, out_w):  # even k: nothing to crop
            return y  # [N, C_out, 2h + k - 2, 2w + k - 2]
        return y[..., :out_h, :out_w].clone()  # odd k: one row and column too many

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        mask = [*ctx.needs_input_grad[:2], ctx.has_bias and ctx.needs_input_grad[2]]
        bias_sizes = [weight.shape[1]] if ctx.has_bias else None
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad, x, weight, bias_sizes, [2, 2], [0, 0], [1, 1], True, [0, 0], 1, mask,
        )  # fmt: skip
        return gx, gw, gb


def conv_transpose2d_subpixel(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.conv_transpose2d(x, weight, bias, stride=2)``, computed as four phase convolutions.

    Differentiable in all three arguments (the backward pass is the native transposed
    convolution's). Under autocast the floating-point arguments other than float64 are cast to
    the autocast dtype first, as autocast does for ``conv_transpose2d``.

    Args:
        x: ``[N, C_in, h, w]``.
        weight: ``[C_in, C_out, k, k]``.
        bias: ``[C_out]`` or ``None``.

    Returns:
        ``[N, C_out, 2h + k - 2, 2w + k - 2]``.

    >>> x, w, b = torch.randn(2, 4, 5, 5), torch.randn(4, 3, 6, 6), torch.randn(3)
    >>> y = conv_transpose2d_subpixel(x, w, b)
    >>> y.shape, torch.allclose(y, F.conv_transpose2d(x, w, b, stride=2), atol=1e-5)
    (torch.Size([2, 3, 14, 14]), True)
    """
    if x.dim() != 4 or x.shape[1] != weight.shape[0]:
        raise ValueError(
            f"x must be [N, {weight.shape[0]}, h, w] for this weight, got {tuple(x.shape)}"
        )
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)

        def cast(t: torch.Tensor | None) -> torch.Tensor | None:
            eligible = t is not None and t.is_floating_point() and t.dtype != torch.float64
            return t.to(dtype) if eligible else t

        x, weight, bias = cast(x), cast(weight), cast(bias)
    with torch.autocast(device, enabled=False):
        return _SubPixelTransposedConv.apply(x, weight, bias)
