"""How well a Dreamer checkpoint's prior predicts rewards ``d`` steps open loop, on the pendulum.

Imagination runs the prior ``H`` steps open loop from a filtered latent, and the actor is
trained on the rewards the reward head reads off those latents. This script measures that
directly, on the same fresh episodes for every run given:

1. ``E`` episodes of the built-in task from its own start (hanging down), acting with the AR(1)
   random actions of the correlated prefill
   (:class:`~wmrl.agents.action_noise.CorrelatedRandomPolicy`, ``ρ = 0.8``), which swing the
   pendulum up in about two thirds of the episodes. The seed fixes the actions, so every run
   sees the same states.
2. Each run's world model filters the whole episode; from every filtered latent the prior is
   rolled ``d = 1..H`` steps with the episode's actions
   (:func:`~wmrl.rssm.overshooting.open_loop_predictions`).
3. Per distance ``d``: the mean absolute error of the decoded reward against the real one, over
   all steps and over the steps where the real reward is above ``-0.5`` (the pendulum in its
   upper part), and the KL from the posterior of the predicted step to the prediction.

Usage::

    python benchmarks/open_loop_error.py runs/a/pendulum-swingup-v3-seed0 runs/b/...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tensordict import TensorDict


def main() -> None:
    from wmrl.agents.action_noise import CorrelatedRandomPolicy
    from wmrl.agents.dreamer import load_trained_nets, make_agent_env
    from wmrl.agents.dreamer_figures import _as_model_input
    from wmrl.rssm.functional import categorical_kl, unimix_probs
    from wmrl.rssm.overshooting import open_loop_predictions
    from wmrl.rssm.twohot import default_bins, two_hot_decode

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--distances", type=int, nargs="*", default=[1, 2, 5, 10, 15])
    p.add_argument("--seed", type=int, default=13)
    args = p.parse_args()
    torch.set_num_threads(1)

    for run_dir in args.run_dirs:
        c, nets, counters = load_trained_nets(run_dir)
        if c.version != 3 or not c.task.startswith("pendulum"):
            raise SystemExit(f"{run_dir}: needs a DreamerV3 pendulum run, got version "
                             f"{c.version} on {c.task!r}")  # fmt: skip
        obs_key, E = nets.obs_key, args.episodes
        S, B = nets.policy.state_dim, nets.policy.belief_dim
        L = c.max_steps // c.action_repeat
        env = make_agent_env(c.task, pixels=c.pixels, batch_size=[E], max_steps=c.max_steps,
                             action_repeat=c.action_repeat, seed=args.seed,
                             primer_sizes=(S, B, 1), frame_stack=c.frame_stack)  # fmt: skip
        torch.manual_seed(args.seed)
        with torch.no_grad():
            ep = env.rollout(L, CorrelatedRandomPolicy(1, 0.8), break_when_any_done=False)
        env.close()
        obs = _as_model_input(nets, ep.get(("next", obs_key)))  # [E, L, *obs]
        seq = TensorDict({"state": torch.zeros(E, L, S), "belief": torch.zeros(E, L, B),
                          "action": ep["action"].float(), "next": {obs_key: obs}},
                         [E, L])  # fmt: skip
        reward = ep["next", "reward"].float()  # [E, L, 1]
        top = ((1 - ep["true_state"][..., 1].cos()) / 2).amax(1)  # [E]: 1 at the top
        bins = default_bins(c.num_bins)
        prior = nets.parts["prior"]
        with torch.no_grad():
            out = nets.world_model(seq)
            nxt = out["next"]
            D = max(args.distances)
            preds = open_loop_predictions(prior, nxt["state"], nxt["belief"], out["action"], D)
            q = unimix_probs(nxt["posterior_logits"].float(), prior.unimix)  # [E, L, C, K]
            print(f"{run_dir}: {counters['updates']} updates; {E} episodes, "
                  f"{(top > 0.95).float().mean():.0%} reach the top")  # fmt: skip
            print(f"{'d':>3s} {'|r̂-r| all':>10s} {'|r̂-r| up':>10s} {'mean r̂ up':>10s} "
                  f"{'mean r up':>10s} {'KL':>7s}")  # fmt: skip
            for d in args.distances:
                logits, s, h = preds[d - 1]
                r_hat = two_hot_decode(nets.reward_read_out(s, h).float(), bins)  # [E, L-d]
                r = reward[:, d:, 0]  # [E, L - d]
                err = (r_hat - r).abs()
                up = r > -0.5
                p_d = unimix_probs(logits.float(), prior.unimix)  # [E, L - d, C, K]
                kl = categorical_kl(q[:, d:], p_d)  # [E, L - d]
                upper = (f"{err[up].mean():10.3f} {r_hat[up].mean():10.3f} {r[up].mean():10.3f}"
                         if up.any() else f"{'-':>10s} {'-':>10s} {'-':>10s}")  # fmt: skip
                print(f"{d:3d} {err.mean():10.3f} {upper} {kl.mean():7.2f}")


if __name__ == "__main__":
    main()
