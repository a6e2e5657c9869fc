"""Expected saturating cost of a Gaussian state (PILCO's ``lossSat.m``).

The cost of a state is ``c(x) = 1 - exp(-½ (x - t)ᵀ W (x - t))`` with target ``t`` and a PSD
precision ``W``. For ``x ~ N(m, S)`` its mean and variance are closed form
(Deisenroth & Rasmussen 2011, Eqs. 24-25; Deisenroth, Fox & Rasmussen, TPAMI 2015, Eqs. 45-47):

.. math::
    E[e^{-\\frac12 d^\\top W d}] = |I + S W|^{-1/2}
        \\exp\\big(-\\tfrac12 \\mu^\\top W (I + S W)^{-1} \\mu\\big),
    \\qquad d = x - t,\\ \\mu = m - t,

so ``E[c] = 1 - E[e^{-½ dᵀWd}]`` and ``var[c] = E[e^{-dᵀWd}] - E[e^{-½ dᵀWd}]²`` (the same
integral with ``2W``). With a factor ``W = L Lᵀ`` both are computed from the Cholesky factor of
the symmetric positive definite ``A = I + Lᵀ S L`` (``|A| = |I + SW|`` and
``W (I + SW)⁻¹ = L A⁻¹ Lᵀ``): no inverse, no ``det``, and no jitter is needed since ``A ⪰ I``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives.common import LossModule

from wmrl import settings
from wmrl.control.angle import augment_angles
from wmrl.gaussian import check_finite, check_gaussian, symmetrize
from wmrl.protocol import next_key

__all__ = ["expected_saturating_cost", "weight_factor", "ExponentialQuadraticCost"]


def _check_weights(weights: torch.Tensor, D: int | None = None) -> None:
    if weights.dim() != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"weights must be a square [D, D] matrix, got {tuple(weights.shape)}")
    if D is not None and weights.shape[0] != D:
        raise ValueError(f"weights have shape {tuple(weights.shape)}, expected [{D}, {D}]")
    check_finite("weights", weights)
    Wd = weights.detach()
    scale = Wd.abs().amax().clamp_min(torch.finfo(Wd.dtype).tiny)
    if (Wd - Wd.mT).abs().amax() > 1e-6 * scale:
        raise ValueError("weights must be symmetric")
    eig = torch.linalg.eigvalsh(symmetrize(Wd))  # [D]
    tol = max(settings.psd_tolerance(), 10 * torch.finfo(Wd.dtype).eps)
    if eig[0] < -tol * eig.abs().amax().clamp_min(torch.finfo(Wd.dtype).tiny):
        raise ValueError(
            f"weights must be positive semi-definite (smallest eigenvalue {eig[0].item():.3g})"
        )


def weight_factor(weights: torch.Tensor) -> torch.Tensor:
    """A factor ``L`` ``[D, D]`` with ``W = L Lᵀ`` for a symmetric PSD ``W`` ``[D, D]``.

    For a constant ``W`` (no gradient required) ``Q diag(√λ₊)`` from the eigen-decomposition,
    which also covers a singular ``W`` (a cost on a few features) and needs no device
    synchronisation. When ``W`` requires a gradient, its Cholesky factor (differentiable; ``W``
    must then be positive definite, else the eigen-factor is used and its gradient is not
    supported for repeated eigenvalues).

    >>> weight_factor(torch.tensor([[4.0, 0.0], [0.0, 0.0]])) @ torch.tensor([1.0, 1.0])
    tensor([2., 0.])
    """
    W = symmetrize(weights)  # [D, D]
    if W.requires_grad:
        L, info = torch.linalg.cholesky_ex(W)  # [D, D]
        if int(info) == 0:
            return L
    lam, Q = torch.linalg.eigh(W)  # [D], [D, D]
    return Q * lam.clamp_min(0.0).sqrt()  # [D, D]


def _expected_exp_quad(
    mu: torch.Tensor, cov: torch.Tensor, L: torch.Tensor
) -> torch.Tensor:
    """``E[exp(-½ dᵀ L Lᵀ d)]`` for ``d ~ N(mu [*B, D], cov [*B, D, D])``; ``L`` ``[D, r]``."""
    r = L.shape[-1]
    eye = torch.eye(r, dtype=mu.dtype, device=mu.device)  # [r, r]
    A = eye + L.mT @ cov @ L  # [*B, r, r]
    chol = torch.linalg.cholesky(symmetrize(A))  # [*B, r, r]
    b = (mu @ L).unsqueeze(-1)  # Lᵀ mu  [*B, r, 1]
    w = torch.linalg.solve_triangular(chol, b, upper=False).squeeze(-1)  # [*B, r]
    half_logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # ½ log|A|  [*B]
    return torch.exp(-half_logdet - 0.5 * (w * w).sum(-1))  # [*B]


def expected_saturating_cost(
    mean: torch.Tensor,
    cov: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    *,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``1 - exp(-½ (x - t)ᵀ W (x - t))`` for ``x ~ N(mean, cov)``.

    Deisenroth & Rasmussen 2011, Eqs. 24-25 (mean); Deisenroth, Fox & Rasmussen 2015, Eq. 47
    (variance, the same integral with ``2W``).

    Args:
        mean: ``[*B, D]``.
        cov: ``[*B, D, D]``.
        target: ``t`` ``[D]`` or broadcastable to ``[*B, D]``.
        weights: the precision ``W`` ``[D, D]``, symmetric PSD.
        validate: check shapes, dtypes, NaN/inf and PSD (``ValueError``).

    Returns:
        ``E[c]`` ``[*B]`` and ``var[c]`` ``[*B]``.

    Example (1-D: ``1 - (1 + w s)^{-1/2} exp(-w m² / (2 (1 + w s)))``):
        >>> m, s = torch.tensor([[1.0]]), torch.tensor([[[1.0]]])
        >>> mc, vc = expected_saturating_cost(m, s, torch.zeros(1), torch.eye(1))
        >>> torch.allclose(mc, 1 - 2 ** -0.5 * torch.exp(torch.tensor(-0.25)))
        True
    """
    if validate:
        check_gaussian(mean, cov, name="state")
        _check_weights(weights, mean.shape[-1])
        check_finite("target", target)
        if target.shape[-1:] != mean.shape[-1:]:
            raise ValueError(
                f"target must end in dimension {mean.shape[-1]}, got {tuple(target.shape)}"
            )
        for name, t in (("target", target), ("weights", weights)):
            if t.dtype != mean.dtype or t.device != mean.device:
                raise ValueError(
                    f"{name} dtype/device {t.dtype}/{t.device}, state {mean.dtype}/{mean.device}"
                )
    L = weight_factor(weights)  # [D, D]
    mu = mean - target  # [*B, D]
    e1 = _expected_exp_quad(mu, cov, L)  # E[exp(-½ dᵀWd)]  [*B]
    e2 = _expected_exp_quad(mu, cov, L * 2.0**0.5)  # E[exp(-dᵀWd)]  [*B]
    mean_cost = 1.0 - e1  # [*B]
    var_cost = (e2 - e1 * e1).clamp_min(0.0)  # [*B]
    return mean_cost, var_cost


