"""Type-II maximum likelihood for batched exact GPs with squared-exponential ARD kernels.

One independent GP per output ``a`` (Deisenroth & Rasmussen 2011, Sec. 2.1) with the kernel

.. math::
    k_a(x, x') = \\alpha_a^2 \\exp\\big(-\\tfrac12 (x-x')^\\top \\Lambda_a^{-1} (x-x')\\big),
    \\qquad \\Lambda_a = \\mathrm{diag}(\\ell_a^2),

a zero mean and Gaussian noise ``σ²_a``. The hyper-parameters maximise the log marginal
likelihood (Rasmussen & Williams 2006, Eq. 5.8)

.. math::
    \\log p(y_a) = -\\tfrac12 y_a^\\top K_a^{-1} y_a - \\tfrac12 \\log|K_a|
    - \\tfrac n2 \\log 2\\pi,
    \\qquad K_a = K_{f,a} + \\sigma_a^2 I,

with its gradient in closed form (R&W Eq. 5.9), minus ``n`` times PILCO's ``hypCurb`` penalty that
keeps the length-scales within ``ls_max`` times the input spread and the signal-to-noise ratio
below ``snr_max`` (weighted by ``n`` so that the curb holds however much data there is: the
likelihood's pull grows with ``n``). Optimisation runs on standardised data (inputs centred and
scaled per dimension, targets divided by their root mean square, which keeps the zero-mean model
unchanged) and the hyper-parameters are mapped back exactly: ``ℓ ← ℓ·s_x``, ``α² ← α²·s_y²``,
``σ² ← σ²·s_y²``. Random restarts are optimised on a random subset of the data; the best of them
(by the full-data objective) and the data-driven start are refined on all the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from wmrl import settings

__all__ = [
    "GPHyperparameters",
    "FitResult",
    "se_ard_kernel",
    "robust_cholesky",
    "exact_log_likelihood",
    "curb_penalty",
    "posterior_weights",
    "fit_hyperparameters",
]

_LOG_2PI = math.log(2 * math.pi)
#: power of PILCO's hypCurb penalty
_CURB_POWER = 30
#: noise std floor relative to the target scale, and absolute
_NOISE_FLOOR_REL = 1e-4
_NOISE_FLOOR_ABS = 1e-6
#: L-BFGS iterations on all data before choosing between the best restart and the default start
_SHORTLIST_ITER = 15


@dataclass
class GPHyperparameters:
    """Hyper-parameters of ``E`` independent SE-ARD GPs.

    Attributes:
        lengthscales: ``ℓ`` ``[E, Din]``.
        signal_var: ``α²`` ``[E]``.
        noise_var: ``σ²`` ``[E]``.

    Example: two GPs on a 3-D input; ``k_a(x, x) = α²_a`` (Deisenroth & Rasmussen 2011, Eq. 6).

    >>> h = GPHyperparameters(lengthscales=torch.ones(2, 3, dtype=torch.float64),
    ...                       signal_var=torch.tensor([1.0, 4.0], dtype=torch.float64),
    ...                       noise_var=torch.full((2,), 0.01, dtype=torch.float64))
    >>> x = torch.zeros(1, 3, dtype=torch.float64)
    >>> se_ard_kernel(x, x, h.lengthscales, h.signal_var).flatten().tolist()
    [1.0, 4.0]
    """

    lengthscales: torch.Tensor
    signal_var: torch.Tensor
    noise_var: torch.Tensor


@dataclass
class FitResult:
    """Outcome of :func:`fit_hyperparameters` (all in the units of the data).

    Attributes:
        hyperparameters: the selected hyper-parameters.
        log_likelihood: exact log marginal likelihood of each output's GP ``[E]``.
        objective: ``log_likelihood`` minus ``n`` x :func:`curb_penalty` ``[E]`` (what was
            maximised).
        restart_objective: the objective on all data at the end of each restart ``[R, E]``
            (row 0 starts from the data-driven initialisation, the last row from ``init`` when
            one was given).

    Example: two outputs fitted on 12 points with two restarts; the curb penalty is
    non-negative, so the objective never exceeds the log likelihood.

    >>> X = torch.linspace(-2, 2, 12, dtype=torch.float64)[:, None]
    >>> res = fit_hyperparameters(X, torch.cat([torch.sin(X), X], dim=-1), restarts=2,
    ...                           max_iter=30, generator=torch.Generator().manual_seed(0))
    >>> res.hyperparameters.lengthscales.shape, res.restart_objective.shape
    (torch.Size([2, 1]), torch.Size([2, 2]))
    >>> bool((res.objective <= res.log_likelihood).all())
    True
    """

    hyperparameters: GPHyperparameters
    log_likelihood: torch.Tensor
    objective: torch.Tensor
    restart_objective: torch.Tensor


def se_ard_kernel(
    x1: torch.Tensor, x2: torch.Tensor, lengthscales: torch.Tensor, signal_var: torch.Tensor
) -> torch.Tensor:
    """Squared-exponential ARD kernel (Deisenroth & Rasmussen 2011, Eq. 6).

    Args:
        x1: ``[*B, n, Din]``.
        x2: ``[*B, m, Din]``.
        lengthscales: ``[*B, Din]``.
        signal_var: ``[*B]``.

    Returns:
        ``K`` ``[*B, n, m]`` with ``K_ij = α² exp(-½ Σ_d (x1_id - x2_jd)² / ℓ_d²)``.

    >>> x = torch.zeros(2, 1, dtype=torch.float64)
    >>> se_ard_kernel(x, x + 1, torch.ones(1, dtype=torch.float64), torch.tensor(2.0)).shape
    torch.Size([2, 2])
    """
    shift = x2.mean(-2, keepdim=True).detach()  # centring for accuracy  [*B, 1, Din]
    a = (x1 - shift) / lengthscales[..., None, :]  # [*B, n, Din]
    b = (x2 - shift) / lengthscales[..., None, :]  # [*B, m, Din]
    ca = torch.log(signal_var)[..., None] - 0.5 * a.pow(2).sum(-1)  # [*B, n]
    cb = -0.5 * b.pow(2).sum(-1)  # [*B, m]
    # log K = log α² - ½|a_i - b_j|², built with in-place steps (the [n, m] buffers dominate)
    logk = a @ b.transpose(-1, -2)  # [*B, n, m]
    logk = logk.add_(ca[..., :, None]).add_(cb[..., None, :])  # [*B, n, m]
    return logk.exp_()


def _scaled_sqdist(x1: torch.Tensor, x2: torch.Tensor, lengthscales: torch.Tensor) -> torch.Tensor:
    """``Σ_d (x1_id - x2_jd)² / ℓ_d²`` ``[*B, n, m]`` (centred for accuracy)."""
    shift = x2.mean(-2, keepdim=True).detach()  # [*B, 1, Din]
    a = (x1 - shift) / lengthscales[..., None, :]  # [*B, n, Din]
    b = (x2 - shift) / lengthscales[..., None, :]  # [*B, m, Din]
    d2 = (
        a.pow(2).sum(-1)[..., :, None]
        + b.pow(2).sum(-1)[..., None, :]
        - 2 * a @ b.transpose(-1, -2)
    )  # [*B, n, m]
    return d2.clamp_min(0)


def robust_cholesky(A: torch.Tensor, max_tries: int = 8) -> torch.Tensor:
    """Cholesky factor of a batch of SPD matrices, adding jitter only where it fails.

    A failing matrix gets ``settings.jitter() · mean(diag A) · 10^k`` on its diagonal for
    ``k = 0, 1, ...``; matrices that factorise as given are left exact.

    Args:
        A: ``[*B, n, n]``.

    Returns:
        ``L`` ``[*B, n, n]`` lower triangular with ``L Lᵀ ≈ A``.

    Raises:
        ValueError: if a matrix is not positive definite even with jitter.

    >>> robust_cholesky(torch.eye(2, dtype=torch.float64))
    tensor([[1., 0.],
            [0., 1.]], dtype=torch.float64)
    """
    L, info = torch.linalg.cholesky_ex(A)  # [*B, n, n], [*B]
    if not bool((info > 0).any()):
        return L
    n = A.shape[-1]
    eye = torch.eye(n, dtype=A.dtype, device=A.device)  # [n, n]
    scale = torch.diagonal(A, dim1=-2, dim2=-1).abs().mean(-1).clamp_min(1.0)  # [*B]
    for k in range(max_tries):
        failed = (info > 0).to(A.dtype)  # [*B]
        jit = failed * scale * settings.jitter() * 10.0**k  # [*B]
        L, info = torch.linalg.cholesky_ex(A + jit[..., None, None] * eye)  # [*B, n, n]
        if not bool((info > 0).any()):
            return L
    raise ValueError("matrix is not positive definite, even after adding jitter")


class _ExactNLML(torch.autograd.Function):
    """Negative log marginal likelihood with the closed-form gradient (R&W 2006, Eq. 5.9).

    ``∂(-log p)/∂θ = -½ tr(W ∂K/∂θ)`` with ``W = ααᵀ - K⁻¹``, ``α = K⁻¹y``; costs one Cholesky
    and one Cholesky inverse per GP instead of backpropagating through the factorisation.
    """

    @staticmethod
    def forward(
        ctx: Any,
        X: torch.Tensor,
        y: torch.Tensor,
        ell: torch.Tensor,
        sf2: torch.Tensor,
        sn2: torch.Tensor,
    ) -> torch.Tensor:
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            raise ValueError("exact_log_likelihood does not differentiate inputs or targets")
        X = X - X.mean(-2, keepdim=True)  # [*B, n, Din]
        n = X.shape[-2]
        A = X / ell[..., None, :]  # [*B, n, Din]
        sq = A.pow(2).sum(-1)  # [*B, n]
        # exp(-½ |a_i - a_j|²), built in place: the n x n buffers dominate the cost
        Ek = A @ A.transpose(-1, -2)  # [*B, n, n]
        Ek.mul_(2).sub_(sq[..., :, None]).sub_(sq[..., None, :]).clamp_max_(0).mul_(0.5).exp_()
        K = Ek * sf2[..., None, None]  # [*B, n, n]
        K.diagonal(dim1=-2, dim2=-1).add_(sn2[..., None])
        L = robust_cholesky(K)  # [*B, n, n]
        del K
        alpha = torch.cholesky_solve(y.unsqueeze(-1), L).squeeze(-1)  # [*B, n]
        logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # [*B]
        nlml = 0.5 * (y * alpha).sum(-1) + logdet + 0.5 * n * _LOG_2PI  # [*B]
        ctx.save_for_backward(X, ell, sf2, Ek, L, alpha)
        return nlml

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        X, ell, sf2, Ek, L, alpha = ctx.saved_tensors
        W = torch.cholesky_inverse(L).neg_()  # [*B, n, n]
        W.addcmul_(alpha[..., :, None], alpha[..., None, :])  # W = ααᵀ - K⁻¹
        d_sn2 = -0.5 * torch.diagonal(W, dim1=-2, dim2=-1).sum(-1)  # [*B]
        WE = W.mul_(Ek)  # W ∘ K_f / α²  [*B, n, n]
        d_sf2 = -0.5 * WE.sum((-1, -2))  # [*B]
        r = WE.sum(-1)  # [*B, n]
        MX = WE @ X  # [*B, n, Din]
        # Σ_ij M_ij (x_id - x_jd)² for the symmetric M = W ∘ K_f
        s = 2 * sf2[..., None] * ((X.pow(2) * r[..., None]).sum(-2) - (X * MX).sum(-2))  # [*B, Din]
        d_ell = -0.5 * s / ell.pow(3)  # [*B, Din]
        return None, None, g[..., None] * d_ell, g * d_sf2, g * d_sn2


def exact_log_likelihood(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    lengthscales: torch.Tensor,
    signal_var: torch.Tensor,
    noise_var: torch.Tensor,
) -> torch.Tensor:
    """Exact log marginal likelihood of each output's GP (Rasmussen & Williams 2006, Eq. 5.8).

    Differentiable with respect to the hyper-parameters (closed-form gradient, Eq. 5.9), not with
    respect to the data.

    Args:
        inputs: ``X`` ``[n, Din]``.
        targets: ``Y`` ``[n, E]``.
        lengthscales: ``[*P, E, Din]``.
        signal_var: ``[*P, E]``.
        noise_var: ``[*P, E]``.

    Returns:
        ``log p(Y[:, a] | X)`` ``[*P, E]``.

    >>> X = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None]
    >>> Y = torch.sin(3 * X)
    >>> one = torch.ones(1, 1, dtype=torch.float64)
    >>> exact_log_likelihood(X, Y, one, one[0], 0.01 * one[0]).shape
    torch.Size([1])
    """
    Din, E = inputs.shape[-1], targets.shape[-1]
    batch = torch.broadcast_shapes(lengthscales.shape[:-1], signal_var.shape, noise_var.shape)
    if lengthscales.shape[-1] != Din or batch[-1:] != (E,):
        raise ValueError(
            f"hyper-parameters of shapes {tuple(lengthscales.shape)}, {tuple(signal_var.shape)}, "
            f"{tuple(noise_var.shape)} do not fit {E} outputs of {Din} inputs"
        )
    ell = lengthscales.expand(*batch, Din)  # [*P, E, Din]
    y = targets.transpose(0, 1).expand(*batch, targets.shape[0])  # [*P, E, n]
    return -_ExactNLML.apply(
        inputs.detach(), y.detach(), ell, signal_var.expand(batch), noise_var.expand(batch)
    )  # [*P, E]


def curb_penalty(
    lengthscales: torch.Tensor,
    signal_var: torch.Tensor,
    noise_var: torch.Tensor,
    input_scale: torch.Tensor,
    ls_max: float = 100.0,
    snr_max: float = 500.0,
) -> torch.Tensor:
    r"""PILCO's ``hypCurb`` penalty on length-scales and signal-to-noise ratio.

    .. math::
        \sum_d \Big(\frac{\log(\ell_d / s_d)}{\log \ell_{max}}\Big)^{p}
        + \Big(\frac{\log(\alpha/\sigma)}{\log \mathrm{snr}_{max}}\Big)^{p},\quad p = 30,

    about 0 inside the box ``ℓ_d/s_d ∈ [1/ℓ_max, ℓ_max]``, ``α/σ ≤ snr_max`` and steep outside
    (Deisenroth 2010, PILCO software ``hypCurb.m``).

    Args:
        lengthscales: ``[*P, Din]``.
        signal_var: ``[*P]``.
        noise_var: ``[*P]``.
        input_scale: spread ``s`` of the inputs ``[Din]``.

    Returns:
        ``[*P]``.

    >>> one = torch.ones(3, dtype=torch.float64)
    >>> round(float(curb_penalty(one, one[0], one[0] / 500**2, one)), 6)  # at the curb
    1.0
    >>> float(curb_penalty(one, one[0], one[0] / 1000**2, one)) > 20  # beyond: steep
    True
    """
    log_ell = torch.log(lengthscales / input_scale)  # [*P, Din]
    log_snr = 0.5 * torch.log(signal_var / noise_var)  # [*P]
    return _curb(log_ell, log_snr, ls_max, snr_max)


def _curb(log_ell: torch.Tensor, log_snr: torch.Tensor, ls_max: float, snr_max: float
          ) -> torch.Tensor:
    pen_ell = (log_ell / math.log(ls_max)).pow(_CURB_POWER).sum(-1)  # [*P]
    pen_snr = (log_snr / math.log(snr_max)).pow(_CURB_POWER)  # [*P]
    return pen_ell + pen_snr


def posterior_weights(
    inputs: torch.Tensor, targets: torch.Tensor, hyperparameters: GPHyperparameters
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of the GP posterior mean and the inverse Gram matrix (D&R 2011, Eqs. 7-8).

    ``m_a(x) = k_a(x)ᵀ β_a`` and ``var f_a(x) = α²_a - k_a(x)ᵀ (K_a + σ²_a I)⁻¹ k_a(x)``.

    Args:
        inputs: ``[n, Din]``.
        targets: ``[n, E]``.
        hyperparameters: ``E`` GPs.

    Returns:
        ``β`` ``[E, n]`` and ``(K + σ² I)⁻¹`` ``[E, n, n]`` (via Cholesky; jitter only when the
        factorisation fails).

    >>> X = torch.linspace(0, 1, 4, dtype=torch.float64)[:, None]
    >>> h = GPHyperparameters(torch.ones(1, 1, dtype=torch.float64),
    ...                       torch.ones(1, dtype=torch.float64), torch.full((1,), 0.1).double())
    >>> [t.shape for t in posterior_weights(X, X ** 2, h)]
    [torch.Size([1, 4]), torch.Size([1, 4, 4])]
    """
    h = hyperparameters
    n = inputs.shape[0]
    K = se_ard_kernel(inputs, inputs, h.lengthscales, h.signal_var)  # [E, n, n]
    K = K + torch.diag_embed(h.noise_var[:, None].expand(-1, n))  # [E, n, n]
    L = robust_cholesky(K)  # [E, n, n]
    beta = torch.cholesky_solve(targets.transpose(0, 1).unsqueeze(-1), L).squeeze(-1)  # [E, n]
    inv_gram = torch.cholesky_inverse(L)  # [E, n, n]
    return beta, (0.5 * (inv_gram + inv_gram.transpose(-1, -2))).contiguous()


