"""PILCO on gymnasium's Pendulum-v1 through TorchRL's GymEnv.

Any TorchRL environment with a low-dimensional vector observation can be learned by
:class:`~wmrl.agents.pilco.PILCO` once it carries a task description
(:class:`~wmrl.envs.gym_adapter.TaskAdapter`). For ``Pendulum-v1``
(:func:`~wmrl.envs.gym_adapter.make_pendulum_v1`):

* **State.** The observation ``x = [cos θ, sin θ, θ̇]`` as it is (θ = 0 upright, torque in
  [-2, 2] N m held for 0.05 s, 200 steps = 10 s per episode). It already holds the sine and
  cosine of the angle, so there are no angle dimensions: the GP models the changes of the three
  observed numbers and the RBF policy sees them directly.
* **Start belief.** Gymnasium starts at θ ~ U(-π, π), θ̇ ~ U(-1, 1). PILCO propagates a Gaussian,
  so the start belief is that distribution's moments in ``x``: mean 0, covariance
  diag(½, ½, ⅓). It is wide (the angle can be anything), so the predicted cost is an average
  over every start: the policy must swing up from below and merely hold from above.
* **Cost.** PILCO's saturating cost on the tip of the (unit-length) pole,
  ``1 - exp(-d² / (2·0.5²))`` with ``d² = (cos θ - 1)² + sin² θ`` the squared distance of the tip
  to upright: target ``[1, 0, 0]``, precision ``diag(4, 4, 0)`` (width 0.5 as in the built-in
  pendulum task and PILCO's). It saturates far from the goal (Deisenroth & Rasmussen 2011, Eq. 8),
  unlike gymnasium's own reward ``-(θ² + 0.1 θ̇² + 0.001 u²)``, which is quadratic in θ; that
  one is reported at the end for comparison (well-trained Pendulum-v1 policies return about
  -150 to -200 per episode; zero torque about -1060, measured below).
* **Solved.** ``|θ| < 0.1 π`` (18°) for each of the last 20 steps (1 s), in 9 of 10 test episodes.
* **Horizon.** The policy is optimised on a 60-step (3 s) prediction from the start belief; the
  real episodes last 200 steps with the same policy (``horizon`` < ``max_steps``). A policy that
  swings up within 3 s and stabilises the top is expected to keep it there.

Batched test episodes use gymnasium's synchronous vector environment in-process
(:func:`~wmrl.envs.gym_adapter.make_gym_env`).

Run::

    python examples/pilco_gym_pendulum.py --out runs/gym-pendulum-seed0
    python examples/pilco_gym_pendulum.py --preset debug        # a smoke run, ~20 s

What it achieved here (seed 0, default settings, one run stopped by a 15-minute limit on a shared
2-core machine where other jobs ran: wall times are to be re-measured on a quiet machine; it was
not run to completion):

=====  ===========  ==================  ==============  =====================  ========
trial  data (real)  predicted (60 st.)  real (200 st.)  test (10 ep., mean)    search
=====  ===========  ==================  ==============  =====================  ========
0      200          (random actions)    199.9           --                     --
1      400          50.0                162.6           143.8, 0/10 solved     457 s
=====  ===========  ==================  ==============  =====================  ========

(Costs are sums of the saturating cost per step: at most one per step.) Trial 1's search took
159 objective evaluations (about 2.9 s each); trial 2 (400 points, still a full GP) did not
finish within the limit. The trial-1 policy, evaluated on 10 fresh episodes by :func:`evaluate`:
saturating cost 134.0 per episode, gymnasium return -1146, 0 % solved, against 169.6 / -1124
for uniformly random torques and 175.5 / -1059 for zero torque. So after one learning trial
PILCO lowers the cost it optimises but has not learnt the swing-up yet (by gymnasium's reward it
is no better than random torques).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from wmrl.agents.pilco import PILCO, PILCOConfig
from wmrl.envs.gym_adapter import make_pendulum_v1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="default", choices=["default", "debug"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-trials", type=int, default=None, help="learning trials")
    p.add_argument("--horizon", type=int, default=None, help="prediction steps (default 60)")
    p.add_argument("--policy-steps", type=int, default=None, help="L-BFGS iterations per trial")
    p.add_argument("--episodes", type=int, default=10, help="final evaluation episodes")
    p.add_argument("--out", type=Path, default=None, help="checkpoint directory (optional)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true")
    return p


def make_config(args: argparse.Namespace) -> PILCOConfig:
    """The run's settings: the preset, a 3 s prediction horizon, then the command line."""
    overrides = {
        "task": "gym:Pendulum-v1",  # a label only: the environment comes from make_pendulum_v1
        "seed": args.seed,
        "horizon": 60 if args.preset == "default" else None,
        "max_trials": args.max_trials,
        "policy_steps": args.policy_steps,
    }
    if args.horizon is not None:
        overrides["horizon"] = args.horizon
    if args.no_progress:
        overrides["progress"] = False
    return PILCOConfig.preset(args.preset, **{k: v for k, v in overrides.items() if v is not None})


@torch.no_grad()
def evaluate(agent: PILCO, episodes: int, seed: int) -> dict[str, float]:
    """Run the agent's policy for ``episodes`` full episodes; report both kinds of return.

    Returns:
        the mean saturating cost per episode, gymnasium's mean return per episode (its own
        reward), and the fraction of episodes solved.
    """
    env = make_pendulum_v1([episodes], cost_reward=False)  # gymnasium's reward
    env.set_seed(seed)
    td = env.rollout(env.max_steps, agent.policy.as_policy(), break_when_any_done=False)
    states = td["next", "observation"]  # [N, T, 3]
    cost = env.state_cost(states).sum(-1)  # [N]
    gym_return = td["next", "reward"].sum((-2, -1))  # [N]
    return {
        "cost": float(cost.mean()),
        "gym_return": float(gym_return.mean()),
        "solved": float(env.is_solved(states).float().mean()),
    }


def main(argv: Sequence[str] | None = None) -> tuple[PILCO, dict[str, float]]:
    """Train (or resume), print the summary and the evaluation; return the agent and it."""
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    if args.resume:
        if args.out is None:
            raise SystemExit("--resume needs --out")
        agent = PILCO.resume(args.out, env_fn=make_pendulum_v1)
    else:
        agent = PILCO(make_config(args), out_dir=args.out, env_fn=make_pendulum_v1)
    print(f"config: {dataclasses.asdict(agent.config)}", file=sys.stderr)
    agent.run()
    print(agent.summary())
    result = evaluate(agent, args.episodes, seed=10_000 + args.seed)
    print(
        f"evaluation over {args.episodes} episodes: saturating cost {result['cost']:.1f} "
        f"per episode (of 200 steps), gymnasium return {result['gym_return']:.1f}, "
        f"solved {result['solved']:.0%}"
    )
    return agent, result


if __name__ == "__main__":
    main()