class ExponentialQuadraticCost(LossModule):
    """Expected saturating cost of a Gaussian state (PILCO), a TorchRL loss module.

    ``c(x) = 1 - exp(-½ (z - t)ᵀ (W / width²) (z - t))`` with ``z = x``, or, with
    ``angle_dims``, ``z = [x, sin x_i, cos x_i, ...]`` (:func:`~wmrl.control.angle.augment_angles`;
    ``target`` and ``weights`` then live on that ``D + 2k`` vector, which expresses e.g. the
    cart-pole's pole-tip distance as a quadratic form). ``weights`` is the precision matrix as in
    TorchRL's class; ``width`` divides it by ``width²`` (PILCO's cost width; default 1).
    Without angles the expectation under ``N(m, S)`` is exact (:func:`expected_saturating_cost`);
    with angles it is exact for a Gaussian ``z`` with the exact mean and covariance of ``z``,
    PILCO's approximation (``z`` itself is not Gaussian).

    Args:
        target: ``t`` ``[Dz]`` (default: zeros).
        weights: ``W`` ``[Dz, Dz]`` symmetric PSD (default: identity).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the batch dimensions.
        width: cost width; the precision is ``weights / width²``.
        angle_dims: state dimensions that are angles, augmented with ``(sin, cos)``.
        return_variance: also write the cost variance under ``cost_variance`` (reduced like
            the cost: for ``"mean"``/``"sum"`` the mean/sum of the per-state variances).
        validate: check inputs on every call.

    Keys (``set_keys``): ``loc`` ``("observation", "mean")``, ``scale``
    ``("observation", "var")`` (a full covariance), ``loss_cost`` ``"loss_cost"``,
    ``cost_variance`` ``"cost_variance"``, ``reward`` ``"reward"`` (see :meth:`write_reward`).

    Example:
        >>> cost = ExponentialQuadraticCost(reduction="none")
        >>> td = TensorDict({("observation", "mean"): torch.zeros(3, 2, dtype=torch.float64),
        ...                  ("observation", "var"): torch.zeros(3, 2, 2, dtype=torch.float64)},
        ...                 batch_size=[3])
        >>> cost(td)["loss_cost"]
        tensor([0., 0., 0.], dtype=torch.float64)
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable TensorDict keys.

        Attributes:
            loc: state mean ``[*B, D]``.
            scale: state covariance ``[*B, D, D]``.
            loss_cost: output expected cost.
            cost_variance: output cost variance (with ``return_variance=True``).
            reward: reward written under ``"next"`` by :meth:`write_reward`.
        """

        loc: str | tuple[str, ...] = ("observation", "mean")
        scale: str | tuple[str, ...] = ("observation", "var")
        loss_cost: str | tuple[str, ...] = "loss_cost"
        cost_variance: str | tuple[str, ...] = "cost_variance"
        reward: str | tuple[str, ...] = "reward"

    default_keys = _AcceptedKeys

    def __init__(
        self,
        target: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        reduction: str = "mean",
        *,
        width: float = 1.0,
        angle_dims: Sequence[int] = (),
        return_variance: bool = False,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if not width > 0:
            raise ValueError(f"width must be positive, got {width}")
        if target is not None:
            check_finite("target", target)
        if weights is not None:
            _check_weights(weights)
            if target is not None and target.shape[-1] != weights.shape[-1]:
                raise ValueError(
                    f"target {tuple(target.shape)} and weights {tuple(weights.shape)} disagree"
                )
        self.reduction = reduction
        self.width = float(width)
        self.angle_dims = tuple(int(a) for a in angle_dims)
        self.return_variance = bool(return_variance)
        self.validate = bool(validate)
        self.register_buffer("target", target)
        self.register_buffer("weights", weights)
        self._set_in_keys()

    def _set_in_keys(self) -> None:
        keys = self.tensor_keys
        self.in_keys = [keys.loc, keys.scale]
        self.out_keys = [keys.loss_cost] + ([keys.cost_variance] if self.return_variance else [])

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        self._set_in_keys()

    def cost_moments(
        self, mean: torch.Tensor, cov: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-state ``E[c]`` ``[*B]`` and ``var[c]`` ``[*B]`` for ``x ~ N(mean, cov)``."""
        if self.validate:
            check_gaussian(mean, cov, name="state")
        if self.angle_dims:
            mean, cov, _ = augment_angles(mean, cov, self.angle_dims)  # [*B, Dz], [*B, Dz, Dz]
        Dz = mean.shape[-1]
        factory = {"dtype": mean.dtype, "device": mean.device}
        W = self.weights.to(**factory) if self.weights is not None else torch.eye(Dz, **factory)
        t = self.target.to(**factory) if self.target is not None else mean.new_zeros(Dz)
        W = W / self.width**2  # [Dz, Dz]
        if W.shape != (Dz, Dz) or t.shape[-1:] != (Dz,):
            raise ValueError(
                f"target {tuple(t.shape)} / weights {tuple(W.shape)} do not match the "
                f"{Dz}-dimensional cost input (state dimension {Dz - 2 * len(self.angle_dims)}"
                f" with {len(self.angle_dims)} angles)"
            )
        # the state was checked above; the moment-matched angle features may be PSD only up to
        # rounding, which the Cholesky of I + Lᵀ S L tolerates
        return expected_saturating_cost(mean, cov, t, W, validate=False)

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.reduction == "mean":
            return x.mean()
        if self.reduction == "sum":
            return x.sum()
        return x

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``{"loss_cost": reduced E[c]}`` (and ``cost_variance``), TorchRL's output layout."""
        mean = tensordict.get(self.tensor_keys.loc)
        cov = tensordict.get(self.tensor_keys.scale)
        cost, var = self.cost_moments(mean, cov)  # [*B], [*B]
        out = {self.tensor_keys.loss_cost: self._reduce(cost)}
        if self.return_variance:
            out[self.tensor_keys.cost_variance] = self._reduce(var)
        batch = mean.shape[:-1] if self.reduction == "none" else torch.Size([])
        return TensorDict(out, batch_size=batch)

    def reward(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Reward ``-E[c]`` ``[*B, 1]`` of the state at ``loc``/``scale`` in ``tensordict``.

        The reward model of an imagined environment: called on the predicted state.
        """
        mean = tensordict.get(self.tensor_keys.loc)
        cov = tensordict.get(self.tensor_keys.scale)
        cost, _ = self.cost_moments(mean, cov)  # [*B]
        return -cost.unsqueeze(-1)  # [*B, 1]

    def write_reward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write ``("next", reward) = -E[c(next state)]`` ``[*B, 1]``; return ``tensordict``.

        Reads the next state at ``("next", *loc)`` and ``("next", *scale)``, e.g. to cost a
        collected rollout ``[*B, T]`` after the fact.
        """
        mean = tensordict.get(next_key(self.tensor_keys.loc))
        cov = tensordict.get(next_key(self.tensor_keys.scale))
        cost, _ = self.cost_moments(mean, cov)  # [*B]
        tensordict.set(next_key(self.tensor_keys.reward), -cost.unsqueeze(-1))
        return tensordict
