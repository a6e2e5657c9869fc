"""Numerical knobs in one place: default dtype for GP work and the jitter added to Gram matrices.

Each knob is a context manager around a module-private value, so code reads it through a function
and a caller can change it locally::

    >>> import wmrl.settings as settings
    >>> settings.jitter()
    1e-08
    >>> with settings.jitter_context(1e-6):
    ...     settings.jitter()
    1e-06
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

__all__ = [
    "gp_dtype",
    "jitter",
    "jitter_context",
    "gp_dtype_context",
    "psd_tolerance",
]

_state = threading.local()

_DEFAULT_JITTER = 1e-8
_DEFAULT_GP_DTYPE = torch.float64
# relative tolerance on negative eigenvalues before a covariance is called non-PSD
_DEFAULT_PSD_TOL = 1e-8


def jitter() -> float:
    """Diagonal jitter added to Gram matrices before a Cholesky factorisation.

    >>> jitter()
    1e-08
    """
    return getattr(_state, "jitter", _DEFAULT_JITTER)


def gp_dtype() -> torch.dtype:
    """Default floating dtype of GP models and their moment matching (float64).

    >>> gp_dtype()
    torch.float64
    """
    return getattr(_state, "gp_dtype", _DEFAULT_GP_DTYPE)


def psd_tolerance() -> float:
    """Relative tolerance on negative eigenvalues when checking a covariance is PSD.

    Used by :func:`wmrl.gaussian.check_gaussian`.

    >>> psd_tolerance()
    1e-08
    """
    return getattr(_state, "psd_tol", _DEFAULT_PSD_TOL)


@contextlib.contextmanager
def jitter_context(value: float) -> Iterator[None]:
    """Temporarily set the Gram-matrix jitter (restored on exit, also after an exception).

    >>> with jitter_context(1e-6):
    ...     jitter()
    1e-06
    >>> jitter()
    1e-08
    """
    old = jitter()
    _state.jitter = float(value)
    try:
        yield
    finally:
        _state.jitter = old


@contextlib.contextmanager
def gp_dtype_context(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily set the default GP dtype (restored on exit, also after an exception).

    >>> from wmrl.gp.model import GPWorldModel
    >>> with gp_dtype_context(torch.float32):
    ...     GPWorldModel(obs_dim=2, action_dim=1).dtype
    torch.float32
    >>> gp_dtype()
    torch.float64
    """
    old = gp_dtype()
    _state.gp_dtype = dtype
    try:
        yield
    finally:
        _state.gp_dtype = old
