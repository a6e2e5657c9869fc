"""What a pendulum Dreamer checkpoint's world model knows: linear probes and open-loop rewards.

Three measurements on fresh episodes of the built-in pendulum (``true_state = [θ̇, θ]``):

1. **Linear probes.** Ridge regressions from the filtered latents ``[s_t, h_t]`` (the policy's own
   posterior, on 16 episodes of the training policy) to ``cos θ``, ``sin θ``, ``θ̇`` and the
   next reward, fitted on half the episodes and scored (R², RMSE) on the other half: what the
   latent holds, linearly. The ``θ̇`` probe's error is also given by speed (frames ``Δt`` apart
   alias a rotation above ``π / Δt``) and for a small MLP probe, since a linear read-out of
   categorical latents is coarse. For DreamerV3 the angle and velocity probes are also fitted
   on the posterior's probabilities in place of its one-hot sample: the precision that
   sampling loses. ``--start-angle 3.1416`` starts these episodes upright, for runs trained
   from there. The same probes read the prior's one-step prediction of each frame's latent
   (from the previous posterior and the action), next to the posterior's and, as the
   no-prediction baseline, the previous posterior's: the precision the actor imagines with,
   over all steps and near the top. Last, the torque's effect on that prediction: the same
   latents stepped by the prior with full torque each way (``a = ±1``), the difference of the
   ``θ̇`` probes' readings against the real pendulum's (about 1.5 rad/s per 0.1-s step). A
   model that predicts the fall from the top whatever the torque reads near 0 there. With
   ``--hold`` the probes' episodes are those of a balancing policy instead, the same for every
   run: started upright and held there by a feedback controller with noise on its torque, the
   policy's filter running alongside.
2. **Open-loop rewards.** From 4 filtered steps, the prior alone predicts 15 more steps under the
   real actions; the predicted rewards against the real ones, per step and summed, in three
   settings: the training policy from the task's start (hanging down), and zero or small random
   torque (σ = 0.3) from the top (``θ = π``), where a pendulum that is not pumped round falls
   slowly and swings back towards the top.

3. **Acting on probabilities** (DreamerV3 runs with sampled latents): the deterministic policy's
   cost when the filter passes on the posterior's probabilities instead of its sample.

A model that fits what its policy does but has never seen a slow pass near the top predicts the
first setting well and the other two badly; the actor then cannot learn to balance in
imagination however its objective is weighted.

Usage::

    python benchmarks/dreamer_diagnose.py runs/bench-dreamer/pendulum-swingup-v3-seed0
    python benchmarks/dreamer_diagnose.py runs/bench-dreamer/pendulum-swingup-v3-seed0 --hold
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from wmrl.envs.tasks import upright_feedback

CONTEXT, HORIZON, EPISODES = 4, 15, 32


def ridge_residuals(
    x: torch.Tensor, y: torch.Tensor, split: int, lam: float = 1e-2
) -> torch.Tensor:
    """Residuals ``[N - split]`` on rows ``split:`` of a ridge fit on rows ``:split``
    (standardised features ``x`` ``[N, F]``, targets ``y`` ``[N]``)."""
    x, y = x.double(), y.double()
    mu, sd = x[:split].mean(0), x[:split].std(0) + 1e-6
    z = torch.cat([(x - mu) / sd, torch.ones(len(x), 1, dtype=x.dtype)], 1)  # [N, F + 1]
    a = z[:split]
    w = torch.linalg.solve(a.T @ a + lam * split * torch.eye(z.shape[1], dtype=x.dtype),
                           a.T @ y[:split])  # fmt: skip
    return z[split:] @ w - y[split:]


def mlp_residuals(x: torch.Tensor, y: torch.Tensor, split: int, steps: int = 2000) -> torch.Tensor:
    """Residuals ``[N - split]`` on rows ``split:`` of a small MLP (two hidden layers of 64 ReLU
    units, Adam, full batch) fitted to rows ``:split``: a non-linear read-out, which categorical
    latents need for fine values (a linear one of one-hot codes is piecewise constant)."""
    torch.manual_seed(0)
    x, y = x.float(), y.float()
    mu, sd = x[:split].mean(0), x[:split].std(0) + 1e-6
    ym, ys = y[:split].mean(), y[:split].std() + 1e-6
    z = (x - mu) / sd  # [N, F]
    net = torch.nn.Sequential(torch.nn.Linear(z.shape[1], 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        loss = (net(z[:split])[:, 0] - (y[:split] - ym) / ys).pow(2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (net(z[split:])[:, 0] * ys + ym - y[split:]).double()


def r2_rmse(resid: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """R² and root-mean-square error of residuals ``resid`` of targets ``y`` (both ``[N]``)."""
    mse = resid.pow(2).mean()
    return float(1 - mse / y.double().var()), float(mse.sqrt())


class HeldUpright(TensorDictModuleBase):
    """The policy's filter with the actions of a feedback controller that holds the pendulum
    upright, ``u = -(10 φ + 2 θ̇) / 2.5 + 0.3 n`` (:func:`wmrl.envs.tasks.pendulum.upright_feedback`
    plus ``n`` standard normal, clipped to ``[-1, 1]``; ``dreamer_actions.py --start top``'s
    feedback with noise): the
    filter runs, then the controller's action replaces the policy's, in ``"action"`` and in the
    ``("next", "prev_action")`` the filter reads at the next step."""

    def __init__(self, policy: TensorDictModuleBase) -> None:
        super().__init__()
        self.policy = policy
        self.in_keys = [*policy.in_keys, "true_state"]
        self.out_keys = list(policy.out_keys)

    def forward(self, td: TensorDict) -> TensorDict:
        td = self.policy(td)
        u = upright_feedback(td.get("true_state"))  # [E, 1]
        u = u + 0.3 * torch.randn_like(u)
        action = u.clamp(-1, 1).to(td.get("action").dtype)  # [E, 1]
        td.set("action", action)
        td.set(("next", "prev_action"), action)
        return td


def pendulum_episodes(
    c, primer_sizes: tuple[int, int, int], actor, episodes: int, seed: int,
    start: float | None = None, exploration: ExplorationType = ExplorationType.RANDOM,
) -> TensorDict:
    """``episodes`` full episodes ``[E, T]`` of the built-in pendulum of a run's config ``c``
    under ``actor`` (its filter's entries primed with ``primer_sizes``), all from the angle
    ``start`` (default: the task's start, hanging down), seeded with ``seed``."""
    from wmrl.agents.dreamer import make_agent_env

    env = make_agent_env(c.task, pixels=c.pixels, batch_size=[episodes], max_steps=c.max_steps,
                         action_repeat=c.action_repeat, seed=seed, primer_sizes=primer_sizes,
                         frame_stack=c.frame_stack)  # fmt: skip
    if start is not None:
        env.base_env.start_mean[1] = start  # [θ̇, θ]
    torch.manual_seed(seed)
    with torch.no_grad(), set_exploration_type(exploration):
        return env.rollout(c.max_steps // c.action_repeat, actor, break_when_any_done=False)


def main() -> None:
    from wmrl.agents.dreamer import load_trained_nets
    from wmrl.agents.dreamer_figures import _as_model_input
    from wmrl.agents.envs import make_env
    from wmrl.envs.tasks.integrate import rk4_step
    from wmrl.rssm.functional import unimix_probs

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start-angle", type=float, default=None,
                   help="start the probes' episodes here (3.1416: upright; default: the task's "
                        "start, hanging down), for runs trained from there")  # fmt: skip
    p.add_argument("--hold", action="store_true",
                   help="the probes' episodes start upright and a feedback controller holds "
                        "the pendulum there, with noise σ = 0.3 on its torque, while the "
                        "policy's filter runs: the states a balancing policy visits, the same "
                        "for every run")  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(1)

    c, nets, counters = load_trained_nets(args.run_dir)
    if not c.task.startswith("pendulum"):
        raise SystemExit(f"needs a pendulum run, got task {c.task!r}")
    if c.max_steps // c.action_repeat <= CONTEXT + HORIZON:
        raise SystemExit(f"needs episodes of more than {CONTEXT + HORIZON} agent steps, the run "
                         f"has {c.max_steps // c.action_repeat}")  # fmt: skip
    obs_key = nets.obs_key
    probe_env = make_env(c.task, pixels=c.pixels, max_steps=c.max_steps, seed=0)
    policy = nets.policy  # its noise: the run's collection noise
    S, H = policy.state_dim, policy.belief_dim
    print(f"{args.run_dir}: {counters['updates']} updates, {counters['env_steps']} env steps")

    def episodes(actor, start: float | None = None,
                 exploration: ExplorationType = ExplorationType.RANDOM) -> TensorDict:
        return pendulum_episodes(c, (S, H, 1), actor, EPISODES, args.seed, start, exploration)

    # 1. linear probes on the training policy's episodes (v3: the posterior's logits recorded)
    posterior = nets.parts["posterior"]
    logits: list[torch.Tensor] = []
    hook = None
    if c.version == 3:
        hook = posterior.register_forward_hook(
            lambda module, inputs, out: logits.append(out[0]))  # fmt: skip
    if args.hold:
        tr = episodes(HeldUpright(policy), math.pi)
    else:
        tr = episodes(policy, args.start_angle)
    if hook is not None:
        hook.remove()
    # the policy writes its posterior of the current frame under "next" (carried to the next step)
    feat = torch.cat([tr["next", "state"], tr["next", "belief"]], -1)  # [E, T, S + H]
    theta_dot, theta = tr["true_state"].unbind(-1)  # [E, T] each, the state that frame shows
    half = EPISODES // 2
    T = feat.shape[1]
    print("linear probes of the filtered latent (R² and RMSE on held-out episodes):")
    linear: dict[str, torch.Tensor] = {}  # residuals [N - split] of each probe
    for name, y, x in [
        ("cos θ", theta.cos(), feat),
        ("sin θ", theta.sin(), feat),
        ("θ̇", theta_dot, feat),
        ("next reward", tr["next", "reward"][:, :-1, 0], feat[:, 1:]),
    ]:
        split = half * x.shape[1]
        resid = ridge_residuals(x.flatten(0, 1), y.flatten(), split)  # [N - split]
        r2, rmse = r2_rmse(resid, y.flatten()[split:])
        print(f"  {name:12s} {r2:.3f}  {rmse:.3f}")
        linear[name] = resid
    # the θ̇ probe's error by speed: frames ``dt`` apart alias a rotation above π / dt
    x, y = feat.flatten(0, 1), theta_dot.flatten()
    mlp = mlp_residuals(x, y, split=half * T)  # [N - split]
    speed = y[half * T :].abs()
    dt = probe_env.base_env.dt * c.action_repeat  # the time between the agent's frames
    print(f"  θ̇ probe RMSE by |θ̇|, linear and MLP (frames {dt:g} s apart alias above "
          f"{math.pi / dt:.1f} rad/s):")  # fmt: skip
    edges = (0.0, 2.0, 5.0, 10.0, 15.0, math.inf)
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (speed >= lo) & (speed < hi)
        if m.any():
            share = float(m.double().mean())
            rmse = [float(r[m].pow(2).mean().sqrt()) for r in (linear["θ̇"], mlp)]
            print(f"    {lo:4.0f}-{hi:<4.0f} rad/s: {rmse[0]:6.2f} {rmse[1]:6.2f}"
                  f"  ({share:.0%} of the steps)")  # fmt: skip
    if logits:  # v3: what sampling the categoricals loses (the probabilities are its mean)
        probs = unimix_probs(torch.stack(logits[-T:], 1), posterior.unimix)  # [E, T, C, K]
        entropy = -(probs * probs.log()).sum(-1).mean()
        print(f"  categorical latent ({c.categorical_state}): posterior entropy "
              f"{entropy:.3f} nats per categorical (log K = {math.log(probs.shape[-1]):.2f})")
    if logits and c.categorical_state == "sample":  # else the carried state is the probabilities
        soft = torch.cat([probs.flatten(-2), tr["next", "belief"]], -1).flatten(0, 1)
        print("  probe RMSE from the sample / from the probabilities, each with h:")
        for name, y in [("cos θ", theta.cos()), ("sin θ", theta.sin()), ("θ̇", theta_dot)]:
            y = y.flatten()
            from_sample = [linear[name], mlp if name == "θ̇" else
                           mlp_residuals(feat.flatten(0, 1), y, half * T)]  # fmt: skip
            from_probs = [fit(soft, y, half * T) for fit in (ridge_residuals, mlp_residuals)]
            rmse = [r2_rmse(r, y[half * T :])[1] for r in from_sample + from_probs]
            print(f"    {name:6s} linear {rmse[0]:.3f} / {rmse[2]:.3f}, "
                  f"MLP {rmse[1]:.3f} / {rmse[3]:.3f}")  # fmt: skip
    # the prior's one-step prediction, read by the probes fitted on the posterior
    with torch.no_grad():  # every step at once: the model-based env steps any batch
        start = TensorDict({"state": tr["next", "state"][:, :-1],
                            "belief": tr["next", "belief"][:, :-1],
                            "action": tr["action"][:, :-1]}, [EPISODES, T - 1])  # fmt: skip
        nxt = nets.imagination_env.step(start.reshape(-1))["next"]  # [E (T - 1)]
    prior_feat = torch.cat([nxt["state"], nxt["belief"]], -1).unflatten(0, (EPISODES, T - 1))
    n = (EPISODES - half) * (T - 1)
    x = torch.cat([feat[:, 1:].flatten(0, 1), prior_feat[half:].flatten(0, 1),
                   feat[half:, :-1].flatten(0, 1)])  # fmt: skip
    near_top = (theta[half:, 1:].cos() < -0.9).flatten()  # [n], within about 0.45 rad of the top
    print(f"  one step ahead: probe RMSE from the posterior / the prior / the previous posterior "
          f"(no prediction), all steps and the {int(near_top.sum())} of {n} near the top:")
    for name, y in [("cos θ", theta.cos()), ("sin θ", theta.sin()), ("θ̇", theta_dot)]:
        y = y[:, 1:]  # [E, T - 1]
        yy = torch.cat([y.flatten(), y[half:].flatten(), y[half:].flatten()])
        for kind, fit in (("linear", ridge_residuals), ("MLP", mlp_residuals)):
            parts = fit(x, yy, half * (T - 1)).split(n)  # [n] each
            all_steps = " / ".join(f"{r.pow(2).mean().sqrt():.3f}" for r in parts)
            top = (" / ".join(f"{r[near_top].pow(2).mean().sqrt():.3f}" for r in parts)
                   if near_top.any() else "none")  # fmt: skip
            print(f"    {name:6s} {kind:6s} {all_steps};  near the top {top}")
    # the torque's effect on that prediction: the held-out episodes' latents stepped with full
    # torque each way, read by probes fitted on the first half's posteriors, as above
    with torch.no_grad():
        ends = []
        for u in (1.0, -1.0):
            held_out = start[half:].clone()  # [E - half, T - 1]
            held_out.set("action", torch.full_like(held_out["action"], u))
            o = nets.imagination_env.step(held_out.reshape(-1))["next"]  # [n]
            ends.append(torch.cat([o["state"], o["belief"]], -1))  # [n, S + H]
    m = half * (T - 1)
    x = torch.cat([feat[:half, 1:].flatten(0, 1), *ends])  # [m + 2 n, S + H]
    y = torch.cat([theta_dot[:half, 1:].flatten(), torch.zeros(2 * n)])  # test rows: predictions
    base = probe_env.base_env
    s0 = tr["true_state"][half:, :-1].flatten(0, 1).to(base.dtype)  # [n, 2]
    real = []
    for u in (1.0, -1.0):  # the real pendulum's agent step: action_repeat RK4 steps
        s1 = s0
        for _ in range(c.action_repeat):
            s1 = rk4_step(base.dynamics, s1, torch.full_like(s0[:, :1], u * base.action_bound),
                          base.dt, base.substeps)  # fmt: skip
        real.append(s1[:, 0])
    real_effect = (real[0] - real[1]).double()  # [n]
    print("  the torque's effect on the one-step θ̇: the same latents stepped with a = +1 and "
          "a = -1, θ̇(+1) - θ̇(-1) read by the probes, and the real pendulum's "
          "(mean, all steps / near the top):")  # fmt: skip
    def all_and_top(v: torch.Tensor) -> str:
        return f"{v.mean():.2f} / " + (f"{v[near_top].mean():.2f}" if near_top.any() else "none")

    for kind, fit in (("linear", ridge_residuals), ("MLP", mlp_residuals)):
        up, down = fit(x, y, m).split(n)  # [n] each: the probes' θ̇
        print(f"    {kind:6s} model {all_and_top(up - down)} rad/s;  "
              f"real {all_and_top(real_effect)}")  # fmt: skip
    cost = -float(tr["next", "reward"].mean()) / c.action_repeat
    print(f"  (training policy: cost per env step {cost:.3f}, "
          f"mean |θ̇| {theta_dot.abs().mean():.2f} rad/s over {T} steps)")  # fmt: skip

    # 2. open-loop rewards
    def torque(scale: float) -> TensorDictModule:
        def act(true_state: torch.Tensor) -> torch.Tensor:
            return (scale * torch.randn(true_state.shape[0], 1)).clamp(-1, 1)

        return TensorDictModule(act, in_keys=["true_state"], out_keys=["action"])

    print(f"open-loop reward prediction ({CONTEXT} filtered steps, then {HORIZON} by the prior; "
          "per agent step):")  # fmt: skip
    print("  setting                          |err| per step  |err| of sum  spread of real sums")
    for name, start, actor in [
        ("training policy, from the bottom", None, policy),
        ("zero torque, from the top", math.pi, torque(0.0)),
        ("random torque 0.3, from the top", math.pi, torque(0.3)),
    ]:
        ep = episodes(actor, start)
        obs = _as_model_input(nets, ep.get(obs_key))  # [E, L, *obs]
        action = ep["action"]  # [E, L, 1]
        seq = TensorDict({"state": torch.zeros(EPISODES, CONTEXT, S),
                          "belief": torch.zeros(EPISODES, CONTEXT, H),
                          "action": action[:, :CONTEXT],
                          "next": {obs_key: obs[:, 1 : CONTEXT + 1]}},
                         [EPISODES, CONTEXT])  # fmt: skip
        with torch.no_grad():
            post = nets.world_model(seq).get("next")
            s, h = post["state"][:, -1], post["belief"][:, -1]
            predicted = []
            for t in range(CONTEXT, CONTEXT + HORIZON):
                step = TensorDict({"state": s, "belief": h, "action": action[:, t]}, [EPISODES])
                nxt = nets.imagination_env.step(step)["next"]
                s, h = nxt["state"], nxt["belief"]
                predicted.append(nxt["reward"][:, 0])
        pred = torch.stack(predicted, 1)  # [E, HORIZON]
        real = ep["next", "reward"][:, CONTEXT : CONTEXT + HORIZON, 0]  # [E, HORIZON]
        step_err = (pred - real).abs().mean()
        sum_err = (pred.sum(1) - real.sum(1)).abs().mean()
        print(f"  {name:32s} {step_err:13.3f}  {sum_err:11.2f}  {real.sum(1).std():19.2f}")

    # 3. v3: does the policy act better on the posterior's probabilities than on its sample?
    if c.version == 3 and c.categorical_state == "sample":
        print("deterministic policy (cost per env step), the filter passing on the posterior's")
        for mode in ("sample", "probs"):
            posterior.state_mode = mode
            ep = episodes(policy, args.start_angle, ExplorationType.DETERMINISTIC)
            cost = -float(ep["next", "reward"].mean()) / c.action_repeat
            print(f"  {mode:7s} {cost:.3f}")
        posterior.state_mode = "sample"


if __name__ == "__main__":
    main()
