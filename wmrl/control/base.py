"""Plumbing shared by moment-matching controllers: TensorDict I/O, angle features, point policies.

A *moment-matching controller* is a deterministic policy ``u = π(x)`` that is also a Gaussian map
(see :mod:`wmrl.gaussian`): for ``x ~ N(m, S)`` it returns the mean ``M`` ``[*B, F]`` and
covariance ``S_u`` ``[*B, F, F]`` of ``u`` (exact or moment-matched) and
``V = S⁻¹ cov[x, u]`` ``[*B, D, F]`` (Deisenroth & Rasmussen 2011, Sec. 3; Deisenroth, Fox &
Rasmussen, TPAMI 2015, Sec. 5).

Controllers built on :class:`FeatureController` see the *features* of the state, PILCO's angle
augmentation: ``z = [x_j (j not an angle), sin x_i, cos x_i (i an angle), ...]``, whose moments
come from :func:`~wmrl.control.angle.augment_angles`. The chain rule for ``V`` is then
``V_xu = V_xz V_zu`` (PILCO's ``conCat``/``gTrig`` chaining).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey

from wmrl import settings
from wmrl.control.angle import angle_feature_indices, augment_angles
from wmrl.gaussian import check_finite, check_gaussian
from wmrl.protocol import GAUSSIAN_ACTION_KEYS, GAUSSIAN_STATE_KEYS

__all__ = [
    "MomentController",
    "FeatureController",
    "PointPolicy",
    "point_features",
    "gaussian_features",
    "default_dtype",
]

Moments = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _angle_list(angle_dims: Sequence[int], state_dim: int) -> tuple[int, ...]:
    dims = tuple(int(a) for a in angle_dims)
    for a in dims:
        if not -state_dim <= a < state_dim:
            raise ValueError(f"angle_dims {list(dims)} out of range for a {state_dim}-dim state")
    normalised = tuple(a % state_dim for a in dims)
    if len(set(normalised)) != len(normalised):
        raise ValueError(f"angle_dims {list(dims)} has repeated dimensions")
    return normalised


def point_features(x: torch.Tensor, angle_dims: Sequence[int]) -> torch.Tensor:
    """Features ``z`` of a point state: non-angle dimensions, then ``sin``/``cos`` of each angle.

    The order is that of :func:`~wmrl.control.angle.angle_feature_indices`.

    Args:
        x: ``[*B, D]``.
        angle_dims: the ``k`` angle dimensions.

    Returns:
        ``z`` ``[*B, D + k]``.

    >>> point_features(torch.tensor([1.0, 0.0]), [1])
    tensor([1., 0., 1.])
    """
    D = x.shape[-1]
    dims = _angle_list(angle_dims, D)
    if not dims:
        return x
    keep = [i for i in range(D) if i not in dims]
    ang = x[..., list(dims)]  # [*B, k]
    trig = torch.stack([torch.sin(ang), torch.cos(ang)], dim=-1)  # [*B, k, 2]
    return torch.cat([x[..., keep], trig.flatten(-2)], dim=-1)  # [*B, D + k]


def gaussian_features(
    mean: torch.Tensor, cov: torch.Tensor, angle_dims: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Moments of the features ``z`` of a Gaussian state (PILCO's angle augmentation, ``gTrig``).

    Args:
        mean: ``[*B, D]``.
        cov: ``[*B, D, D]``.
        angle_dims: the ``k`` angle dimensions.

    Returns:
        ``mean_z`` ``[*B, D+k]``, ``cov_z`` ``[*B, D+k, D+k]`` and ``V_xz = cov⁻¹ cov[x, z]``
        ``[*B, D, D+k]``; ``V_xz`` is ``None`` when there are no angles (``z = x``).

    >>> m, S = torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)
    >>> mz, Sz, V = gaussian_features(m, S, [2])
    >>> mz.shape, Sz.shape, V.shape
    (torch.Size([4]), torch.Size([4, 4]), torch.Size([3, 4]))
    """
    D = mean.shape[-1]
    dims = _angle_list(angle_dims, D)
    if not dims:
        return mean, cov, None
    mean_a, cov_a, V_a = augment_angles(mean, cov, list(dims))  # [*B, D+2k], [*B, D+2k, D+2k], ..
    feat = angle_feature_indices(D, list(dims))
    mean_z = mean_a[..., feat]  # [*B, D+k]
    cov_z = cov_a[..., feat, :][..., feat]  # [*B, D+k, D+k]
    V_xz = V_a[..., feat]  # [*B, D, D+k]
    return mean_z, cov_z, V_xz


