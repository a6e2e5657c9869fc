"""Exact moments of a GP posterior under a Gaussian input: PILCO's ``gp0`` / ``gp1`` / ``gp2``.

Model. ``E`` independent GPs, output ``a`` with its own inputs ``X_a`` ``[n, Din]`` (the training
inputs, or the inducing inputs of a sparse GP), squared-exponential ARD kernel

.. math::
    k_a(x, x') = \\alpha_a^2 \\exp\\big(-\\tfrac12 (x-x')^\\top \\Lambda_a^{-1} (x-x')\\big),
    \\qquad \\Lambda_a = \\mathrm{diag}(\\ell_a^2),

and ``k_a(x) = [k_a(x, x_{a1}), ..., k_a(x, x_{an})]`` (the signal variance ``α²_a`` included).
The latent posterior at a point ``x`` is

.. math::
    m_a(x) = k_a(x)^\\top \\beta_a, \\qquad
    \\mathrm{var}_a(x) = \\alpha_a^2 - k_a(x)^\\top\\, iK_a\\, k_a(x).

For an exact GP ``β_a = (K_a + σ²_a I)⁻¹ y_a`` and ``iK_a = (K_a + σ²_a I)⁻¹`` with
``K_a = [k_a(x_i, x_j)]`` (``α²_a`` included); a sparse GP passes its own ``β`` and ``iK``.
``inv_gram=None`` drops the variance term: a *deterministic* GP, its mean function alone
(PILCO's ``gp2``, the RBF controller). Outputs are independent given ``x``.

Moments for ``x ~ N(μ, Σ)`` (Deisenroth & Rasmussen 2011, Eqs. 14-23; Deisenroth, Fox &
Rasmussen, TPAMI 2015, Sec. 4 and App.). With ``ν_ai = x_ai - μ`` and ``z_ai = Λ_a⁻¹ ν_ai``:

.. math::
    q_{ai} = \\alpha_a^2 |\\Sigma\\Lambda_a^{-1} + I|^{-1/2}
             \\exp\\big(-\\tfrac12 \\nu_{ai}^\\top(\\Sigma+\\Lambda_a)^{-1}\\nu_{ai}\\big),
    \\qquad M_a = \\beta_a^\\top q_a \\quad\\text{(Eqs. 14-16)},

.. math::
    V_a = \\Sigma^{-1}\\mathrm{cov}[x, f_a]
        = \\textstyle\\sum_i \\beta_{ai} q_{ai} (\\Sigma+\\Lambda_a)^{-1}\\nu_{ai},

.. math::
    Q_{ab,ij} = \\frac{k_a(x_{ai}, \\mu) k_b(x_{bj}, \\mu)}{|R_{ab}|^{1/2}}
        \\exp\\big(\\tfrac12 (z_{ai}+z_{bj})^\\top A_{ab} (z_{ai}+z_{bj})\\big),
    \\quad R_{ab} = \\Sigma(\\Lambda_a^{-1}+\\Lambda_b^{-1}) + I,
    \\quad A_{ab} = R_{ab}^{-1}\\Sigma \\quad\\text{(Eq. 22)},

.. math::
    S_{ab} = \\beta_a^\\top Q_{ab} \\beta_b - M_a M_b
             + \\delta_{ab}\\big(\\alpha_a^2 - \\mathrm{tr}(iK_a Q_{aa})\\big)
    \\quad\\text{(Eqs. 17-23)}.

Implementation. ``Q`` is never formed against the means: with ``R_a = ΣΛ_a⁻¹ + I`` and
``B_a = (Σ⁻¹ + Λ_a⁻¹)⁻¹ = Σ(Σ + Λ_a)⁻¹Λ_a`` the ratio ``Q_{ab,ij} / (q_{ai} q_{bj}) =
exp(L_{ab,ij})`` has the exponent

.. math::
    L_{ab,ij} = c_{ab} + \\tfrac12 z_{ai}^\\top (A_{ab}-B_a) z_{ai}
              + \\tfrac12 z_{bj}^\\top (A_{ab}-B_b) z_{bj} + z_{ai}^\\top A_{ab} z_{bj},

``c_ab = ½(log|R_a| + log|R_b| - log|R_ab|)``, so ``L_ab`` has rank at most ``Din + 2`` and
costs one matmul per ``(a, b)`` block. Then ``S_ab = (β_a∘q_a)ᵀ expm1(L_ab) (β_b∘q_b)`` (+ the
variance term), which is exactly zero for ``Σ = 0`` and keeps its relative precision for small
``Σ``, where ``βᵀQβ - M²`` cancels. Every matrix that is factorised is ``I + D^{1/2} Σ D^{1/2}``
for a positive diagonal ``D`` (log-determinants from its eigenvalues with ``log1p``): ``Σ`` may be
singular or zero and is never inverted. The ``[n, n]`` blocks are formed in tiles of at most
``block_elements`` entries and reduced at once, inside an autograd function whose hand-written
backward recomputes the tiles: memory is ``O(E² n Din)`` per batch element plus one tile, forward
and backward, never ``n²·Din`` (nor ``n²`` per batch element). ``L`` is clamped at
``0.4 log(max float)`` before ``expm1``: by Cauchy-Schwarz an entry beyond it contributes less
than ``α²_a α²_b |β_ai β_bj| e^{-284}`` (float64), so nothing overflows far from the data.
The variance term ``α²_a - tr(iK_a Q_aa)`` is not clamped at zero.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from wmrl.gaussian import check_finite, check_gaussian, symmetrize

__all__ = ["gp_moment_match", "gp_predict", "DEFAULT_BLOCK_ELEMENTS"]

#: entries of the ``[n, n]`` blocks held at once (per buffer) by :func:`gp_moment_match`
DEFAULT_BLOCK_ELEMENTS = 2**18


def _check_finite_fast(name: str, t: Tensor) -> None:
    """``check_finite`` in one reduction: the full check runs only if the sum is not finite."""
    if not bool(torch.isfinite(t.sum())):
        check_finite(name, t)


def _check_gp(
    din: int,
    dtype: torch.dtype,
    device: torch.device,
    inputs: Tensor,
    beta: Tensor,
    lengthscales: Tensor,
    signal_var: Tensor,
    inv_gram: Tensor | None,
) -> None:
    """Shapes, dtypes, devices, finiteness and positivity of the GP's parameters."""
    if inputs.dim() != 3 or inputs.shape[-1] != din:
        raise ValueError(f"inputs must have shape [E, n, {din}], got {tuple(inputs.shape)}")
    E, n, _ = inputs.shape
    expected = {
        "beta": (beta, (E, n)),
        "lengthscales": (lengthscales, (E, din)),
        "signal_var": (signal_var, (E,)),
    }
    if inv_gram is not None:
        expected["inv_gram"] = (inv_gram, (E, n, n))
    for name, (t, shape) in {"inputs": (inputs, (E, n, din)), **expected}.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
        if t.dtype != dtype:
            raise ValueError(f"{name} has dtype {t.dtype}, the input belief has {dtype}")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device}, the input belief is on {device}")
        _check_finite_fast(name, t)
    if not bool((lengthscales > 0).all()):
        raise ValueError("lengthscales must be positive")
    if not bool((signal_var > 0).all()):
        raise ValueError("signal_var must be positive")


