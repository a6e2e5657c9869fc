"""Real environments for the Dreamer agent: built-in tasks or dm_control, as TorchRL envs.

:func:`make_env` returns a ``TransformedEnv`` whose action space is ``[-1, 1]`` (TorchRL's
``ActionScaling``; the actor's tanh range), with an optional action repeat (:class:`RepeatAction`,
rewards summed), and, for vector observations of tasks with angles, the angles replaced by their
sines and cosines (:class:`AngleFeatures`, as PILCO's policies see them). Pixel tasks emit
``"pixels"`` ``uint8 [*B, 64, 64, 3]``, rendered at that size (no resizing).

The built-in tasks keep their noise-free state (``"true_state"``) in the TensorDict because they
are stateless TorchRL environments; the agent never reads it (its policy reads the observation,
its replay stores only the observation, action, reward and done flags).

Example: the task names the agent accepts besides ``"dmc:<domain>-<task>"``
(``BUILTIN_TASKS``):

>>> BUILTIN_TASKS
('cartpole-swingup', 'pendulum-swingup')
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torchrl.data import Unbounded
from torchrl.envs import (
    ActionScaling,
    CatFrames,
    CatTensors,
    DoubleToFloat,
    EnvBase,
    ObservationTransform,
    SerialEnv,
    Transform,
    TransformedEnv,
)

__all__ = [
    "AngleFeatures",
    "RepeatAction",
    "make_env",
    "stack_observations",
    "newest_observation",
    "episode_length",
    "BUILTIN_TASKS",
]

#: built-in task names (``"dmc:<domain>-<task>"`` selects a dm_control task)
BUILTIN_TASKS = ("cartpole-swingup", "pendulum-swingup")


class RepeatAction(Transform):
    """Hold each action for ``repeat`` steps of the wrapped environment and sum the rewards.

    Unlike TorchRL's ``FrameSkipTransform``, which steps its parent again from the *same* input,
    this carries every entry of the previous step's output (the state, for stateless
    environments such as the built-in tasks, whose state travels in the TensorDict) into the
    next step's input, so a repeated action moves a stateless environment on. It must be the
    first transform of its ``TransformedEnv`` (:func:`make_env` inserts it there): it then sees
    the action in the base environment's units and steps the base environment directly. Entries
    of a batch that are done stop stepping and keep their last transition.

    Args:
        repeat: steps of the wrapped environment per action (``>= 1``).

    Example: two steps of the pendulum with one action equal one step of the repeated one.

    >>> from wmrl.envs.tasks import PendulumSwingUp
    >>> once = TransformedEnv(PendulumSwingUp(seed=0))
    >>> twice = TransformedEnv(PendulumSwingUp(seed=0), RepeatAction(2))
    >>> td = once.reset().set("action", torch.ones(1))
    >>> a = once.step(td.clone())["next"]
    >>> b = once.step(a.clone().set("action", torch.ones(1)))["next"]
    >>> c = twice.step(td.clone())["next"]
    >>> torch.allclose(c["true_state"], b["true_state"]), bool(c["elapsed_steps"] == 2)
    (True, True)
    >>> torch.allclose(c["reward"], a["reward"] + b["reward"])
    True
    """

    def __init__(self, repeat: int) -> None:
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        super().__init__()
        self.repeat = int(repeat)

    def _step(self, tensordict: Any, next_tensordict: Any) -> Any:
        parent = self.parent
        if parent is None:
            raise RuntimeError("RepeatAction must be appended to a TransformedEnv")
        reward_key, done_keys = parent.reward_key, parent.done_keys
        reward = next_tensordict.get(reward_key)  # [*B, 1]
        for _ in range(self.repeat - 1):
            done = next_tensordict.get("done").reshape(next_tensordict.batch_size)  # [*B]
            if done.all():
                break
            inp = tensordict.clone(False).update(next_tensordict.exclude(reward_key, *done_keys))
            step = parent._step(inp)
            r = step.get(reward_key)  # [*B, 1]
            reward = reward + torch.where(done.reshape(*done.shape, *[1] * (r.ndim - done.ndim)),
                                          torch.zeros_like(r), r)  # fmt: skip
            next_tensordict = next_tensordict.where(done, step) if done.any() else step
        return next_tensordict.set(reward_key, reward)

    def forward(self, tensordict: Any) -> Any:
        """Not a module of its own: the repeat happens in the environment's step."""
        raise RuntimeError("RepeatAction acts only inside a TransformedEnv's step")


