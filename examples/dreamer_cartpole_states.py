"""PILCO and Dreamer side by side on the same cart-pole swing-up, from the state.

Both agents get the built-in cart-pole (PILCO's: 0.5 kg cart and pole, 0.5 m pole, force in
[-10, 10] N held for 0.1 s, 40-step = 4 s episodes, saturating cost of the pole tip's distance to
upright) and observe the noisy state ``[x, ẋ, θ̇, θ]``; Dreamer's MLP encoder sees the angle as
``sin θ, cos θ`` (PILCO's policy sees the same features). The comparison reported is the cost of
separate evaluation episodes against the real interaction used to reach it:

* PILCO (:class:`wmrl.agents.pilco.PILCO`): a GP world model with moment matching and analytic
  policy search; measured on five seeds: solved at learning trial 3-5, after 160-240 steps
  (16-24 s) of interaction including the random trial.
* Dreamer (:class:`wmrl.agents.dreamer.Dreamer`, low-dimensional RSSM): a learned latent model
  and an actor-critic trained in imagination through the same policy-search code
  (:class:`wmrl.search.PolicySearch`); it needs far more interaction (tens of thousands of
  steps) but no assumption of smooth dynamics or a known cost.

Run::

    python examples/dreamer_cartpole_states.py --out runs/cartpole-side-by-side   # hours
    python examples/dreamer_cartpole_states.py --debug                            # a minute
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from wmrl.agents.dreamer import Dreamer, DreamerConfig
from wmrl.agents.pilco import PILCO, PILCOConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/cartpole-side-by-side"))
    parser.add_argument("--dreamer-steps", type=int, default=40_000)
    parser.add_argument("--debug", action="store_true", help="tiny models and budgets")
    args = parser.parse_args()
    torch.set_num_threads(2)

    preset = "debug" if args.debug else "default"
    pilco = PILCO(PILCOConfig.preset(preset), out_dir=args.out / "pilco")
    pilco.run()
    learn = [r for r in pilco.records if not r.random]
    pilco_steps = len(pilco.records) * pilco.env.max_steps

    if args.debug:
        config = DreamerConfig.preset("debug", task="cartpole-swingup", max_steps=40)
    else:  # 40-step episodes as PILCO's; 32-step training sequences fit in them
        config = DreamerConfig.preset("small", task="cartpole-swingup", max_steps=40,
                                      env_steps=args.dreamer_steps, train_ratio=256.0,
                                      eval_every=2_000, checkpoint_every=2_000)  # fmt: skip
    dreamer = Dreamer(config, out_dir=args.out / "dreamer")
    dreamer.run()
    evals = [r for r in dreamer.records if r.policy == "agent"]

    print(f"{'agent':8s} {'env steps':>10s} {'eval cost / episode':>20s} {'wall [s]':>9s}")
    print(f"{'PILCO':8s} {pilco_steps:10d} {learn[-1].test_cost:20.2f} "
          f"{sum(r.wall_s for r in pilco.records):9.0f}")  # fmt: skip
    print(f"{'Dreamer':8s} {dreamer.env_steps:10d} {-evals[-1].eval_return:20.2f} "
          f"{dreamer.wall_s:9.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