class MomentController(TensorDictModuleBase):
    """Base of deterministic controllers that map Gaussian states to Gaussian action moments.

    Subclasses implement :meth:`moments` (Gaussian state to action moments) and :meth:`act`
    (point state to action). This class provides the TensorDict interface:

    * ``forward(td)`` reads ``in_keys`` = (state mean ``[*B, D]``, state covariance
      ``[*B, D, D]``) and writes ``out_keys`` = (action mean ``[*B, F]``, action covariance
      ``[*B, F, F]``, true cross-covariance ``cov[x, u] = S V`` ``[*B, D, F]``), by default
      :data:`~wmrl.protocol.GAUSSIAN_STATE_KEYS` and :data:`~wmrl.protocol.GAUSSIAN_ACTION_KEYS`;
    * :meth:`as_policy` wraps :meth:`act` as a point policy for real rollouts.

    Args:
        state_dim: ``D``.
        action_dim: ``F``.
        in_keys: the state mean and covariance keys.
        out_keys: the action mean, covariance and cross-covariance keys.
        validate: check inputs for NaN/inf, symmetry and PSD on every call (this synchronises
            with the device); shapes, dtypes and devices are always checked.

    Example: the gain ``u = k x``, whose moments are exact: ``M = k m``, ``S_u = k² S`` and
    ``V = S⁻¹ cov[x, u] = k I``. For ``x ~ N(1, 0.5)`` and ``k = 2`` the TensorDict receives the
    action mean ``2``, variance ``2`` and cross-covariance ``cov[x, u] = S V = 1``.

    >>> from tensordict import TensorDict
    >>> class Gain(MomentController):
    ...     def __init__(self, k: float) -> None:
    ...         super().__init__(state_dim=1, action_dim=1)
    ...         self.k = torch.nn.Parameter(torch.tensor(k, dtype=torch.float64))
    ...     def moments(self, mean, cov):
    ...         V = self.k * torch.eye(1, dtype=cov.dtype).expand_as(cov)  # [*B, D, F]
    ...         return self.k * mean, self.k**2 * cov, V
    ...     def act(self, x):
    ...         return self.k * x
    >>> ctrl = Gain(2.0)
    >>> td = TensorDict({("observation", "mean"): torch.tensor([[1.0]], dtype=torch.float64),
    ...                  ("observation", "var"): torch.tensor([[[0.5]]], dtype=torch.float64)},
    ...                 batch_size=[1])
    >>> action = ctrl(td)["action"]
    >>> [action[k].tolist() for k in ("mean", "var", "cross_covariance")]
    [[[2.0]], [[[2.0]]], [[[1.0]]]]
    >>> ctrl.as_policy()(TensorDict(observation=torch.tensor([[3.0]]), batch_size=[1]))["action"]
    tensor([[6.]], grad_fn=<ToCopyBackward0>)
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        *,
        in_keys: Sequence[NestedKey] | None = None,
        out_keys: Sequence[NestedKey] | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if state_dim < 1 or action_dim < 1:
            raise ValueError(f"state_dim, action_dim must be >= 1, got {state_dim}, {action_dim}")
        self.state_dim = int(state_dim)
        self.action_dim = int(action_dim)
        self.validate = bool(validate)
        in_keys = list(GAUSSIAN_STATE_KEYS if in_keys is None else in_keys)
        out_keys = list(GAUSSIAN_ACTION_KEYS if out_keys is None else out_keys)
        if len(in_keys) != 2 or len(out_keys) != 3:
            raise ValueError("in_keys must be (mean, var), out_keys (mean, var, cross_covariance)")
        self.in_keys = in_keys
        self.out_keys = out_keys

    # -- to implement -------------------------------------------------------------------------
    def moments(self, mean: torch.Tensor, cov: torch.Tensor) -> Moments:
        """Action moments ``(M [*B, F], S [*B, F, F], V = cov⁻¹ cov[x, u] [*B, D, F])``."""
        raise NotImplementedError

    def act(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic action ``u = π(x)`` ``[*B, F]`` of a point state ``x`` ``[*B, D]``."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def reference_tensor(self) -> torch.Tensor:
        """A parameter or buffer whose dtype and device inputs must match."""
        for t in self.parameters():
            return t
        for t in self.buffers():
            return t
        raise RuntimeError(f"{type(self).__name__} has no parameters or buffers")

    def check_state(self, mean: torch.Tensor, cov: torch.Tensor) -> None:
        """Validate a Gaussian state (``ValueError``).

        Shapes, dtype and device always (no device synchronisation); with ``validate`` also
        NaN/inf, symmetry and PSD (:func:`~wmrl.gaussian.check_gaussian`).
        """
        D = self.state_dim
        if mean.dim() < 1 or mean.shape[-1] != D:
            raise ValueError(
                f"state mean must have shape [*B, {D}], got {tuple(mean.shape)} "
                f"(last dimension {mean.shape[-1] if mean.dim() else None}, expected {D})"
            )
        if cov.shape != (*mean.shape, D):
            raise ValueError(
                f"state covariance must have shape {(*mean.shape, D)}, got {tuple(cov.shape)}"
            )
        self._check_like(mean)
        self._check_like(cov)
        if self.validate:
            check_gaussian(mean, cov, D, name="state")

    def check_point(self, x: torch.Tensor) -> None:
        """Validate a point state ``[*B, D]`` (``ValueError``)."""
        if x.dim() < 1 or x.shape[-1] != self.state_dim:
            raise ValueError(f"state must have shape [*B, {self.state_dim}], got {tuple(x.shape)}")
        self._check_like(x)
        if self.validate:
            check_finite("state", x)

    def _check_like(self, x: torch.Tensor) -> None:
        ref = self.reference_tensor()
        if x.dtype != ref.dtype:
            raise ValueError(
                f"state dtype {x.dtype} differs from the controller's {ref.dtype}; cast the state "
                f"or the controller (e.g. controller.to({x.dtype}))"
            )
        if x.device != ref.device:
            raise ValueError(f"state device {x.device} differs from the controller's {ref.device}")

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the action mean, covariance and true cross-covariance ``cov[x, u]``."""
        mean = tensordict.get(self.in_keys[0])
        cov = tensordict.get(self.in_keys[1])
        M, S, V = self.moments(mean, cov)
        C = cov @ V  # [*B, D, F]
        tensordict.set(self.out_keys[0], M)
        tensordict.set(self.out_keys[1], S)
        tensordict.set(self.out_keys[2], C)
        return tensordict

    def as_policy(
        self,
        action_dtype: torch.dtype | None = None,
        in_key: NestedKey = "observation",
        out_key: NestedKey = "action",
    ) -> PointPolicy:
        """A :class:`PointPolicy` running :meth:`act` on ``in_key``, writing ``out_key``."""
        return PointPolicy(self, action_dtype=action_dtype, in_key=in_key, out_key=out_key)


