"""A pendulum Dreamer checkpoint's deterministic policy: angles and frames of fresh episodes.

Runs ``--episodes`` evaluation episodes of the checkpoint's task with the deterministic policy
(the actor's mode, the filter on the agent's own frames) from the task's start and draws two
figures:

* ``<out>.png``: the distance from upright, ``(1 + cos θ) / 2`` (0 upright, 1 hanging; the
  built-in pendulum's ``θ = π`` is upright), against time for every episode, with each
  episode's cost per step in the legend;
* ``<out>_frames.png``: every ``--every``-th frame of the first episode, the newest of the stacked
  ones when the agent sees several.

Usage::

    python benchmarks/dreamer_episodes.py runs/bench-dreamer/pendulum-swingup-v3-seed0 \\
        --out docs/figures/dreamer_pendulum_episodes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type


def main() -> None:
    from wmrl.agents.dreamer import load_trained_nets, make_agent_env
    from wmrl.plots import plot_frame_strip, plt, save_figure

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, default=None,
                   help="figure path without suffix (default <run_dir>/episodes)")  # fmt: skip
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--every", type=int, default=10, help="frame spacing of the strip, agent steps")
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args()
    if args.episodes < 1 or args.every < 1:
        raise SystemExit("--episodes and --every must be >= 1")
    torch.set_num_threads(1)

    c, nets, counters = load_trained_nets(args.run_dir)
    if not (c.task.startswith("pendulum") and c.pixels):
        raise SystemExit(f"needs a pixel pendulum run, got task {c.task!r}, pixels={c.pixels}")
    policy = nets.policy
    env = make_agent_env(c.task, pixels=True, batch_size=[args.episodes], max_steps=c.max_steps,
                         action_repeat=c.action_repeat, seed=args.seed,
                         primer_sizes=(policy.state_dim, policy.belief_dim, 1),
                         frame_stack=c.frame_stack)  # fmt: skip
    torch.manual_seed(args.seed)
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        ep = env.rollout(c.max_steps // c.action_repeat, policy, break_when_any_done=False)
    theta = ep["true_state"][..., 1]  # [E, T], the angle each frame shows
    cost = -ep["next", "reward"][..., 0].mean(1) / c.action_repeat  # [E], per env step
    dt = env.base_env.dt * c.action_repeat  # the time between the agent's frames
    t = torch.arange(theta.shape[1]) * dt  # [T]
    updates, steps = counters["updates"], counters["env_steps"]
    title = (f"Dreamer v{c.version}, pixels, deterministic policy after {updates:,} updates "
             f"({steps:,} env steps)")  # fmt: skip

    out = args.out or args.run_dir / "episodes"
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for k in range(args.episodes):
        ax.plot(t, (1 + theta[k].cos()) / 2, lw=1.2, label=f"cost/step {cost[k]:.3f}")
    ax.set_xlabel("time [s]")
    ax.set_ylabel("(1 + cos θ) / 2  (0: upright)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    print(save_figure(fig, out.with_name(out.name + ".png")))

    pixels = ep["pixels"][0, :: args.every]  # [N, H, W, 3 * frame_stack], uint8 or float
    frames = pixels[..., -3:]  # [N, H, W, 3], the newest frame
    if frames.is_floating_point():
        frames = (frames.clamp(0, 1) * 255).to(torch.uint8)
    times = (torch.arange(0, theta.shape[1], args.every) * dt).tolist()
    strip = out.with_name(out.name + "_frames.png")
    print(plot_frame_strip(frames, strip, times=times, title=f"episode 1 of {args.episodes}: "
                           f"cost/step {cost[0]:.3f}"))  # fmt: skip
    print("cost per env step:", " ".join(f"{x:.3f}" for x in cost.tolist()),
          f"(mean {cost.mean():.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
