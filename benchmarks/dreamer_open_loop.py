"""Open-loop video prediction of a Dreamer checkpoint on a fresh episode of random actions.

Loads the networks of a pixel run's ``checkpoint.pt`` (``benchmarks/dreamer_pixels.py`` or
``wmrl dreamer --pixels``), rolls out one episode of the task with uniformly random actions,
filters the first ``--context`` frames through the posterior, predicts the next ``--horizon``
frames with the prior alone, and writes the image strip (real frames above, model below). It
also prints the squared error per frame and the error on the pixels of the moving object (those
that differ from the episode's mean frame), which tells a model that tracks the object from one
that draws the average frame.

Usage::

    python benchmarks/dreamer_open_loop.py runs/bench-dreamer-pendulum/pendulum-swingup-v1-seed0 \\
        --out docs/figures/dreamer_pendulum_open_loop.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    from wmrl.agents.dreamer import load_trained_nets
    from wmrl.agents.dreamer_figures import open_loop_prediction, plot_video_prediction
    from wmrl.agents.envs import make_env, stack_observations

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="figure (default: <run_dir>/open_loop_random.png)")
    p.add_argument("--context", type=int, default=5)
    p.add_argument("--horizon", type=int, default=15)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)

    c, nets, counters = load_trained_nets(args.run_dir)
    if not c.pixels:
        raise SystemExit("the run does not observe pixels")
    env = make_env(c.task, pixels=True, max_steps=c.max_steps, action_repeat=c.action_repeat,
                   seed=args.seed)  # fmt: skip
    env = stack_observations(env, "pixels", c.frame_stack)
    torch.manual_seed(args.seed)
    episode = env.rollout(args.context + args.horizon + 1).select("pixels", "action")
    with torch.no_grad():
        real, pred = open_loop_prediction(nets, episode, args.context, args.horizon)  # [L, 3k, ..]
    real, pred = real[:, -3:], pred[:, -3:]  # the newest frame of each stack
    per_frame = ((real - pred) ** 2).sum((1, 2, 3))  # [L]
    mean_frame = real.mean(0, keepdim=True)  # [1, 3, H, W]
    moving = ((real - mean_frame).abs().sum(1, keepdim=True) > 0.1).float()  # [L, 1, H, W]
    object_err = (((real - pred) ** 2).sum(1, keepdim=True) * moving).sum() / moving.sum()
    baseline = (((real - mean_frame) ** 2).sum(1, keepdim=True) * moving).sum() / moving.sum()
    updates = counters["updates"]
    print(f"{args.run_dir}: {updates} updates")
    print(f"squared error per frame (sum over pixels): {per_frame.mean():.1f}")
    print(f"moving-object pixels: model {object_err:.3f}, episode's mean frame {baseline:.3f}")
    out = args.out or args.run_dir / "open_loop_random.png"
    plot_video_prediction(real, pred, out, args.context)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
