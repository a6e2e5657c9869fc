"""Symlog transforms and the two-hot encoding of scalars (DreamerV3).

DreamerV3 predicts rewards and values whose scale is unknown in advance. Two devices make this
robust (Hafner et al. 2023, "Mastering Diverse Domains through World Models", Sec. 3 and
Eq. 9-11):

* ``symlog(x) = sign(x) log(1 + |x|)`` compresses large magnitudes and is the identity near zero;
  ``symexp`` is its inverse.
* A scalar is represented as a categorical distribution over a fixed grid of *bins*
  ``b_1 < ... < b_K`` (equally spaced in symlog space). A target ``y`` is encoded as the
  *two-hot* vector that puts weight on the two bins around it so that ``sum_k w_k b_k = y``
  (Eq. 10); a prediction is decoded as the expectation ``sum_k softmax(logits)_k b_k`` (Eq. 11)
  and trained with the cross-entropy against the two-hot target.

All functions are pure and differentiable where that makes sense (``two_hot_encode`` is
piecewise linear in ``x``).
"""

from __future__ import annotations

import torch

__all__ = [
    "symlog",
    "symexp",
    "default_bins",
    "two_hot_encode",
    "two_hot_decode",
    "two_hot_cross_entropy",
]


def symlog(x: torch.Tensor) -> torch.Tensor:
    """Symmetric logarithm ``sign(x) log(1 + |x|)`` (Hafner et al. 2023, Eq. 9).

    >>> symlog(torch.tensor([-(torch.e - 1), 0.0, torch.e - 1]))
    tensor([-1.,  0.,  1.])
    """
    return torch.sign(x) * torch.log1p(x.abs())  # [*B]


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`: ``sign(x) (exp(|x|) - 1)`` (Hafner et al. 2023, Eq. 9).

    >>> x = torch.tensor([-100.0, 0.0, 100.0])
    >>> torch.allclose(symexp(symlog(x)), x)
    True
    """
    return torch.sign(x) * torch.expm1(x.abs())  # [*B]


def default_bins(
    num_bins: int = 255,
    limit: float = 20.0,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """DreamerV3's support: ``symexp`` of ``num_bins`` points equally spaced in ``[-limit, limit]``.

    The grid is exactly antisymmetric (``b_k = -b_{K+1-k}``), so uniform probabilities decode to
    exactly zero (Hafner et al. 2023, Sec. 3, "Critic learning").

    Returns:
        ``[num_bins]``, ascending.

    >>> default_bins(5, limit=2.0)
    tensor([-6.3891, -1.7183,  0.0000,  1.7183,  6.3891])
    """
    if num_bins < 2:
        raise ValueError(f"num_bins must be at least 2, got {num_bins}")
    grid = torch.linspace(-limit, limit, num_bins, dtype=dtype, device=device)  # [K]
    grid = 0.5 * (grid - grid.flip(0))  # [K] exactly antisymmetric
    return symexp(grid)  # [K]


def _check_bins(bins: torch.Tensor) -> None:
    if bins.dim() != 1 or bins.numel() < 2:
        raise ValueError(f"bins must be a 1-D tensor of at least 2 values, got {tuple(bins.shape)}")


def two_hot_encode(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Two-hot encoding of scalars on an ascending support (Hafner et al. 2023, Eq. 10).

    For ``b_k <= x < b_{k+1}`` the weights are ``(b_{k+1} - x) / (b_{k+1} - b_k)`` on ``b_k`` and
    ``(x - b_k) / (b_{k+1} - b_k)`` on ``b_{k+1}``, so ``sum_k w_k b_k = x``. Values outside the
    support are clamped to its end points.

    Args:
        x: ``[*B]`` raw scalars.
        bins: ``[K]`` ascending support.

    Returns:
        ``[*B, K]`` weights (non-negative, summing to one), in ``x``'s dtype and device.

    >>> two_hot_encode(torch.tensor([0.25, 5.0]), torch.tensor([-1.0, 0.0, 1.0]))
    tensor([[0.0000, 0.7500, 0.2500],
            [0.0000, 0.0000, 1.0000]])
    """
    _check_bins(bins)
    bins = bins.to(device=x.device, dtype=x.dtype)  # [K]
    K = bins.numel()
    x = x.clamp(bins[0], bins[-1])  # [*B]
    lower = torch.searchsorted(bins, x.detach().contiguous(), right=True) - 1  # [*B]
    lower = lower.clamp(0, K - 2)  # [*B]
    b_lo, b_hi = bins[lower], bins[lower + 1]  # [*B], [*B]
    w_hi = (x - b_lo) / (b_hi - b_lo)  # [*B]
    out = x.new_zeros(*x.shape, K)  # [*B, K]
    out = out.scatter(-1, lower.unsqueeze(-1), (1 - w_hi).unsqueeze(-1))  # [*B, K]
    return out.scatter(-1, (lower + 1).unsqueeze(-1), w_hi.unsqueeze(-1))  # [*B, K]


def two_hot_decode(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Expected value ``sum_k softmax(logits)_k b_k`` of a categorical over the support (Eq. 11).

    The sum pairs each bin with its mirror image, ``(p_k - p_{K+1-k}) b_k + p_{K+1-k}
    (b_k + b_{K+1-k})``, so on an antisymmetric support (large ``|b_k|`` of opposite signs)
    symmetric probabilities — e.g. the zero logits of a freshly initialised head — decode to
    exactly zero instead of to rounding noise of the size of ``b_K * eps``.

    ``log`` of a two-hot encoding is a valid argument: ``two_hot_decode(two_hot_encode(x, b).log(),
    b)`` returns ``x`` inside the support.

    Args:
        logits: ``[*B, K]``.
        bins: ``[K]``.

    Returns:
        ``[*B]``.

    >>> bins = torch.tensor([-1.0, 0.0, 1.0])
    >>> two_hot_decode(two_hot_encode(torch.tensor([0.25]), bins).log(), bins)
    tensor([0.2500])
    """
    _check_bins(bins)
    K = bins.numel()
    if logits.shape[-1] != K:
        raise ValueError(f"logits have {logits.shape[-1]} classes but the support has {K} bins")
    bins = bins.to(device=logits.device, dtype=logits.dtype)  # [K]
    p = torch.softmax(logits, dim=-1)  # [*B, K]
    p_mirror, b_mirror = p.flip(-1), bins.flip(-1)  # [*B, K], [K]
    paired = (p - p_mirror) * bins + p_mirror * (bins + b_mirror)  # [*B, K]
    half = K // 2
    out = paired[..., K - half :].sum(-1)  # [*B] upper half, each paired with its mirror
    if K % 2:
        out = out + p[..., half] * bins[half]  # [*B] the middle bin
    return out


def two_hot_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy between a categorical prediction and the two-hot encoding of a target.

    ``-sum_k two_hot(y)_k log softmax(logits)_k`` (Hafner et al. 2023, Eq. 10).

    Args:
        logits: ``[*B, K]``.
        target: ``[*B]`` or ``[*B, 1]`` raw scalars (no gradient flows into the target).
        bins: ``[K]``.

    Returns:
        ``[*B]`` unreduced loss.

    >>> two_hot_cross_entropy(torch.zeros(2, 3), torch.tensor([-0.5, 0.5]),
    ...                       torch.tensor([-1.0, 0.0, 1.0]))
    tensor([1.0986, 1.0986])
    """
    if target.shape == (*logits.shape[:-1], 1):
        target = target.squeeze(-1)  # [*B]
    if target.shape != logits.shape[:-1]:
        raise ValueError(
            f"target must have shape {tuple(logits.shape[:-1])} (or with a trailing 1) to match "
            f"logits {tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    weights = two_hot_encode(target.detach(), bins)  # [*B, K]
    return -(weights * torch.log_softmax(logits, dim=-1)).sum(-1)  # [*B]
