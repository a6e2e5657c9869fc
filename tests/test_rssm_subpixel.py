"""The sub-pixel transposed convolution against the native one: values, gradients, autocast."""

import pytest
import torch
import torch.nn.functional as F

from wmrl.rssm import ObsDecoder
from wmrl.rssm.subpixel import conv_transpose2d_subpixel, phase_kernels

torch.set_num_threads(1)


@pytest.mark.parametrize("k", [4, 5, 6])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_native_transposed_convolution(k, channels_last):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(3, 4, 7, 6, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 2, k, k, generator=g, dtype=torch.float64)
    b = torch.randn(2, generator=g, dtype=torch.float64)
    y = conv_transpose2d_subpixel(x, w, b)
    ref = F.conv_transpose2d(x, w, b, stride=2)
    assert y.shape == ref.shape == (3, 2, 2 * 7 + k - 2, 2 * 6 + k - 2)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


def test_phase_kernels_by_hand():
    # one input and one output channel, k = 4: phase (p_y, p_x) takes taps p + 2t, flipped
    w = torch.arange(16.0).view(1, 1, 4, 4)
    kernels = phase_kernels(w)  # [4, 1, 2, 2]
    assert kernels.shape == (4, 1, 2, 2)
    torch.testing.assert_close(kernels[0, 0], torch.tensor([[10.0, 8.0], [2.0, 0.0]]))  # (0, 0)
    torch.testing.assert_close(kernels[1, 0], torch.tensor([[11.0, 9.0], [3.0, 1.0]]))  # (0, 1)
    torch.testing.assert_close(kernels[3, 0], torch.tensor([[15.0, 13.0], [7.0, 5.0]]))  # (1, 1)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv_transpose2d_subpixel, (x, w, b))
    # and the gradients equal the native transposed convolution's
    grads = torch.autograd.grad(conv_transpose2d_subpixel(x, w, b).square().sum(), (x, w, b))
    ref = torch.autograd.grad(F.conv_transpose2d(x, w, b, stride=2).square().sum(), (x, w, b))
    for a, r in zip(grads, ref):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


def test_without_bias_and_in_place_use_of_the_output():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = conv_transpose2d_subpixel(x, w)
    torch.testing.assert_close(y, F.conv_transpose2d(x, w, stride=2), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: conv_transpose2d_subpixel(a, b), (x, w))
    w6 = torch.randn(3, 2, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    for weight in (w, w6):  # cropped (odd k) and uncropped (even k) outputs written in place
        conv_transpose2d_subpixel(x, weight).mul_(2).sum().backward()


def test_only_needed_gradients():
    x = torch.randn(2, 3, 4, 4)  # the input needs no gradient
    w, b = torch.randn(3, 2, 6, 6, requires_grad=True), torch.randn(2, requires_grad=True)
    conv_transpose2d_subpixel(x, w, b).sum().backward()
    assert x.grad is None and w.grad is not None and b.grad is not None


def test_autocast_bf16_as_native():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 5, 5, generator=g)
    w = torch.randn(8, 3, 6, 6, generator=g, requires_grad=True)
    b = torch.randn(3, generator=g, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        y = conv_transpose2d_subpixel(x, w, b)
        ref = F.conv_transpose2d(x, w, b, stride=2)
    assert y.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref.float(), rtol=2e-2, atol=5e-2)
    y.float().sum().backward()
    assert w.grad.dtype == torch.float32 and torch.isfinite(w.grad).all()
    with torch.autocast("cpu", torch.bfloat16):  # float64 is left alone, as autocast does
        y64 = conv_transpose2d_subpixel(x.double(), w.double(), b.double())
    assert y64.dtype == torch.float64


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\[N, 3, h, w\]"):
        conv_transpose2d_subpixel(torch.zeros(1, 2, 4, 4), torch.zeros(3, 2, 6, 6), torch.zeros(2))
    with pytest.raises(ValueError, match="C_in, C_out, k, k"):
        phase_kernels(torch.zeros(3, 2, 6, 5))


def test_decoder_same_with_and_without_subpixel_output():
    torch.manual_seed(0)
    dec = ObsDecoder(channels=4, latent_dim=12)
    z, h = torch.randn(2, 3, 4), torch.randn(2, 3, 8)
    y = dec(z, h)
    grads = torch.autograd.grad(y.square().sum(), list(dec.parameters()))
    dec.subpixel_output = False
    y_ref = dec(z, h)
    ref = torch.autograd.grad(y_ref.square().sum(), list(dec.parameters()))
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(grads, ref):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)
