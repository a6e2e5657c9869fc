"""One figure of Dreamer learning curves: evaluation cost per step against environment steps.

Reads the ``<task>-v<version>-seed<seed>.json`` files that ``benchmarks/dreamer_pixels.py``
writes at the end of each run, or the run directories themselves (their ``checkpoint.pt``: runs
that were stopped and can be resumed), and draws each run's evaluation cost per step
(deterministic policy, separate episodes), its random policy's cost and half of it (the pendulum
criterion).

Usage::

    python benchmarks/dreamer_curves.py runs/a/pendulum-swingup-v1-seed0.json:"label" ... \\
        --title "..." --out docs/figures/dreamer_pixels_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_records(path: Path) -> tuple[list[dict], str]:
    """The evaluation records and the task of a run: its JSON summary or its run directory."""
    if path.is_dir():
        from wmrl.agents.checkpoint import load_checkpoint

        state = load_checkpoint(path / "checkpoint.pt")
        return list(state["records"]), state["config"]["task"]
    data = json.loads(path.read_text())
    return data["records"], data["summary"]["task"]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wmrl.plots import save_figure

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+",
                   help="JSON file or run directory, optionally followed by :label")  # fmt: skip
    p.add_argument("--title", default="Dreamer: evaluation cost per step")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    for i, spec in enumerate(args.runs):
        path, _, label = spec.partition(":")
        records, task = read_records(Path(path))
        color = f"C{i}"
        evals = [r for r in records if r["policy"] == "agent"]
        rand = next(r for r in records if r["policy"] == "random")["eval_cost_per_step"]
        label = label or task
        ax.plot([0] + [r["env_steps"] for r in evals],
                [rand] + [r["eval_cost_per_step"] for r in evals],
                "o-", color=color, label=label)  # fmt: skip
        ax.axhline(rand, color=color, ls=":", lw=1)
        ax.axhline(rand / 2, color=color, ls="--", lw=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation cost per step")
    ax.set_ylim(0, 1.05)
    ax.set_title(args.title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.plot([], [], "k:", lw=1, label="random policy (dotted), half of it (dashed)")
    ax.legend(fontsize=8, loc="lower left")
    save_figure(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
