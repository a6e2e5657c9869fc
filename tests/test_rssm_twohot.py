"""symlog / symexp and the two-hot encoding: inverses, hand values, TorchRL parity, errors."""

import math

import pytest
import torch

from wmrl.rssm.twohot import (
    default_bins,
    symexp,
    symlog,
    two_hot_cross_entropy,
    two_hot_decode,
    two_hot_encode,
)

torch.set_num_threads(1)


def test_symlog_hand_values_and_inverse():
    x = torch.tensor([-1e6, -(math.e - 1), -0.5, 0.0, 0.5, math.e - 1, 1e6], dtype=torch.float64)
    expected = torch.sign(x) * torch.log(1 + x.abs())
    torch.testing.assert_close(symlog(x), expected, rtol=0, atol=1e-15)
    assert symlog(x)[1].item() == pytest.approx(-1.0, abs=1e-15)
    torch.testing.assert_close(symexp(symlog(x)), x, rtol=1e-12, atol=1e-12)
    y = torch.linspace(-20, 20, 401, dtype=torch.float64)
    torch.testing.assert_close(symlog(symexp(y)), y, rtol=1e-12, atol=1e-12)


def test_symlog_gradcheck():
    x = torch.tensor([-3.0, -0.2, 0.3, 7.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(symlog, (x,))
    assert torch.autograd.gradcheck(symexp, (x,))


def test_default_bins_antisymmetric_and_match_torchrl():
    from torchrl.modules.models.model_based import _default_bins

    for n in (5, 255, 256):
        bins = default_bins(n)
        assert bins.shape == (n,)
        assert bool((bins[1:] > bins[:-1]).all())
        assert torch.equal(bins, -bins.flip(0))  # exactly antisymmetric
        torch.testing.assert_close(bins, _default_bins(n), rtol=1e-5, atol=1e-6)
    assert default_bins(255)[-1].item() == pytest.approx(math.expm1(20.0), rel=1e-6)


def test_two_hot_hand_values():
    bins = torch.tensor([-2.0, 0.0, 1.0, 3.0])
    enc = two_hot_encode(torch.tensor([0.25, -1.0, 2.5, 3.0, -9.0, 9.0]), bins)
    expected = torch.tensor(
        [
            [0.0, 0.75, 0.25, 0.0],  # between 0 and 1
            [0.5, 0.5, 0.0, 0.0],  # between -2 and 0
            [0.0, 0.0, 0.25, 0.75],  # between 1 and 3
            [0.0, 0.0, 0.0, 1.0],  # last bin
            [1.0, 0.0, 0.0, 0.0],  # clamped below
            [0.0, 0.0, 0.0, 1.0],  # clamped above
        ]
    )
    torch.testing.assert_close(enc, expected)


def test_two_hot_round_trip_inside_range():
    bins = default_bins(255).double()
    g = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            symexp(torch.empty(2000, dtype=torch.float64).uniform_(-19.9, 19.9, generator=g)),
            torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64),
            bins[[0, 10, 127, 254]],
        ]
    )
    enc = two_hot_encode(x, bins)
    torch.testing.assert_close(enc.sum(-1), torch.ones_like(x))
    assert bool((enc >= 0).all()) and bool(((enc > 0).sum(-1) <= 2).all())
    torch.testing.assert_close((enc * bins).sum(-1), x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(two_hot_decode(enc.log(), bins), x, rtol=1e-9, atol=1e-9)
    # float32 on the default support
    x32 = symexp(torch.linspace(-5, 5, 101))
    dec = two_hot_decode(two_hot_encode(x32, default_bins()).log(), default_bins())
    torch.testing.assert_close(dec, x32, rtol=1e-5, atol=1e-5)


def test_two_hot_decode_zero_logits_is_exactly_zero():
    # a zero-initialised head: the paired sum cancels the +-4.9e8 bins exactly
    out = two_hot_decode(torch.zeros(3, 255), default_bins())
    assert torch.equal(out, torch.zeros(3))
    naive = (torch.softmax(torch.zeros(255), -1) * default_bins()).sum()
    assert naive.item() != 0.0  # what a plain expectation gives in float32


def test_two_hot_decode_matches_expectation_and_torchrl():
    from torchrl.objectives.dreamer_v3 import two_hot_decode as trl_decode
    from torchrl.objectives.dreamer_v3 import two_hot_encode as trl_encode

    bins = default_bins(41, limit=3.0).double()
    logits = torch.randn(7, 41, dtype=torch.float64)
    ref = (torch.softmax(logits, -1) * bins).sum(-1)
    torch.testing.assert_close(two_hot_decode(logits, bins), ref)
    torch.testing.assert_close(two_hot_decode(logits, bins), trl_decode(logits, bins))
    x = torch.randn(50, dtype=torch.float64) * 5
    torch.testing.assert_close(two_hot_encode(x, bins), trl_encode(x, bins))
    # non-symmetric support: the paired formula is still the plain expectation
    bins = torch.tensor([-1.0, 0.5, 2.0, 10.0], dtype=torch.float64)
    logits = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(
        two_hot_decode(logits, bins), (torch.softmax(logits, -1) * bins).sum(-1)
    )


def test_two_hot_cross_entropy_hand_value_and_torchrl():
    from torchrl.objectives.dreamer_v3 import two_hot_cross_entropy as trl_ce

    bins = torch.tensor([-1.0, 0.0, 1.0])
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    log_p = torch.log_softmax(logits, -1)[0]
    # target 0.25: weights 0.75 on bin 0.0 and 0.25 on bin 1.0
    expected = -(0.75 * log_p[1] + 0.25 * log_p[2])
    torch.testing.assert_close(
        two_hot_cross_entropy(logits, torch.tensor([0.25]), bins)[0], expected
    )
    logits = torch.randn(4, 6, 255)
    target = torch.randn(4, 6, 1) * 30
    torch.testing.assert_close(
        two_hot_cross_entropy(logits, target, default_bins()),
        trl_ce(logits, target, default_bins()),
    )


def test_two_hot_errors():
    bins = torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        two_hot_encode(torch.zeros(3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="classes"):
        two_hot_decode(torch.zeros(3, 4), bins)
    with pytest.raises(ValueError, match="target must have shape"):
        two_hot_cross_entropy(torch.zeros(3, 2), torch.zeros(4), bins)
    with pytest.raises(ValueError, match="at least 2"):
        default_bins(1)
