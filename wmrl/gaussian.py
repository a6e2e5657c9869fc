"""Gaussian beliefs: validation, symmetrisation and the conventions of Gaussian maps.

A *Gaussian map* takes a Gaussian input ``x ~ N(m, S)`` with ``m`` ``[*B, D]`` and ``S``
``[*B, D, D]`` and returns the exact mean ``[*B, E]`` and covariance ``[*B, E, E]`` of an output
``y = f(x)`` together with the input-output covariance. Two forms of the latter appear:

* ``C = cov[x, y]`` ``[*B, D, E]``: the true cross-covariance, what public methods return and what
  the TensorDict key ``("action", "cross_covariance")`` holds.
* ``V = S^{-1} cov[x, y]`` ``[*B, D, E]``: by Stein's lemma the expected Jacobian
  ``E[∂y/∂x]ᵀ`` for Gaussian ``x``. Maps compute it without inverting ``S`` (which may be singular,
  e.g. a deterministic action), and maps chain through it: for ``y = f(x)``, ``z = g(y)``,
  ``V_xz ≈ V_xy V_yz`` (PILCO's ``C``; exact when ``(x, y)`` is jointly Gaussian).
"""

from __future__ import annotations

import torch

from wmrl import settings

__all__ = [
    "symmetrize",
    "check_gaussian",
    "check_finite",
]


def symmetrize(S: torch.Tensor) -> torch.Tensor:
    """Return ``(S + Sᵀ) / 2`` over the last two dimensions.

    Args:
        S: ``[*B, D, D]``.

    Returns:
        ``[*B, D, D]``, exactly symmetric; use it to remove the rounding asymmetry of a computed
        covariance (e.g. ``A S Aᵀ``).

    Example:
        >>> symmetrize(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
        tensor([[1., 1.],
                [1., 1.]])
    """
    return 0.5 * (S + S.transpose(-1, -2))


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or inf.

    Args:
        name: what ``x`` is, for the error message.
        x: any tensor.

    Example:
        >>> check_finite("state", torch.zeros(3))  # finite: returns None
        >>> check_finite("state", torch.tensor([0.0, float("nan")]))
        Traceback (most recent call last):
            ...
        ValueError: state contains NaN or inf values
    """
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf values")


def check_gaussian(
    mean: torch.Tensor,
    cov: torch.Tensor,
    dim: int | None = None,
    *,
    check_psd: bool = True,
    name: str = "input",
) -> None:
    """Validate a Gaussian belief: shapes, dtype/device agreement, finiteness, symmetry and PSD.

    Args:
        mean: ``[*B, D]``.
        cov: ``[*B, D, D]``.
        dim: expected ``D`` (optional).
        check_psd: also check the smallest eigenvalue is not below ``-tol * max|eig|``. This costs
            an eigen-decomposition; callers on hot paths may skip it.
        name: used in error messages.

    Raises:
        ValueError: on any violation, with a message saying which.

    Example: a valid belief passes (returns ``None``); a covariance with eigenvalues ``3`` and
    ``-1`` does not.

    >>> m = torch.zeros(2, dtype=torch.float64)
    >>> check_gaussian(m, torch.eye(2, dtype=torch.float64), dim=2)
    >>> check_gaussian(m, torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64))
    Traceback (most recent call last):
        ...
    ValueError: input covariance is not positive semi-definite (smallest eigenvalue -1)
    >>> check_gaussian(m, torch.eye(3, dtype=torch.float64), name="state")
    Traceback (most recent call last):
        ...
    ValueError: state covariance must have shape (2, 2) to match the mean (2,), got (3, 3)
    """
    if mean.dim() < 1:
        raise ValueError(f"{name} mean must have shape [*B, D], got {tuple(mean.shape)}")
    D = mean.shape[-1]
    if dim is not None and D != dim:
        raise ValueError(f"{name} mean has last dimension {D}, expected {dim}")
    if cov.shape != (*mean.shape, D):
        raise ValueError(
            f"{name} covariance must have shape {(*mean.shape, D)} to match the mean "
            f"{tuple(mean.shape)}, got {tuple(cov.shape)}"
        )
    if mean.dtype != cov.dtype:
        raise ValueError(f"{name} mean and covariance dtypes differ: {mean.dtype} vs {cov.dtype}")
    if mean.device != cov.device:
        raise ValueError(
            f"{name} mean and covariance devices differ: {mean.device} vs {cov.device}"
        )
    if not mean.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {mean.dtype}")
    check_finite(f"{name} mean", mean)
    check_finite(f"{name} covariance", cov)
    if check_psd:
        with torch.no_grad():
            Sd = cov.detach()
            asym = (Sd - Sd.transpose(-1, -2)).abs().amax()
            scale = Sd.abs().amax().clamp_min(torch.finfo(Sd.dtype).tiny)
            if asym > 1e-6 * scale:
                raise ValueError(f"{name} covariance is not symmetric (max |S - Sᵀ| = {asym:.3g})")
            eig = torch.linalg.eigvalsh(symmetrize(Sd))
            eps = torch.finfo(Sd.dtype).eps
            tol = max(settings.psd_tolerance(), 10 * eps)
            # relative to the largest eigenvalue, with an absolute floor so that a covariance
            # that is zero up to rounding (e.g. propagated from a point state) passes
            bad = eig[..., 0] < -(tol * eig.abs().amax(-1) + 100 * eps)
            if bool(bad.any()):
                raise ValueError(
                    f"{name} covariance is not positive semi-definite "
                    f"(smallest eigenvalue {eig[..., 0].min().item():.3g})"
                )
