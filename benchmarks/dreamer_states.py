"""Dreamer on the built-in pendulum swing-up from the low-dimensional state: short diagnostic runs.

Trains the Dreamer agent (``wmrl.agents.dreamer``, ``small`` preset, action repeat 2, 256 replayed
steps per collected step) on ``[θ̇, sin θ, cos θ]`` for a wall-time budget and prints, every
1,000 environment steps, the evaluation of the deterministic policy on 5 episodes of the task
(its saturating cost per step, the number the pixel criterion is about) and the mean of
``(1 + cos θ) / 2`` over those episodes (1 hanging, 0 upright).

``--reward shaped`` trains on the dense reward ``-(1 + cos θ) / 2`` per environment step (the
squared tip distance to upright over ``4 l²``, in ``[-1, 0]`` like the cost) instead of
the task's ``-cost`` (evaluation stays on the task's cost); ``--exploration-bonus`` adds the
ensemble-disagreement bonus (``wmrl.agents.exploration``), ``--action-noise`` Gaussian noise on
the collected actions; ``--action-repeat``, ``--horizon`` and ``--train-ratio`` change those
settings; ``--start-angle`` moves the mean start angle (``π``: upright, so the run asks only
whether the agent learns to hold the pendulum there, not whether it finds the top);
``--hide-velocity`` observes ``[sin θ, cos θ]`` only, so the agent, as from pixels, has to infer
``θ̇`` through its recurrent state; ``--angle-noise σ`` reads the angle with an error of ``σ``
radians per step, as imprecisely as a pixel model does.

    .venv/bin/python benchmarks/dreamer_states.py --version 3 --minutes 20
    .venv/bin/python benchmarks/dreamer_states.py --version 3 --exploration-bonus 1 --minutes 20
    .venv/bin/python benchmarks/dreamer_states.py --version 3 --action-noise 0.3 --minutes 20
"""

from __future__ import annotations

import argparse
import time

import torch
from torchrl.data import Unbounded
from torchrl.envs import ObservationTransform, Transform
from torchrl.envs.utils import ExplorationType, set_exploration_type

TASK = "pendulum-swingup"


class DenseSwingUpReward(Transform):
    """Replace the reward by ``-(1 + cos θ) / 2`` of the state reached, times the action repeat."""

    def __init__(self, repeat: int) -> None:
        super().__init__()
        self.repeat = repeat

    def _step(self, tensordict, next_tensordict):
        theta = next_tensordict["true_state"][..., 1:2]  # [*B, 1]
        return next_tensordict.set("reward", -(1 + torch.cos(theta)) / 2 * self.repeat)

    def forward(self, tensordict):
        return tensordict


class HideVelocity(ObservationTransform):
    """Drop ``θ̇`` from ``[θ̇, sin θ, cos θ]``: the agent sees the angle only, as in a frame, and
    has to infer the velocity through its recurrent state."""

    def __init__(self) -> None:
        super().__init__(in_keys=["observation"], out_keys=["observation"])

    def _apply_transform(self, obs: torch.Tensor) -> torch.Tensor:
        return obs[..., 1:]  # [*B, 2]

    def _reset(self, tensordict, tensordict_reset):
        return self._call(tensordict_reset)

    def transform_observation_spec(self, observation_spec):
        spec = observation_spec["observation"]
        observation_spec["observation"] = Unbounded(
            (*spec.shape[:-1], spec.shape[-1] - 1), dtype=spec.dtype, device=spec.device
        )
        return observation_spec


class AngleNoise(ObservationTransform):
    """Observe the angle with an independent Gaussian error ``ε ~ N(0, σ²)`` per step: the
    last two entries ``[sin θ, cos θ]`` become ``[sin(θ + ε), cos(θ + ε)]``, a reading of the
    angle as imprecise as a pixel world model's."""

    def __init__(self, sigma: float) -> None:
        super().__init__(in_keys=["observation"], out_keys=["observation"])
        self.sigma = sigma

    def _apply_transform(self, obs: torch.Tensor) -> torch.Tensor:
        s, c = obs[..., -2], obs[..., -1]  # [*B] each
        eps = self.sigma * torch.randn_like(s)  # [*B]
        rotated = torch.stack([s * eps.cos() + c * eps.sin(), c * eps.cos() - s * eps.sin()], -1)
        return torch.cat([obs[..., :-2], rotated], -1)  # [*B, D]

    def _reset(self, tensordict, tensordict_reset):
        return self._call(tensordict_reset)


