"""What a pendulum Dreamer checkpoint's model and critic think of other actions from the bottom.

An actor stuck in a poor behaviour either cannot find a better one (its objective would rank
the better behaviour higher; the gradient does not lead there) or is told by the model and the
critic that nothing is better. This script separates the two on fresh episodes of the built-in
pendulum (``true_state = [θ̇, θ]``, ``θ = 0`` hanging down):

1. ``E`` episodes start at the task's start (``--start bottom``) or upright (``--start top``:
   ``θ ~ N(π, 0.1²)``); the deterministic actor acts for ``--context`` agent steps, and the
   filtered latent of that step is the imagination's start.
2. From the same real state, several *programs* act for the imagination horizon ``H`` in the
   real pendulum: the actor itself, constant torque ``+1``, ``-1`` and ``0``, and energy pumping
   (``u = sign θ̇``, full torque in the direction of motion, which adds energy fastest).
3. Their real actions are fed open loop to the model's prior from the filtered latent; the
   model's rewards, the critic's value at the end and the lambda-return at the start (the
   actor's objective, unnormalised) are set against the real rewards and the highest point
   the real pendulum reached (``max (1 - cos θ) / 2``, 1 at the top). The actor is also
   imagined in closed loop, as in training. From the top, a program that balances is added:
   proportional-derivative feedback on the angle from upright, ``u = -(10 φ + 2 θ̇) / 2.5``
   with ``φ = θ - π`` wrapped to ``[-π, π)`` (:func:`wmrl.envs.tasks.pendulum.upright_feedback`;
   closed loop ``φ̈ ≈ -15 φ - 6 φ̇`` for the linearised rod, saturating beyond ``|φ| ≈ 0.25``).
4. The model's own best: starting from a program's real actions (energy pumping from the
   bottom, the balancing feedback from the top), ``--plan-iters`` Adam steps on the action
   sequence ``[E, H, 1]`` (through a tanh) maximise the model's imagined reward sum from the same
   latent. Its imagined sum says what the model believes the best ``H`` actions can earn: near
   0 from the top if the model can hold the pendulum up at all, far below if it predicts a fall
   whatever the torque. (Open-loop actions tuned to the model have no real counterpart.)

If pumping's imagined lambda-return exceeds the actor's, the objective prefers pumping and the
actor's optimisation is at fault (a saturated ``tanh`` passes little gradient: the actor's
deterministic action and its slope ``d action / d loc`` are printed); if not, the model or the
critic is. From the top, the same comparison asks whether the model and the critic rank
holding the pendulum up above what the actor does there. Read its open-loop rows with care: near
the unstable equilibrium an error in the filtered angle grows about 1.5-fold per step, so
real actions that hold the real pendulum need not hold the model's, open loop. The rows that
stay meaningful are the actor's closed loop against its real row, and the model's own best.

Usage::

    python benchmarks/dreamer_actions.py runs/bench-dreamer/pendulum-swingup-v3-seed0
    python benchmarks/dreamer_actions.py runs/bench-dreamer/pendulum-swingup-v3-seed0 --start top
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.envs.utils import ExplorationType, set_exploration_type


class Program(TensorDictModule):
    """Replays ``prefix`` actions ``[E, K, 1]`` for ``K`` steps, then acts by ``rule(true_state)``
    (``[E, D] -> [E, 1]`` in ``[-1, 1]``); one call per environment step."""

    def __init__(self, prefix: torch.Tensor, rule) -> None:
        super().__init__(self._act, in_keys=["true_state"], out_keys=["action"])
        self.prefix, self.rule, self.t = prefix, rule, 0

    def _act(self, true_state: torch.Tensor) -> torch.Tensor:
        t, self.t = self.t, self.t + 1
        if t < self.prefix.shape[1]:
            return self.prefix[:, t]
        return self.rule(true_state).clamp(-1, 1).to(true_state.dtype)


def main() -> None:
    from wmrl.agents.dreamer import load_trained_nets, make_agent_env
    from wmrl.agents.dreamer_figures import _as_model_input
    from wmrl.envs.tasks import angle_from_upright, upright_feedback
    from wmrl.rssm.actor import deterministic_action_slope
    from wmrl.rssm.imagination import evaluate_values
    from wmrl.search import lambda_returns

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--context", type=int, default=4, help="agent steps filtered before imagining")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--plan-iters", type=int, default=100,
                   help="Adam steps of the model's own best action sequence (0: skip)")
    p.add_argument("--start", choices=("bottom", "top"), default="bottom",
                   help="the episodes' start: the task's (hanging) or upright")  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(1)

    c, nets, counters = load_trained_nets(args.run_dir)
    if not c.task.startswith("pendulum"):
        raise SystemExit(f"needs a pendulum run, got task {c.task!r}")
    E, K, H = args.episodes, args.context, c.horizon
    if c.max_steps // c.action_repeat < K + H:
        raise SystemExit(f"episodes of {c.max_steps // c.action_repeat} agent steps are shorter "
                         f"than --context + horizon = {K + H}")  # fmt: skip
    obs_key = nets.obs_key
    policy = nets.policy
    S, B = policy.state_dim, policy.belief_dim
    print(f"{args.run_dir}: {counters['updates']} updates, {counters['env_steps']} env steps; "
          f"horizon {H}, γ {c.gamma}, λ {c.lmbda}")

    def real(actor) -> TensorDict:
        env = make_agent_env(c.task, pixels=c.pixels, batch_size=[E], max_steps=c.max_steps,
                             action_repeat=c.action_repeat, seed=args.seed,
                             primer_sizes=(S, B, 1), frame_stack=c.frame_stack)  # fmt: skip
        if args.start == "top":  # the task's start covariance around the upright angle
            env.base_env.start_mean[1] = torch.pi
        torch.manual_seed(args.seed)
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            return env.rollout(K + H, actor, break_when_any_done=False)

    base = real(policy)
    prefix = base["action"][:, :K]  # [E, K, 1]
    obs = _as_model_input(nets, base.get(obs_key))  # [E, K + H, *obs]
    seq = TensorDict({"state": torch.zeros(E, K, S), "belief": torch.zeros(E, K, B),
                      "action": prefix, "next": {obs_key: obs[:, 1 : K + 1]}},
                     [E, K])  # fmt: skip
    with torch.no_grad():
        post = nets.world_model(seq).get("next")
    start = TensorDict({"state": post["state"][:, -1], "belief": post["belief"][:, -1]}, [E])
    theta = base["true_state"][:, K]  # [E, 2]: the real state the latent describes
    print(f"start after {K} steps: |θ| {theta[:, 1].abs().mean():.2f} rad, "
          f"|θ - π| (wrapped) {angle_from_upright(theta[:, 1]).abs().mean():.2f} rad, "
          f"|θ̇| {theta[:, 0].abs().mean():.2f} rad/s (means over {E} episodes)")  # fmt: skip

    def imagined_steps(action_at):
        """Step the model ``H`` times from ``start``, ``action_at(t, td) -> [E, 1]`` choosing
        each action; yields ``(action, next)`` per step (gradients flow where enabled)."""
        td = start.clone()
        for t in range(H):
            a = action_at(t, td)
            td.set("action", a.to(td["state"].dtype))
            nxt = nets.imagination_env.step(td)["next"]
            yield a, nxt
            td = TensorDict({"state": nxt["state"], "belief": nxt["belief"]}, [E])

    def imagine(actions: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rewards ``[E, H, 1]``, actions ``[E, H, 1]`` and values ``[E, H, 1]`` of the next
        states, open loop under ``actions`` or in closed loop with the deterministic actor."""
        def action_at(t: int, td: TensorDict) -> torch.Tensor:
            return nets.actor(td.clone())["action"] if actions is None else actions[:, t]

        rewards, taken, values = [], [], []
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            for a, nxt in imagined_steps(action_at):
                rewards.append(nxt["reward"])
                taken.append(a)
                values.append(evaluate_values(nets.value, nxt, "state_value", frozen_params=True))
        return torch.stack(rewards, 1), torch.stack(taken, 1), torch.stack(values, 1)

    def plan(init: torch.Tensor, iters: int) -> torch.Tensor:
        """The action sequence ``[E, H, 1]`` that maximises the model's imagined reward sum,
        by Adam from ``init`` (actions in ``[-1, 1]``, optimised through ``atanh``)."""
        params = [p for p in nets.imagination_env.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        u = torch.atanh(init.clamp(-0.995, 0.995)).float().requires_grad_()  # [E, H, 1]
        opt = torch.optim.Adam([u], lr=0.05)
        for _ in range(iters):
            steps = imagined_steps(lambda t, td: torch.tanh(u[:, t]))
            total = sum(nxt["reward"].sum() for _, nxt in steps)
            opt.zero_grad()
            (-total / E).backward()
            opt.step()
        for p in params:
            p.requires_grad_(True)
        return torch.tanh(u).detach()

    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        head = nets.actor(start.clone())
    loc, a = head["loc"], head["action"]  # [E, 1] each; a the deterministic action
    slope = deterministic_action_slope(loc, c.actor_dist)  # [E, 1]
    print(f"actor at the start: action {a.mean():+.3f}, loc {loc.mean():+.3f}, scale "
          f"{head['scale'].mean():.3f}; d action / d loc {slope.mean():.4f} (1 at loc = 0)")

    programs = {
        "actor (closed loop in imagination)": None,
        "actor": policy,
        "constant +1": lambda s: torch.ones_like(s[..., :1]),
        "constant -1": lambda s: -torch.ones_like(s[..., :1]),
        "zero torque": lambda s: torch.zeros_like(s[..., :1]),
        "pump: sign θ̇": lambda s: torch.where(s[..., :1] >= 0, 1.0, -1.0),
    }
    if args.start == "top":
        programs["balance: PD at the top"] = upright_feedback
    print(f"{'program':36s} {'mean a':>7s} {'imag Σr':>8s} {'real Σr':>8s} {'v(end)':>7s} "
          f"{'λ-return':>9s} {'real max (1-cos θ)/2':>24s}")  # fmt: skip

    def report(name: str, actions: torch.Tensor | None, real_sum: str, far: str) -> None:
        """One row: ``actions`` (or the actor in closed loop) imagined from ``start``."""
        r, a, v = imagine(actions)
        ret = lambda_returns(r.float(), v.float(), c.gamma, c.lmbda)[:, 0, 0]  # [E]
        print(f"{name:36s} {a.mean():+7.3f} {r.sum(1).mean():8.2f} {real_sum:>8s} "
              f"{v[:, -1].mean():7.2f} {ret.mean():9.2f} {far:>24s}")  # fmt: skip

    real_actions = {}  # program -> its real actions [E, H, 1]
    for name, rule in programs.items():
        if rule is None:  # imagined only: no real counterpart
            report(name, None, "-", "-")
            continue
        ep = base if rule is policy else real(Program(prefix, rule))
        real_actions[name] = ep["action"][:, K : K + H]  # [E, H, 1]
        real_sum = f"{ep['next', 'reward'][:, K : K + H].sum(1).mean():.2f}"
        ang = ep["true_state"][:, K : K + H, 1]  # [E, H]
        far = f"{((1 - ang.cos()) / 2).amax(1).mean():.2f}"  # 1: reached the top
        report(name, real_actions[name], real_sum, far)
    if args.plan_iters > 0:  # from pumping's actions at the bottom, the feedback's at the top
        init = real_actions["balance: PD at the top" if args.start == "top" else "pump: sign θ̇"]
        report("the model's best actions (planned)", plan(init, args.plan_iters), "-", "-")


if __name__ == "__main__":
    main()
