"""Shared machinery of the built-in swing-up tasks: a batched, torch-native TorchRL environment.

A task is a deterministic ODE ``ds/dt = f(s, u)`` stepped with RK4 under a zero-order-hold action
(:func:`~wmrl.envs.tasks.integrate.rk4_step`), a saturating cost on the distance between the pole
tip and its upright target, noisy observations of the state and optional 64x64 frames from
:mod:`~wmrl.envs.tasks.render`. This is the setting of PILCO's swing-up experiments (Deisenroth &
Rasmussen 2011, Sec. 5; Deisenroth, Fox & Rasmussen 2015, Sec. 6).

TensorDict entries (``*B`` is the environment's ``batch_size``; ``D`` the state size):

=====================  =====================  ==================================================
key                    shape, dtype           content
=====================  =====================  ==================================================
``"observation"``      ``[*B, D]``            state + N(0, observation_noise_std²) noise
                                              (absent with ``pixels_only=True``)
``"pixels"``           ``[*B, H, W, 3]`` u8   frame of the noise-free state (``from_pixels``)
``"true_state"``       ``[*B, D]``            the noise-free state the dynamics step
``"elapsed_steps"``    ``[*B, 1]`` int64      steps since the last reset
``"action"``           ``[*B, 1]``            force/torque, clipped to ``[action_low, high]``
``"reward"``           ``[*B, 1]``            ``-cost`` of the next noise-free state
``"done"``             ``[*B, 1]`` bool       equals ``"truncated"``
``"truncated"``        ``[*B, 1]`` bool       ``elapsed_steps >= max_steps``
``"terminated"``       ``[*B, 1]`` bool       always ``False`` (the tasks never end early)
=====================  =====================  ==================================================

The state lives in the TensorDict (the environment is stateless, like TorchRL's
``PendulumEnv``), so partial resets work, and ``reset(td, set_state=True)`` starts a new
episode (``elapsed_steps = 0``) from ``td["true_state"]``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from wmrl.envs.tasks.integrate import rk4_step
from wmrl.envs.tasks.render import Camera, blank_canvas, to_uint8
from wmrl.gaussian import check_finite

__all__ = ["TaskInfo", "SwingUpTask"]


@dataclass(frozen=True)
class TaskInfo:
    """What a model-based agent needs about a task beyond its TorchRL specs.

    Every field is also a plain attribute of the environment (``env.start_mean``, ...).

    Attributes:
        state_names: names of the ``D`` state dimensions.
        start_mean: mean of the start-state distribution ``[D]``.
        start_cov: covariance of the start-state distribution ``[D, D]``.
        angle_dims: state dimensions that are angles (to be augmented with sin/cos, see
            :func:`wmrl.control.angle.augment_angles`).
        dt: control period in seconds (each action is held this long).
        max_steps: episode length in steps; the environment truncates after it.
        action_low: lower action bound ``[F]``.
        action_high: upper action bound ``[F]``.
        observation_noise_std: standard deviation of the Gaussian measurement noise.
        cost_width: width ``a`` of the saturating cost ``1 - exp(-d² / (2 a²))``.
        solved_radius: tip-to-target distance (m) below which a state counts as at the target.
        solved_steps: the last ``solved_steps`` states of an episode must all be at the target.

    >>> from wmrl.envs.tasks import PendulumSwingUp
    >>> info = PendulumSwingUp().task_info
    >>> info.state_names, info.angle_dims, info.dt, info.max_steps, info.action_high.tolist()
    (('theta_dot', 'theta'), (1,), 0.1, 40, [2.5])
    >>> torch.allclose(info.start_cov, 0.1**2 * torch.eye(2)), info.solved_steps  # the last 1 s
    (True, 10)
    """

    state_names: tuple[str, ...]
    start_mean: torch.Tensor
    start_cov: torch.Tensor
    angle_dims: tuple[int, ...]
    dt: float
    max_steps: int
    action_low: torch.Tensor
    action_high: torch.Tensor
    observation_noise_std: float
    cost_width: float
    solved_radius: float
    solved_steps: int


class SwingUpTask(EnvBase, abc.ABC):
    """Base class of the swing-up tasks: specs, RK4 stepping, noise, truncation, seeding, pixels.

    Subclasses set the class attributes ``state_names``, ``angle_dims``, ``action_bound``,
    ``cost_width``, ``camera`` and implement :meth:`dynamics`, :meth:`tip_position`,
    :meth:`cost_spec` and :meth:`_draw`; the tip's upright target is ``tip_target``.

    Args:
        batch_size: number of independent systems stepped together (``[]`` for one).
        device: torch device of every tensor (default CPU).
        dtype: floating dtype of states, actions and rewards (float32 or float64).
        from_pixels: add ``"pixels"`` frames ``uint8 [*B, H, W, 3]``.
        pixels_only: with ``from_pixels``, drop ``"observation"``.
        max_steps: episode length before ``truncated``.
        dt: control period (s).
        substeps: RK4 steps per control period.
        observation_noise_std: measurement-noise standard deviation.
        start_std: standard deviation of each start-state dimension (mean 0).
        uniform_start_angles: draw the angle dimensions of the start state uniformly from
            ``[-π, π)`` instead (the others stay ``N(start_mean, start_cov)``), as dm_control's
            pendulum swing-up starts its episodes: exploring starts for an agent's training
            episodes. ``True`` (or ``1.0``) for every episode; a number ``p`` in ``[0, 1]`` for
            a mixture, each episode uniform with probability ``p`` and from the task's own
            start otherwise. ``start_mean``/``start_cov`` still describe the task's own start.
        seed: seed of the environment's generator (drawn from torch's global RNG if ``None``).
        run_type_checks: let TorchRL validate every step against the specs (slow).

    Example: a minimal task, a unit pendulum ``θ̈ = u - g sin θ`` with state ``[θ̇, θ]`` (it
    draws nothing but the background); the base class provides the rest.

    >>> class UnitPendulum(SwingUpTask):
    ...     state_names, angle_dims = ("theta_dot", "theta"), (1,)
    ...     action_bound, cost_width = 2.0, 0.5
    ...     def dynamics(self, state, action):  # [*B, 2], [*B, 1] -> [*B, 2]
    ...         return torch.stack([action[..., 0] - 9.81 * state[..., 1].sin(), state[..., 0]], -1)
    ...     def tip_position(self, state):  # [*B, 2] -> [*B, 2]
    ...         return torch.stack([state[..., 1].sin(), -state[..., 1].cos()], -1)
    ...     def cost_spec(self):  # cost on z = [θ̇, θ, sin θ, cos θ]: d² = sin² θ + (cos θ + 1)²
    ...         C = torch.tensor([[0.0, 0, 1, 0], [0, 0, 0, 1]], dtype=self.dtype)  # [2, 4]
    ...         return torch.tensor([0.0, 0, 0, -1], dtype=self.dtype), C.T @ C / 0.5**2
    ...     def _draw(self, state, canvas, px, py):
    ...         return canvas
    >>> env = UnitPendulum(batch_size=[3], max_steps=20, seed=0)
    >>> td = env.rollout(100)  # truncated after max_steps
    >>> td["next", "observation"].shape, td["next", "reward"].shape, env.is_solved(
    ...     td["next", "true_state"]).tolist()
    (torch.Size([3, 20, 2]), torch.Size([3, 20, 1]), [False, False, False])
    >>> upright = torch.tensor([[0.0, torch.pi]]).expand(3, 2)  # start at the target
    >>> start = env.reset(TensorDict({"true_state": upright}, [3]), set_state=True)
    >>> bool(env.cost(start["true_state"]).abs().max() < 1e-6)
    True
    """

    _supports_set_state = True  # reset(td, set_state=True) starts from td["true_state"]
    state_names: tuple[str, ...] = ()
    angle_dims: tuple[int, ...] = ()
    action_bound: float = 1.0
    cost_width: float = 1.0
    tip_target: tuple[float, float] = (0.0, 1.0)
    camera: Camera = Camera()
    solved_radius: float = 0.1
    background_colour: tuple[float, float, float] = (0.96, 0.96, 0.94)

    def __init__(
        self,
        *,
        batch_size: Sequence[int] | torch.Size = (),
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        from_pixels: bool = False,
        pixels_only: bool = False,
        max_steps: int = 40,
        dt: float = 0.1,
        substeps: int = 10,
        observation_noise_std: float = 0.01,
        start_std: float = 0.1,
        uniform_start_angles: bool | float = False,
        seed: int | None = None,
        run_type_checks: bool = False,
    ) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if pixels_only and not from_pixels:
            raise ValueError("pixels_only=True needs from_pixels=True")
        if max_steps < 1 or substeps < 1:
            raise ValueError(f"max_steps and substeps must be >= 1, got {max_steps}, {substeps}")
        if not (dt > 0 and observation_noise_std >= 0 and start_std >= 0):
            raise ValueError("dt must be > 0, observation_noise_std and start_std >= 0")
        if not 0.0 <= float(uniform_start_angles) <= 1.0:
            raise ValueError("uniform_start_angles must be a bool or a probability in [0, 1], "
                             f"got {uniform_start_angles}")  # fmt: skip
        device = torch.device("cpu") if device is None else torch.device(device)
        super().__init__(device=device, batch_size=torch.Size(batch_size),
                         run_type_checks=run_type_checks)
        self.dtype = dtype
        self.from_pixels = from_pixels
        self.pixels_only = pixels_only
        self.max_steps = int(max_steps)
        self.dt = float(dt)
        self.substeps = int(substeps)
        self.observation_noise_std = float(observation_noise_std)
        self.uniform_start_angles = float(uniform_start_angles)  # probability per episode
        self.solved_steps = max(1, round(1.0 / self.dt))  # the last second of the episode
        D = len(self.state_names)
        kw = {"dtype": dtype, "device": self.device}
        self.register_buffer("start_mean", torch.zeros(D, **kw))
        self.register_buffer("start_cov", torch.eye(D, **kw) * start_std**2)
        self.register_buffer("action_low", torch.full((1,), -self.action_bound, **kw))
        self.register_buffer("action_high", torch.full((1,), self.action_bound, **kw))
        self._backgrounds: dict[torch.device, torch.Tensor] = {}
        self._make_specs()
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.set_seed(seed)

    # ------------------------------------------------------------------ task description
    @property
    def task_info(self) -> TaskInfo:
        """The task's constants as a :class:`TaskInfo`."""
        return TaskInfo(
            state_names=tuple(self.state_names),
            start_mean=self.start_mean,
            start_cov=self.start_cov,
            angle_dims=tuple(self.angle_dims),
            dt=self.dt,
            max_steps=self.max_steps,
            action_low=self.action_low,
            action_high=self.action_high,
            observation_noise_std=self.observation_noise_std,
            cost_width=self.cost_width,
            solved_radius=self.solved_radius,
            solved_steps=self.solved_steps,
        )

    @abc.abstractmethod
    def dynamics(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Time derivative of the state, ``[*B, D], [*B, 1] -> [*B, D]``."""

    @abc.abstractmethod
    def tip_position(self, state: torch.Tensor) -> torch.Tensor:
        """World position of the pole tip, ``[*B, D] -> [*B, 2]``."""

    @abc.abstractmethod
    def cost_spec(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Target ``[D+2k]`` and weights ``[D+2k, D+2k]`` of the cost on ``[x, sin θ, cos θ]``."""

    @abc.abstractmethod
    def _draw(self, state: torch.Tensor, canvas: torch.Tensor, px: torch.Tensor,
              py: torch.Tensor) -> torch.Tensor:
        """Paint the moving parts of ``state`` ``[*B, D]`` (float32) over ``canvas``."""

    def _draw_static(
        self, canvas: torch.Tensor, px: torch.Tensor, py: torch.Tensor
    ) -> torch.Tensor:
        """Paint the parts that never move (track, target) over a ``[H, W, 3]`` canvas."""
        return canvas

    # ------------------------------------------------------------------ cost and success
    def tip_distance(self, state: torch.Tensor) -> torch.Tensor:
        """Distance between the pole tip and its upright target, ``[*B, D] -> [*B]``."""
        tip = self.tip_position(state)  # [*B, 2]
        return torch.hypot(tip[..., 0] - self.tip_target[0], tip[..., 1] - self.tip_target[1])

    def cost(self, state: torch.Tensor) -> torch.Tensor:
        """Saturating cost ``1 - exp(-d² / (2 a²))`` of noise-free states, ``[*B, D] -> [*B]``.

        (Deisenroth & Rasmussen 2011, Eq. 8 with ``d`` the tip-to-target distance.)
        """
        tip = self.tip_position(state)  # [*B, 2]
        d2 = (tip[..., 0] - self.tip_target[0]) ** 2 + (tip[..., 1] - self.tip_target[1]) ** 2
        return 1.0 - torch.exp(-0.5 * d2 / self.cost_width**2)  # [*B]

    def is_solved(self, states: torch.Tensor) -> torch.Tensor:
        """Whether the tip stayed within ``solved_radius`` of its target for the last second.

        Args:
            states: noise-free states of episodes in time order ``[*, T, D]`` (for example
                ``rollout["next", "true_state"]``); the last ``solved_steps`` are judged.

        Returns:
            ``bool [*]``.
        """
        if states.dim() < 2 or states.shape[-2] < self.solved_steps:
            raise ValueError(
                f"states must be [*, T, D] with T >= {self.solved_steps}, got {tuple(states.shape)}"
            )
        d = self.tip_distance(states[..., -self.solved_steps :, :])  # [*, solved_steps]
        return (d < self.solved_radius).all(dim=-1)  # [*]

    # ------------------------------------------------------------------ pixels
    def render(self, state: torch.Tensor) -> torch.Tensor:
        """Frames of given states: ``[*B, D] -> uint8 [*B, H, W, 3]`` on the state's device."""
        if state.shape[-1] != len(self.state_names):
            raise ValueError(
                f"state must be [*B, {len(self.state_names)}], got {tuple(state.shape)}"
            )
        s = state.detach().to(torch.float32)  # [*B, D]
        px, py = self.camera.grid(s.device)  # [H, W], [H, W]
        background = self._backgrounds.get(s.device)
        if background is None:
            background = blank_canvas((), self.camera, self.background_colour, s.device)
            background = self._draw_static(background, px, py)  # [H, W, 3]
            self._backgrounds[s.device] = background
        canvas = background.expand(*s.shape[:-1], *background.shape)  # [*B, H, W, 3]
        return to_uint8(self._draw(s, canvas, px, py))  # [*B, H, W, 3]

    # ------------------------------------------------------------------ TorchRL plumbing
    def _make_specs(self) -> None:
        B, D, dev, dt = self.batch_size, len(self.state_names), self.device, self.dtype
        obs = Composite(shape=B, device=dev)
        if not self.pixels_only:
            obs["observation"] = Unbounded((*B, D), dtype=dt, device=dev)
        if self.from_pixels:
            obs["pixels"] = Bounded(0, 255, (*B, *self.camera.size, 3), dtype=torch.uint8,
                                    device=dev)
        state = Composite(
            true_state=Unbounded((*B, D), dtype=dt, device=dev),
            elapsed_steps=Unbounded((*B, 1), dtype=torch.int64, device=dev),
            shape=B, device=dev,
        )
        obs.update(state.clone())
        self.observation_spec = obs
        self.state_spec = state
        self.action_spec = Bounded(self.action_low.expand(*B, 1), self.action_high.expand(*B, 1),
                                   (*B, 1), dtype=dt, device=dev)
        self.reward_spec = Unbounded((*B, 1), dtype=dt, device=dev)
        flag = Categorical(2, (*B, 1), dtype=torch.bool, device=dev)
        self.full_done_spec = Composite(
            done=flag.clone(), terminated=flag.clone(), truncated=flag.clone(), shape=B, device=dev
        )

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(int(seed))

    def to(self, device: torch.device | str) -> SwingUpTask:
        """Move specs, constants and the generator (reseeded from the old one) to ``device``."""
        old = self.rng
        out = super().to(device)
        if old.device != self.device:
            seed = int(torch.randint(0, 2**62, (), generator=old, device=old.device).item())
            self._set_seed(seed)
        return out

    def sample_start(self, batch_shape: Sequence[int]) -> torch.Tensor:
        """Start states ``[*batch_shape, D]`` drawn from ``N(start_mean, start_cov)``, with the
        angle dimensions uniform on ``[-π, π)`` in each episode with probability
        ``uniform_start_angles``."""
        D = self.start_mean.shape[-1]
        kw = {"generator": self.rng, "dtype": self.dtype, "device": self.device}
        eps = torch.randn((*batch_shape, D), **kw)  # [*B, D]
        L = torch.linalg.cholesky(self.start_cov)  # [D, D]
        state = self.start_mean + eps @ L.transpose(-1, -2)  # [*B, D]
        p = self.uniform_start_angles
        if p > 0 and self.angle_dims:
            dims = list(self.angle_dims)
            u = torch.rand((*batch_shape, len(dims)), **kw)  # [*B, A]
            uniform = (2 * u - 1) * torch.pi  # [*B, A]
            if p < 1:  # a mixture: each episode uniform with probability p
                pick = torch.rand((*batch_shape, 1), **kw) < p  # [*B, 1]
                uniform = torch.where(pick, uniform, state[..., dims])
            state[..., dims] = uniform
        return state

    def _output(self, state: torch.Tensor, steps: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {"true_state": state, "elapsed_steps": steps}
        if not self.pixels_only:
            noise = torch.randn(state.shape, generator=self.rng, dtype=self.dtype,
                                device=self.device)  # [*B, D]
            out["observation"] = state + self.observation_noise_std * noise  # [*B, D]
        if self.from_pixels:
            out["pixels"] = self.render(state)  # [*B, H, W, 3]
        return out

    def _reset(self, tensordict: TensorDictBase | None, **kwargs) -> TensorDictBase:
        B, D = self.batch_size, len(self.state_names)
        given = None
        if kwargs.get("set_state") and tensordict is not None:
            given = tensordict.get("true_state", None)
        if given is not None:  # a new episode from the given state
            if given.shape != (*B, D):
                raise ValueError(f"true_state must have shape {(*B, D)}, got {tuple(given.shape)}")
            check_finite("true_state", given)
            state = given.to(device=self.device, dtype=self.dtype)  # [*B, D]
        else:
            state = self.sample_start(B)  # [*B, D]
        steps = torch.zeros((*B, 1), dtype=torch.int64, device=self.device)  # [*B, 1]
        out = self._output(state, steps)
        flag = torch.zeros((*B, 1), dtype=torch.bool, device=self.device)  # [*B, 1]
        out.update(done=flag, truncated=flag.clone(), terminated=flag.clone())
        return TensorDict(out, batch_size=B, device=self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        state = tensordict.get("true_state")  # [*B, D]
        steps = tensordict.get("elapsed_steps") + 1  # [*B, 1]
        action = tensordict.get("action").to(self.dtype)  # [*B, 1]
        action = torch.clamp(action, self.action_low, self.action_high)  # [*B, 1]
        nxt = rk4_step(self.dynamics, state, action, self.dt, self.substeps)  # [*B, D]
        out = self._output(nxt, steps)
        truncated = steps >= self.max_steps  # [*B, 1]
        out.update(
            reward=-self.cost(nxt).unsqueeze(-1),  # [*B, 1]
            done=truncated,
            truncated=truncated.clone(),
            terminated=torch.zeros_like(truncated),
        )
        return TensorDict(out, batch_size=self.batch_size, device=self.device)