class FeatureController(MomentController):
    """A controller acting on the angle features ``z`` of the state (PILCO's ``gTrig`` input).

    Subclasses implement :meth:`feature_moments` and :meth:`feature_act` on ``z``
    ``[*B, D+k]``; this class maps states to features and chains ``V_xu = V_xz V_zu``.

    Args:
        state_dim: ``D``.
        action_dim: ``F``.
        angle_dims: the ``k`` state dimensions that are angles (seen as ``sin``, ``cos``).
        **kwargs: as :class:`MomentController`.

    Example: ``u = cos x`` for a one-dimensional angle state, i.e. the linear map
    ``w = (0, 1)`` on the features ``z = (sin x, cos x)``. For ``x ~ N(0, 1/2)``,
    ``E[u] = e^{-1/4} ≈ 0.7788`` and ``var[u] = (1 + e^{-1})/2 - e^{-1/2} ≈ 0.0774``; for
    ``x ~ N(0.3, 1/2)``, ``V = E[-sin x] = -e^{-1/4} sin 0.3 ≈ -0.2302`` (Stein's lemma).

    >>> class Cosine(FeatureController):
    ...     def __init__(self) -> None:
    ...         super().__init__(state_dim=1, action_dim=1, angle_dims=[0])
    ...         self.register_buffer("w", torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    ...     def feature_moments(self, mean_z, cov_z):
    ...         V_zu = self.w.mT.expand(*mean_z.shape[:-1], 2, 1)  # [*B, Dz, F]
    ...         return mean_z @ self.w.mT, self.w @ cov_z @ self.w.mT, V_zu
    ...     def feature_act(self, z):
    ...         return z @ self.w.mT
    >>> ctrl, S = Cosine(), torch.full((1, 1), 0.5, dtype=torch.float64)
    >>> M, S_u, _ = ctrl.moments(torch.zeros(1, dtype=torch.float64), S)
    >>> round(M.item(), 4), round(S_u.item(), 4)
    (0.7788, 0.0774)
    >>> round(ctrl.moments(torch.tensor([0.3], dtype=torch.float64), S)[2].item(), 4)
    -0.2302
    >>> ctrl.act(torch.zeros(1, dtype=torch.float64))  # cos 0
    tensor([1.], dtype=torch.float64)
    """

    def __init__(
        self, state_dim: int, action_dim: int, angle_dims: Sequence[int] = (), **kwargs
    ) -> None:
        super().__init__(state_dim, action_dim, **kwargs)
        self.angle_dims = _angle_list(angle_dims, self.state_dim)
        #: dimension of the features ``z`` the controller sees
        self.feature_dim = self.state_dim + len(self.angle_dims)

    def feature_moments(self, mean_z: torch.Tensor, cov_z: torch.Tensor) -> Moments:
        """Moments ``(M, S, V_zu)`` of the action for ``z ~ N(mean_z, cov_z)``."""
        raise NotImplementedError

    def feature_act(self, z: torch.Tensor) -> torch.Tensor:
        """Action ``[*B, F]`` at features ``z`` ``[*B, D+k]``."""
        raise NotImplementedError

    def moments(self, mean: torch.Tensor, cov: torch.Tensor) -> Moments:
        """Action moments for ``x ~ N(mean [*B, D], cov [*B, D, D])``.

        Returns ``M`` ``[*B, F]``, ``S`` ``[*B, F, F]`` and ``V = cov⁻¹ cov[x, u]``
        ``[*B, D, F]``. With angles the features are not Gaussian and the controller's moments
        are moment-matched (exact in the mean and covariance of ``z``), as in PILCO.
        """
        self.check_state(mean, cov)
        mean_z, cov_z, V_xz = gaussian_features(mean, cov, self.angle_dims)
        M, S, V_zu = self.feature_moments(mean_z, cov_z)  # [*B, F], [*B, F, F], [*B, Dz, F]
        V = V_zu if V_xz is None else V_xz @ V_zu  # [*B, D, F]
        return M, S, V

    def act(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic, differentiable action ``u = π(x)`` ``[*B, F]`` for ``x`` ``[*B, D]``."""
        self.check_point(x)
        return self.feature_act(point_features(x, self.angle_dims))


class PointPolicy(TensorDictModuleBase):
    """Run a controller's point map ``act`` on real observations (a TorchRL policy).

    Reads ``in_key`` ``[*B, D]``, casts it to the controller's dtype, and writes
    ``u = controller.act(x)`` ``[*B, F]`` under ``out_key`` in ``action_dtype`` (default: the
    observation's dtype), so a float64 controller drives a float32 environment.

    >>> from wmrl.control.linear import LinearController
    >>> from tensordict import TensorDict
    >>> pol = PointPolicy(LinearController(3, 1))
    >>> pol(TensorDict(observation=torch.zeros(2, 3), batch_size=[2]))["action"].dtype
    torch.float32
    """

    def __init__(
        self,
        controller: MomentController,
        action_dtype: torch.dtype | None = None,
        in_key: NestedKey = "observation",
        out_key: NestedKey = "action",
    ) -> None:
        super().__init__()
        self.controller = controller
        self.action_dtype = action_dtype
        self.in_keys = [in_key]
        self.out_keys = [out_key]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write ``controller.act(in_key)`` under ``out_key`` in the action dtype."""
        x = tensordict.get(self.in_keys[0])
        ref = self.controller.reference_tensor()
        u = self.controller.act(x.to(dtype=ref.dtype, device=ref.device))  # [*B, F]
        dtype = self.action_dtype if self.action_dtype is not None else x.dtype
        tensordict.set(self.out_keys[0], u.to(dtype=dtype, device=x.device))
        return tensordict


def default_dtype(dtype: torch.dtype | None) -> torch.dtype:
    """``dtype`` or the GP default (:func:`wmrl.settings.gp_dtype`).

    >>> default_dtype(None), default_dtype(torch.float32)
    (torch.float64, torch.float32)
    """
    return settings.gp_dtype() if dtype is None else dtype
