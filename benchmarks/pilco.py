"""PILCO learning benchmark: trials to solve, interaction time and wall time per seed.

Runs the agent (``wmrl pilco``'s defaults) on a task for several seeds, one process per seed, and
prints a table; also times one policy-gradient evaluation (H = 40, 50 RBF basis functions,
n = 300 transitions) in the same conditions.

Usage::

    python benchmarks/pilco.py --task cartpole-swingup --seeds 0 1 2 3 4 --jobs 2
    python benchmarks/pilco.py --gradient-only          # only the policy-gradient timing
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def time_policy_gradient(
    n: int = 300, horizon: int = 40, num_basis: int = 50, repeats: int = 5
) -> dict[str, float]:
    """Median seconds of one objective evaluation and of its backward pass."""
    from wmrl.agents.pilco import PILCO, PILCOConfig
    from wmrl.search import PolicySearch, expected_cost_objective

    agent = PILCO(PILCOConfig(task="cartpole-swingup", num_basis=num_basis, progress=False))
    episodes, k = [], 0
    while sum(e.shape[0] for e in episodes) < n:
        policy = agent._random_policy(torch.Generator().manual_seed(k))
        episodes.append(agent._transitions(agent._episode(agent.env, policy, k)))
        k += 1
    data = torch.cat(episodes)[:n]
    model = agent._new_model()
    t0 = time.perf_counter()
    model.fit(data)
    fit_s = time.perf_counter() - t0
    search = PolicySearch(
        agent._imagined_env(model), agent.policy, expected_cost_objective, horizon
    )
    fwd, bwd = [], []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        loss = search.loss(agent.start_belief())
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    fwd, bwd = fwd[1:], bwd[1:]  # the first call warms caches
    return {
        "n": n,
        "horizon": horizon,
        "num_basis": num_basis,
        "fit_s": fit_s,
        "forward_s": statistics.median(fwd),
        "backward_s": statistics.median(bwd),
        "gradient_s": statistics.median(f + b for f, b in zip(fwd, bwd)),
    }


def run_seed(task: str, seed: int, out: Path, extra: list[str]) -> dict:
    run_dir = out / f"{task}-seed{seed}"
    cmd = [
        sys.executable,
        "-m",
        "wmrl",
        "pilco",
        "--task",
        task,
        "--seed",
        str(seed),
        "--out",
        str(run_dir),
        "--no-progress",
        *extra,
    ]
    if (run_dir / "checkpoint.pt").exists():
        cmd.append("--resume")
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", **__import__("os").environ},
    )
    wall = time.perf_counter() - t0
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    records = (
        json.loads((run_dir / "records.json").read_text())
        if (run_dir / "records.json").exists()
        else []
    )
    solved_at = next((r["trial"] for r in records if r["solved"]), None)
    learn = [r for r in records if not r["random"]]
    return {
        "seed": seed,
        "summary": summary,
        "process_wall_s": wall,
        "trials": len(records),
        "solved_at_trial": solved_at,
        "interaction_s": records[-1]["interaction_s"] if records else None,
        "wall_s": sum(r["wall_s"] for r in records),
        "wall_per_trial_s": statistics.mean(r["wall_s"] for r in learn) if learn else None,
        "search_per_trial_s": statistics.mean(r["search_s"] for r in learn) if learn else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="cartpole-swingup")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--jobs", type=int, default=2, help="seeds run in parallel (1 thread each)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-pilco"))
    p.add_argument("--gradient-only", action="store_true")
    p.add_argument(
        "--extra", nargs=argparse.REMAINDER, default=[], help="extra arguments for `wmrl pilco`"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    grad = time_policy_gradient()
    print(
        "policy-gradient evaluation (H=40, 50 RBF, n=300): "
        f"forward {grad['forward_s']:.3f} s, backward {grad['backward_s']:.3f} s, "
        f"total {grad['gradient_s']:.3f} s (GP fit {grad['fit_s']:.2f} s)"
    )
    if args.gradient_only:
        return
    from concurrent.futures import ThreadPoolExecutor

    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda s: run_seed(args.task, s, args.out, args.extra), args.seeds))
    print(f"\n{args.task}")
    print("| seed | solved at trial | trials | interaction [s] | wall [s] | wall/trial [s] |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['seed']} | {r['solved_at_trial']} | {r['trials']} | {r['interaction_s']} | "
            f"{r['wall_s']:.0f} | {r['wall_per_trial_s'] or 0:.0f} |"
        )
    (args.out / f"{args.task}-results.json").write_text(
        json.dumps({"gradient": grad, "seeds": results}, indent=1)
    )


if __name__ == "__main__":
    main()
