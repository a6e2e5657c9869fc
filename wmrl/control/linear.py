"""Linear controller ``u = W z + b`` with exact moments (PILCO's ``conlin.m``).

For ``z ~ N(m, S)`` the action is Gaussian with

.. math::
    E[u] = W m + b, \\qquad \\mathrm{cov}[u] = W S W^\\top, \\qquad
    S^{-1}\\mathrm{cov}[z, u] = W^\\top

(Deisenroth, Fox & Rasmussen, TPAMI 2015, Sec. 5.2, the linear policy).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wmrl.control.base import FeatureController, Moments, default_dtype
from wmrl.gaussian import symmetrize

__all__ = ["linear_moments", "LinearController"]


def linear_moments(
    mean: torch.Tensor, cov: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> Moments:
    """Exact moments of ``u = W z + b`` for ``z ~ N(mean, cov)``.

    Args:
        mean: ``[*B, D]``.
        cov: ``[*B, D, D]``.
        weight: ``W`` ``[F, D]``.
        bias: ``b`` ``[F]``.

    Returns:
        ``M`` ``[*B, F]``, ``S`` ``[*B, F, F]`` and ``V = cov⁻¹ cov[z, u] = Wᵀ`` ``[*B, D, F]``.

    >>> W, b = torch.tensor([[1.0, 2.0]]), torch.tensor([0.5])
    >>> M, S, V = linear_moments(torch.ones(2), torch.eye(2), W, b)
    >>> M, S, V.squeeze(-1)
    (tensor([3.5000]), tensor([[5.]]), tensor([1., 2.]))
    """
    M = mean @ weight.mT + bias  # [*B, F]
    S = symmetrize(weight @ cov @ weight.mT)  # [*B, F, F]
    V = weight.mT.expand(*mean.shape[:-1], *weight.mT.shape)  # [*B, D, F]
    return M, S, V


class LinearController(FeatureController):
    """Linear policy ``u = W z + b`` on the state features ``z`` (PILCO's ``conlin``).

    ``z`` is the state with each angle replaced by its ``(sin, cos)`` pair (see
    :class:`~wmrl.control.base.FeatureController`). Without angles the moments are exact; with
    angles they are exact given the (exact) mean and covariance of ``z``, i.e. PILCO's moment
    matching of the non-Gaussian ``z``. Compose with
    :class:`~wmrl.control.squash.SquashedController` for bounded actions.

    Args:
        state_dim: ``D``.
        action_dim: ``F``.
        angle_dims: state dimensions that are angles.
        init_std: standard deviation of the initial ``W`` entries (PILCO: ``1e-2``); ``b = 0``.
        dtype: parameter dtype (default :func:`wmrl.settings.gp_dtype`, float64).
        device: parameter device.
        generator: random generator for the initialisation.
        **kwargs: keys and validation, as :class:`~wmrl.control.base.MomentController`.

    Example:
        >>> ctrl = LinearController(4, 1, angle_dims=[3])
        >>> m, S = torch.zeros(2, 4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)
        >>> [t.shape for t in ctrl.moments(m, 0.01 * S.expand(2, 4, 4))]
        [torch.Size([2, 1]), torch.Size([2, 1, 1]), torch.Size([2, 4, 1])]
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        angle_dims: Sequence[int] = (),
        *,
        init_std: float = 1e-2,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> None:
        super().__init__(state_dim, action_dim, angle_dims, **kwargs)
        factory = {"dtype": default_dtype(dtype), "device": device}
        self.init_std = float(init_std)
        self.weight = nn.Parameter(torch.empty(self.action_dim, self.feature_dim, **factory))
        self.bias = nn.Parameter(torch.empty(self.action_dim, **factory))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """``W ~ init_std · N(0, 1)``, ``b = 0`` (PILCO's initialisation)."""
        w = torch.randn(self.weight.shape, generator=generator, dtype=self.weight.dtype)
        self.weight.copy_(self.init_std * w)
        self.bias.zero_()

    def feature_moments(self, mean_z: torch.Tensor, cov_z: torch.Tensor) -> Moments:
        """Exact ``(M [*B, F], S [*B, F, F], V_zu = Wᵀ [*B, Dz, F])`` for ``z ~ N(mean_z, cov_z)``.

        With ``W = (1, 2)``, ``b = 1/2``, ``z ~ N(1, I)``: ``M = 3.5``, ``S = 1 + 4 = 5``.

        >>> ctrl = LinearController(2, 1)
        >>> with torch.no_grad():
        ...     _ = ctrl.weight.copy_(torch.tensor([[1.0, 2.0]])), ctrl.bias.fill_(0.5)
        >>> M, S, V = ctrl.feature_moments(torch.ones(2, dtype=torch.float64),
        ...                                torch.eye(2, dtype=torch.float64))
        >>> M.item(), S.item(), V.squeeze(-1).tolist()
        (3.5, 5.0, [1.0, 2.0])
        """
        return linear_moments(mean_z, cov_z, self.weight, self.bias)

    def feature_act(self, z: torch.Tensor) -> torch.Tensor:
        """``W z + b`` ``[*B, F]`` at features ``z`` ``[*B, Dz]``.

        >>> ctrl = LinearController(2, 1)
        >>> with torch.no_grad():
        ...     _ = ctrl.weight.copy_(torch.tensor([[1.0, 2.0]])), ctrl.bias.fill_(0.5)
        >>> ctrl.feature_act(torch.ones(1, 2, dtype=torch.float64)).tolist()
        [[3.5]]
        """
        return z @ self.weight.mT + self.bias  # [*B, F]

    def extra_repr(self) -> str:
        """Sizes and angle dimensions, for ``repr``."""
        return f"state_dim={self.state_dim}, action_dim={self.action_dim}, " + (
            f"angle_dims={list(self.angle_dims)}" if self.angle_dims else "angle_dims=[]"
        )

