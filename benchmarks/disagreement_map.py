"""Where a pendulum Dreamer run's disagreement ensemble is surprised, by the real state.

For a run trained with the exploration bonus (``exploration_bonus > 0``,
:mod:`wmrl.agents.exploration`), the bonus ``log(d / D)`` the agent adds to its imagined rewards
is evaluated on real episodes of the built-in pendulum: at every step, from the policy's own
posterior ``(s_t, h_t)`` and the action taken there. The steps are grouped by the real state the
frame shows: the angle from upright ``|φ|`` and the speed ``|θ̇|``. Two sets of 16 episodes:

* the training policy (its collection noise) from the task's start, hanging down: what the
  replay holds, where the bonus should be near 0 or below;
* the pendulum started upright and held there by a feedback controller with noise on its torque
  (``dreamer_diagnose.py --hold``'s episodes), the policy's filter running alongside: the states
  a balancing policy visits. A bonus that would lead the actor there is high in these cells.

Usage::

    python benchmarks/disagreement_map.py runs/bench-dreamer/pendulum-swingup-v3-seed0
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

#: bins of the angle from upright [rad] and of the speed [rad/s]: rows and columns of the tables
ANGLE_EDGES = (0.0, 0.5, 1.5, math.pi + 1e-6)
SPEED_EDGES = (0.0, 2.0, 5.0, 10.0, math.inf)


def binned_means(
    values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
    row_edges: tuple[float, ...], col_edges: tuple[float, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and count of ``values`` ``[N]`` per cell of a grid over ``rows`` and ``cols`` ``[N]``
    (bins ``[lo, hi)`` between consecutive edges; values outside every bin are dropped).

    Returns:
        ``mean`` ``[R, C]`` (NaN in empty cells) and ``count`` ``[R, C]``.

    >>> v = torch.tensor([1.0, 3.0, 5.0, 7.0])
    >>> mean, count = binned_means(v, torch.tensor([0.1, 0.2, 1.0, 1.0]),
    ...                            torch.tensor([0.5, 0.5, 0.5, 2.5]), (0, 0.5, 2), (0, 1, 3))
    >>> mean.tolist(), count.tolist()
    ([[2.0, nan], [5.0, 7.0]], [[2, 0], [1, 1]])
    """
    R, C = len(row_edges) - 1, len(col_edges) - 1
    r = torch.bucketize(rows, torch.tensor(row_edges, dtype=rows.dtype), right=True) - 1
    c = torch.bucketize(cols, torch.tensor(col_edges, dtype=cols.dtype), right=True) - 1
    keep = (r >= 0) & (r < R) & (c >= 0) & (c < C)
    cell = (r * C + c)[keep]  # [n]
    total = torch.zeros(R * C, dtype=torch.float64).index_add_(0, cell, values[keep].double())
    count = torch.zeros(R * C, dtype=torch.long).index_add_(0, cell, torch.ones_like(cell))
    mean = total / count.clamp_min(1)
    mean[count == 0] = math.nan
    return mean.reshape(R, C), count.reshape(R, C)


def main() -> None:
    from wmrl.agents.checkpoint import load_checkpoint
    from wmrl.agents.dreamer import disagreement_ensemble, load_trained_nets
    from wmrl.envs.tasks import angle_from_upright

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from dreamer_diagnose import HeldUpright, pendulum_episodes  # the episodes of --hold there

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(1)

    state = load_checkpoint(args.run_dir / "checkpoint.pt")
    if state.get("exploration") is None:
        raise SystemExit(f"{args.run_dir}: the run has no disagreement ensemble "
                         "(exploration_bonus = 0)")  # fmt: skip
    c, nets, counters = load_trained_nets(args.run_dir)
    if not c.task.startswith("pendulum"):
        raise SystemExit(f"needs a pendulum run, got task {c.task!r}")
    policy = nets.policy  # its noise: the run's collection noise
    sizes = (policy.state_dim, policy.belief_dim, policy.action_dim)
    ensemble = disagreement_ensemble(c, nets)
    ensemble.load_state_dict(state["exploration"])
    ensemble.eval()
    print(f"{args.run_dir}: {counters['updates']} updates, {counters['env_steps']} env steps; "
          f"β = {c.exploration_bonus}, D = {float(ensemble.scale):.3g}")

    bottom = pendulum_episodes(c, sizes, policy, args.episodes, args.seed)
    held = pendulum_episodes(c, sizes, HeldUpright(policy), args.episodes, args.seed, math.pi)
    for name, td in [("training policy, from the bottom", bottom),
                     ("held upright by feedback, σ = 0.3", held)]:
        # the policy writes its posterior of the current frame under "next"; the action is
        # the one taken from it: the ensemble's input (s_t, h_t, a_t)
        latent = torch.cat([td["next", "state"], td["next", "belief"]], -1)  # [E, T, S + H]
        with torch.no_grad():
            bonus = ensemble.bonus(latent, td["action"])[..., 0].flatten()  # [E T]
        theta_dot, theta = td["true_state"].flatten(0, 1).unbind(-1)  # [E T] each
        angle = angle_from_upright(theta).abs()
        mean, count = binned_means(bonus, angle, theta_dot.abs(), ANGLE_EDGES, SPEED_EDGES)
        print(f"\n{name}: mean bonus log(d/D) (steps), all {bonus.mean():+.2f}")
        head = "".join(f"{f'|θ̇| {lo:g}-{hi:g}':>16s}" for lo, hi in
                       zip(SPEED_EDGES[:-1], SPEED_EDGES[1:]))  # fmt: skip
        print(f"  {'|φ| [rad]':12s}{head}")
        for i, (lo, hi) in enumerate(zip(ANGLE_EDGES[:-1], ANGLE_EDGES[1:])):
            cells = "".join(f"{'-':>16s}" if n == 0 else f"{f'{m:+.2f} ({n})':>16s}"
                            for m, n in zip(mean[i].tolist(), count[i].tolist()))  # fmt: skip
            print(f"  {f'{lo:.1f}-{min(hi, math.pi):.1f}':12s}{cells}")


if __name__ == "__main__":
    main()
