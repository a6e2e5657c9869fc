"""RBF controller: the posterior mean of a deterministic GP (PILCO's ``congp.m``).

Each action dimension ``a`` is the mean function of a GP with squared-exponential ARD kernel
``k_a(z, z') = α²_a exp(-½ (z - z')ᵀ Λ_a⁻¹ (z - z'))`` on ``n`` pseudo inputs ``z_i`` with pseudo
targets ``y_ia``:

.. math::
    \\pi_a(z) = \\sum_{i=1}^n k_a(z, z_i)\\, \\beta_{ia}, \\qquad
    \\beta_a = (K_a + \\sigma_a^2 I)^{-1} y_a, \\quad \\sigma_a^2 = r\\,\\alpha_a^2,

with a fixed relative noise ``r = 0.01²`` (PILCO's). This is an RBF network whose moments under a
Gaussian input are exact (Deisenroth & Rasmussen 2011, Sec. 3 and Eqs. 14-23 with no variance
term; Deisenroth, Fox & Rasmussen, TPAMI 2015, Sec. 5.2); they are computed by
:func:`wmrl.gp.moment_matching.gp_moment_match` with ``inv_gram=None`` (PILCO's ``gp2``).
``β`` is recomputed by Cholesky on every call, so gradients reach the pseudo inputs, the pseudo
targets, the length-scales and the signal variance (all learnable).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wmrl.control.base import FeatureController, Moments, default_dtype, point_features
from wmrl.gaussian import check_gaussian
from wmrl.gp.moment_matching import gp_moment_match, gp_predict

__all__ = ["RBFController", "rbf_weights"]

#: PILCO's policy noise: σ² = 0.01² α²
DEFAULT_NOISE_RATIO = 1e-4


def rbf_weights(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    lengthscales: torch.Tensor,
    signal_var: torch.Tensor,
    noise_ratio: float,
) -> torch.Tensor:
    """``β_a = (K_a + r α²_a I)⁻¹ y_a`` for every output, by Cholesky.

    Args:
        inputs: pseudo inputs ``[n, Dz]``.
        targets: pseudo targets ``[n, F]``.
        lengthscales: ``[F, Dz]``.
        signal_var: ``α²`` ``[F]``.
        noise_ratio: ``r`` (the noise variance relative to ``α²``).

    Returns:
        ``β`` ``[F, n]``.

    >>> x, y = torch.zeros(1, 2), torch.ones(1, 1)
    >>> rbf_weights(x, y, torch.ones(1, 2), torch.ones(1), 1.0)  # (1 + 1)^-1
    tensor([[0.5000]])
    """
    n = inputs.shape[0]
    d = (inputs[:, None, :] - inputs[None, :, :]) / lengthscales[:, None, None, :]  # [F, n, n, Dz]
    K = signal_var[:, None, None] * torch.exp(-0.5 * d.square().sum(-1))  # [F, n, n]
    eye = torch.eye(n, dtype=inputs.dtype, device=inputs.device)  # [n, n]
    G = K + (noise_ratio * signal_var)[:, None, None] * eye  # [F, n, n]
    chol = torch.linalg.cholesky(G)  # [F, n, n]
    return torch.cholesky_solve(targets.mT.unsqueeze(-1), chol).squeeze(-1)  # [F, n]


class RBFController(FeatureController):
    """Deterministic-GP (RBF network) policy on the state features (PILCO's ``congp``).

    Parameters: ``inputs`` ``[n, Dz]`` (pseudo inputs, shared by the outputs), ``targets``
    ``[n, F]``, ``log_lengthscales`` ``[F, Dz]`` and ``log_signal_var`` ``[F]``; ``Dz = D + k``
    for ``k`` angle dimensions (see :class:`~wmrl.control.base.FeatureController`). Without angles
    the moments are exact; with angles they are exact for a Gaussian ``z`` with the exact mean and
    covariance of the features (PILCO's approximation). Compose with
    :class:`~wmrl.control.squash.SquashedController` for bounded actions.

    Initialisation (PILCO): pseudo inputs are samples of the start state ``N(start_mean,
    start_cov)`` mapped to features, targets ``0.1 · N(0, 1)``, length-scales 1, ``α² = 1``.

    Args:
        state_dim: ``D``.
        action_dim: ``F``.
        num_basis: ``n``, the number of pseudo inputs.
        angle_dims: state dimensions that are angles.
        start_mean: ``[D]`` mean of the start state (default zeros).
        start_cov: ``[D, D]`` covariance of the start state (default identity).
        noise_ratio: fixed noise variance relative to ``α²`` (PILCO: ``0.01²``).
        dtype: parameter dtype (default :func:`wmrl.settings.gp_dtype`, float64).
        device: parameter device.
        generator: random generator for the initialisation.
        **kwargs: keys and validation, as :class:`~wmrl.control.base.MomentController`.

    Example:
        >>> ctrl = RBFController(4, 1, num_basis=10, angle_dims=[3])
        >>> m, S = torch.zeros(2, 4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)
        >>> [t.shape for t in ctrl.moments(m, 0.01 * S.expand(2, 4, 4))]
        [torch.Size([2, 1]), torch.Size([2, 1, 1]), torch.Size([2, 4, 1])]
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        num_basis: int = 50,
        angle_dims: Sequence[int] = (),
        *,
        start_mean: torch.Tensor | None = None,
        start_cov: torch.Tensor | None = None,
        noise_ratio: float = DEFAULT_NOISE_RATIO,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> None:
        super().__init__(state_dim, action_dim, angle_dims, **kwargs)
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        if not noise_ratio > 0:
            raise ValueError(f"noise_ratio must be positive, got {noise_ratio}")
        factory = {"dtype": default_dtype(dtype), "device": device}
        self.num_basis = int(num_basis)
        self.noise_ratio = float(noise_ratio)
        F, Dz, n = self.action_dim, self.feature_dim, self.num_basis
        self.inputs = nn.Parameter(torch.empty(n, Dz, **factory))
        self.targets = nn.Parameter(torch.empty(n, F, **factory))
        self.log_lengthscales = nn.Parameter(torch.empty(F, Dz, **factory))
        self.log_signal_var = nn.Parameter(torch.empty(F, **factory))
        self.reset_parameters(start_mean, start_cov, generator)

    @torch.no_grad()
    def reset_parameters(
        self,
        start_mean: torch.Tensor | None = None,
        start_cov: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """PILCO's initialisation from the start-state distribution ``N(start_mean, start_cov)``.

        Pseudo inputs: features of ``n`` samples of the start state; targets ``0.1 · N(0, 1)``;
        length-scales 1; signal variance 1.
        """
        D, dtype = self.state_dim, self.inputs.dtype
        m0 = torch.zeros(D, dtype=dtype) if start_mean is None else start_mean.to("cpu", dtype)
        S0 = torch.eye(D, dtype=dtype) if start_cov is None else start_cov.to("cpu", dtype)
        check_gaussian(m0, S0, D, name="start state")
        lam, Q = torch.linalg.eigh(S0)  # S0 = Q diag(lam) Qᵀ (may be singular)  [D], [D, D]
        factor = Q * lam.clamp_min(0).sqrt()  # [D, D]
        eps = torch.randn(self.num_basis, D, generator=generator, dtype=dtype)  # [n, D]
        x = m0 + eps @ factor.mT  # [n, D]
        self.inputs.copy_(point_features(x, self.angle_dims))
        t = torch.randn(self.num_basis, self.action_dim, generator=generator, dtype=dtype)
        self.targets.copy_(0.1 * t)
        self.log_lengthscales.zero_()
        self.log_signal_var.zero_()

    @property
    def lengthscales(self) -> torch.Tensor:
        """``ℓ`` ``[F, Dz]``."""
        return self.log_lengthscales.exp()

    @property
    def signal_var(self) -> torch.Tensor:
        """``α²`` ``[F]``."""
        return self.log_signal_var.exp()

    def beta(self) -> torch.Tensor:
        """``β`` ``[F, n]`` from the current parameters."""
        return rbf_weights(
            self.inputs, self.targets, self.lengthscales, self.signal_var, self.noise_ratio
        )

    def _gp(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        ell, sf2 = self.lengthscales, self.signal_var  # [F, Dz], [F]
        beta = rbf_weights(self.inputs, self.targets, ell, sf2, self.noise_ratio)  # [F, n]
        X = self.inputs.expand(self.action_dim, *self.inputs.shape)  # [F, n, Dz]
        return X, beta, ell, sf2

    def feature_moments(self, mean_z: torch.Tensor, cov_z: torch.Tensor) -> Moments:
        """Exact ``(M [*B, F], S [*B, F, F], V_zu [*B, Dz, F])`` for ``z ~ N(mean_z, cov_z)``.

        Deisenroth & Rasmussen 2011, Eqs. 14-23 without the GP variance term. With one pseudo
        input at ``0``, target ``1`` and ``ℓ = α² = 1``, ``π(z) = e^{-z²/2} / (1 + r)``; for
        ``z ~ N(0, 1)``, ``E[π] = 2^{-1/2} / (1 + r) ≈ 0.7070`` and
        ``var[π] = (3^{-1/2} - 2^{-1}) / (1 + r)² ≈ 0.0773`` (``r = 10⁻⁴``).

        >>> ctrl = RBFController(1, 1, num_basis=1)
        >>> with torch.no_grad():
        ...     _ = ctrl.inputs.zero_(), ctrl.targets.fill_(1.0)
        >>> M, S, V = ctrl.feature_moments(torch.zeros(1, dtype=torch.float64),
        ...                                torch.ones(1, 1, dtype=torch.float64))
        >>> round(M.item(), 4), round(S.item(), 4), V.item()
        (0.707, 0.0773, 0.0)
        """
        # the state was validated; angle features are PSD up to rounding only, so no re-check
        X, beta, ell, sf2 = self._gp()
        return gp_moment_match(mean_z, cov_z, X, beta, ell, sf2, None, validate=False)

    def feature_act(self, z: torch.Tensor) -> torch.Tensor:
        """The RBF network ``π(z)`` ``[*B, F]`` at features ``z`` ``[*B, Dz]``.

        With one pseudo input at ``0``, target ``1`` and ``ℓ = α² = 1``:
        ``π(1) = e^{-1/2} / (1 + 10⁻⁴) ≈ 0.6065``.

        >>> ctrl = RBFController(1, 1, num_basis=1)
        >>> with torch.no_grad():
        ...     _ = ctrl.inputs.zero_(), ctrl.targets.fill_(1.0)
        >>> round(ctrl.feature_act(torch.ones(1, 1, dtype=torch.float64)).item(), 4)
        0.6065
        """
        X, beta, ell, sf2 = self._gp()
        return gp_predict(z, X, beta, ell, sf2, None, validate=False)[0]  # [*B, F]

    def extra_repr(self) -> str:
        """Sizes and angle dimensions, for ``repr``."""
        return (
            f"state_dim={self.state_dim}, action_dim={self.action_dim}, "
            f"num_basis={self.num_basis}, angle_dims={list(self.angle_dims)}"
        )
