"""Pure tensor maths of the RSSM and of the Dreamer losses.

Latent distributions (Hafner et al. 2019, "Learning Latent Dynamics for Planning from Pixels"
(PlaNet), Sec. 3; Hafner et al. 2021, "Mastering Atari with Discrete World Models" (DreamerV2),
Sec. 2; Hafner et al. 2023, "Mastering Diverse Domains through World Models" (DreamerV3), Sec. 3):

* diagonal Gaussians ``N(mu, diag(sigma^2))`` (Dreamer) with the scale produced by a softplus and
  bounded below, sampled by reparameterisation;
* products of categoricals (DreamerV2/V3) mixed with 1% uniform ("unimix") and sampled as one-hot
  vectors with straight-through gradients.

Loss pieces: the Gaussian and categorical KL divergences, the DreamerV3 dynamics and
representation KL terms with free bits, pointwise distances and cumulative discounts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "positive_scale",
    "gaussian_rsample",
    "gaussian_kl",
    "unimix_probs",
    "straight_through_one_hot",
    "categorical_kl",
    "kl_dynamics_representation",
    "kl_balanced",
    "pointwise_distance",
    "cumulative_discount",
    "DISTANCES",
]

#: the pointwise distances accepted by :func:`pointwise_distance`
DISTANCES = ("l2", "l1", "smooth_l1")


def positive_scale(raw: torch.Tensor, min_scale: float) -> torch.Tensor:
    """Scale of a Gaussian from an unconstrained output: ``max(softplus(raw), min_scale)``.

    This is TorchRL's ``NormalParamExtractor(scale_mapping="softplus", scale_lb=min_scale)``;
    Hafner's reference code adds ``min_scale`` instead of clamping (same range, gradient also
    below the bound).

    >>> positive_scale(torch.tensor([-10.0, 0.0]), 0.1)
    tensor([0.1000, 0.6931])
    """
    return F.softplus(raw).clamp_min(min_scale)  # [*B, S]


def gaussian_rsample(mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Reparameterised sample ``mean + std * noise`` with ``noise ~ N(0, I)`` given.

    >>> gaussian_rsample(torch.zeros(2), torch.full((2,), 2.0), torch.tensor([1.0, -1.0]))
    tensor([ 2., -2.])
    """
    return torch.addcmul(mean, std, noise.to(std.dtype))  # [*B, S]


def gaussian_kl(
    mean_q: torch.Tensor, std_q: torch.Tensor, mean_p: torch.Tensor, std_p: torch.Tensor
) -> torch.Tensor:
    """Elementwise ``KL(N(mean_q, std_q^2) || N(mean_p, std_p^2))`` (PlaNet Eq. 3's KL term).

    ``log(std_p / std_q) + (std_q^2 + (mean_q - mean_p)^2) / (2 std_p^2) - 1/2``; sum over the
    last dimension for the KL of diagonal Gaussians.

    Args:
        mean_q, std_q: posterior ``[*B, S]``.
        mean_p, std_p: prior ``[*B, S]``.

    Returns:
        ``[*B, S]``.

    >>> one, zero = torch.ones(1), torch.zeros(1)
    >>> gaussian_kl(one, one, zero, one)
    tensor([0.5000])
    """
    ratio = std_q / std_p  # [*B, S]
    return (ratio.square() + ((mean_q - mean_p) / std_p).square() - 1) / 2 - ratio.log()  # [*B, S]


def unimix_probs(logits: torch.Tensor, unimix: float) -> torch.Tensor:
    """``(1 - unimix) softmax(logits) + unimix / K``: softmax mixed with a uniform.

    Args:
        logits: ``[*B, C, K]``.
        unimix: mixing weight in ``[0, 1)``.

    Returns:
        ``[*B, C, K]``.

    >>> unimix_probs(torch.tensor([[0.0, 100.0]]), 0.01)
    tensor([[0.0050, 0.9950]])
    """
    if not 0.0 <= unimix < 1.0:
        raise ValueError(f"unimix must be in [0, 1), got {unimix}")
    probs = torch.softmax(logits, dim=-1)  # [*B, C, K]
    if unimix:
        probs = probs * (1.0 - unimix) + unimix / logits.shape[-1]  # [*B, C, K]
    return probs


