"""Sparse GPs with pseudo-inputs: FITC (Snelson & Ghahramani 2006), as in PILCO's ``train.m``.

``m`` inducing inputs ``Z_a`` ``[m, Din]`` per output stand in for the ``n`` training inputs. With
``K_mm = k_a(Z, Z)``, ``K_mn = k_a(Z, X)`` and ``Q_nn = K_nm K_mm⁻¹ K_mn`` the FITC prior on the
targets is ``y ~ N(0, Q_nn + Λ)``, ``Λ = diag(K_nn - Q_nn) + σ² I`` (Snelson & Ghahramani 2006,
Eq. 9), whose log likelihood and predictions cost ``O(n m²)``. The predictive latent moments
(ibid., Eq. 8) are

.. math::
    m(x) = k_m(x)^\\top \\beta, \\quad \\beta = Q^{-1} K_{mn} \\Lambda^{-1} y, \\qquad
    \\mathrm{var}(x) = \\alpha^2 - k_m(x)^\\top (K_{mm}^{-1} - Q^{-1}) k_m(x),

with ``Q = K_mm + K_mn Λ⁻¹ K_nm``: the same form as an exact GP with ``inputs = Z``,
``beta = β`` and ``inv_gram = K_mm⁻¹ - Q⁻¹``, so :func:`wmrl.gp.moment_matching.gp_moment_match`
propagates uncertainty through it unchanged (Deisenroth et al., TPAMI 2015, Sec. 4.3).
Everything is computed through ``V = L_m⁻¹ K_mn`` and ``A = I + V Λ⁻¹ Vᵀ = L_m⁻¹ Q L_m⁻ᵀ``.
"""

from __future__ import annotations

import math

import torch

from wmrl import settings
from wmrl.gp.fit import GPHyperparameters, robust_cholesky, se_ard_kernel

__all__ = ["fitc_log_likelihood", "fitc_posterior", "fit_inducing_inputs"]

_LOG_2PI = math.log(2 * math.pi)


