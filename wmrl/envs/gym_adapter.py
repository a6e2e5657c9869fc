"""Any TorchRL environment with a low-dimensional observation as a PILCO task (gymnasium included).

:class:`~wmrl.agents.pilco.PILCO` reads a task description from its environment: the start-state
distribution, the saturating cost, the action bounds, the episode length and control period, and a
success criterion. The built-in tasks (:mod:`wmrl.envs.tasks`) carry these; :class:`TaskAdapter`
attaches them to any other :class:`~torchrl.envs.EnvBase` whose observation is a flat vector
``[*B, D]``, as a thin :class:`~torchrl.envs.TransformedEnv` (stepping, specs and seeding are the
wrapped environment's). :func:`make_pendulum_v1` applies it to gymnasium's ``Pendulum-v1``.

gymnasium is an optional dependency: it is imported only by :func:`make_gym_env` and
:func:`make_pendulum_v1`.

The cost is PILCO's saturating cost ``c(x) = 1 - exp(-½ (z - t)ᵀ W (z - t))`` on the
angle-augmented state ``z = [x, sin x_i, cos x_i, ...]`` (Deisenroth & Rasmussen 2011, Eq. 8;
layout of :func:`wmrl.control.angle.augment_angles`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded
from torchrl.envs import EnvBase, Transform, TransformedEnv

from wmrl import settings
from wmrl.costs import ExponentialQuadraticCost
from wmrl.gaussian import check_finite, check_gaussian

__all__ = [
    "CostReward",
    "TaskAdapter",
    "make_gym_env",
    "pendulum_v1_task",
    "make_pendulum_v1",
]


class CostReward(Transform):
    """Replace the reward by ``-c(x')``, the saturating cost of the next observation.

    With it an episode's return is minus the sum of the cost PILCO minimises, so real and
    predicted costs are in the same units (Deisenroth & Rasmussen 2011, Eq. 8).

    Args:
        target: ``t`` ``[D+2k]`` on ``z = [x, sin x_i, cos x_i, ...]``.
        weights: ``W`` ``[D+2k, D+2k]``, symmetric PSD.
        angle_dims: the ``k`` observation dimensions that are angles.
        in_key: the observation entry ``[*B, D]``.

    >>> t = CostReward(torch.zeros(1), 4.0 * torch.eye(1))
    >>> t.cost(torch.tensor([[0.5]], dtype=torch.float64))  # 1 - exp(-½ · 4 · 0.25)
    tensor([0.3935], dtype=torch.float64)
    """

    def __init__(
        self,
        target: torch.Tensor,
        weights: torch.Tensor,
        angle_dims: Sequence[int] = (),
        in_key: str = "observation",
    ) -> None:
        super().__init__(in_keys=[in_key], out_keys=["reward"])
        self.cost_module = ExponentialQuadraticCost(
            target=target.to(settings.gp_dtype()),
            weights=weights.to(settings.gp_dtype()),
            reduction="none",
            angle_dims=angle_dims,
            validate=False,
        )

    def cost(self, x: torch.Tensor) -> torch.Tensor:
        """``c(x)`` ``[*B]`` of observations ``x`` ``[*B, D]`` (computed in float64)."""
        x = x.to(settings.gp_dtype())  # [*B, D]
        zero = x.new_zeros(*x.shape, x.shape[-1])  # [*B, D, D] (a point is a Gaussian of cov 0)
        return self.cost_module.cost_moments(x, zero)[0]  # [*B]

    def _step(
        self, tensordict: TensorDictBase, next_tensordict: TensorDictBase
    ) -> TensorDictBase:
        x = next_tensordict.get(self.in_keys[0])  # [*B, D]
        reward = next_tensordict.get("reward")  # [*B, 1]
        c = self.cost(x)  # [*B]
        next_tensordict.set("reward", (-c).unsqueeze(-1).to(reward.dtype))  # [*B, 1]
        return next_tensordict

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        return tensordict_reset


def _bound(value: torch.Tensor, name: str) -> torch.Tensor:
    """The per-action bound ``[F]`` of a bound ``[*B, F]`` that must not vary over the batch."""
    flat = value.reshape(-1, value.shape[-1])  # [prod(B), F]
    if not bool((flat == flat[:1]).all()):
        raise ValueError(f"the action {name} bound varies over the batch")
    bound = flat[0]  # [F]
    if not bool(torch.isfinite(bound).all()):
        raise ValueError(f"the action {name} bound must be finite, got {bound.tolist()}")
    return bound


class TaskAdapter(TransformedEnv):
    """A TorchRL environment with the task description a model-based agent reads.

    Stepping, specs, seeding and batching are those of ``env`` (``cost_reward`` aside); the
    description becomes attributes: ``start_mean`` ``[D]``, ``start_cov`` ``[D, D]`` (float64),
    ``angle_dims``, ``dt``, ``max_steps``, ``solved_steps``, ``action_low`` / ``action_high``
    ``[F]`` (from the bounded action spec) and the methods :meth:`cost_spec`, :meth:`state_cost`
    and :meth:`is_solved`. PILCO's start state is Gaussian (Deisenroth & Rasmussen 2011, Sec. 2.1);
    give the moments of the environment's start distribution when it is not.

    Args:
        env: the environment; its ``observation_key`` entry must be ``[*B, D]``, its action spec
            bounded.
        start_mean: mean of the start state ``[D]``.
        start_cov: covariance of the start state ``[D, D]`` (symmetric PSD).
        cost_target: target ``t`` ``[D+2k]`` of the saturating cost on the angle-augmented state.
        cost_weights: precision ``W`` ``[D+2k, D+2k]`` of the cost (symmetric PSD).
        dt: control period in seconds.
        max_steps: episode length in steps (the environment's own time limit).
        solved_fn: ``states [*, D] -> bool [*]``, whether a state is at the goal.
        solved_steps: an episode is solved when its last ``solved_steps`` states are at the goal.
        angle_dims: the ``k`` observation dimensions that are angles (none when the observation
            already holds their sines and cosines).
        observation_key: the observation entry the agent models.
        cost_reward: replace the environment's reward by ``-c(x')`` (:class:`CostReward`).

    Raises:
        ValueError: on shapes that disagree with the observation, a non-PSD covariance or cost
            precision, NaN/inf, an unbounded action spec or non-positive ``dt`` / step counts.

    Example (the built-in pendulum described afresh; its state is ``[θ̇, θ]``):
        >>> from wmrl.envs.tasks import PendulumSwingUp
        >>> target = torch.tensor([0.0, 0.0, 0.0, -1.0])
        >>> W = torch.diag(torch.tensor([0.0, 0.0, 4.0, 4.0]))
        >>> env = TaskAdapter(PendulumSwingUp(seed=0), start_mean=torch.zeros(2),
        ...                   start_cov=0.01 * torch.eye(2), cost_target=target, cost_weights=W,
        ...                   dt=0.1, max_steps=40, solved_fn=lambda s: s[..., 1].cos() < -0.995,
        ...                   solved_steps=10, angle_dims=(1,), cost_reward=True)
        >>> env.action_high, env.rollout(40).shape
        (tensor([2.5000]), torch.Size([40]))
        >>> c = env.state_cost(torch.tensor([[0.0, math.pi], [0.0, math.pi / 2]]))
        >>> [round(v, 5) for v in c.tolist()]  # upright; horizontal: 1 - exp(-½ · 4 · 2)
        [0.0, 0.98168]
    """

    def __init__(
        self,
        env: EnvBase,
        *,
        start_mean: torch.Tensor,
        start_cov: torch.Tensor,
        cost_target: torch.Tensor,
        cost_weights: torch.Tensor,
        dt: float,
        max_steps: int,
        solved_fn: Callable[[torch.Tensor], torch.Tensor],
        solved_steps: int,
        angle_dims: Sequence[int] = (),
        observation_key: str = "observation",
        cost_reward: bool = False,
    ) -> None:
        dtype = settings.gp_dtype()
        mean = torch.as_tensor(start_mean).to(dtype)  # [D]
        cov = torch.as_tensor(start_cov).to(dtype)  # [D, D]
        if mean.dim() != 1:
            raise ValueError(f"start_mean must be [D], got {tuple(mean.shape)}")
        D = mean.shape[0]
        check_gaussian(mean, cov, D, name="start distribution")
        obs = env.observation_spec.get(observation_key, None)
        if obs is None:
            raise ValueError(f"the environment has no observation entry {observation_key!r}")
        if obs.shape != (*env.batch_size, D):
            raise ValueError(
                f"observation {observation_key!r} has shape {tuple(obs.shape)}, expected "
                f"{(*env.batch_size, D)} (batch {tuple(env.batch_size)}, D = {D} from start_mean)"
            )
        angles = tuple(int(a) % D for a in angle_dims)
        if any(not -D <= int(a) < D for a in angle_dims) or len(set(angles)) != len(angles):
            raise ValueError(f"angle_dims {tuple(angle_dims)} invalid for a {D}-dimensional state")
        target = torch.as_tensor(cost_target).to(dtype)  # [D+2k]
        weights = torch.as_tensor(cost_weights).to(dtype)  # [D+2k, D+2k]
        Dz = D + 2 * len(angles)
        if target.shape != (Dz,) or weights.shape != (Dz, Dz):
            raise ValueError(
                f"cost_target {tuple(target.shape)} / cost_weights {tuple(weights.shape)} must be "
                f"[{Dz}] / [{Dz}, {Dz}] (D = {D} with {len(angles)} angles)"
            )
        check_finite("cost_target", target)
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive number of seconds, got {dt}")
        if not 1 <= int(solved_steps) <= int(max_steps):
            raise ValueError(
                f"need 1 <= solved_steps <= max_steps, got {solved_steps} and {max_steps}"
            )
        action = env.action_spec
        if not isinstance(action, Bounded):
            raise ValueError(f"the action spec must be bounded, got {type(action).__name__}")
        low = _bound(action.space.low, "lower")  # [F]
        high = _bound(action.space.high, "upper")  # [F]
        cost = CostReward(target, weights, angles, observation_key)  # checks W symmetric PSD
        reward = CostReward(target, weights, angles, observation_key) if cost_reward else None
        super().__init__(env, reward)
        # the tensors live in a submodule (moved by .to()); attributes of the wrapped
        # environment with the same names are shadowed by the properties below
        self._task = torch.nn.Module()
        for key, value in (("start_mean", mean), ("start_cov", cov), ("cost_target", target),
                           ("cost_weights", weights), ("action_low", low), ("action_high", high)):
            self._task.register_buffer(key, value)
        self.angle_dims = angles
        self.dt = float(dt)
        self.max_steps = int(max_steps)
        self.solved_steps = int(solved_steps)
        self.solved_fn = solved_fn
        self.observation_key = observation_key
        self._cost = cost

    @property
    def start_mean(self) -> torch.Tensor:
        """Mean of the start state ``[D]`` (float64)."""
        return self._task.start_mean

    @property
    def start_cov(self) -> torch.Tensor:
        """Covariance of the start state ``[D, D]`` (float64)."""
        return self._task.start_cov

    @property
    def action_low(self) -> torch.Tensor:
        """Lower action bound ``[F]``."""
        return self._task.action_low

    @property
    def action_high(self) -> torch.Tensor:
        """Upper action bound ``[F]``."""
        return self._task.action_high

    def cost_spec(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Target ``[D+2k]`` and precision ``[D+2k, D+2k]`` of the saturating cost (float64)."""
        return self._task.cost_target, self._task.cost_weights

    def state_cost(self, states: torch.Tensor) -> torch.Tensor:
        """The saturating cost ``c(x)`` ``[*B]`` of states ``[*B, D]`` (float64)."""
        D = self.start_mean.shape[0]
        if states.shape[-1:] != (D,):
            raise ValueError(f"states must be [*B, {D}], got {tuple(states.shape)}")
        return self._cost.cost(states)  # [*B]

    def is_solved(self, states: torch.Tensor) -> torch.Tensor:
        """Whether the last ``solved_steps`` states of each episode are all at the goal.

        Args:
            states: observations of episodes in time order ``[*, T, D]`` (for example
                ``rollout["next", "observation"]``), ``T >= solved_steps``.

        Returns:
            ``bool [*]``.
        """
        D = self.start_mean.shape[0]
        if states.dim() < 2 or states.shape[-2] < self.solved_steps or states.shape[-1] != D:
            raise ValueError(
                f"states must be [*, T, {D}] with T >= {self.solved_steps}, "
                f"got {tuple(states.shape)}"
            )
        at_goal = self.solved_fn(states[..., -self.solved_steps :, :])  # [*, solved_steps]
        return at_goal.to(torch.bool).all(dim=-1)  # [*]


def make_gym_env(
    name: str, batch_size: Sequence[int] = (), device: torch.device | str | None = None,
    **kwargs: Any,
) -> EnvBase:
    """A gymnasium environment as a TorchRL environment, one or a batch of copies in-process.

    ``batch_size=[]`` gives ``GymEnv(name)``. ``batch_size=[N]`` gives gymnasium's synchronous
    vector environment (``gymnasium.make_vec(..., vectorization_mode="sync")``, same-step
    auto-reset) wrapped by ``GymWrapper``: no worker processes, and ``set_seed(s)`` seeds copy
    ``i`` with ``s + i``, so a seeded batch is reproducible. (``GymEnv(name, num_envs=N)`` starts
    ``N`` worker processes instead.) ``kwargs`` go to ``gymnasium.make``.

    Raises:
        ImportError: when gymnasium is not installed.
        ValueError: on a batch size with more than one dimension.

    >>> env = make_gym_env("Pendulum-v1", [3])
    >>> env.batch_size, env.observation_spec["observation"].shape
    (torch.Size([3]), torch.Size([3, 3]))
    """
    try:
        import gymnasium
    except ImportError as err:
        raise ImportError("make_gym_env needs gymnasium (pip install gymnasium)") from err
    from torchrl.envs import GymEnv, GymWrapper

    batch = tuple(int(b) for b in batch_size)
    if len(batch) == 0:
        return GymEnv(name, device=device, **kwargs)
    if len(batch) != 1 or batch[0] < 1:
        raise ValueError(f"batch_size must be [] or [N] with N >= 1, got {list(batch)}")
    vec = gymnasium.make_vec(
        name,
        num_envs=batch[0],
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP},
        **kwargs,
    )
    return GymWrapper(vec, device=device)


