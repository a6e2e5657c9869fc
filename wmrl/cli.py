"""Command line: ``wmrl pilco ...`` (also ``python -m wmrl pilco ...``).

Example::

    wmrl pilco --task cartpole-swingup --seed 0 --out runs/cartpole-seed0
    wmrl pilco --out runs/cartpole-seed0 --resume      # continue an interrupted run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``wmrl`` argument parser (sub-commands ``pilco`` and ``dreamer``).

    >>> build_parser().parse_args(["pilco", "--seed", "3"]).seed
    3
    """
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
    _add_dreamer_parser(sub)
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


def _add_dreamer_parser(sub) -> None:
    """``wmrl dreamer ...``: the Dreamer agent (:mod:`wmrl.agents.dreamer`)."""
    p = sub.add_parser(
        "dreamer", help="Dreamer (v1 or v3) with an RSSM world model, from pixels or states"
    )
    p.add_argument("--task", default="cartpole-swingup",
                   help="cartpole-swingup, pendulum-swingup or dmc:<domain>-<task>")  # fmt: skip
    p.add_argument("--pixels", action="store_true", help="observe 64x64 frames")
    p.add_argument("--version", type=int, default=1, choices=[1, 3], help="Dreamer v1 or v3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="run directory (default runs/dreamer-<task>-seed<seed>)")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--preset", default="default", choices=["default", "small", "debug"])
    p.add_argument("--env-steps", type=int, default=None, help="budget in environment steps")
    p.add_argument("--max-wall-s", type=float, default=None, help="budget in wall seconds")
    p.add_argument("--train-ratio", type=float, default=None,
                   help="replayed steps per collected step")  # fmt: skip
    p.add_argument("--max-steps", type=int, default=None, help="episode length (env steps)")
    p.add_argument("--action-repeat", type=int, default=None)
    p.add_argument("--frame-stack", type=int, default=None,
                   help="observations seen at once, stacked along the channels (default 1)")
    p.add_argument("--reconstruct", choices=("all", "newest"), default=None,
                   help="with --frame-stack, what the decoder reconstructs (default all)")
    p.add_argument("--categorical-state", choices=("sample", "probs", "mixed"), default=None,
                   help="v3: the latent passes on one-hot samples (default), their "
                        "probabilities, or probabilities read through a sample by the decoder "
                        "and reward head")  # fmt: skip
    p.add_argument("--action-input", choices=("joint", "separate"), default=None,
                   help="v3: the prior reads the action in one layer with the latent (default) "
                        "or through an embedding of its own (DreamerV3's code)")  # fmt: skip
    p.add_argument("--free-bits-dynamic", type=float, default=None,
                   help="v3: KL floor of the term that trains the prior (default: the 1-nat "
                        "floor of both terms; 0 suits --categorical-state probs)")  # fmt: skip
    p.add_argument("--overshooting", type=int, default=None, metavar="D",
                   help="also train the prior on its 2..D-step open-loop predictions "
                        "(latent overshooting; default 0: off)")  # fmt: skip
    p.add_argument("--replay-priority", type=float, default=None, metavar="FRACTION",
                   help="draw this part of the replayed sequences in proportion to the world "
                        "model's KL at their steps, the rest uniformly (default 0: uniform)")
    p.add_argument("--priority-exponent", type=float, default=None, metavar="ALPHA",
                   help="exponent on those KL scores (default 1)")
    p.add_argument("--exploration-bonus", type=float, default=None,
                   help="weight of the ensemble-disagreement bonus (Plan2Explore; 0: off)")
    p.add_argument("--action-noise", type=float, default=None,
                   help="std of the Gaussian noise on collected actions (default 0.3 v1, 0 v3)")
    p.add_argument("--noise-correlation", type=float, default=None, metavar="RHO",
                   help="lag-one correlation of that noise, an AR(1) process (default 0: white); "
                        "above 0 the prefill acts with it too")  # fmt: skip
    p.add_argument("--entropy-bonus", type=float, default=None,
                   help="weight of the actor's entropy bonus (default 3e-4 v3, 0 v1)")
    p.add_argument("--entropy-target", type=float, default=None,
                   help="adapt the entropy bonus towards this entropy per step (nats), as SAC")
    p.add_argument("--actor-gradient", default=None, choices=["dynamics", "reinforce"],
                   help="actor gradient: through the model's dynamics, or REINFORCE")
    p.add_argument("--actor-dist", default=None, choices=["tanh_normal", "bounded_normal"],
                   help="actor distribution: tanh-Gaussian (default) or DreamerV3's bounded Normal")
    p.add_argument("--exploring-starts", type=float, nargs="?", const=1.0, default=None,
                   metavar="FRACTION",
                   help="built-in tasks: training episodes start at uniformly random angles, "
                        "all of them or this fraction (evaluation keeps the task's "
                        "start)")  # fmt: skip
    p.add_argument("--actor-lr", type=float, default=None)
    p.add_argument("--value-lr", type=float, default=None)
    p.add_argument("--model-lr", type=float, default=None)
    p.add_argument("--num-envs", type=int, default=None, help="environments per collector")
    p.add_argument("--collector-workers", type=int, default=None,
                   help="collector processes (TorchRL MultiSyncCollector)")  # fmt: skip
    p.add_argument("--eval-every", type=int, default=None, help="env steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--precision", default=None, choices=["auto", "bf16", "fp32"])
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training (launch with torchrun)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--release-memory", action="store_true",
                   help="on CPU, let malloc return freed memory to the system (glibc's default; "
                        "slower: large tensors are faulted in afresh every update)")
    p.add_argument("--logger", default="csv", choices=["csv", "tensorboard", "wandb", "none"])
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-plots", action="store_true")


