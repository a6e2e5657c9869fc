"""Command line: ``wmrl pilco ...`` (also ``python -m wmrl pilco ...``).

Example::

    wmrl pilco --task cartpole-swingup --seed 0 --out runs/cartpole-seed0
    wmrl pilco --out runs/cartpole-seed0 --resume      # continue an interrupted run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wmrl", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pilco", help="PILCO with a GP world model on a low-dimensional task")
    p.add_argument(
        "--task", default="cartpole-swingup", choices=["cartpole-swingup", "pendulum-swingup"]
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, default=None, help="run directory (default runs/<task>-seed<seed>)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--preset", default="default", choices=["default", "debug"])
    p.add_argument(
        "--max-trials", type=int, default=None, help="learning trials after the random one"
    )
    p.add_argument("--policy-steps", type=int, default=None, help="L-BFGS iterations per trial")
    p.add_argument("--num-basis", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    return parser


def _pilco(args: argparse.Namespace) -> int:
    import torch
    from torchrl.record.loggers.csv import CSVLogger

    from wmrl.agents.pilco import PILCO, PILCOConfig

    out = args.out or Path("runs") / f"{args.task}-seed{args.seed}"
    overrides = {
        k: v
        for k, v in {
            "max_trials": args.max_trials,
            "policy_steps": args.policy_steps,
            "num_basis": args.num_basis,
        }.items()
        if v is not None
    }
    if args.no_progress:
        overrides["progress"] = False
    logger = CSVLogger(exp_name="log", log_dir=str(out))
    start = time.perf_counter()
    if args.resume:
        agent = PILCO.resume(out, logger=logger, **overrides)
        print(f"resuming {out} after {agent.trials_done} trials", file=sys.stderr)
    else:
        ckpt = out / "checkpoint.pt"
        if ckpt.exists():
            print(
                f"{ckpt} exists: use --resume to continue it, or choose another --out",
                file=sys.stderr,
            )
            return 2
        config = PILCOConfig.preset(args.preset, task=args.task, seed=args.seed, **overrides)
        agent = PILCO(config, out_dir=out, logger=logger)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(agent.config), indent=2))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    agent.run()
    if not args.no_plots:
        write_pilco_figures(agent, out)
    with open(out / "records.json", "w") as f:
        json.dump([dataclasses.asdict(r) for r in agent.records], f, indent=1)
    print(agent.summary())
    print(
        f"(this invocation: {time.perf_counter() - start:.1f} s; outputs in {out})", file=sys.stderr
    )
    return 0


def write_pilco_figures(agent, out: Path) -> list[Path]:
    """Cost per trial, the last trial's prediction against reality, a frame strip."""
    import torch

    from wmrl.plots import plot_frame_strip, plot_prediction, plot_trial_costs

    paths = [
        plot_trial_costs(
            agent.records,
            out / "costs.png",
            title=f"PILCO on {agent.config.task} (seed {agent.config.seed})",
        )
    ]
    env = agent.env
    if agent.last_prediction is not None and agent.last_episode is not None:
        pred = agent.last_prediction["next", "observation"]
        mean, var = pred["mean"][0], pred["var"][0]
        real = agent.last_episode["next", "observation"]
        names = getattr(env, "state_names", None)
        paths.append(
            plot_prediction(
                mean,
                var,
                real,
                out / "prediction.png",
                dt=float(env.dt),
                names=names,
                title="last trial: predicted vs real",
            )
        )
    if agent.last_episode is not None and hasattr(env, "render"):
        states = agent.last_episode["next", "observation"]
        idx = torch.linspace(0, states.shape[0] - 1, 10).round().long()
        frames = env.render(states[idx])
        paths.append(
            plot_frame_strip(
                frames, out / "frames.png", times=[(int(i) + 1) * float(env.dt) for i in idx]
            )
        )
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "pilco":
        return _pilco(args)
    raise AssertionError(args.command)  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
