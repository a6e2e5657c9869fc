"""Learning curves of the Dreamer agent from pixels on the built-in swing-up tasks.

For each task (pixel pendulum and cart-pole swing-up by default) one run of
:class:`wmrl.agents.dreamer.Dreamer` with the ``small`` preset (conv depth 16, GRU 128, 16 x 32
batches: sized for two CPU cores) until the environment-step budget or the wall-time budget is
spent. Every ``--eval-every`` environment steps the agent is evaluated on ``--eval-episodes``
separate episodes with its deterministic policy; the uniformly random policy is evaluated the
same way once at the start. Recorded per evaluation: environment steps, updates, evaluation
return, cost per step, wall time (cumulative, including collection and evaluation).

The built-in tasks run at ``dt = 0.1`` s with 100-step (10 s) episodes and no action repeat
(``--max-steps``, ``--action-repeat``). Criterion (pendulum): the evaluation cost per step falls
to at most half of the random policy's within the run.

Outputs in ``--out``: one run directory per task (checkpoint, replay, CSV log, figures from
:func:`wmrl.cli.write_dreamer_figures`), ``<run directory>.json`` (records and summary) and
``summary.md`` (a table for docs/benchmarks_dreamer_agent.md).

Usage::

    # the documented runs: 3 hours each on 2 CPU cores
    python benchmarks/dreamer_pixels.py --budget-hours 3 --out runs/bench-dreamer
    # cart-pole from pixels to 100k environment steps on a GPU
    python benchmarks/dreamer_pixels.py --tasks cartpole-swingup --env-steps 100000 \\
        --budget-hours 12 --device cuda --preset default --out runs/bench-dreamer-gpu
    # smoke test (seconds)
    python benchmarks/dreamer_pixels.py --preset debug --env-steps 48 --out /tmp/bench
    # continue interrupted runs
    python benchmarks/dreamer_pixels.py --resume --budget-hours 3 --out runs/bench-dreamer

Timings taken while other processes share the CPU are not comparable; run on a quiet machine.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch


def field_value(text: str) -> tuple[str, object]:
    """``"FIELD=VALUE"`` to ``(FIELD, VALUE)``, the value read as a Python literal where it is one.

    >>> field_value("model_lr=3e-4"), field_value("actor_dist=bounded_normal")
    (('model_lr', 0.0003), ('actor_dist', 'bounded_normal'))
    """
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return field, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return field, value


def run_task(task: str, args: argparse.Namespace) -> dict:
    from torchrl.record.loggers.csv import CSVLogger

    from wmrl.agents.dreamer import Dreamer, DreamerConfig
    from wmrl.agents.envs import make_env
    from wmrl.cli import write_dreamer_figures

    out = args.out / f"{task}-v{args.version}-seed{args.seed}"
    overrides = dict(
        env_steps=args.env_steps,
        max_wall_s=args.budget_hours * 3600,
        train_ratio=args.train_ratio,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        checkpoint_every=args.eval_every,
        max_steps=args.max_steps,
        action_repeat=args.action_repeat,
        device=args.device,
        precision=args.precision,
        progress=not args.no_progress,
    )
    # given: set (or switched when resuming)
    for k in ("exploration_bonus", "action_noise", "entropy_bonus", "actor_dist", "entropy_target",
              "noise_correlation"):
        if getattr(args, k) is not None:
            overrides[k] = getattr(args, k)
    overrides.update(args.set)  # further DreamerConfig fields, given or switched on resume
    if args.preset == "debug":  # the debug preset's own episode length and schedule
        for k in ("max_steps", "eval_every", "checkpoint_every", "train_ratio"):
            overrides.pop(k)
    env_fn = None
    if args.start_angle is not None:  # a diagnostic: the pendulum starts elsewhere, e.g. upright
        out = out.with_name(out.name + f"-start{args.start_angle:g}")

        def env_fn(batch_size, seed):
            env = make_env(task, pixels=True, batch_size=batch_size, max_steps=args.max_steps,
                           action_repeat=args.action_repeat, seed=seed)  # fmt: skip
            env.base_env.start_mean[1] = args.start_angle  # [θ̇, θ]
            return env

    logger = CSVLogger(exp_name="log", log_dir=str(out))
    if args.resume and (out / "checkpoint.pt").exists():
        agent = Dreamer.resume(out, logger=logger, env_fn=env_fn, **overrides)
    else:
        config = DreamerConfig.preset(args.preset, task=task, pixels=True, version=args.version,
                                      seed=args.seed, **overrides)  # fmt: skip
        agent = Dreamer(config, out_dir=out, logger=logger, env_fn=env_fn)
    agent.run()
    write_dreamer_figures(agent, out)
    records = [dataclasses.asdict(r) for r in agent.records]
    rand = next(r for r in records if r["policy"] == "random")
    evals = [r for r in records if r["policy"] == "agent"]
    best = min(evals, key=lambda r: r["eval_cost_per_step"]) if evals else None
    half = 0.5 * rand["eval_cost_per_step"]
    reached = next((r for r in evals if r["eval_cost_per_step"] <= half), None)
    summary = {
        "task": task,
        "version": args.version,
        "preset": args.preset,
        "env_steps": agent.env_steps,
        "updates": agent.updates,
        "wall_s": agent.wall_s,
        "random_cost_per_step": rand["eval_cost_per_step"],
        "final_cost_per_step": evals[-1]["eval_cost_per_step"] if evals else None,
        "best_cost_per_step": best["eval_cost_per_step"] if best else None,
        "half_random_reached_at_env_steps": reached["env_steps"] if reached else None,
        "half_random_reached_at_wall_s": reached["wall_s"] if reached else None,
        "exploration_bonus": agent.config.exploration_bonus,
        "action_noise": agent.config.collection_noise(),
        "entropy_bonus": agent.config.entropy_weight(),
        "actor_dist": agent.config.actor_dist,
        "entropy_target": agent.config.entropy_target,
        "final_entropy_weight": agent.objective.entropy_weight,
    }
    (args.out / f"{out.name}.json").write_text(
        json.dumps({"summary": summary, "records": records, "config": dataclasses.asdict(
            agent.config)}, indent=1)  # fmt: skip
    )
    return summary


def markdown(summaries: list[dict], args: argparse.Namespace) -> str:
    def fmt(x: float | None, spec: str = ".3f") -> str:
        return "—" if x is None else format(x, spec)

    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{platform.processor() or platform.machine()}, device {args.device}, "
        f"preset {args.preset}, Dreamer v{args.version}, seed {args.seed}; at the end: "
        + ", ".join(f"{s['task']} exploration bonus {s['exploration_bonus']}, action noise "
                    f"{s['action_noise']}, entropy bonus {s['entropy_bonus']}, actor "
                    f"{s['actor_dist']}"
                    for s in summaries),  # fmt: skip
        "",
        "| task | env steps | updates | wall [h] | random cost/step | final | best | "
        "≤ half of random at (env steps, wall h) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        at = s["half_random_reached_at_env_steps"]
        hours = s["half_random_reached_at_wall_s"]
        when = "not reached" if at is None else f"{at}, {hours / 3600:.2f}"
        lines.append(
            f"| {s['task']} (pixels) | {s['env_steps']} | {s['updates']} | "
            f"{s['wall_s'] / 3600:.2f} | {fmt(s['random_cost_per_step'])} | "
            f"{fmt(s['final_cost_per_step'])} | {fmt(s['best_cost_per_step'])} | {when} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=["pendulum-swingup", "cartpole-swingup"])
    p.add_argument("--version", type=int, default=1, choices=[1, 3])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="small", choices=["small", "default", "debug"])
    p.add_argument("--env-steps", type=int, default=50_000, help="budget in environment steps")
    p.add_argument("--budget-hours", type=float, default=3.0, help="wall-time budget per task")
    p.add_argument("--train-ratio", type=float, default=256.0)
    p.add_argument("--eval-every", type=int, default=2_000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--action-repeat", type=int, default=1)
    p.add_argument("--exploration-bonus", type=float, default=None,
                   help="ensemble-disagreement bonus (wmrl.agents.exploration; default 0: off)")
    p.add_argument("--action-noise", type=float, default=None,
                   help="std of the collection noise (default: the version's, 0.3 v1, 0 v3)")
    p.add_argument("--noise-correlation", type=float, default=None, metavar="RHO",
                   help="lag-one correlation of the collection noise and the prefill's random "
                        "actions (default 0: white noise, uniform prefill)")  # fmt: skip
    p.add_argument("--entropy-bonus", type=float, default=None,
                   help="weight of the actor's entropy bonus (default 3e-4 v3, 0 v1)")
    p.add_argument("--entropy-target", type=float, default=None,
                   help="adapt the entropy bonus towards this entropy per step (nats)")
    p.add_argument("--actor-dist", default=None, choices=["tanh_normal", "bounded_normal"],
                   help="the actor's distribution (default tanh_normal)")
    p.add_argument("--start-angle", type=float, default=None,
                   help="pendulum only, a diagnostic: mean start angle in radians (3.1416: "
                        "upright; training and evaluation episodes both start there)")
    p.add_argument("--set", nargs="*", default=[], type=field_value, metavar="FIELD=VALUE",
                   help="further DreamerConfig fields, e.g. model_lr=3e-4")  # fmt: skip
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--release-memory", action="store_true",
                   help="keep glibc's default of returning freed memory (wmrl.cpu_memory)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, default=Path("runs/bench-dreamer"))
    args = p.parse_args()
    if args.start_angle is not None and not all(t.startswith("pendulum") for t in args.tasks):
        p.error("--start-angle is for the pendulum: give --tasks pendulum-swingup")
    torch.set_num_threads(args.threads)
    on_cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    if on_cpu and not args.release_memory:
        from wmrl.cpu_memory import retain_freed_memory

        retain_freed_memory()  # no page faults on the update's large blocks after the first
    args.out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for task in args.tasks:
        t0 = time.perf_counter()
        summaries.append(run_task(task, args))
        print(f"{task}: {summaries[-1]} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    table = markdown(summaries, args)
    (args.out / "summary.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