def straight_through_one_hot(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One-hot sample of each categorical with straight-through gradients (DreamerV2, Alg. 1).

    The class of categorical ``c`` is the first ``k`` whose cumulative probability exceeds
    ``uniform[c]`` (inverse-CDF sampling with the given uniforms); the value is the one-hot vector,
    the gradient is that of ``probs``.

    Args:
        probs: ``[*B, C, K]``.
        uniform: ``[*B, C]`` draws from ``U(0, 1)``.

    Returns:
        ``[*B, C, K]`` one-hot.

    >>> p = torch.tensor([[0.2, 0.5, 0.3]], requires_grad=True)
    >>> straight_through_one_hot(p, torch.tensor([0.6]))
    tensor([[0., 1., 0.]], grad_fn=<AddBackward0>)
    """
    cdf = probs.detach().cumsum(-1)  # [*B, C, K]
    index = (uniform.unsqueeze(-1) > cdf).sum(-1, keepdim=True)  # [*B, C, 1]
    index = index.clamp_max(probs.shape[-1] - 1)  # [*B, C, 1]
    hard = torch.zeros_like(probs).scatter_(-1, index, 1.0)  # [*B, C, K]
    return probs + (hard - probs).detach()  # [*B, C, K]


def categorical_kl(probs_q: torch.Tensor, probs_p: torch.Tensor) -> torch.Tensor:
    """``KL(q || p)`` summed over classes and categoricals.

    Args:
        probs_q, probs_p: ``[*B, C, K]`` (strictly positive, e.g. after unimix).

    Returns:
        ``[*B]``.

    >>> categorical_kl(torch.tensor([[[0.5, 0.5]]]), torch.tensor([[[0.5, 0.5]]]))
    tensor([0.])
    """
    return (probs_q * (probs_q.log() - probs_p.log())).sum((-2, -1))  # [*B]


def kl_dynamics_representation(
    posterior_logits: torch.Tensor,
    prior_logits: torch.Tensor,
    free_bits: float = 1.0,
    unimix: float = 0.01,
    free_bits_dynamic: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DreamerV3's dynamics and representation losses (Hafner et al. 2023, Eq. 5).

    ``L_dyn = max(free_bits, KL(sg(q) || p))`` trains the prior, ``L_rep = max(free_bits,
    KL(q || sg(p)))`` the posterior; the KL is that of the whole latent (summed over
    categoricals), clamped per time step, then averaged.

    Args:
        posterior_logits, prior_logits: ``[*B, C, K]``.
        free_bits: lower clamp in nats (1 in the paper).
        unimix: uniform mixture applied to both distributions.
        free_bits_dynamic: the clamp of ``L_dyn`` alone (``None``: ``free_bits``, the paper's).
            ``0`` trains the prior towards the posterior however close it already is, while
            ``L_rep`` still leaves the posterior ``free_bits`` nats of room.

    Returns:
        ``(L_dyn, L_rep)``, scalars.

    >>> q = torch.zeros(2, 3, 4); p = torch.zeros(2, 3, 4)
    >>> kl_dynamics_representation(q, p)
    (tensor(1.), tensor(1.))
    """
    q = unimix_probs(posterior_logits, unimix)  # [*B, C, K]
    p = unimix_probs(prior_logits, unimix)  # [*B, C, K]
    dyn = categorical_kl(q.detach(), p)  # [*B]
    rep = categorical_kl(q, p.detach())  # [*B]
    dyn_floor = free_bits if free_bits_dynamic is None else free_bits_dynamic
    return dyn.clamp_min(dyn_floor).mean(), rep.clamp_min(free_bits).mean()


def kl_balanced(
    posterior_logits: torch.Tensor,
    prior_logits: torch.Tensor,
    alpha: float = 0.8,
    free_bits: float = 1.0,
) -> torch.Tensor:
    """DreamerV2's KL balancing ``alpha KL(sg(q) || p) + (1 - alpha) KL(q || sg(p))`` (Eq. 3).

    As TorchRL's ``categorical_kl_balanced``: softmax probabilities clipped at ``1e-8``, each
    categorical's KL clamped at ``free_bits`` before averaging over categoricals and batch.

    Args:
        posterior_logits, prior_logits: ``[*B, C, K]``.

    Returns:
        scalar.

    >>> kl_balanced(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), free_bits=0.0)
    tensor(0.)
    """
    q = torch.softmax(posterior_logits, -1).clamp_min(1e-8)  # [*B, C, K]
    p = torch.softmax(prior_logits, -1).clamp_min(1e-8)  # [*B, C, K]
    q_sg, p_sg = q.detach(), p.detach()  # [*B, C, K]
    dyn = (q_sg * (q_sg.log() - p.log())).sum(-1)  # [*B, C]
    rep = (q * (q.log() - p_sg.log())).sum(-1)  # [*B, C]
    dyn_loss = dyn.clamp_min(free_bits).mean()
    rep_loss = rep.clamp_min(free_bits).mean()
    return alpha * dyn_loss + (1.0 - alpha) * rep_loss


def pointwise_distance(a: torch.Tensor, b: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Elementwise distance: ``"l2"`` ``(a - b)^2``, ``"l1"`` ``|a - b|`` or ``"smooth_l1"``.

    Args:
        a, b: ``[*B]`` of equal shape.

    Returns:
        ``[*B]``.

    >>> pointwise_distance(torch.tensor([0.0, 0.0]), torch.tensor([0.5, 3.0]), "smooth_l1")
    tensor([0.1250, 2.5000])
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    # torch's fused losses keep only their inputs for the backward pass
    if kind == "l2":
        return F.mse_loss(a, b, reduction="none")  # [*B]
    if kind == "l1":
        return F.l1_loss(a, b, reduction="none")  # [*B]
    if kind == "smooth_l1":
        return F.smooth_l1_loss(a, b, reduction="none")  # [*B]
    raise ValueError(f"unknown distance {kind!r}; expected one of {DISTANCES}")


def cumulative_discount(
    like: torch.Tensor, gamma: float | torch.Tensor, dim: int = -2
) -> torch.Tensor:
    """Weights ``gamma^t`` along the time dimension ``dim`` (``1`` at ``t = 0``), as ``like``.

    Hafner et al. 2019 (Dreamer), Eq. 7-8: imagined steps further ahead count less.

    Args:
        like: ``[*B, H, 1]`` (or any shape with time at ``dim``).
        gamma: discount.

    Returns:
        a tensor shaped like ``like``.

    >>> cumulative_discount(torch.zeros(1, 3, 1), 0.5).squeeze()
    tensor([1.0000, 0.5000, 0.2500])
    """
    H = like.shape[dim]
    t = torch.arange(H, dtype=like.dtype, device=like.device)  # [H]
    gamma = torch.as_tensor(gamma, dtype=like.dtype, device=like.device)
    w = gamma.pow(t)  # [H]
    shape = [1] * like.dim()
    shape[dim] = H
    return w.view(shape).expand_as(like)  # like
