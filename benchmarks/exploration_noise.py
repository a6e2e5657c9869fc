"""How often random exploration swings the built-in pendulum and cart-pole up from the bottom.

A world model learns a swing-up only from data that contain one. This script rolls out batches
of episodes from each task's own start (hanging down) under several action processes and
reports the share of episodes whose pole comes within 0.2 rad of upright
(``(1 - cos θ) / 2 > 0.99``), and the mean over episodes of the highest point reached (1 at the
top):

- ``uniform``: uniformly random actions, TorchRL's random frames (the Dreamer agent's prefill
  with white noise);
- ``AR(1) ρ``: :class:`~wmrl.agents.action_noise.CorrelatedRandomPolicy`, ``clip(n_t, -1, 1)``
  with ``n`` the unit-scale AR(1) process of lag-one correlation ``ρ`` (``ρ = 0``: white
  Gaussian); the prefill under ``noise_correlation = ρ``;
- ``a + σ·AR(1) ρ``: a constant action ``a`` plus collection noise of scale ``σ``, clipped, as
  the agent collects around a policy that pushes ``a`` (``a = 0``: undecided; ``a = 0.95``:
  nearly saturated).

Usage::

    python benchmarks/exploration_noise.py --episodes 4000 --max-steps 100
"""

from __future__ import annotations

import argparse
import math

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs.utils import RandomPolicy

from wmrl.agents.action_noise import NOISE_KEY, CorrelatedRandomPolicy, ar1_noise_step
from wmrl.agents.dreamer import make_agent_env


class OffsetNoisePolicy(TensorDictModuleBase):
    """``clip(a + σ n_t, -1, 1)`` with ``n`` the unit-scale AR(1) process (a constant policy
    ``a`` with the agent's collection noise)."""

    def __init__(self, offset: float, sigma: float, rho: float, action_dim: int = 1) -> None:
        super().__init__()
        self.offset, self.sigma, self.rho, self.action_dim = offset, sigma, rho, action_dim
        self.in_keys, self.out_keys = [NOISE_KEY], ["action", ("next", NOISE_KEY)]

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        prev = td.get(NOISE_KEY)  # [*B, A], zeros after a reset
        noise = ar1_noise_step(prev, torch.randn_like(prev), self.rho)
        td.set("action", (self.offset + self.sigma * noise).clamp(-1.0, 1.0))
        td.set(("next", NOISE_KEY), noise)
        return td


def heights(task: str, policy, episodes: int, max_steps: int, seed: int) -> torch.Tensor:
    """Highest point ``max_t (1 - cos θ_t) / 2`` of each episode, ``[E]``."""
    env = make_agent_env(task, pixels=False, batch_size=[episodes], max_steps=max_steps,
                         action_repeat=1, seed=seed, primer_sizes=(1, 1, 1))  # fmt: skip
    base = env.base_env
    torch.manual_seed(seed)
    if policy is None:
        policy = RandomPolicy(env.action_spec)
    with torch.no_grad():
        traj = env.rollout(max_steps, policy, break_when_any_done=False)
    theta = traj.get(("next", "true_state"))[..., base.angle_dims[0]]  # [E, T]
    env.close()
    return ((1 - torch.cos(theta)) / 2).amax(-1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=["pendulum-swingup", "cartpole-swingup"])
    p.add_argument("--episodes", type=int, default=4000)
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    E = args.episodes
    cases: list[tuple[str, object]] = [("uniform (TorchRL random frames)", None)]
    for r in (0.0, 0.5, 0.8, 0.9, 0.95):
        cases.append((f"AR(1) ρ = {r:g}", CorrelatedRandomPolicy(1, r)))
    for a in (0.0, 0.95):
        for s in (0.3, 0.5):
            for r in (0.0, 0.8):
                cases.append((f"{a:g} + {s:g}·AR(1) ρ = {r:g}", OffsetNoisePolicy(a, s, r)))
    se = 0.5 / math.sqrt(E)  # the largest standard error of a share
    print(f"{E} episodes of {args.max_steps} steps per row (standard error of a share "
          f"at most {se:.3f})\n")  # fmt: skip
    print("| actions | " + " | ".join(f"{t}: reach the top, mean highest" for t in args.tasks)
          + " |")  # fmt: skip
    print("|---|" + "---|" * len(args.tasks))
    for name, policy in cases:
        cells = []
        for task in args.tasks:
            h = heights(task, policy, E, args.max_steps, args.seed)
            cells.append(f"{float((h > 0.99).float().mean()):.3f}, {float(h.mean()):.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