def main() -> None:
    from dreamer_pixels import field_value  # the sibling script's FIELD=VALUE parser

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--version", type=int, default=3, choices=[1, 3])
    p.add_argument("--reward", default="task", choices=["task", "shaped"])
    p.add_argument("--exploration-bonus", type=float, default=0.0)
    p.add_argument("--action-noise", type=float, default=None)
    p.add_argument("--horizon", type=int, default=15)
    p.add_argument("--train-ratio", type=float, default=256.0)
    p.add_argument("--set", nargs="*", default=[], type=field_value, metavar="FIELD=VALUE",
                   help="further DreamerConfig fields, e.g. num_bins=255")  # fmt: skip
    p.add_argument("--action-repeat", type=int, default=2)
    p.add_argument("--actor-lr", type=float, default=None)
    p.add_argument("--value-lr", type=float, default=None)
    p.add_argument("--model-lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-angle", type=float, default=0.0,
                   help="mean start angle in radians (0 hanging, 3.1416 upright)")  # fmt: skip
    p.add_argument("--hide-velocity", action="store_true",
                   help="observe [sin θ, cos θ] only (the velocity inferred, as from a frame)")
    p.add_argument("--angle-noise", type=float, default=0.0,
                   help="std (rad) of a Gaussian error on the observed angle, every step")
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from wmrl.agents.dreamer import Dreamer, DreamerConfig, wrap_agent_env
    from wmrl.agents.envs import make_env

    ar = args.action_repeat

    def task_env(batch_size, seed):
        env = make_env(TASK, pixels=False, batch_size=batch_size, max_steps=100,
                       action_repeat=ar, seed=seed)  # fmt: skip
        env.base_env.start_mean[1] = args.start_angle  # [θ̇, θ]
        if args.hide_velocity:
            env.append_transform(HideVelocity())
        if args.angle_noise > 0:
            env.append_transform(AngleNoise(args.angle_noise))
        return env

    def env_fn(batch_size, seed):  # the training environment: the task, maybe reshaped
        env = task_env(batch_size, seed)
        if args.reward == "shaped":
            env.append_transform(DenseSwingUpReward(ar))
        return env

    cfg = DreamerConfig.preset(
        "small", task=TASK, pixels=False, version=args.version, seed=args.seed,
        action_repeat=ar, train_ratio=args.train_ratio, env_steps=10**7, eval_every=10**9,
        checkpoint_every=0, actor_lr=args.actor_lr, value_lr=args.value_lr,
        model_lr=args.model_lr, exploration_bonus=args.exploration_bonus, progress=False,
        action_noise=args.action_noise, horizon=args.horizon,
        precision="fp32", device="cpu",
        **dict(args.set),
    )  # fmt: skip
    agent = Dreamer(cfg, env_fn=env_fn)
    L = 100 // ar
    evaluation = wrap_agent_env(task_env, [5], seed=123, episode_len=L,
                                primer_sizes=agent._primer_sizes,
                                frame_stack=cfg.frame_stack)  # fmt: skip

    def evaluate() -> tuple[float, float]:
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            ep = evaluation.rollout(L, agent.nets.policy, break_when_any_done=False)
        theta = ep["next", "true_state"][..., 1]
        cost = float(-ep["next", "reward"].sum(-2).mean() / (L * ar))
        return cost, float((1 + torch.cos(theta)).mean() / 2)

    t0 = time.perf_counter()
    print(f"initial policy: cost/step {evaluate()[0]:.3f}", flush=True)
    while time.perf_counter() - t0 < 60 * args.minutes:
        before = agent.env_steps
        agent.iterate()
        if agent.env_steps // 1000 != before // 1000:
            cost, low = evaluate()
            losses = " ".join(f"{k.removeprefix('loss_')}={v:.3g}"
                              for k, v in agent.last_losses.items())  # fmt: skip
            print(f"{agent.env_steps} steps, {agent.updates} updates, "
                  f"{time.perf_counter() - t0:.0f} s: train return {agent.last_train_return:.2f}, "
                  f"eval cost/step {cost:.3f}, (1+cos θ)/2 {low:.3f}; {losses}",
                  flush=True)  # fmt: skip
    agent.close()


if __name__ == "__main__":
    main()