def _fitc_factors(
    inputs: torch.Tensor,
    inducing: torch.Tensor,
    hyp: GPHyperparameters,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``L_m`` ``[E, m, m]``, ``V/√Λ`` ``[E, m, n]``, ``Λ`` ``[E, n]`` and ``L_A`` ``[E, m, m]``."""
    m = inducing.shape[-2]
    Kmm = se_ard_kernel(inducing, inducing, hyp.lengthscales, hyp.signal_var)  # [E, m, m]
    jit = settings.jitter() * hyp.signal_var  # [E]
    Kmm = Kmm + torch.diag_embed(jit[:, None].expand(-1, m))  # [E, m, m]
    Lm = robust_cholesky(Kmm)  # [E, m, m]
    Kmn = se_ard_kernel(inducing, inputs, hyp.lengthscales, hyp.signal_var)  # [E, m, n]
    V = torch.linalg.solve_triangular(Lm, Kmn, upper=False)  # L_m⁻¹ K_mn  [E, m, n]
    qdiag = V.square().sum(-2)  # diag Q_nn  [E, n]
    lam = (hyp.signal_var[:, None] - qdiag).clamp_min(0) + hyp.noise_var[:, None]  # Λ  [E, n]
    Vs = V / lam.sqrt()[:, None, :]  # V Λ^{-1/2}  [E, m, n]
    A = Vs @ Vs.transpose(-1, -2)  # [E, m, m]
    A.diagonal(dim1=-2, dim2=-1).add_(1.0)
    LA = robust_cholesky(A)  # [E, m, m]
    return Lm, Vs, lam, LA


def fitc_log_likelihood(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    inducing: torch.Tensor,
    hyperparameters: GPHyperparameters,
) -> torch.Tensor:
    """FITC log marginal likelihood ``log N(y | 0, Q_nn + Λ)`` (Snelson & Ghahramani 2006, Eq. 9).

    By the matrix determinant lemma and Woodbury's identity with ``V_s = L_m⁻¹ K_mn Λ^{-1/2}``,
    ``A = I + V_s V_sᵀ``, ``c = L_A⁻¹ V_s Λ^{-1/2} y``:
    ``log p(y) = -½(yᵀΛ⁻¹y - cᵀc) - ½ Σ log Λ_i - log|L_A| - (n/2) log 2π``. ``O(n m²)``,
    differentiable in the inducing inputs and the hyper-parameters.

    Args:
        inputs: ``[n, Din]``.
        targets: ``[n, E]``.
        inducing: ``Z`` ``[E, m, Din]``.
        hyperparameters: ``E`` GPs.

    Returns:
        ``[E]``.

    >>> X = torch.linspace(-2, 2, 40, dtype=torch.float64)[:, None]
    >>> h = GPHyperparameters(torch.ones(1, 1).double(), torch.ones(1).double(),
    ...                       torch.full((1,), 1e-2).double())
    >>> fitc_log_likelihood(X, torch.sin(X), X[None, ::4], h).shape
    torch.Size([1])
    """
    n = inputs.shape[0]
    _, Vs, lam, LA = _fitc_factors(inputs, inducing, hyperparameters)
    ys = targets.transpose(0, 1) / lam.sqrt()  # Λ^{-1/2} y  [E, n]
    c = torch.linalg.solve_triangular(LA, (Vs @ ys.unsqueeze(-1)), upper=False)  # [E, m, 1]
    quad = ys.square().sum(-1) - c.squeeze(-1).square().sum(-1)  # yᵀ(Q_nn + Λ)⁻¹y  [E]
    logdet = lam.log().sum(-1) + 2 * torch.diagonal(LA, dim1=-2, dim2=-1).log().sum(-1)  # [E]
    return -0.5 * (quad + logdet + n * _LOG_2PI)


def fitc_posterior(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    inducing: torch.Tensor,
    hyperparameters: GPHyperparameters,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FITC predictive weights in the exact-GP form (Snelson & Ghahramani 2006, Eq. 8).

    ``β = Q⁻¹ K_mn Λ⁻¹ y = L_m⁻ᵀ L_A⁻ᵀ c`` and ``inv_gram = K_mm⁻¹ - Q⁻¹ = L_m⁻ᵀ (I - A⁻¹) L_m⁻¹``,
    so that ``m(x) = k_m(x)ᵀ β`` and ``var f(x) = α² - k_m(x)ᵀ inv_gram k_m(x)``.

    Args:
        inputs: ``[n, Din]``.
        targets: ``[n, E]``.
        inducing: ``Z`` ``[E, m, Din]``.
        hyperparameters: ``E`` GPs.

    Returns:
        ``β`` ``[E, m]`` and ``inv_gram`` ``[E, m, m]`` (symmetric).

    >>> X = torch.linspace(-2, 2, 40, dtype=torch.float64)[:, None]
    >>> h = GPHyperparameters(torch.ones(1, 1).double(), torch.ones(1).double(),
    ...                       torch.full((1,), 1e-2).double())
    >>> [t.shape for t in fitc_posterior(X, torch.sin(X), X[None, ::4], h)]
    [torch.Size([1, 10]), torch.Size([1, 10, 10])]
    """
    m = inducing.shape[-2]
    Lm, Vs, lam, LA = _fitc_factors(inputs, inducing, hyperparameters)
    ys = targets.transpose(0, 1) / lam.sqrt()  # Λ^{-1/2} y  [E, n]
    c = torch.linalg.solve_triangular(LA, Vs @ ys.unsqueeze(-1), upper=False)  # [E, m, 1]
    u = torch.linalg.solve_triangular(LA.transpose(-1, -2), c, upper=True)  # A⁻¹ V_s ys  [E, m, 1]
    beta = torch.linalg.solve_triangular(Lm.transpose(-1, -2), u, upper=True)  # [E, m, 1]
    eye = torch.eye(m, dtype=inputs.dtype, device=inputs.device)  # [m, m]
    Lm_inv = torch.linalg.solve_triangular(Lm, eye.expand_as(Lm), upper=False)  # L_m⁻¹ [E, m, m]
    middle = eye - torch.cholesky_inverse(LA)  # I - A⁻¹  [E, m, m]
    inv_gram = Lm_inv.transpose(-1, -2) @ middle @ Lm_inv  # [E, m, m]
    return beta.squeeze(-1), (0.5 * (inv_gram + inv_gram.transpose(-1, -2))).contiguous()


def fit_inducing_inputs(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    hyperparameters: GPHyperparameters,
    num_inducing: int,
    *,
    max_iter: int = 50,
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Optimise the inducing inputs of each output's FITC likelihood, hyper-parameters fixed.

    PILCO's ``train.m`` for sparse dynamics: the hyper-parameters come from a full GP on a
    subset, then the pseudo-inputs maximise the FITC marginal likelihood on all the data
    (Snelson & Ghahramani 2006, Sec. 3). They start at a random subset of the training inputs
    (or ``init``) and are optimised with L-BFGS in coordinates scaled by the input spread.

    Args:
        inputs: ``[n, Din]``.
        targets: ``[n, E]``.
        hyperparameters: ``E`` GPs.
        num_inducing: ``m`` (``<= n``).
        max_iter: L-BFGS iterations.
        init: starting inducing inputs ``[E, m, Din]``.
        generator: random source of the initial subset.

    Returns:
        ``Z`` ``[E, m, Din]``, never worse than the start in FITC likelihood.

    >>> X = torch.linspace(-2, 2, 40, dtype=torch.float64)[:, None]
    >>> h = GPHyperparameters(torch.ones(1, 1).double(), torch.ones(1).double(),
    ...                       torch.full((1,), 1e-2).double())
    >>> fit_inducing_inputs(X, torch.sin(X), h, 5, max_iter=5).shape
    torch.Size([1, 5, 1])
    """
    n, Din = inputs.shape
    E = targets.shape[1]
    if not 1 <= num_inducing <= n:
        raise ValueError(f"num_inducing must be in [1, {n}], got {num_inducing}")
    if init is None:
        idx = torch.randperm(n, generator=generator)[:num_inducing].to(inputs.device)  # [m]
        init = inputs[idx].expand(E, num_inducing, Din)  # [E, m, Din]
    loc = inputs.mean(0)  # [Din]
    scale = inputs.std(0, correction=0).clamp_min(torch.finfo(inputs.dtype).eps)  # [Din]
    zs = ((init - loc) / scale).detach().clone().requires_grad_(True)  # [E, m, Din]
    h = GPHyperparameters(*(t.detach() for t in (hyperparameters.lengthscales,
                                                  hyperparameters.signal_var,
                                                  hyperparameters.noise_var)))
    best_val = torch.full((E,), math.inf, dtype=inputs.dtype, device=inputs.device)
    best = zs.detach().clone()
    opt = torch.optim.LBFGS([zs], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        val = -fitc_log_likelihood(inputs, targets, loc + scale * zs, h)  # [E]
        with torch.no_grad():
            better = val < best_val  # [E]
            best_val.copy_(torch.where(better, val, best_val))
            best.copy_(torch.where(better[:, None, None], zs, best))
        loss = val.sum() / n  # []
        loss.backward()
        return loss

    opt.step(closure)
    return loc + scale * best