class AngleFeatures(ObservationTransform):
    """Replace angle entries of a vector observation by their sine and cosine.

    ``[*B, D] -> [*B, D + k]``: the non-angle dimensions in order, then ``(sin θ_i, cos θ_i)``
    for each angle dimension (the layout of :func:`wmrl.control.angle.angle_feature_indices`).

    Args:
        angle_dims: indices of the angles in the observation.
        in_keys: observation entries (default ``["observation"]``).

    >>> t = AngleFeatures([1])
    >>> t._apply_transform(torch.tensor([[2.0, 0.0]]))
    tensor([[2., 0., 1.]])
    """

    def __init__(self, angle_dims: Sequence[int], in_keys: Sequence[str] = ("observation",)):
        super().__init__(in_keys=list(in_keys), out_keys=list(in_keys))
        self.angle_dims = tuple(int(a) for a in angle_dims)

    def _split(self, D: int) -> tuple[list[int], list[int]]:
        angles = sorted({a % D for a in self.angle_dims})
        return [i for i in range(D) if i not in angles], angles

    def _apply_transform(self, obs: torch.Tensor) -> torch.Tensor:
        keep, angles = self._split(obs.shape[-1])
        theta = obs[..., angles]  # [*B, k]
        trig = torch.stack([theta.sin(), theta.cos()], dim=-1).flatten(-2)  # [*B, 2k]
        return torch.cat([obs[..., keep], trig], dim=-1)  # [*B, D + k]

    def _reset(self, tensordict: Any, tensordict_reset: Any) -> Any:
        return self._call(tensordict_reset)

    def transform_observation_spec(self, observation_spec: Any) -> Any:
        """The observation spec with each ``[*B, D]`` entry widened to ``[*B, D + k]``."""
        for key in self.in_keys:
            spec = observation_spec[key]
            D = spec.shape[-1]
            n = D + len(self._split(D)[1])
            observation_spec[key] = Unbounded(
                (*spec.shape[:-1], n), dtype=spec.dtype, device=spec.device
            )
        return observation_spec


def _dm_control(task: str, pixels: bool, seed: int, device: Any) -> EnvBase:
    try:
        from dm_control import suite
    except ImportError as e:  # pragma: no cover - optional dependency
        raise ValueError(
            f"task {task!r} needs dm_control (pip install dm_control 'mujoco<4'; "
            "MUJOCO_GL=egl for headless rendering)"
        ) from e
    from torchrl.envs import DMControlWrapper

    domain, _, name = task.removeprefix("dmc:").partition("-")
    if not name:
        raise ValueError(f"dm_control tasks are named 'dmc:<domain>-<task>', got {task!r}")
    base = DMControlWrapper(
        suite.load(domain, name.replace("-", "_"), task_kwargs={"random": seed}),
        from_pixels=pixels,
        pixels_only=pixels,
        render_kwargs={"height": 64, "width": 64, "camera_id": 0},
        device=device,
    )
    env = TransformedEnv(base, DoubleToFloat())
    if not pixels:
        keys = [k for k in base.observation_spec.keys() if k != "pixels"]
        env.append_transform(CatTensors(in_keys=keys, out_key="observation"))
    return env


def make_env(
    task: str,
    *,
    pixels: bool,
    batch_size: Sequence[int] = (),
    max_steps: int = 100,
    action_repeat: int = 1,
    seed: int = 0,
    device: torch.device | str | None = None,
    uniform_start_angles: bool | float = False,
) -> TransformedEnv:
    """The agent's view of a task (see the module docstring).

    Args:
        task: ``"cartpole-swingup"``, ``"pendulum-swingup"`` or ``"dmc:<domain>-<task>"``.
        pixels: observe 64x64 frames (``"pixels"``) instead of the state (``"observation"``).
        batch_size: environments stepped together (dm_control: ``[n]`` simulators stepped in
            series, seeded ``seed, seed + 1, ...``).
        max_steps: episode length in environment steps (built-in tasks; dm_control episodes
            last 1000 steps).
        action_repeat: environment steps per agent action.
        seed: seeds the environment.
        device: where the environment's tensors live.
        uniform_start_angles: built-in tasks only: episodes start at angles drawn uniformly
            from ``[-π, π)`` (exploring starts), every episode (``True``) or each with a
            probability in ``[0, 1]``; see :class:`~wmrl.envs.tasks.base.SwingUpTask`.

    Raises:
        ValueError: an unknown task, ``action_repeat`` that does not divide ``max_steps``, or
            ``uniform_start_angles`` on a dm_control task.

    Example: two cart-poles, whose angle becomes ``(sin θ, cos θ)`` (4 -> 5 entries), driven by
    actions in ``[-1, 1]``; and one pendulum seen as 64x64 frames.

    >>> env = make_env("cartpole-swingup", pixels=False, batch_size=[2], max_steps=10)
    >>> env.action_spec.space.low.flatten().tolist(), env.action_spec.space.high.flatten().tolist()
    ([-1.0, -1.0], [1.0, 1.0])
    >>> td = env.rollout(100)  # stops at the end of the 10-step episode
    >>> td["next", "observation"].shape, bool(td["next", "done"][:, -1].all())
    (torch.Size([2, 10, 5]), True)
    >>> frame = make_env("pendulum-swingup", pixels=True, max_steps=10).reset()["pixels"]
    >>> frame.shape, frame.dtype
    (torch.Size([64, 64, 3]), torch.uint8)
    >>> make_env("acrobot", pixels=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: unknown task 'acrobot'; choose from ('cartpole-swingup', 'pendulum-swingup') or ...
    """
    steps = _env_steps_per_episode(task, max_steps)
    if action_repeat < 1 or steps % action_repeat:
        raise ValueError(
            f"action_repeat must be >= 1 and divide the episode's {steps} steps (max_steps), "
            f"got {action_repeat}"
        )
    if task.startswith("dmc:"):
        if float(uniform_start_angles) > 0:
            raise ValueError("uniform_start_angles is for the built-in tasks, not dm_control's")
        batch = tuple(batch_size)
        if not batch:
            env = _dm_control(task, pixels, seed, device)
        elif len(batch) == 1:  # one simulator per entry, stepped in series in this process
            env = TransformedEnv(SerialEnv(batch[0], [
                functools.partial(_dm_control, task, pixels, seed + i, device)
                for i in range(batch[0])
            ]))  # fmt: skip
        else:
            raise ValueError(f"dm_control environments take a 1-d batch_size, got {batch}")
    elif task in BUILTIN_TASKS:
        from wmrl.agents.pilco import make_task

        base = make_task(task, batch_size=list(batch_size), from_pixels=pixels,
                         pixels_only=pixels, max_steps=max_steps, seed=seed, device=device,
                         uniform_start_angles=uniform_start_angles)  # fmt: skip
        env = TransformedEnv(base)
        if not pixels and base.angle_dims:
            env.append_transform(AngleFeatures(base.angle_dims))
    else:
        raise ValueError(f"unknown task {task!r}; choose from {BUILTIN_TASKS} or 'dmc:<d>-<t>'")
    env.append_transform(ActionScaling())
    if action_repeat > 1:  # first, so it sees the base environment's action and output
        env.insert_transform(0, RepeatAction(action_repeat))
    return env


