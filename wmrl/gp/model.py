"""``GPWorldModel``: PILCO's probabilistic dynamics with exact moment matching.

One GP per state dimension ``a`` models the state change ``Δ_a = x'_a - x_a`` from the GP input
``x̃ = [z, u]``, where ``z`` are the state features (non-angle dimensions, then ``sin θ, cos θ`` of
each angle, PILCO's ``gTrig`` representation) and ``u`` the action (Deisenroth & Rasmussen 2011,
Sec. 2.1; Deisenroth, Fox & Rasmussen, TPAMI 2015, Sec. 5.1). For a Gaussian state
``x ~ N(m, S)`` and an action jointly Gaussian with it, a step is (D&R 2011, Eqs. 10-12)

.. math::
    m' = m + M_\\Delta, \\qquad
    S' = S + S_\\Delta + C + C^\\top, \\qquad C = \\mathrm{cov}[x, \\Delta]
       = \\mathrm{cov}[x, \\tilde x]\\, V_{\\tilde x \\Delta},

with ``M_Δ``, ``S_Δ`` and ``V = Σ̃⁻¹ cov[x̃, Δ]`` from
:func:`~wmrl.gp.moment_matching.gp_moment_match` on the Gaussian moment match of ``x̃``. Above
``sparse_threshold`` transitions the GP is a FITC sparse GP (:mod:`wmrl.gp.sparse`).

Differences from ``torchrl.modules.models.gp.GPWorldModel`` (same constructor arguments and keys):
``("action", "cross_covariance")`` holds the true ``cov[x, u]``; the integrated GP is the fitted
one (zero mean, hyper-parameters in the units of the data); zero input covariance takes the same
differentiable path; float64 by default; ``state_dict`` loads into a fresh instance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey

from wmrl import settings
from wmrl.control.base import gaussian_features, point_features
from wmrl.gaussian import check_finite, check_gaussian, symmetrize
from wmrl.gp.fit import FitResult, GPHyperparameters, fit_hyperparameters, posterior_weights
from wmrl.gp.moment_matching import gp_moment_match, gp_predict
from wmrl.gp.sparse import fit_inducing_inputs, fitc_posterior
from wmrl.protocol import GAUSSIAN_ACTION_KEYS, GAUSSIAN_STATE_KEYS

__all__ = ["GPWorldModel"]

_SIZED_BUFFERS = ("inputs", "beta", "inv_gram")


class GPWorldModel(TensorDictModuleBase):
    """Gaussian-process world model with moment-matching propagation of Gaussian beliefs.

    Args:
        obs_dim: state dimension ``D`` (one GP per dimension).
        action_dim: action dimension ``F``.
        in_keys: action mean ``[*B, F]``, action covariance ``[*B, F, F]``, state-action
            cross-covariance ``cov[x, u]`` ``[*B, D, F]`` (true covariance), state mean
            ``[*B, D]`` and state covariance ``[*B, D, D]``. Defaults as TorchRL's.
        out_keys: next-state mean and covariance.
        angle_dims: state dimensions that are angles; the GPs see ``sin``/``cos`` of them.
        dtype: of the GP (default :func:`wmrl.settings.gp_dtype`, float64).
        device: of the GP.
        sparse_threshold: use FITC when the data has more transitions (``None``: never).
        num_inducing: FITC inducing inputs per output.
        restarts: random restarts of the hyper-parameter optimisation.
        max_iter: L-BFGS iterations per phase of the hyper-parameter optimisation.
        inducing_iter: L-BFGS iterations of the inducing-input optimisation.
        snr_max: curb on each GP's signal-to-noise ratio ``α/σ`` (PILCO's ``hypCurb``).
        ls_max: curb on length-scales relative to the input spread.
        propagate_noise: add the fitted noise variance to predictions (default ``False``: the
            latent ``f``, as PILCO's ``gp0``).
        validate_args: check inputs of :meth:`forward` (shapes, dtypes, devices, NaN/inf, PSD).
        seed: seed of the random restarts, subsets and inducing inputs (``None``: torch's RNG).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(30, 2, generator=g, dtype=torch.float64)
        >>> u = torch.randn(30, 1, generator=g, dtype=torch.float64)
        >>> data = TensorDict({"observation": x, "action": u,
        ...                    ("next", "observation"): x + 0.1 * torch.sin(u)}, [30])
        >>> model = GPWorldModel(2, 1, restarts=1, seed=0).fit(data)
        >>> td = model.initial_state(TensorDict({"observation": x[:4]}, [4]))
        >>> td["action"] = TensorDict({"mean": u[:4], "var": torch.zeros(4, 1, 1).double(),
        ...                            "cross_covariance": torch.zeros(4, 2, 1).double()}, [4])
        >>> model(td)["next", "observation", "var"].shape
        torch.Size([4, 2, 2])
    """

    #: this model does not learn rewards
    predicts_reward: bool = False

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        in_keys: Sequence[NestedKey] | None = None,
        out_keys: Sequence[NestedKey] | None = None,
        *,
        angle_dims: Sequence[int] = (),
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        sparse_threshold: int | None = 400,
        num_inducing: int = 300,
        restarts: int = 3,
        max_iter: int = 100,
        inducing_iter: int = 20,
        snr_max: float = 500.0,
        ls_max: float = 100.0,
        propagate_noise: bool = False,
        validate_args: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if obs_dim < 1 or action_dim < 1:
            raise ValueError(f"obs_dim, action_dim must be >= 1, got {obs_dim}, {action_dim}")
        in_keys = list(in_keys) if in_keys is not None else [
            *GAUSSIAN_ACTION_KEYS, *GAUSSIAN_STATE_KEYS
        ]
        out_keys = list(out_keys) if out_keys is not None else [
            ("next", "observation", "mean"), ("next", "observation", "var")
        ]
        if len(in_keys) != 5 or len(out_keys) != 2:
            raise ValueError(
                "in_keys must be (action mean, action var, cross covariance, obs mean, obs var) "
                f"and out_keys (next mean, next var); got {in_keys} and {out_keys}"
            )
        if restarts < 1 or num_inducing < 1:
            raise ValueError(f"restarts and num_inducing must be >= 1, got {restarts}, "
                             f"{num_inducing}")
        D, F = int(obs_dim), int(action_dim)
        dims = tuple(int(a) for a in angle_dims)
        if any(not -D <= a < D for a in dims) or len({a % D for a in dims}) != len(dims):
            raise ValueError(
                f"angle_dims {list(dims)} must be distinct dimensions of a {D}-dimensional state"
            )
        self.in_keys = in_keys
        self.out_keys = out_keys
        self.obs_dim, self.action_dim = D, F
        self.angle_dims = tuple(a % D for a in dims)
        #: dimension of the GP input ``x̃ = [z, u]``
        self.input_dim = D + len(dims) + F
        self.sparse_threshold = sparse_threshold
        self.num_inducing = int(num_inducing)
        self.restarts, self.max_iter, self.inducing_iter = int(restarts), int(max_iter), \
            int(inducing_iter)
        self.snr_max, self.ls_max = float(snr_max), float(ls_max)
        self.propagate_noise = bool(propagate_noise)
        self.validate_args = bool(validate_args)
        self.seed = seed
        #: the outcome of the last :meth:`fit` (not part of ``state_dict``)
        self.fit_result: FitResult | None = None
        #: whether the last :meth:`fit` built a FITC sparse GP (its inputs are inducing inputs)
        self.is_sparse = False
        dt = dtype if dtype is not None else settings.gp_dtype()
        E, Din = D, self.input_dim
        kw: dict[str, Any] = {"dtype": dt, "device": device}
        self.register_buffer("inputs", torch.zeros(E, 0, Din, **kw))
        self.register_buffer("beta", torch.zeros(E, 0, **kw))
        self.register_buffer("inv_gram", torch.zeros(E, 0, 0, **kw))
        self.register_buffer("lengthscales", torch.ones(E, Din, **kw))
        self.register_buffer("signal_var", torch.ones(E, **kw))
        self.register_buffer("noise_var", torch.ones(E, **kw))

    # ------------------------------------------------------------------ protocol attributes
    @property
    def state_keys(self) -> tuple[NestedKey, NestedKey]:
        """State mean and covariance keys."""
        return (self.in_keys[3], self.in_keys[4])

    @property
    def action_keys(self) -> tuple[NestedKey, NestedKey, NestedKey]:
        """Action mean, covariance and true cross-covariance keys."""
        return (self.in_keys[0], self.in_keys[1], self.in_keys[2])

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the GP's buffers (inputs must match it).

        >>> GPWorldModel(2, 1).dtype
        torch.float64
        """
        return self.lengthscales.dtype

    @property
    def device(self) -> torch.device:
        """Device of the GP's buffers.

        >>> GPWorldModel(2, 1).device
        device(type='cpu')
        """
        return self.lengthscales.device

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or a loaded ``state_dict``) has set the GP."""
        return self.inputs.shape[1] > 0

    @property
    def hyperparameters(self) -> GPHyperparameters:
        """Length-scales ``[D, Din]``, signal and noise variances ``[D]`` (units of the data)."""
        return GPHyperparameters(self.lengthscales, self.signal_var, self.noise_var)

    def extra_repr(self) -> str:
        """Sizes, angle dimensions, number of GP inputs and dtype, for ``repr``."""
        return (f"obs_dim={self.obs_dim}, action_dim={self.action_dim}, "
                f"angle_dims={self.angle_dims}, n={self.inputs.shape[1]}, dtype={self.dtype}")

    # ------------------------------------------------------------------ fitting
    def gp_inputs(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """GP input ``x̃ = [z(x), u]`` ``[*B, Din]`` of states ``[*B, D]``, actions ``[*B, F]``."""
        return torch.cat([point_features(observation, self.angle_dims), action], dim=-1)

    def fit(self, dataset: TensorDictBase, **kwargs: Any) -> GPWorldModel:
        """Fit one GP per state dimension to transitions (D&R 2011, Sec. 2.1; FITC above
        ``sparse_threshold``).

        Args:
            dataset: ``"observation"`` ``[*N, D]``, ``"action"`` ``[*N, F]`` and
                ``("next", "observation")`` ``[*N, D]`` with any batch dimensions ``*N``
                (flattened), cast to the model's dtype and device.
            **kwargs: override ``restarts``, ``max_iter``, ``inducing_iter`` for this call.

        Returns:
            ``self``; :attr:`fit_result` holds the likelihoods.
        """
        x, u, x_next = self._dataset_tensors(dataset)
        X = self.gp_inputs(x, u)  # [N, Din]
        Y = x_next - x  # [N, D]
        N = X.shape[0]
        gen = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        restarts = int(kwargs.pop("restarts", self.restarts))
        max_iter = int(kwargs.pop("max_iter", self.max_iter))
        inducing_iter = int(kwargs.pop("inducing_iter", self.inducing_iter))
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        init = self.hyperparameters if self.fitted else None
        opts = dict(restarts=restarts, max_iter=max_iter, ls_max=self.ls_max,
                    snr_max=self.snr_max, init=init, generator=gen)
        sparse = self.sparse_threshold is not None and N > self.sparse_threshold
        if sparse:
            sub = torch.randperm(N, generator=gen)[: self.sparse_threshold].to(X.device)  # [n]
            result = fit_hyperparameters(X[sub], Y[sub], **opts)
            hyp = result.hyperparameters
            Z = fit_inducing_inputs(X, Y, hyp, min(self.num_inducing, N),
                                    max_iter=inducing_iter, generator=gen)  # [D, m, Din]
            beta, inv_gram = fitc_posterior(X, Y, Z, hyp)
        else:
            result = fit_hyperparameters(X, Y, **opts)
            hyp = result.hyperparameters
            beta, inv_gram = posterior_weights(X, Y, hyp)
            Z = X.expand(self.obs_dim, N, self.input_dim).clone()  # [D, N, Din]
        self.is_sparse = sparse
        self.fit_result = result
        self.inputs, self.beta, self.inv_gram = Z, beta, inv_gram
        self.lengthscales = hyp.lengthscales.clone()
        self.signal_var = hyp.signal_var.clone()
        self.noise_var = hyp.noise_var.clone()
        return self

    def _dataset_tensors(self, dataset: TensorDictBase
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        D, F = self.obs_dim, self.action_dim
        got = {}
        for key, dim in (("observation", D), ("action", F), (("next", "observation"), D)):
            t = dataset.get(key, None)
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"dataset needs a tensor {key!r} of shape [*N, {dim}]")
            if t.dim() < 2 or t.shape[-1] != dim:
                raise ValueError(f"dataset {key!r} must have shape [*N, {dim}], "
                                 f"got {tuple(t.shape)}")
            if not t.is_floating_point():
                raise ValueError(f"dataset {key!r} must be floating point, got {t.dtype}")
            got[key] = t
        x, u, xn = got["observation"], got["action"], got[("next", "observation")]
        if not (x.shape[:-1] == u.shape[:-1] == xn.shape[:-1]):
            raise ValueError(
                f"dataset entries disagree in batch shape: observation {tuple(x.shape)}, "
                f"action {tuple(u.shape)}, next observation {tuple(xn.shape)}"
            )
        if len({x.dtype, u.dtype, xn.dtype}) > 1 or len({x.device, u.device, xn.device}) > 1:
            raise ValueError("dataset entries must share one dtype and one device")
        x, u, xn = (t.reshape(-1, t.shape[-1]).to(self.dtype).to(self.device)
                    for t in (x, u, xn))
        for name, t in (("observation", x), ("action", u), ("next observation", xn)):
            check_finite(f"dataset {name}", t)
        if x.shape[0] < 2:
            raise ValueError(f"need at least two transitions to fit, got {x.shape[0]}")
        return x, u, xn

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # the sizes of the fitted buffers depend on the data: take them from the state dict
        for name in _SIZED_BUFFERS:
            t = state_dict.get(prefix + name)
            if isinstance(t, torch.Tensor) and t.dim() == self._buffers[name].dim():
                self._buffers[name] = torch.empty(t.shape, dtype=self.dtype, device=self.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ prediction
    def _require_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(dataset) first")

    def _check_like(self, name: str, t: torch.Tensor) -> None:
        if t.dtype != self.dtype:
            raise ValueError(f"{name} has dtype {t.dtype}, the model {self.dtype}: cast one of "
                             f"them (model.to({t.dtype}) or tensor.to({self.dtype}))")
        if t.device != self.device:
            raise ValueError(f"{name} is on {t.device}, the model on {self.device}")

    def _gp(self) -> tuple[torch.Tensor, ...]:
        return self.inputs, self.beta, self.lengthscales, self.signal_var, self.inv_gram

    def predict(self, observation: torch.Tensor, action: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Point prediction: next-state mean ``x + m(x̃)`` ``[*B, D]`` and variance of ``Δ``
        ``[*B, D]`` (latent, plus the noise with ``propagate_noise``); differentiable
        (Rasmussen & Williams 2006, Eqs. 2.25-2.26).

        Args:
            observation: ``[*B, D]``.
            action: ``[*B, F]``.
        """
        self._require_fitted()
        if observation.shape[-1:] != (self.obs_dim,) or action.shape[-1:] != (self.action_dim,) \
                or observation.shape[:-1] != action.shape[:-1]:
            raise ValueError(f"observation [*B, {self.obs_dim}] and action [*B, "
                             f"{self.action_dim}] expected, got {tuple(observation.shape)} and "
                             f"{tuple(action.shape)}")
        for name, t in (("observation", observation), ("action", action)):
            self._check_like(name, t)
            check_finite(name, t)
        mean, var = gp_predict(self.gp_inputs(observation, action), *self._gp(), validate=False)
        if self.propagate_noise:
            var = var + self.noise_var
        return observation + mean, var

    def moment_match(self, mean: torch.Tensor, cov: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Moments of ``Δ`` for a Gaussian GP input ``x̃ ~ N(mean [*B, Din], cov [*B, Din, Din])``.

        Returns:
            ``M`` ``[*B, D]``, ``S`` ``[*B, D, D]`` (latent; plus the noise with
            ``propagate_noise``) and the true ``C = cov[x̃, Δ]`` ``[*B, Din, D]``
            (D&R 2011, Eqs. 14-23).
        """
        self._require_fitted()
        if self.validate_args:
            check_gaussian(mean, cov, self.input_dim, name="GP input")
            self._check_like("GP input", mean)
        M, S, V = gp_moment_match(mean, cov, *self._gp(), validate=False)
        if self.propagate_noise:
            S = S + torch.diag_embed(self.noise_var.expand_as(M))  # [*B, D, D]
        return M, S, cov @ V

    def propagate(
        self,
        state_mean: torch.Tensor,
        state_cov: torch.Tensor,
        action_mean: torch.Tensor,
        action_cov: torch.Tensor,
        cross_cov: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of a Gaussian belief (D&R 2011, Eqs. 10-12).

        Args:
            state_mean: ``m`` ``[*B, D]``.
            state_cov: ``S`` ``[*B, D, D]``.
            action_mean: ``[*B, F]``.
            action_cov: ``[*B, F, F]``.
            cross_cov: true ``cov[x, u]`` ``[*B, D, F]``.

        Returns:
            next-state mean ``[*B, D]`` and covariance ``[*B, D, D]``.
        """
        self._require_fitted()
        m, S, mu, Su, Cxu = state_mean, state_cov, action_mean, action_cov, cross_cov
        if self.validate_args:
            self._validate_belief(m, S, mu, Su, Cxu)
        mz, Sz, Vxz = gaussian_features(m, S, self.angle_dims)  # [*B, Dz], [*B, Dz, Dz], ..
        if Vxz is None:
            Cxz, Czu = S, Cxu  # [*B, D, D], [*B, D, F]
        else:
            Cxz = S @ Vxz  # cov[x, z]  [*B, D, Dz]
            Czu = Vxz.transpose(-1, -2) @ Cxu  # cov[z, u]  [*B, Dz, F]
        mean_in = torch.cat([mz, mu], dim=-1)  # [*B, Din]
        cov_in = torch.cat([
            torch.cat([Sz, Czu], dim=-1),
            torch.cat([Czu.transpose(-1, -2), Su], dim=-1),
        ], dim=-2)  # [*B, Din, Din]
        cov_in = symmetrize(cov_in)  # [*B, Din, Din]
        M, SD, V = gp_moment_match(mean_in, cov_in, *self._gp(), validate=False)
        C = torch.cat([Cxz, Cxu], dim=-1) @ V  # cov[x, Δ] = cov[x, x̃] V  [*B, D, D]
        cov_next = S + SD + C + C.transpose(-1, -2)  # Eq. 11  [*B, D, D]
        if self.propagate_noise:
            cov_next = cov_next + torch.diag_embed(self.noise_var.expand_as(M))  # [*B, D, D]
        return m + M, symmetrize(cov_next)

    def _validate_belief(self, m: torch.Tensor, S: torch.Tensor, mu: torch.Tensor,
                         Su: torch.Tensor, Cxu: torch.Tensor) -> None:
        D, F = self.obs_dim, self.action_dim
        check_gaussian(m, S, D, check_psd=False, name="state")
        check_gaussian(mu, Su, F, check_psd=False, name="action")
        if mu.shape[:-1] != m.shape[:-1]:
            raise ValueError(f"action batch shape {tuple(mu.shape[:-1])} differs from the "
                             f"state's {tuple(m.shape[:-1])}")
        if Cxu.shape != (*m.shape[:-1], D, F):
            raise ValueError(f"cross covariance must have shape {(*m.shape[:-1], D, F)}, got "
                             f"{tuple(Cxu.shape)}")
        for name, t in (("state", m), ("action", mu), ("cross covariance", Cxu)):
            self._check_like(name, t)
        check_finite("cross covariance", Cxu)
        # one PSD check of the joint state-action covariance (it covers S and Su)
        joint = torch.cat([torch.cat([S, Cxu], -1), torch.cat([Cxu.transpose(-1, -2), Su], -1)],
                          -2)  # [*B, D+F, D+F]
        check_gaussian(torch.cat([m, mu], -1), joint, name="joint state-action")

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Read the state belief and action moments (``in_keys``), write the next belief
        (``out_keys``)."""
        a_mean, a_var, a_cross, x_mean, x_var = (tensordict.get(k) for k in self.in_keys)
        mean, cov = self.propagate(x_mean, x_var, a_mean, a_var, a_cross)
        tensordict.set(self.out_keys[0], mean)
        tensordict.set(self.out_keys[1], cov)
        return tensordict

    def initial_state(self, observation: TensorDictBase, cov: torch.Tensor | None = None
                      ) -> TensorDictBase:
        """A belief TensorDict from a real observation.

        If ``observation`` already holds the state keys they are passed through (cast to the
        model's dtype/device). Otherwise ``"observation"`` ``[*B, D]`` becomes the mean and
        ``cov`` (``[D, D]`` or ``[*B, D, D]``, default zero) the covariance.
        """
        mean_key, var_key = self.state_keys
        try:
            mean, var = observation.get(mean_key), observation.get(var_key)
        except (KeyError, AttributeError, TypeError, ValueError):
            mean = var = None
        if not (isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor)):
            mean = observation.get("observation")
            if not isinstance(mean, torch.Tensor) or mean.shape[-1:] != (self.obs_dim,):
                raise ValueError(f"initial_state needs {mean_key!r}/{var_key!r} or an "
                                 f"'observation' of shape [*B, {self.obs_dim}]")
            mean = mean.to(self.dtype).to(self.device)
            var = mean.new_zeros(self.obs_dim, self.obs_dim) if cov is None else \
                cov.to(self.dtype).to(self.device)
            var = var.expand(*mean.shape, self.obs_dim).clone()
        mean, var = mean.to(self.dtype).to(self.device), var.to(self.dtype).to(self.device)
        check_gaussian(mean, var, self.obs_dim, check_psd=self.validate_args, name="state")
        return TensorDict({mean_key: mean, var_key: var}, batch_size=mean.shape[:-1],
                          device=observation.device)