def _theta_to_hyp(theta: torch.Tensor, floor: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unconstrained ``θ = (log ℓ, log α, log σ_free)`` ``[*P, E, Din+2]`` -> hyper-parameters."""
    theta = theta.clamp(-20.0, 20.0)  # [*P, E, Din+2]
    ell = torch.exp(theta[..., :-2])  # [*P, E, Din]
    sf2 = torch.exp(2 * theta[..., -2])  # [*P, E]
    sn2 = torch.exp(2 * theta[..., -1]) + floor  # [*P, E]
    return ell, sf2, sn2


def _objective(theta: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, floor: torch.Tensor,
               ls_max: float, snr_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative log likelihood and ``n`` x curb penalty on standardised data, each ``[*P, E]``."""
    ell, sf2, sn2 = _theta_to_hyp(theta, floor)
    y = Y.transpose(0, 1).expand(*sf2.shape, Y.shape[0])  # [*P, E, n]
    nlml = _ExactNLML.apply(X, y, ell, sf2, sn2)  # [*P, E]
    pen = _curb(torch.log(ell), 0.5 * torch.log(sf2 / sn2), ls_max, snr_max)  # [*P, E]
    return nlml, X.shape[0] * pen


def _lbfgs(theta: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, floor: torch.Tensor,
           max_iter: int, ls_max: float, snr_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise the penalised NLML of a batch of independent GPs with L-BFGS.

    The batch shares one line search, so each GP keeps the best point it visited.
    Returns ``θ`` ``[P, E, Din+2]`` and its penalised NLML ``[P, E]``.
    """
    n = X.shape[0]
    theta = theta.detach().clone().requires_grad_(True)
    best_val = torch.full(theta.shape[:-1], math.inf, dtype=theta.dtype, device=theta.device)
    best_theta = theta.detach().clone()
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        nlml, pen = _objective(theta, X, Y, floor, ls_max, snr_max)
        val = nlml + pen  # [P, E]
        with torch.no_grad():
            better = val < best_val  # [P, E]
            best_val.copy_(torch.where(better, val, best_val))
            best_theta.copy_(torch.where(better[..., None], theta, best_theta))
        loss = val.sum() / n  # []
        loss.backward()
        return loss

    opt.step(closure)
    return best_theta, best_val


def fit_hyperparameters(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    restarts: int = 3,
    max_iter: int = 100,
    restart_subset: int = 150,
    ls_max: float = 100.0,
    snr_max: float = 500.0,
    init: GPHyperparameters | None = None,
    generator: torch.Generator | None = None,
) -> FitResult:
    """Maximise the curbed exact marginal likelihood of ``E`` independent SE-ARD GPs.

    The initialisation is data-driven (length-scales = input std, signal variance = mean square
    of the targets, noise = 1% of it); ``restarts - 1`` more starts perturb it in log space, and
    ``init`` (e.g. a previous fit) is one more. All starts are optimised together with L-BFGS on
    a random subset of ``restart_subset`` points; per output the one with the best objective on
    all data is then refined on all data, together with the data-driven start (a small subset
    favours simpler fits, a local optimum on all data), and the better of the two is kept. The
    noise std is floored at ``max(1e-4 · rms(y), 1e-6)``.

    Args:
        inputs: ``[n, Din]``.
        targets: ``[n, E]``.
        restarts: number of random starts (>= 1).
        max_iter: L-BFGS iterations per phase.
        restart_subset: size of the subset the restarts are optimised on.
        ls_max: length-scales are curbed to within this factor of the input std.
        snr_max: curb on the signal-to-noise ratio ``α/σ``.
        init: an extra starting point.
        generator: random source for the restarts and the subset.

    Returns:
        a :class:`FitResult` in the units of the data.

    >>> X = torch.linspace(-2, 2, 30, dtype=torch.float64)[:, None]
    >>> res = fit_hyperparameters(X, torch.sin(X), restarts=2)
    >>> res.hyperparameters.lengthscales.shape, bool(res.log_likelihood > 0)
    (torch.Size([1, 1]), True)
    """
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    n, Din = inputs.shape
    E = targets.shape[1]
    dt, dev = inputs.dtype, inputs.device
    tiny = torch.finfo(dt).tiny ** 0.5
    x_loc = inputs.mean(0)  # [Din]
    x_scale = inputs.std(0, correction=0)  # [Din]
    x_scale = torch.where(x_scale > tiny * (1 + x_loc.abs()), x_scale, 1.0)  # [Din]
    y_scale = targets.pow(2).mean(0).sqrt()  # [E]
    y_scale = torch.where(y_scale > tiny, y_scale, 1.0)  # [E]
    X = (inputs - x_loc) / x_scale  # [n, Din]
    Y = targets / y_scale  # [n, E]
    floor = torch.clamp_min((_NOISE_FLOOR_ABS / y_scale) ** 2, _NOISE_FLOOR_REL**2)  # [E]

    theta = torch.zeros(restarts, E, Din + 2, dtype=dt, device=dev)  # [R, E, Din+2]
    theta[..., -1] = math.log(0.1)
    if restarts > 1:
        spread = torch.tensor([0.7] * Din + [0.5, 1.0], dtype=dt)  # [Din+2]
        noise = torch.randn(restarts - 1, E, Din + 2, dtype=dt,
                            generator=generator)  # [R-1, E, Din+2]
        theta[1:] += (noise * spread).to(dev)
    if init is not None:
        extra = torch.cat([
            torch.log(init.lengthscales.to(dt) / x_scale),
            0.5 * torch.log(init.signal_var.to(dt) / y_scale**2)[:, None],
            0.5 * torch.log((init.noise_var.to(dt) / y_scale**2 - floor).clamp_min(1e-30))[:, None],
        ], dim=-1)  # [E, Din+2]
        theta = torch.cat([theta, extra[None]], dim=0)  # [R+1, E, Din+2]

    if n > restart_subset:
        idx = torch.randperm(n, generator=generator)[:restart_subset].to(dev)  # [restart_subset]
        theta_sub, _ = _lbfgs(theta, X[idx], Y[idx], floor, max_iter, ls_max, snr_max)
        with torch.no_grad():
            nlml, pen = _objective(theta_sub, X, Y, floor, ls_max, snr_max)  # [R, E]
        restart_val = nlml + pen  # [R, E]
        best = restart_val.argmin(0)  # [E]
        # refine the best restart and, against the subset's bias to simpler fits, the
        # data-driven start on all data; a short joint run picks one of the two per output
        starts = torch.stack([theta_sub[best, torch.arange(E, device=dev)], theta[0]])
        theta_ref, val_ref = _lbfgs(starts, X, Y, floor, min(max_iter, _SHORTLIST_ITER), ls_max,
                                    snr_max)  # [2, E, Din+2], [2, E]
        start = theta_ref[val_ref.argmin(0), torch.arange(E, device=dev)]  # [E, Din+2]
        theta_b, _ = _lbfgs(start[None], X, Y, floor, max_iter, ls_max, snr_max)
        theta_b = theta_b[0]  # [E, Din+2]
    else:
        theta, restart_val = _lbfgs(theta, X, Y, floor, max_iter, ls_max, snr_max)
        theta_b = theta[restart_val.argmin(0), torch.arange(E, device=dev)]  # [E, Din+2]

    with torch.no_grad():
        nlml, pen = _objective(theta_b, X, Y, floor, ls_max, snr_max)  # [E]
        ell, sf2, sn2 = _theta_to_hyp(theta_b, floor)
    jac = n * torch.log(y_scale)  # [E]
    hyp = GPHyperparameters(ell * x_scale, sf2 * y_scale**2, sn2 * y_scale**2)
    return FitResult(
        hyperparameters=hyp,
        log_likelihood=-nlml - jac,
        objective=-nlml - pen - jac,
        restart_objective=-restart_val.detach() - jac,
    )