def stack_observations(env: EnvBase, obs_key: str, frames: int) -> EnvBase:
    """Observe the last ``frames`` observations at once, concatenated along the channels.

    TorchRL's ``CatFrames`` on ``obs_key``: ``uint8`` frames ``[*B, H, W, 3]`` become
    ``[*B, H, W, 3 k]``, float frames ``[*B, 3, H, W]`` become ``[*B, 3 k, H, W]`` and vectors
    ``[*B, D]`` become ``[*B, k D]``, oldest first; at a reset the first observation fills the
    stack. Velocities then become a function of one observation (a difference of frames) instead
    of something the RSSM has to infer through its recurrent state. ``frames = 1`` returns
    ``env`` unchanged.

    Args:
        env: the environment (a ``TransformedEnv`` is extended, any other is wrapped).
        obs_key: the observation entry (``"pixels"`` or ``"observation"``).
        frames: ``k >= 1``.

    Example: two pendulum frames, the first repeated after the reset.

    >>> env = stack_observations(make_env("pendulum-swingup", pixels=True, max_steps=4),
    ...                          "pixels", 2)
    >>> td = env.rollout(3)
    >>> td["pixels"].shape
    torch.Size([3, 64, 64, 6])
    >>> torch.equal(td["pixels"][0, ..., :3], td["pixels"][0, ..., 3:])  # reset: padded
    True
    >>> torch.equal(td["pixels"][1, ..., :3], td["pixels"][0, ..., 3:])  # oldest first
    True
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if frames == 1:
        return env
    if not isinstance(env, TransformedEnv):
        env = TransformedEnv(env)
    floating = env.observation_spec[obs_key].dtype.is_floating_point
    dim = _stack_dim(obs_key, floating)
    env.append_transform(CatFrames(N=frames, dim=dim, in_keys=[obs_key]))
    return env


def _stack_dim(obs_key: str, floating: bool) -> int:
    """The dimension :func:`stack_observations` concatenates along: the channels of float
    ``[*B, C, H, W]`` frames, else the last (``uint8 [*B, H, W, C]`` frames, vectors)."""
    return -3 if obs_key == "pixels" and floating else -1


def newest_observation(obs: torch.Tensor, obs_key: str, frames: int) -> torch.Tensor:
    """The newest of ``frames`` observations stacked by :func:`stack_observations`, e.g.
    ``[*B, 3 k, H, W] -> [*B, 3, H, W]`` or ``[*B, k D] -> [*B, D]``.

    >>> newest_observation(torch.arange(6.0).view(1, 6), "observation", 3).tolist()
    [[4.0, 5.0]]
    >>> newest_observation(torch.zeros(2, 9, 64, 64), "pixels", 3).shape
    torch.Size([2, 3, 64, 64])
    """
    dim = _stack_dim(obs_key, obs.is_floating_point())
    return obs.narrow(dim, obs.shape[dim] - obs.shape[dim] // frames, obs.shape[dim] // frames)


def episode_length(task: str, max_steps: int, action_repeat: int) -> int:
    """Agent steps per episode: ``max_steps // action_repeat`` (dm_control: ``1000 // ...``).

    >>> episode_length("pendulum-swingup", max_steps=100, action_repeat=2)
    50
    >>> episode_length("dmc:cartpole-swingup", max_steps=100, action_repeat=2)  # 1000 steps
    500
    """
    return _env_steps_per_episode(task, max_steps) // action_repeat


def _env_steps_per_episode(task: str, max_steps: int) -> int:
    return 1000 if task.startswith("dmc:") else max_steps  # dm_control's episodes: 1000 steps