def _cholesky(mat: Tensor, what: str) -> Tensor:
    """Cholesky factor of ``I + D^{1/2} Σ D^{1/2}``; ``ValueError`` when Σ is not PSD."""
    chol, info = torch.linalg.cholesky_ex(mat)  # [..., D, D]
    if bool((info != 0).any()):
        raise ValueError(f"input covariance is not positive semi-definite ({what} not PD)")
    return chol


def _half_logdet1p(T: Tensor) -> Tensor:
    """``½ log|I + T|`` for symmetric PSD ``T`` ``[..., D, D]`` -> ``[...]``.

    From the eigenvalues with ``log1p``: exact to relative precision for small ``T``, where the
    diagonal of a Cholesky factor of ``I + T`` has already rounded ``1 + t`` (the constants
    ``c_ab`` are ``O(Σ²)`` and must not carry ``O(eps)`` errors).
    """
    return 0.5 * torch.linalg.eigvalsh(T).log1p().sum(-1)  # [...]


def _exp_clamp(dtype: torch.dtype) -> float:
    """Largest exponent ``lmax`` evaluated by ``expm1``.

    ``Q_ab,ij ≤ α_a α_b (q_ai q_bj)^{1/2}`` (Cauchy-Schwarz, ``k ≤ α²``), so ``L_ij > lmax``
    implies ``(q_ai q_bj)^{1/2} < α_a α_b e^{-lmax}``: the exact entry ``β_ai β_bj (Q - q q)`` and
    the clamped one are both below ``α²_a α²_b |β_ai β_bj| e^{-lmax}``, and nothing overflows.
    """
    return 0.4 * math.log(torch.finfo(dtype).max)


