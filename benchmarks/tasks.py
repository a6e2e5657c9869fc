"""Throughput of the built-in tasks: transitions/s (state mode) and frames/s (64x64 pixels).

Run from the repository root::

    .venv/bin/python benchmarks/tasks.py             # timings
    .venv/bin/python benchmarks/tasks.py --figures   # also write docs/figures/*_strip.png

Each figure is the median of ``--repeats`` timed 40-step ``env.rollout`` calls (after one
warm-up) under ``torch.no_grad()`` with ``torch.set_num_threads(--threads)``, as wall-clock
throughput and as throughput per CPU-second of this process (``time.process_time``, summed over
its threads), which other processes on a shared machine disturb much less. Environments are
built with ``run_type_checks=False`` (the default), so no spec is validated per step. If
gymnasium is installed, ``GymEnv("Pendulum-v1", from_pixels=True)`` is timed for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from wmrl.envs.tasks import CartPoleSwingUp, PendulumSwingUp

__all__ = ["time_rollout", "frame_strip", "main"]

STEPS = 40


def time_rollout(env, steps: int = STEPS, repeats: int = 7) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``env.rollout(steps)`` with random actions."""
    wall, cpu = [], []
    with torch.no_grad():
        env.rollout(steps, break_when_any_done=False)  # warm-up
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            env.rollout(steps, break_when_any_done=False)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def frame_strip(env, states: torch.Tensor, path: Path, title: str) -> None:
    """Save the frames of ``states`` ``[n, D]`` side by side as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = env.render(states).cpu().numpy()  # [n, 64, 64, 3]
    n = frames.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 2.0))
    theta = states[:, env.angle_dims[0]]
    for i, ax in enumerate(axes):
        ax.imshow(frames[i], interpolation="nearest")
        ax.set_title(f"θ = {theta[i] / torch.pi:.2f}π", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_figures(out: Path) -> None:
    """A hand-made swing from hanging (θ = 0) to upright (θ = π), 8 frames per task."""
    n = 8
    theta = torch.linspace(0.0, torch.pi, n)
    cart = torch.linspace(-0.6, 0.0, n)  # the cart returns to the centre as the pole rises
    zeros = torch.zeros(n)
    cp = torch.stack([cart, zeros, zeros, theta], dim=-1)  # [n, 4]
    frame_strip(CartPoleSwingUp(), cp, out / "cartpole_strip.png",
                "CartPoleSwingUp: x from -0.6 m to 0, θ from 0 (hanging) to π (upright)")
    pe = torch.stack([zeros, theta], dim=-1)  # [n, 2]
    frame_strip(PendulumSwingUp(), pe, out / "pendulum_strip.png",
                "PendulumSwingUp: θ from 0 (hanging) to π (upright)")
    print(f"wrote {out / 'cartpole_strip.png'} and {out / 'pendulum_strip.png'}")


def gym_pendulum_fps(repeats: int) -> float | None:
    """Frames/s of gymnasium's Pendulum-v1 pixels through TorchRL's GymEnv, if available."""
    try:
        import gymnasium  # noqa: F401
        from torchrl.envs import GymEnv

        env = GymEnv("Pendulum-v1", from_pixels=True, pixels_only=True)
    except Exception as err:  # gymnasium or pygame missing
        print(f"GymEnv('Pendulum-v1') pixels: skipped ({type(err).__name__}: {err})")
        return None
    fps = STEPS / time_rollout(env, repeats=repeats)[0]
    print(f"GymEnv('Pendulum-v1') pixels, batch 1: {fps:,.0f} frames/s (wall-clock)")
    return fps


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--state-batch", type=int, default=256)
    parser.add_argument("--pixel-batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--figures", action="store_true", help="write the frame strips")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.figures:
        write_figures(args.out)
    print(f"torch {torch.__version__}, {args.threads} threads, device {args.device}, "
          f"median of {args.repeats} rollouts of {STEPS} steps")
    print(f"{'':<40} {'wall-clock':>12} {'per CPU-s':>12}")
    results: dict[str, float] = {}
    for cls in (CartPoleSwingUp, PendulumSwingUp):
        for unit, batch, kw in (
            ("transitions/s", args.state_batch, {}),
            ("frames/s", args.pixel_batch, {"from_pixels": True, "pixels_only": True}),
        ):
            env = cls(batch_size=[batch], device=args.device, seed=0, **kw)
            wall, cpu = time_rollout(env, repeats=args.repeats)
            key = f"{cls.__name__} {unit}, batch {batch}"
            results[key] = STEPS * batch / wall
            results[key + " (per CPU-s)"] = STEPS * batch / cpu
            print(f"{key:<40} {STEPS * batch / wall:>12,.0f} {STEPS * batch / cpu:>12,.0f}")
    fps = gym_pendulum_fps(args.repeats)
    if fps is not None:
        results["GymEnv Pendulum-v1 frames/s"] = fps
    return results


if __name__ == "__main__":
    main()
