"""Saturating squash with exact Gaussian moments (PILCO's ``gSat.m``), and its composition.

Each action dimension is bounded by the smooth saturation

.. math::
    \\sigma(u) = u_{max} \\frac{9 \\sin u + \\sin 3u}{8} \\in [-u_{max}, u_{max}],

the third-order Fourier approximation of a hard clip (Deisenroth, Fox & Rasmussen, TPAMI 2015,
Sec. 5.3, Eq. 41). For ``u ~ N(m, S)`` it is linear in ``sin`` of the Gaussian vector
``q = [u, 3u]``, so its mean and covariance are exact through
:func:`~wmrl.control.angle.trig_moments`, and by Stein's lemma ``S⁻¹ cov[u, σ(u)]`` is diagonal:
``u_max (9 E[cos u] + 3 E[cos 3u]) / 8``.

:class:`SquashedController` composes a controller with the squash as PILCO's ``conCat``:
``V_xy = V_xu V_uy``. This is exact when ``(x, u)`` is jointly Gaussian (a linear controller on
a state without angles); otherwise (an RBF controller, or angle features) the squash is applied
to the moment-matched Gaussian of ``u`` and the result is PILCO's approximation.
"""

from __future__ import annotations

import torch

from wmrl.control.angle import trig_moments
from wmrl.control.base import MomentController, Moments
from wmrl.gaussian import check_finite

__all__ = ["saturate", "saturating_squash_moments", "SquashedController"]


def saturate(u: torch.Tensor, u_max: torch.Tensor) -> torch.Tensor:
    """Pointwise ``u_max (9 sin u + sin 3u) / 8`` (``u`` ``[*B, F]``, ``u_max`` ``[F]``).

    >>> saturate(torch.tensor([torch.pi / 2]), torch.tensor([2.0]))
    tensor([2.])
    """
    return u_max * (9.0 * torch.sin(u) + torch.sin(3.0 * u)) / 8.0  # [*B, F]


def saturating_squash_moments(
    mean: torch.Tensor, cov: torch.Tensor, u_max: torch.Tensor
) -> Moments:
    """Exact moments of ``y = saturate(u, u_max)`` for ``u ~ N(mean, cov)`` (PILCO's ``gSat``).

    Args:
        mean: ``[*B, F]``.
        cov: ``[*B, F, F]``.
        u_max: ``[F]`` (or broadcastable to it), the bounds.

    Returns:
        ``M`` ``[*B, F]``, ``S`` ``[*B, F, F]`` and the diagonal ``V = cov⁻¹ cov[u, y]``
        ``[*B, F, F]``.

    >>> M, S, V = saturating_squash_moments(torch.zeros(1), torch.zeros(1, 1), torch.ones(1))
    >>> M, S, V
    (tensor([0.]), tensor([[0.]]), tensor([[1.5000]]))
    """
    F = mean.shape[-1]
    u_max = u_max.expand(F)  # [F]
    q_mean = torch.cat([mean, 3.0 * mean], dim=-1)  # [*B, 2F]
    q_cov = torch.cat(
        [torch.cat([cov, 3.0 * cov], dim=-1), torch.cat([3.0 * cov, 9.0 * cov], dim=-1)], dim=-2
    )  # [*B, 2F, 2F]
    Mt, St, _ = trig_moments(q_mean, q_cov, list(range(2 * F)))  # [*B, 4F], [*B, 4F, 4F]
    Ms = Mt[..., 0::2]  # E[sin q]  [*B, 2F]
    Mc = Mt[..., 1::2]  # E[cos q]  [*B, 2F]
    Ss = St[..., 0::2, 0::2]  # cov[sin q]  [*B, 2F, 2F]
    H = torch.cat([torch.diag(9.0 / 8.0 * u_max), torch.diag(1.0 / 8.0 * u_max)], dim=-1)  # [F, 2F]
    M = Ms @ H.mT  # [*B, F]
    S = H @ Ss @ H.mT  # [*B, F, F]
    S = 0.5 * (S + S.mT)  # [*B, F, F]
    gain = u_max * (9.0 * Mc[..., :F] + 3.0 * Mc[..., F:]) / 8.0  # E[σ'(u)]  [*B, F]
    V = torch.diag_embed(gain)  # [*B, F, F]
    return M, S, V


class SquashedController(MomentController):
    """Bound a controller's actions with the saturating squash (PILCO's ``conCat(con, gSat)``).

    ``π(x) = saturate(inner(x), u_max)``; its moments are the squash moments of the inner
    controller's action Gaussian, with ``V = V_inner V_squash``. Exact for a linear inner
    controller on a state without angles; PILCO's approximation otherwise (see module docs).

    Args:
        controller: the inner controller (e.g. :class:`~wmrl.control.linear.LinearController`
            or :class:`~wmrl.control.rbf.RBFController`).
        u_max: bound per action dimension (a scalar or ``[F]``), kept as a buffer.
        in_keys, out_keys: TensorDict keys (default: the inner controller's).

    Example:
        >>> from wmrl.control.linear import LinearController
        >>> pol = SquashedController(LinearController(2, 1), u_max=10.0)
        >>> m, S = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
        >>> M, S_u, V = pol.moments(m, S)
        >>> M.shape, S_u.shape, V.shape
        (torch.Size([1]), torch.Size([1, 1]), torch.Size([2, 1]))
        >>> pol.u_max
        tensor([10.], dtype=torch.float64)
    """

    def __init__(
        self,
        controller: MomentController,
        u_max: float | torch.Tensor,
        *,
        in_keys=None,
        out_keys=None,
    ) -> None:
        super().__init__(
            controller.state_dim,
            controller.action_dim,
            in_keys=controller.in_keys if in_keys is None else in_keys,
            out_keys=controller.out_keys if out_keys is None else out_keys,
            validate=controller.validate,
        )
        self.controller = controller
        ref = controller.reference_tensor()
        bound = torch.as_tensor(u_max, dtype=ref.dtype, device=ref.device)
        if bound.dim() > 1 or bound.numel() not in (1, self.action_dim):
            raise ValueError(
                f"u_max must be a scalar or of shape [{self.action_dim}], got {tuple(bound.shape)}"
            )
        check_finite("u_max", bound)
        if bool((bound <= 0).any()):
            raise ValueError(f"u_max must be positive, got {bound.tolist()}")
        self.register_buffer("u_max", bound.reshape(-1).expand(self.action_dim).clone())

    def reference_tensor(self) -> torch.Tensor:
        """The inner controller's reference tensor (inputs must match its dtype and device)."""
        return self.controller.reference_tensor()

    def moments(self, mean: torch.Tensor, cov: torch.Tensor) -> Moments:
        """Squashed action moments ``(M [*B, F], S [*B, F, F], V [*B, D, F])``."""
        M_u, S_u, V_u = self.controller.moments(mean, cov)  # [*B, F], [*B, F, F], [*B, D, F]
        M, S, V_uy = saturating_squash_moments(M_u, S_u, self.u_max)  # [*B, F], ., [*B, F, F]
        return M, S, V_u @ V_uy  # V: [*B, D, F]

    def act(self, x: torch.Tensor) -> torch.Tensor:
        """``saturate(inner.act(x), u_max)`` ``[*B, F]``."""
        return saturate(self.controller.act(x), self.u_max)
