"""TorchRL environments that step a learned world model instead of a simulator.

* :class:`ModelBasedEnvBase`: the base class. Rollouts never terminate on their own, never read a
  done flag on the host (no device synchronisation per step) and keep the autograd graph, so
  ``env.rollout(H, policy)`` *is* the imagined trajectory that policy search differentiates.
* :class:`WorldModelEnv`: any object satisfying :class:`wmrl.protocol.WorldModel`, with specs
  given explicitly or copied from a reference environment, and an optional reward model.
* :class:`ImaginedEnv`: Gaussian beliefs (GP backend): the state is ``("observation", "mean")``
  ``[*B, D]`` and ``("observation", "var")`` ``[*B, D, D]``; the policy writes the action's mean,
  covariance and state-action cross-covariance; the reward is minus the expected cost of the
  *predicted* state, so every one of the ``H`` predicted states is costed.

``DreamerEnv`` (RSSM backend) lives in :mod:`wmrl.envs.dreamer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Composite, TensorSpec, Unbounded
from torchrl.envs import EnvBase

from wmrl.protocol import GAUSSIAN_ACTION_KEYS, GAUSSIAN_STATE_KEYS, next_key

__all__ = ["ModelBasedEnvBase", "WorldModelEnv", "ImaginedEnv"]

def _as_size(batch_size: int | Sequence[int] | torch.Size | None) -> torch.Size | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, int):
        return torch.Size([batch_size])
    return torch.Size(batch_size)


def _reward_from(reward_model: Any, td: TensorDictBase) -> torch.Tensor:
    """Reward ``[*B, 1]`` from a reward model: an object with ``reward(td)`` or a callable."""
    fn = getattr(reward_model, "reward", None)
    r = fn(td) if fn is not None else reward_model(td)
    if isinstance(r, TensorDictBase):
        r = r.get("reward")
    if r.shape == td.batch_size:
        r = r.unsqueeze(-1)
    return r


class ModelBasedEnvBase(EnvBase):
    """Base class of environments whose transitions come from a learned model.

    Subclasses implement :meth:`_reset` (a start state from a TensorDict) and may override
    :meth:`_step`; the default ``_step`` calls ``world_model`` on a shallow copy of the input and
    returns the entries of the observation, reward and done specs it finds at the root of the
    result.

    Imagination never terminates: :meth:`any_done` is ``False`` without reading any tensor, so no
    device synchronisation happens per step; :meth:`rollout` defaults to
    ``break_when_any_done=False`` for the same reason.

    Args:
        world_model: the module stepped by :meth:`_step` (a ``TensorDictModule``-like callable).
        params, buffers: optional functional parameters passed to ``world_model`` (as TorchRL's).
        device: where the environment's tensors live.
        batch_size: number of imagined trajectories stepped together.
        run_type_checks: check outputs against the specs every step (slow; for debugging).

    Example: a subclass over the model ``x' = x + u``, reward ``-|x'|``, whose world model writes
    the next state and the reward at the root (what the default ``_step`` reads); it only
    declares its specs and a ``_reset``. With ``u = -1/4`` the state falls by ``1/4`` a step.

    >>> from tensordict.nn import TensorDictModule
    >>> class Drift(ModelBasedEnvBase):
    ...     def __init__(self) -> None:
    ...         step = lambda x, u: (x + u, -(x + u).abs())  # x', reward
    ...         super().__init__(TensorDictModule(step, ["x", "action"], ["x", "reward"]))
    ...         self.observation_spec = Composite(x=Unbounded((1,)))
    ...         self.action_spec = Unbounded((1,))
    ...         self.reward_spec = Unbounded((1,))
    ...     def _reset(self, tensordict=None, **kwargs):
    ...         return tensordict.select("x").update(self._done_entries(tensordict.batch_size))
    >>> env = Drift()
    >>> policy = TensorDictModule(lambda x: torch.full_like(x, -0.25), ["x"], ["action"])
    >>> start = TensorDict(x=torch.tensor([[1.0], [2.0]]), batch_size=[2])
    >>> traj = env.rollout(3, policy, tensordict=env.reset(start), auto_reset=False)
    >>> traj["next", "x"][..., 0].tolist(), traj["next", "reward"][..., 0].tolist()
    ([[0.75, 0.5, 0.25], [1.75, 1.5, 1.25]], [[-0.75, -0.5, -0.25], [-1.75, -1.5, -1.25]])
    """

    def __init__(
        self,
        world_model: Any,
        params: list[torch.Tensor] | None = None,
        buffers: list[torch.Tensor] | None = None,
        device: torch.device | str | None = "cpu",
        batch_size: int | Sequence[int] | torch.Size | None = None,
        run_type_checks: bool = False,
        allow_done_after_reset: bool = True,
    ) -> None:
        super().__init__(
            device=device,
            batch_size=_as_size(batch_size),
            run_type_checks=run_type_checks,
            allow_done_after_reset=allow_done_after_reset,
        )
        if isinstance(world_model, torch.nn.Module) and self.device is not None:
            world_model = world_model.to(self.device)
        self.world_model = world_model
        self.world_model_params = params
        self.world_model_buffers = buffers

    def __new__(cls, *args: Any, **kwargs: Any) -> ModelBasedEnvBase:
        # Not batch-locked: a model env steps any leading batch the start state carries.
        return super().__new__(cls, *args, _inplace_update=False, _batch_locked=False, **kwargs)

    # ------------------------------------------------------------------ stepping
    def _call_world_model(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self.world_model_params is not None:
            return self.world_model(
                tensordict, params=self.world_model_params, buffers=self.world_model_buffers
            )
        return self.world_model(tensordict)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        out = self._call_world_model(tensordict.copy())
        keys = (
            list(self.observation_spec.keys(True, True))
            + list(self.full_reward_spec.keys(True, True))
            + list(self.full_done_spec.keys(True, True))
        )
        return out.select(*keys, strict=False)

    def _set_seed(self, seed: int | None) -> None:
        """Model environments hold no random state of their own; stochastic models seed torch."""
        return None

    def any_done(self, tensordict: TensorDictBase) -> bool:
        """Imagined rollouts never terminate (and never synchronise the device to check)."""
        return False

    def maybe_reset(self, tensordict: TensorDictBase) -> TensorDictBase:
        """No partial resets in imagination."""
        return tensordict

    def rollout(self, max_steps: int, policy: Any = None, *args: Any, **kwargs: Any) -> Any:
        """:meth:`EnvBase.rollout` with ``break_when_any_done=False`` by default.

        The graph is kept: gradients flow from anything computed on the result into the policy
        and the model parameters.
        """
        kwargs.setdefault("break_when_any_done", False)
        return super().rollout(max_steps, policy, *args, **kwargs)

    def _done_entries(self, batch: torch.Size) -> TensorDict:
        """Every done leaf (``done``, ``terminated``, ...) set to ``False``: ``[*B, 1]``."""
        out = TensorDict({}, batch_size=batch, device=self.device)
        for key in self.full_done_spec.keys(True, True):
            shape = (*batch, *self.full_done_spec[key].shape[len(self.batch_size) :])
            out.set(key, torch.zeros(shape, dtype=torch.bool, device=self.device))
        return out


class WorldModelEnv(ModelBasedEnvBase):
    """An environment around any :class:`~wmrl.protocol.WorldModel`.

    Args:
        world_model: an object with ``state_keys``, ``forward(td)`` writing
            ``("next", *state_key)`` (and ``("next", "reward")`` when ``predicts_reward``), and
            optionally ``initial_state(td)``.
        observation_spec, action_spec, reward_spec: specs of the imagined environment (unbatched
            shapes); taken from ``base_env`` when not given.
        device: device of the environment (default: ``base_env``'s, else ``"cpu"``).
        batch_size: imagined batch (default ``[]``: the start state's batch is used as is).
        base_env: a reference environment whose action/reward specs are copied (never stepped).
        reward_model: computes the reward from the predicted next state when the world model does
            not predict one: an object with ``reward(td) -> [*B, 1]`` or a callable.

    :meth:`reset` needs a start state: a TensorDict holding the state keys, or one that
    ``world_model.initial_state`` accepts (e.g. a real observation).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Unbounded
        >>> class Linear(torch.nn.Module):  # x' = x + u, reward = -|x'|^2
        ...     state_keys, action_keys, predicts_reward = ("x",), ("action",), True
        ...     def forward(self, td):
        ...         x = td["x"] + td["action"]
        ...         td["next", "x"] = x
        ...         td["next", "reward"] = -(x**2).sum(-1, keepdim=True)
        ...         return td
        >>> env = WorldModelEnv(Linear(), observation_spec=Unbounded((2,)),
        ...                     action_spec=Unbounded((2,)), reward_spec=Unbounded((1,)),
        ...                     state_key="x")
        >>> start = TensorDict({"x": torch.ones(3, 2)}, batch_size=[3])
        >>> env.rollout(4, tensordict=start, auto_reset=False)["next", "x"].shape
        torch.Size([3, 4, 2])
    """

    def __init__(
        self,
        world_model: Any,
        observation_spec: TensorSpec | None = None,
        action_spec: TensorSpec | None = None,
        reward_spec: TensorSpec | None = None,
        device: torch.device | str | None = None,
        batch_size: int | Sequence[int] | torch.Size | None = None,
        *,
        base_env: EnvBase | None = None,
        reward_model: Any = None,
        state_key: NestedKey | None = None,
    ) -> None:
        if device is None:
            device = base_env.device if base_env is not None else "cpu"
        super().__init__(world_model, device=device, batch_size=batch_size)
        self.reward_model = reward_model
        keys = getattr(world_model, "state_keys", None)
        if keys is None:
            keys = (state_key,) if state_key is not None else ("observation",)
        self.model_state_keys: tuple[NestedKey, ...] = tuple(keys)
        if observation_spec is None and base_env is not None:
            observation_spec = base_env.observation_spec.clone()
        if action_spec is None and base_env is not None:
            action_spec = base_env.full_action_spec.clone()
        if reward_spec is None:
            reward_spec = (
                base_env.full_reward_spec.clone() if base_env is not None else Unbounded((1,))
            )
        if observation_spec is None or action_spec is None:
            raise ValueError("WorldModelEnv needs observation_spec and action_spec, or a base_env")
        self.observation_spec = self._composite(observation_spec, self.model_state_keys[0])
        self.action_spec = action_spec
        self.reward_spec = reward_spec

    def _composite(self, spec: TensorSpec, key: NestedKey) -> Composite:
        if isinstance(spec, Composite):
            return spec.to(self.device)
        return Composite({key: spec.to(self.device)}, device=self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        out = self._call_world_model(tensordict.copy())
        batch = tensordict.batch_size
        result = TensorDict({}, batch_size=batch, device=self.device)
        for key in self.model_state_keys:
            result.set(key, out.get(next_key(key)))
        if getattr(self.world_model, "predicts_reward", False) and self.reward_model is None:
            reward = out.get(("next", "reward"))
        elif self.reward_model is not None:
            reward = _reward_from(self.reward_model, result)
        else:
            raise RuntimeError("the world model predicts no reward and no reward_model was given")
        result.set("reward", reward)
        return result.update(self._done_entries(batch))

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs: Any) -> TensorDictBase:
        if tensordict is None:
            raise RuntimeError(
                f"{type(self).__name__}.reset needs a start state: pass tensordict= holding "
                f"{list(self.model_state_keys)} or an observation for world_model.initial_state"
            )
        keys = set(tensordict.keys(True, True))
        if not all(k in keys for k in self.model_state_keys):
            init = getattr(self.world_model, "initial_state", None)
            if init is None:
                raise RuntimeError(f"start state lacks {list(self.model_state_keys)}")
            tensordict = init(tensordict)
        out = tensordict.select(*self.model_state_keys).copy()
        return out.update(self._done_entries(tensordict.batch_size))


class ImaginedEnv(ModelBasedEnvBase):
    """Imagined environment over Gaussian state beliefs (GP backend, PILCO).

    The world model reads the state ``("observation", "mean")`` ``[*B, D]`` /
    ``("observation", "var")`` ``[*B, D, D]`` and the action moments written by a moment-matching
    controller, ``("action", "mean")`` ``[*B, F]``, ``("action", "var")`` ``[*B, F, F]`` and
    ``("action", "cross_covariance")`` ``[*B, D, F]`` (the true ``cov[x, u]``), and writes the
    predicted next belief under ``next_observation_key`` (``("next", "observation")``: a
    sub-TensorDict with ``mean``/``var``).

    The reward at step ``t`` is ``reward_module``'s value on the *predicted* belief ``x_{t+1}``
    (for PILCO: minus the expected saturating cost), so the ``H`` rewards of a rollout cost all
    ``H`` predicted states, and their sum is minus PILCO's objective (Deisenroth & Rasmussen 2011,
    Eq. 2). Without a reward module the reward is zero.

    Args:
        world_model_module: e.g. :class:`wmrl.gp.GPWorldModel`.
        base_env: a reference environment: its observation dimension ``D``, action dimension and
            dtype are read (it is never stepped). Alternatively give ``obs_dim``/``action_dim``.
        batch_size: number of start beliefs (default ``[]``: whatever the start belief carries).
        next_observation_key: where the model writes the next belief.
        reward_module: ``reward(td) -> [*B, 1]`` or a callable on the next belief.
        obs_dim, action_dim, dtype, device: used when ``base_env`` is not given.

    Example: a GP fitted to 12 transitions of ``x' = x + u/2``, the linear policy ``u = -x``
    (so ``x' = x/2``) and the reward ``-E[1 - exp(-x'²/2)]``, from the point ``x_0 = 1``: the
    predicted means halve, ``0.5, 0.25, 0.125``, and the rewards follow
    (``1 - e^{-1/8} ≈ 0.12``).

    >>> from wmrl.control.linear import LinearController
    >>> from wmrl.costs import ExponentialQuadraticCost
    >>> from wmrl.gp.model import GPWorldModel
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(12, 1, generator=g, dtype=torch.float64)
    >>> u = torch.randn(12, 1, generator=g, dtype=torch.float64)
    >>> data = TensorDict({"observation": x, "action": u, ("next", "observation"): x + u / 2},
    ...                   batch_size=[12])
    >>> model = GPWorldModel(1, 1, restarts=1, max_iter=30, seed=0).fit(data)
    >>> env = ImaginedEnv(model, obs_dim=1, action_dim=1,
    ...                   reward_module=ExponentialQuadraticCost(reduction="none"))
    >>> policy = LinearController(1, 1)
    >>> with torch.no_grad():
    ...     _ = policy.weight.fill_(-1.0)
    >>> start = env.reset(TensorDict({"observation": torch.ones(1, dtype=torch.float64)}, []))
    >>> traj = env.rollout(3, policy, tensordict=start, auto_reset=False)
    >>> traj["next", "observation", "mean"].flatten().detach().round(decimals=2).tolist()
    [0.5, 0.25, 0.12]
    >>> traj["next", "reward"].flatten().detach().round(decimals=2).tolist()
    [-0.12, -0.03, -0.01]
    >>> traj["next", "observation", "var"].shape
    torch.Size([3, 1, 1])
    """

    def __init__(
        self,
        world_model_module: Any,
        base_env: EnvBase | None = None,
        batch_size: int | Sequence[int] | torch.Size | None = None,
        next_observation_key: NestedKey = ("next", "observation"),
        *,
        reward_module: Any = None,
        obs_dim: int | None = None,
        action_dim: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if base_env is not None:
            obs_spec = base_env.observation_spec["observation"]
            obs_dim = obs_dim or obs_spec.shape[-1]
            action_dim = action_dim or base_env.action_spec.shape[-1]
            device = device or base_env.device
        if obs_dim is None or action_dim is None:
            raise ValueError("ImaginedEnv needs base_env or obs_dim and action_dim")
        if dtype is None:
            dtype = getattr(world_model_module, "dtype", None) or torch.get_default_dtype()
        super().__init__(world_model_module, device=device or "cpu", batch_size=batch_size)
        self.next_observation_key = next_observation_key
        self.reward_module = reward_module
        self.obs_dim, self.action_dim, self.dtype = obs_dim, action_dim, dtype
        D, F = obs_dim, action_dim
        dev = self.device

        def u(*shape: int) -> Unbounded:
            return Unbounded(shape, device=dev, dtype=dtype)

        self.observation_spec = Composite(
            observation=Composite(mean=u(D), var=u(D, D), device=dev), device=dev
        )
        self.action_spec = Composite(
            action=Composite(mean=u(F), var=u(F, F), cross_covariance=u(D, F), device=dev),
            device=dev,
        )
        self.reward_spec = Unbounded((1,), device=dev, dtype=dtype)

    #: the belief entries (see :mod:`wmrl.protocol`)
    model_state_keys: tuple[NestedKey, ...] = GAUSSIAN_STATE_KEYS
    #: the action-moment entries the policy must write
    action_moment_keys: tuple[NestedKey, ...] = GAUSSIAN_ACTION_KEYS

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        out = self._call_world_model(tensordict.copy())
        nxt = out.get(self.next_observation_key)
        batch = tensordict.batch_size
        result = TensorDict(
            {"observation": {"mean": nxt.get("mean"), "var": nxt.get("var")}},
            batch_size=batch,
            device=self.device,
        )
        if self.reward_module is not None:
            reward = _reward_from(self.reward_module, result)
        else:
            reward = torch.zeros(*batch, 1, dtype=self.dtype, device=self.device)
        result.set("reward", reward)
        return result.update(self._done_entries(batch))

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs: Any) -> TensorDictBase:
        """Start from a belief: ``("observation", "mean"/"var")`` or a point ``"observation"``.

        A point observation ``[*B, D]`` becomes a belief with zero covariance (a deterministic
        start); give ``("observation", "var")`` for a start distribution.
        """
        if tensordict is None:
            raise RuntimeError(
                "ImaginedEnv.reset needs a start belief: pass tensordict= with "
                "('observation', 'mean') and ('observation', 'var')"
            )
        obs = tensordict.get("observation", None)
        if obs is None:
            raise RuntimeError("start tensordict has no 'observation' entry")
        if isinstance(obs, torch.Tensor):
            mean = obs.to(self.dtype)
            var = torch.zeros(*mean.shape, mean.shape[-1], dtype=self.dtype, device=mean.device)
        else:
            mean, var = obs.get("mean"), obs.get("var")
        if mean.shape[-1] != self.obs_dim or var.shape[-2:] != (self.obs_dim, self.obs_dim):
            raise ValueError(
                f"start belief must have mean [*B, {self.obs_dim}] and var "
                f"[*B, {self.obs_dim}, {self.obs_dim}], got {tuple(mean.shape)}, {tuple(var.shape)}"
            )
        batch = tensordict.batch_size
        out = TensorDict(
            {"observation": {"mean": mean, "var": var}}, batch_size=batch, device=self.device
        )
        return out.update(self._done_entries(batch))
