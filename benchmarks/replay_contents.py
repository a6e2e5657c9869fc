"""What a Dreamer run's replay holds near the top, and where a prioritised replay's draws go.

Reads the replay copy a Dreamer checkpoint names and groups the stored steps by their reward (for
the built-in swing-ups, minus a saturating cost: near 0 at the top, -1 far from it).

* For every block of ``--block`` stored episodes (in the order stored, which is the order
  collected until the ring buffer wraps): the share of steps near the top (reward >= -0.5) and
  the longest stay there, in consecutive steps, per episode (mean and max over the block). A
  policy that spins the pendulum passes the top in a few steps; one that balances stays.
* For a prioritised replay (``replay_priority > 0``), per reward group: the number of steps,
  their scores (the world model's KL at them when last replayed) and how often a training
  sequence predicts them compared with uniform draws of the same sequences (``rate`` 2: twice
  as often; the draws' probabilities are
  :func:`~wmrl.agents.replay_priority.window_start_probabilities`).

Usage::

    python benchmarks/replay_contents.py runs/bench-dreamer/pendulum-swingup-v3-seed0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tensordict import TensorDict

#: reward groups ``[low, high)``: far from the target, on the way, near it
GROUPS = ((-1.01, -0.99, "reward < -0.99"), (-0.99, -0.5, "-0.99 to -0.5"),
          (-0.5, 0.01, "reward >= -0.5 (near the top)"))  # fmt: skip


def predicted_rate(probs: torch.Tensor, slice_len: int) -> torch.Tensor:
    """``[n]``: expected slices per draw whose predicted steps (all but the first) hold step
    ``i``, from the start probabilities ``probs [n]``."""
    n = probs.shape[0]
    cum = torch.cat([probs.new_zeros(1), probs.cumsum(0)])  # [n + 1]
    i = torch.arange(n)
    lo, hi = (i - slice_len + 1).clamp_min(0), i  # starts t in [i - L + 1, i - 1] predict i
    return cum[hi] - cum[lo]  # [n]


def longest_stays(near: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
    """``[E]``: per stored row (episode), the longest run of consecutive ``near`` steps.

    Args:
        near: ``[n]`` bool; done: ``[n]`` bool, ``True`` at each row's last step.

    >>> near = torch.tensor([1, 1, 0, 1, 0, 1, 1, 1], dtype=torch.bool)
    >>> done = torch.tensor([0, 0, 0, 1, 0, 0, 0, 1], dtype=torch.bool)
    >>> longest_stays(near, done)
    tensor([2, 3])
    """
    ends = torch.nonzero(done).reshape(-1).tolist()
    stays, start = [], 0
    for end in ends:
        best = run = 0
        for v in near[start : end + 1].tolist():
            run = run + 1 if v else 0
            best = max(best, run)
        stays.append(best)
        start = end + 1
    return torch.tensor(stays, dtype=torch.long)


def main() -> None:
    from wmrl.agents.checkpoint import load_checkpoint
    from wmrl.agents.replay_priority import window_start_probabilities

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--block", type=int, default=20, help="episodes per row of the first table")
    args = p.parse_args()
    if args.block < 1:
        raise SystemExit("--block must be >= 1")
    state = load_checkpoint(args.run_dir / "checkpoint.pt")
    config, counters = state["config"], state["counters"]
    if not state.get("replay"):
        raise SystemExit(f"{args.run_dir}: the checkpoint names no replay copy")
    copy = args.run_dir / state["replay"]
    replay = load_checkpoint(copy / "replay.pt")
    rows = TensorDict.load_memmap(copy / "rows")  # [n]
    n = replay["len"]
    reward = rows.get(("next", "reward")).reshape(n, -1)[:, 0].float()  # [n]
    done = rows.get(("next", "done")).reshape(n, -1).any(-1)  # [n]
    near = reward >= GROUPS[-1][0]  # [n]
    stays = longest_stays(near, done)  # [E]
    row_of = torch.cat([torch.zeros(1, dtype=torch.long), done.long().cumsum(0)[:-1]])  # [n]
    print(f"{args.run_dir}: {counters['updates']:,} updates, {n:,} steps in {len(stays)} "
          "episodes stored")
    print(f"{'episodes':<16}{'near the top':>14}{'longest stay: mean':>20}{'max':>6}")
    for a in range(0, len(stays), args.block):
        b = min(a + args.block, len(stays))
        in_block = (row_of >= a) & (row_of < b)
        print(f"{f'{a}-{b - 1}':<16}{near[in_block].float().mean():>14.3f}"
              f"{stays[a:b].float().mean():>20.1f}{int(stays[a:b].max()):>6}")
    if "scores" not in replay:
        return  # a uniform replay: no scores
    scores = replay["scores"]["scores"][:n]  # [n]
    L = config["seq_len"] + 1
    f, alpha = config["replay_priority"], config["priority_exponent"]
    drawn = predicted_rate(window_start_probabilities(scores, done, L, f, alpha), L)  # [n]
    uniform = predicted_rate(window_start_probabilities(scores, done, L, 0.0, alpha), L)  # [n]

    print(f"prioritised draws, f = {f}, alpha = {alpha}; scores: median {scores.median():.2f}, "
          f"90th percentile {scores.quantile(0.9):.2f}, max {scores.max():.2f}")  # fmt: skip
    print(f"{'steps':<32}{'count':>8}{'mean score':>12}{'rate vs uniform':>17}")
    for low, high, name in GROUPS:
        group = (reward >= low) & (reward < high)
        if not group.any():
            print(f"{name:<32}{0:>8}{'-':>12}{'-':>17}")
            continue
        rate = drawn[group].sum() / uniform[group].sum().clamp_min(1e-300)
        print(f"{name:<32}{int(group.sum()):>8}{scores[group].mean():>12.2f}{rate:>17.2f}")


if __name__ == "__main__":
    main()