def _dreamer(args: argparse.Namespace) -> int:
    import torch

    from wmrl.agents.dreamer import Dreamer, DreamerConfig
    from wmrl.cpu_memory import retain_freed_memory

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / f"dreamer-{args.task.replace(':', '-')}-seed{args.seed}"
    names = ("env_steps", "max_wall_s", "train_ratio", "max_steps", "action_repeat",
             "frame_stack", "reconstruct", "categorical_state", "action_input",
             "free_bits_dynamic", "num_envs", "collector_workers", "eval_every", "eval_episodes",
             "checkpoint_every",
             "precision", "device", "exploration_bonus", "action_noise", "entropy_bonus",
             "entropy_target", "exploring_starts", "noise_correlation", "overshooting",
             "actor_gradient", "actor_dist", "actor_lr", "value_lr", "model_lr",
             "replay_priority", "priority_exponent")  # fmt: skip
    overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.no_progress:
        overrides["progress"] = False
    if args.distributed:
        overrides["distributed"] = True
    logger = None
    if args.logger != "none" and os.environ.get("RANK", "0") == "0":
        from torchrl.record.loggers import get_logger

        logger = get_logger(args.logger, logger_name=str(out), experiment_name="log")
    start = time.perf_counter()
    if args.resume:
        agent = Dreamer.resume(out, logger=logger, **overrides)
        print(f"resuming {out} at {agent.env_steps} env steps", file=sys.stderr)
    else:
        if (out / "checkpoint.pt").exists():
            print(f"{out / 'checkpoint.pt'} exists: use --resume to continue it, or choose "
                  "another --out", file=sys.stderr)  # fmt: skip
            return 2
        config = DreamerConfig.preset(args.preset, task=args.task, pixels=args.pixels,
                                      version=args.version, seed=args.seed, **overrides)
        agent = Dreamer(config, out_dir=out, logger=logger)
    if agent.device.type == "cpu" and not args.release_memory:
        retain_freed_memory()  # reuse the update's large blocks (wmrl.cpu_memory)
    if agent.dist.is_main:
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(agent.config), indent=2))
    agent.run()
    if agent.dist.is_main:
        if not args.no_plots:
            write_dreamer_figures(agent, out)
        with open(out / "records.json", "w") as f:
            json.dump([dataclasses.asdict(r) for r in agent.records], f, indent=1)
        print(agent.summary())
        print(f"(this invocation: {time.perf_counter() - start:.1f} s; outputs in {out})",
              file=sys.stderr)  # fmt: skip
    return 0


def write_dreamer_figures(agent, out: Path) -> list[Path]:
    """Learning curve (return and cost per step) and an open-loop prediction of the last
    evaluation episode against its real frames (or states)."""
    from wmrl.agents.dreamer_figures import (
        open_loop_prediction,
        plot_learning_curve,
        plot_state_prediction,
        plot_video_prediction,
    )

    c = agent.config
    what = f"Dreamer v{c.version} on {c.task} ({'pixels' if c.pixels else 'states'})"
    paths = [
        plot_learning_curve(agent.records, out / "learning_curve.png", title=what),
        plot_learning_curve(agent.records, out / "cost_per_step.png", title=what, cost=True),
    ]
    episode = agent.last_eval_episode
    if episode is not None:
        context = min(5, episode.shape[0] // 3)
        horizon = min(15, episode.shape[0] - context - 1)
        real, pred = open_loop_prediction(agent.nets, episode, context, horizon)
        if c.pixels:
            paths.append(plot_video_prediction(real, pred, out / "open_loop.png", context))
        else:
            paths.append(plot_state_prediction(real, pred, out / "open_loop.png", context))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Example: the ``debug`` preset with only the random trial (a fraction of a second) writes a
    run directory; running again into it without ``--resume`` refuses (status 2, a message on
    stderr), and ``--help`` exits through ``SystemExit`` as usual for ``argparse``.

    >>> import contextlib, io, tempfile
    >>> from pathlib import Path
    >>> args = ["pilco", "--preset", "debug", "--max-trials", "0", "--no-plots", "--no-progress"]
    >>> with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
    ...     first, again = main([*args, "--out", out]), main([*args, "--out", out])
    ...     files = sorted(p.name for p in Path(out).iterdir())
    >>> first, again, files
    (0, 2, ['checkpoint.pt', 'config.json', 'log', 'records.json'])
    >>> with contextlib.redirect_stdout(io.StringIO()) as text:
    ...     try:
    ...         main(["pilco", "--help"])
    ...     except SystemExit as stop:
    ...         print(stop.code)
    >>> text.getvalue().startswith("usage: wmrl pilco"), text.getvalue().splitlines()[-1]
    (True, '0')
    """
    args = build_parser().parse_args(argv)
    if args.command == "pilco":
        return _pilco(args)
    if args.command == "dreamer":
        return _dreamer(args)
    raise AssertionError(args.command)  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