def _shared_left(XT: Tensor, M: Tensor) -> Tensor:
    """``XT @ M`` for ``XT`` ``[c, p, k, m]`` and ``M`` ``[p, m, n]`` shared across ``c``.

    One ``[c·k, m] x [m, n]`` product per ``p`` instead of broadcasting ``M`` to ``[c, p, m, n]``.
    """
    c, p, k, m = XT.shape
    Y = torch.bmm(XT.transpose(0, 1).reshape(p, c * k, m), M)  # [p, c·k, n]
    return Y.reshape(p, c, k, M.shape[-1]).transpose(0, 1)  # [c, p, k, n]


def _tile_matmul(A: Tensor, B: Tensor, buf: Tensor) -> Tensor:
    """``A @ B`` written into the front of a preallocated flat buffer (no fresh allocation)."""
    out = buf[: A.shape[0] * A.shape[1] * A.shape[2] * B.shape[-1]]  # [c·p·t·n]
    out = out.view(*A.shape[:-1], B.shape[-1])  # [c, p, t, n]
    return torch.matmul(A, B, out=out)


def _chunks(N: int, P: int, E: int, n: int, budget: int):
    """``(pairs, batch, rows, diagonal)`` slices covering ``[N, P]`` blocks of ``[n, n]`` with at
    most ``budget`` entries per ``[c, p, t, n]`` tile (the ``E`` diagonal pairs come first)."""
    for start, stop in ((0, E), (E, P)):
        if stop <= start:
            continue
        p_step = min(stop - start, max(1, budget // (n * n)))
        for p0 in range(start, stop, p_step):
            ps = slice(p0, min(stop, p0 + p_step))
            c_step = max(1, budget // (n * n * (ps.stop - ps.start)))
            rows = max(1, min(n, budget // (n * (ps.stop - ps.start) * min(c_step, N))))
            for b0 in range(0, N, c_step):
                bs = slice(b0, min(N, b0 + c_step))
                for i0 in range(0, n, rows):
                    yield ps, bs, slice(i0, min(n, i0 + rows)), start == 0


def _sweep(
    U: Tensor,
    W: Tensor,
    wa: Tensor,
    wb: Tensor,
    q: Tensor,
    iK: Tensor | None,
    lmax: float,
    budget: int,
    partials: bool,
    gout: Tensor | None = None,
) -> tuple[Tensor | None, tuple[Tensor, ...] | None, Tensor | None]:
    """One pass over all tiles of ``G = expm1(min(U Wᵀ, lmax))`` (see :class:`_BlockReduce`).

    Returns ``s`` ``[N, P]`` (when ``gout`` is ``None``); with ``partials`` the derivatives of
    each ``s_np`` with respect to its own ``U, W, wa, wb`` and to ``q`` (not yet multiplied by the
    incoming gradient); with ``gout`` ``[N, P]`` the gradient with respect to ``iK``, which sums
    over the batch and so needs ``gout``. Contractions are written as ``[k, ·] x G`` products
    (wide outputs), which BLAS runs several times faster than ``G x [·, k]`` for small ``k``.
    """
    N, P, n, r = U.shape
    E = q.shape[1]
    Wt = W.transpose(-1, -2).contiguous()  # [N, P, r, n]
    out = U.new_zeros(N, P) if gout is None else None  # [N, P]
    with_q = iK is not None
    if partials:
        dU, dW = torch.zeros_like(U), torch.zeros_like(W)  # [N, P, n, r]
        dwa, dwb = torch.zeros_like(wa), torch.zeros_like(wb)  # [N, P, n]
        dq = torch.zeros_like(q)  # [N, E, n]
        UT = U.transpose(-1, -2)  # [N, P, r, n]
        XbT = torch.cat([wb.unsqueeze(-2) * Wt, wb.unsqueeze(-2)], -2)  # [N, P, r+1, n]
        sW = XbT[..., :r, :].sum(-1).unsqueeze(-2)  # Σ_j wb_j W_j  [N, P, 1, r]
        if with_q:
            XqT = torch.cat([q.unsqueeze(-2) * Wt[:, :E], q.unsqueeze(-2)], -2)  # [N, E, r+1, n]
    diK = torch.zeros_like(iK) if gout is not None and with_q else None  # [E, n, n]
    buf = U.new_empty(min(max(budget, n), N * P * n * n))  # tile buffer, reused  [≤ budget]
    for ps, bs, ts, diag in _chunks(N, P, E, n, budget):
        wat = wa[bs, ps, ts]  # [c, p, t]
        G = _tile_matmul(U[bs, ps, ts], Wt[bs, ps], buf)  # L tile  [c, p, t, n]
        G.clamp_(max=lmax).expm1_()  # [c, p, t, n]
        iq = diag and with_q
        if iq:
            iKt, qa = iK[ps, ts], q[bs, ps]  # [p, t, n], [c, p, n]
            qat = qa[..., ts]  # [c, p, t]
        if diK is not None and iq:
            part = (gout[bs, ps, None] * qat).unsqueeze(-1) * G * qa.unsqueeze(-2)  # [c, p, t, n]
            diK[ps, ts] -= part.sum(0)  # [p, t, n]
        if not partials:
            if out is not None:
                out[bs, ps] += (G @ wb[bs, ps].unsqueeze(-1)).squeeze(-1).mul_(wat).sum(-1)
                if iq:
                    G.mul_(iKt)  # iK ∘ G  [c, p, t, n]
                    out[bs, ps] -= (G @ qa.unsqueeze(-1)).squeeze(-1).mul_(qat).sum(-1)
            continue
        UtT = UT[bs, ps, :, ts]  # [c, p, r, t]
        XaT = torch.cat([wat.unsqueeze(-2) * UtT, wat.unsqueeze(-2)], -2)  # [c, p, r+1, t]
        YbT = XbT[bs, ps] @ G.transpose(-1, -2)  # [(wb∘W)ᵀGᵀ; wbᵀGᵀ]  [c, p, r+1, t]
        YaT = XaT @ G  # [(wa∘U)ᵀG; waᵀG]  [c, p, r+1, n]
        out[bs, ps] += (YbT[..., r, :] * wat).sum(-1)  # waᵀ G wb  [c, p]
        # ∂s/∂L = E ∘ (wa wbᵀ) with E = G + 1
        dU[bs, ps, ts] += wat.unsqueeze(-1) * (YbT[..., :r, :] + sW[bs, ps].mT).mT
        sU = XaT[..., :r, :].sum(-1).unsqueeze(-2)  # Σ_i wa_i U_i  [c, p, 1, r]
        dW[bs, ps] += wb[bs, ps].unsqueeze(-1) * (YaT[..., :r, :].mT + sU)
        dwa[bs, ps, ts] += YbT[..., r, :]
        dwb[bs, ps] += YaT[..., r, :]
        if not iq:
            continue
        XqtT = torch.cat([qat.unsqueeze(-2) * UtT, qat.unsqueeze(-2)], -2)  # [c, p, r+1, t]
        G.mul_(iKt)  # iK ∘ G  [c, p, t, n]
        ZbT = XqT[bs, ps] @ G.transpose(-1, -2)  # [c, p, r+1, t]
        ZaT = XqtT @ G  # [c, p, r+1, n]
        Zb1T = _shared_left(XqT[bs, ps, :r], iKt.transpose(-1, -2))  # (q∘W)ᵀ iKᵀ  [c, p, r, t]
        Za1T = _shared_left(XqtT[..., :r, :], iKt)  # (q∘U)ᵀ iK  [c, p, r, n]
        out[bs, ps] -= (ZbT[..., r, :] * qat).sum(-1)  # qᵀ(iK∘G)q  [c, p]
        dU[bs, ps, ts] -= qat.unsqueeze(-1) * (ZbT[..., :r, :] + Zb1T).mT
        dW[bs, ps] -= qa.unsqueeze(-1) * (ZaT[..., :r, :] + Za1T).mT
        dq[bs, ps, ts] -= ZbT[..., r, :]
        dq[bs, ps] -= ZaT[..., r, :]
    return out, ((dU, dW, dwa, dwb, dq) if partials else None), diK


class _BlockReduce(torch.autograd.Function):
    """``s_p = wa_pᵀ G_p wb_p - [p < E] q_pᵀ(iK_p ∘ G_p)q_p``, ``G_p = expm1(min(U_p W_pᵀ, lmax))``.

    Shapes: ``U, W`` ``[N, P, n, r]``, ``wa, wb`` ``[N, P, n]``, ``q`` ``[N, E, n]``, ``iK``
    ``[E, n, n]`` or ``None``; returns ``[N, P]``. ``G`` is formed one tile of at most ``budget``
    entries at a time and never stored. Each ``s_np`` depends only on its own ``U, W, wa, wb``
    (and ``q``), so when gradients are needed the forward pass contracts each tile with
    ``[n, r+1]`` matrices into the partial derivatives (the size of the inputs) and backward only
    scales them; the gradient with respect to ``iK`` sums over the batch and is computed in
    backward by a second pass over the tiles. Beyond ``lmax`` the derivative of ``expm1`` is taken
    as ``exp(lmax)``: like the entries themselves, negligible there. First derivatives only.
    """

    @staticmethod
    def forward(ctx, U, W, wa, wb, q, iK, lmax, budget):  # type: ignore[override]
        partials = any(ctx.needs_input_grad[:5])
        out, parts, _ = _sweep(U, W, wa, wb, q, iK, lmax, budget, partials)
        ctx.partials = parts is not None
        ctx.save_for_backward(*(parts or ()), U, W, wa, wb, q, iK)
        ctx.lmax, ctx.budget = lmax, budget
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):  # type: ignore[override]
        saved = ctx.saved_tensors
        U, W, wa, wb, q, iK = saved[-6:]
        if ctx.partials:
            dU, dW, dwa, dwb, dq = saved[:5]
        else:  # forward ran without gradients in view: compute them now
            _, (dU, dW, dwa, dwb, dq), _ = _sweep(U, W, wa, wb, q, iK, ctx.lmax, ctx.budget, True)
        diK = None
        if iK is not None and ctx.needs_input_grad[5]:
            diK = _sweep(U, W, wa, wb, q, iK, ctx.lmax, ctx.budget, False, gout)[2]
        g = gout.unsqueeze(-1)  # [N, P, 1]
        E = q.shape[1]
        return (g.unsqueeze(-1) * dU, g.unsqueeze(-1) * dW, g * dwa, g * dwb, dq * g[:, :E], diK,
                None, None)


def _pairs(E: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Output pairs ``(a, b)``, ``a ≤ b``, diagonal first; and the ``[E, E]`` pair index map."""
    diag = torch.arange(E, device=device)  # [E]
    upper = torch.triu_indices(E, E, offset=1, device=device)  # [2, E(E-1)/2]
    ia = torch.cat([diag, upper[0]])  # [P]
    ib = torch.cat([diag, upper[1]])  # [P]
    index = torch.empty(E, E, dtype=torch.long, device=device)  # [E, E]
    pos = torch.arange(ia.numel(), device=device)  # [P]
    index[ia, ib] = pos
    index[ib, ia] = pos
    return ia, ib, index


def gp_moment_match(
    mean: Tensor,
    cov: Tensor,
    inputs: Tensor,
    beta: Tensor,
    lengthscales: Tensor,
    signal_var: Tensor,
    inv_gram: Tensor | None,
    *,
    validate: bool = True,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> tuple[Tensor, Tensor, Tensor]:
    """Exact mean, covariance and input-output covariance of ``f(x)``, ``x ~ N(mean, cov)``.

    The GP is described in the module docstring (Deisenroth & Rasmussen 2011, Eqs. 14-23;
    Deisenroth et al., TPAMI 2015, Sec. 4). Differentiable (first derivatives) in every tensor
    argument; exact for a singular or zero ``cov`` (then equal to :func:`gp_predict`), gradients
    included.

    Args:
        mean: input mean ``μ`` ``[*B, Din]``.
        cov: input covariance ``Σ`` ``[*B, Din, Din]``, PSD (may be singular); symmetrised.
        inputs: ``X`` ``[E, n, Din]``, the training (or inducing) inputs of each output.
        beta: ``β`` ``[E, n]``; the posterior mean is ``m_a(x) = k_a(x)ᵀ β_a``.
        lengthscales: ``ℓ`` ``[E, Din]``, ``Λ_a = diag(ℓ_a²)``.
        signal_var: ``α²`` ``[E]``, included in ``k_a``.
        inv_gram: ``iK`` ``[E, n, n]`` with ``var_a(x) = α²_a - k_a(x)ᵀ iK_a k_a(x)``, or
            ``None`` for the mean function alone (deterministic GP: no ``E[var]`` term).
        validate: check shapes, dtypes, devices, finiteness and that ``cov`` is PSD.
        block_elements: entries of the ``[n, n]`` blocks evaluated at once: the tile size
            (about 2 MiB in float64 by default, cache-sized for CPUs; larger tiles suit GPUs).

    Returns:
        ``M`` ``[*B, E]``; ``S`` ``[*B, E, E]``, the covariance of the latent ``f`` (the noise
        ``σ²`` is *not* added), symmetric; ``V = Σ⁻¹ cov[x, f]`` ``[*B, Din, E]`` (so that
        ``cov[x, f] = Σ V``), computed without inverting ``Σ``.

    Raises:
        ValueError: wrong shapes, dtype or device mismatch, NaN/inf, non-positive
            length-scales or signal variance, or a covariance that is not PSD.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(2, 10, 3, dtype=torch.float64, generator=g)
        >>> beta = torch.randn(2, 10, dtype=torch.float64, generator=g)
        >>> ell, a2 = torch.ones(2, 3, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
        >>> m, S = torch.zeros(4, 3, dtype=torch.float64), 0.1 * torch.eye(3, dtype=torch.float64)
        >>> M, C, V = gp_moment_match(m, S.expand(4, 3, 3), X, beta, ell, a2, None)
        >>> M.shape, C.shape, V.shape
        (torch.Size([4, 2]), torch.Size([4, 2, 2]), torch.Size([4, 3, 2]))
        >>> M0, C0, _ = gp_moment_match(m, torch.zeros(4, 3, 3, dtype=torch.float64), X, beta,
        ...                             ell, a2, None)
        >>> bool((C0 == 0).all()), torch.allclose(M0, gp_predict(m, X, beta, ell, a2, None)[0])
        (True, True)
    """
    if validate:
        check_gaussian(mean, cov, name="input")
        _check_gp(
            mean.shape[-1], mean.dtype, mean.device,
            inputs, beta, lengthscales, signal_var, inv_gram,
        )  # fmt: skip
    batch = mean.shape[:-1]
    Din = mean.shape[-1]
    E, n, _ = inputs.shape
    dtype, device = mean.dtype, mean.device
    m = mean.reshape(-1, Din)  # [N, Din]
    S = symmetrize(cov).reshape(-1, Din, Din)  # [N, Din, Din]
    N = m.shape[0]
    eye = torch.eye(Din, dtype=dtype, device=device)  # [Din, Din]

    # ---- mean and input-output covariance (Eqs. 14-16) ----
    iell = lengthscales.reciprocal()  # Λ_a^{-1/2} diagonal  [E, Din]
    ilam = iell.square()  # Λ_a^{-1} diagonal  [E, Din]
    nu = inputs - m[:, None, None, :]  # ν_ai = x_ai - μ  [N, E, n, Din]
    u = nu * iell[:, None, :]  # Λ_a^{-1/2} ν  [N, E, n, Din]
    z = nu * ilam[:, None, :]  # Λ_a^{-1} ν  [N, E, n, Din]
    Ta = S[:, None] * (iell[:, :, None] * iell[:, None, :])  # Λ^{-1/2} Σ Λ^{-1/2}  [N, E, Din, Din]
    La = _cholesky(Ta + eye, "I + Λ^{-1/2} Σ Λ^{-1/2}")  # [N, E, Din, Din]
    hld_a = _half_logdet1p(Ta)  # ½ log|Σ Λ_a^{-1} + I|  [N, E]
    w = torch.linalg.solve_triangular(La, u.transpose(-1, -2), upper=False)  # [N, E, Din, n]
    lq = (signal_var.log() - hld_a)[..., None] - 0.5 * w.square().sum(-2)  # log q  [N, E, n]
    q = lq.exp()  # q_ai (Eq. 15)  [N, E, n]
    bq = beta * q  # β ∘ q  [N, E, n]
    M = bq.sum(-1)  # Eq. 14  [N, E]
    r = (bq.unsqueeze(-2) @ u).transpose(-1, -2)  # Σ_i β_ai q_ai Λ^{-1/2} ν_ai  [N, E, Din, 1]
    V = iell * torch.cholesky_solve(r, La).squeeze(-1)  # Σ_i βq (Σ+Λ)^{-1} ν  [N, E, Din]
    V = V.transpose(-1, -2)  # [N, Din, E]

    # ---- second moments (Eqs. 17-23), in the centred form of the module docstring ----
    ll = lengthscales[:, :, None] * lengthscales[:, None, :]  # [E, Din, Din]
    Ba = symmetrize(torch.cholesky_solve(Ta, La) * ll)  # B_a = (Σ⁻¹ + Λ_a⁻¹)⁻¹  [N, E, Din, Din]
    ia, ib, index = _pairs(E, device)  # [P], [P], [E, E]
    sp = (ilam[ia] + ilam[ib]).sqrt()  # (Λ_a^{-1} + Λ_b^{-1})^{1/2} diagonal  [P, Din]
    spp = sp[:, :, None] * sp[:, None, :]  # [P, Din, Din]
    Tab = S[:, None] * spp  # [N, P, Din, Din]
    Lab = _cholesky(Tab + eye, "R_ab")  # [N, P, Din, Din]
    A = symmetrize(torch.cholesky_solve(Tab, Lab) / spp)  # A_ab = R_ab^{-1} Σ  [N, P, Din, Din]
    c = hld_a[:, ia] + hld_a[:, ib] - _half_logdet1p(Tab)  # c_ab  [N, P]
    zT = z.transpose(-1, -2)  # [N, E, Din, n]  (Din x n products are wide GEMMs)
    zaT, zbT = zT[:, ia], zT[:, ib]  # [N, P, Din, n]
    ga = 0.5 * (((A - Ba[:, ia]) @ zaT) * zaT).sum(-2)  # ½ z_aᵀ(A - B_a)z_a  [N, P, n]
    AzbT = A @ zbT  # [N, P, Din, n]
    hb = 0.5 * ((AzbT - Ba[:, ib] @ zbT) * zbT).sum(-2)  # ½ z_bᵀ(A - B_b)z_b  [N, P, n]
    ones = torch.ones_like(ga).unsqueeze(-2)  # [N, P, 1, n]
    UT = torch.cat([zaT, (ga + c[..., None]).unsqueeze(-2), ones], -2)  # [N, P, Din+2, n]
    WT = torch.cat([AzbT, ones, hb.unsqueeze(-2)], -2)  # L_ab = U Wᵀ  [N, P, Din+2, n]
    U, W = UT.transpose(-1, -2), WT.transpose(-1, -2)  # [N, P, n, Din+2]
    blocks = _BlockReduce.apply(
        U, W, bq[:, ia], bq[:, ib], q, inv_gram, _exp_clamp(dtype), block_elements
    )  # S_ab (diagonal: minus q_aᵀ(iK_a ∘ expm1 L_aa)q_a)  [N, P]
    if inv_gram is not None:
        qT = q.transpose(0, 1)  # [E, N, n]
        qiKq = ((qT @ inv_gram) * qT).sum(-1).T  # q_aᵀ iK_a q_a  [N, E]
        extra = signal_var - qiKq  # α²_a - tr(iK_a q_a q_aᵀ)  [N, E]
        blocks = torch.cat([blocks[:, :E] + extra, blocks[:, E:]], 1)  # [N, P]
    Sout = blocks[:, index.reshape(-1)].reshape(N, E, E)  # symmetric by construction  [N, E, E]
    return M.reshape(*batch, E), Sout.reshape(*batch, E, E), V.reshape(*batch, Din, E)


def gp_predict(
    x: Tensor,
    inputs: Tensor,
    beta: Tensor,
    lengthscales: Tensor,
    signal_var: Tensor,
    inv_gram: Tensor | None,
    *,
    validate: bool = True,
) -> tuple[Tensor, Tensor]:
    """Posterior mean and latent variance of each output at point inputs (Rasmussen & Williams
    2006, Eqs. 2.25-2.26): the ``cov = 0`` limit of :func:`gp_moment_match`.

    Args:
        x: ``[*B, Din]``.
        inputs, beta, lengthscales, signal_var, inv_gram: as in :func:`gp_moment_match`.
        validate: check shapes, dtypes, devices and finiteness.

    Returns:
        ``mean`` ``[*B, E]`` ``= k_a(x)ᵀ β_a`` and ``var`` ``[*B, E]``
        ``= α²_a - k_a(x)ᵀ iK_a k_a(x)`` (zeros when ``inv_gram`` is ``None``; not clamped).

    Example:
        >>> import torch
        >>> X = torch.zeros(1, 1, 2, dtype=torch.float64)
        >>> one = torch.ones(1, 1, dtype=torch.float64)
        >>> x = torch.zeros(2, dtype=torch.float64)
        >>> gp_predict(x, X, one, one.expand(1, 2), one[0], one[None])
        (tensor([1.], dtype=torch.float64), tensor([0.], dtype=torch.float64))
    """
    if validate:
        if x.dim() < 1:
            raise ValueError(f"x must have shape [*B, Din], got {tuple(x.shape)}")
        _check_finite_fast("x", x)
        _check_gp(x.shape[-1], x.dtype, x.device, inputs, beta, lengthscales, signal_var, inv_gram)
    d = (x[..., None, None, :] - inputs) / lengthscales[:, None, :]  # [*B, E, n, Din]
    k = signal_var[:, None] * torch.exp(-0.5 * d.square().sum(-1))  # k_a(x)  [*B, E, n]
    mean = (k * beta).sum(-1)  # [*B, E]
    if inv_gram is None:
        return mean, torch.zeros_like(mean)
    kT = k.reshape(-1, *k.shape[-2:]).transpose(0, 1)  # [E, N, n]
    kiKk = ((kT @ inv_gram) * kT).sum(-1).T.reshape(mean.shape)  # [*B, E]
    var = signal_var - kiKk  # [*B, E]
    return mean, var