def pendulum_v1_task(
    cost_width: float = 0.5, solved_angle: float = 0.1 * math.pi
) -> dict[str, Any]:
    """The :class:`TaskAdapter` description of gymnasium's ``Pendulum-v1`` for PILCO.

    ``Pendulum-v1`` observes ``x = [cos θ, sin θ, θ̇]`` with ``θ = 0`` upright, applies a torque in
    ``[-2, 2]`` for ``dt = 0.05`` s and truncates after 200 steps. Its start state is ``θ ~ U(-π,
    π)``, ``θ̇ ~ U(-1, 1)``, whose first two moments in ``x`` are mean ``0`` and covariance
    ``diag(½, ½, ⅓)`` (``E[cos² θ] = E[sin² θ] = ½``, ``E[cos θ sin θ] = 0``, ``var θ̇ = ⅓``): the
    Gaussian start belief. The cost is PILCO's on the pole tip of a unit-length pendulum,
    ``d² = (cos θ - 1)² + sin² θ``, i.e. target ``[1, 0, 0]`` and ``W = diag(1, 1, 0) / a²``
    (Deisenroth & Rasmussen 2011, Eq. 8; ``a = cost_width``). No angle dimensions: the
    observation already holds the sine and cosine. Solved: ``|θ| < solved_angle``
    (``cos θ > cos(solved_angle)``) over the last second (20 steps).

    Args:
        cost_width: ``a`` (the built-in pendulum task uses 0.5).
        solved_angle: largest ``|θ|`` (rad) counted as upright.

    Returns:
        keyword arguments of :class:`TaskAdapter` (all but ``env``).

    >>> task = pendulum_v1_task()
    >>> task["cost_target"].tolist(), torch.diagonal(task["cost_weights"]).tolist()
    ([1.0, 0.0, 0.0], [4.0, 4.0, 0.0])
    >>> torch.diagonal(task["start_cov"]).tolist()
    [0.5, 0.5, 0.3333333333333333]
    """
    if not cost_width > 0 or not 0 < solved_angle < math.pi:
        raise ValueError(f"need cost_width > 0 and 0 < solved_angle < π, got {cost_width}, "
                         f"{solved_angle}")
    dtype = settings.gp_dtype()
    cos_min = math.cos(solved_angle)

    def upright(states: torch.Tensor) -> torch.Tensor:
        return states[..., 0] > cos_min  # [*]

    return dict(
        start_mean=torch.zeros(3, dtype=dtype),
        start_cov=torch.diag(torch.tensor([0.5, 0.5, 1.0 / 3.0], dtype=dtype)),
        cost_target=torch.tensor([1.0, 0.0, 0.0], dtype=dtype),
        cost_weights=torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=dtype)) / cost_width**2,
        dt=0.05,
        max_steps=200,
        solved_fn=upright,
        solved_steps=20,
        angle_dims=(),
    )


def make_pendulum_v1(
    batch_size: Sequence[int] = (),
    *,
    cost_reward: bool = True,
    device: torch.device | str | None = None,
    **task: Any,
) -> TaskAdapter:
    """gymnasium's ``Pendulum-v1`` as a PILCO task (:func:`pendulum_v1_task`).

    Args:
        batch_size: ``[]`` or ``[N]`` (see :func:`make_gym_env`).
        cost_reward: report ``-c(x')`` as the reward instead of gymnasium's
            ``-(θ² + 0.1 θ̇² + 0.001 u²)``.
        device: torch device of the TensorDicts.
        **task: overrides of :func:`pendulum_v1_task` (``cost_width``, ``solved_angle``).

    The signature fits ``PILCO(config, env_fn=make_pendulum_v1)``.

    >>> env = make_pendulum_v1([2])
    >>> _ = env.set_seed(0)
    >>> td = env.rollout(200)
    >>> td.shape, bool(td["next", "truncated"][:, -1].all())
    (torch.Size([2, 200]), True)
    """
    env = make_gym_env("Pendulum-v1", batch_size, device=device)
    return TaskAdapter(env, cost_reward=cost_reward, **pendulum_v1_task(**task))
