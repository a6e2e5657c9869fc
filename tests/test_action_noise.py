"""The AR(1) exploration noise: its moments against their closed forms, the policies that carry
it, and the agent's correlated prefill."""

from __future__ import annotations

import math

import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

from wmrl.agents.action_noise import CorrelatedRandomPolicy, ar1_noise_step
from wmrl.agents.dreamer import Dreamer, DreamerConfig, make_agent_env
from wmrl.agents.dreamer_modules import DreamerSizes, make_dreamer_nets

TINY = DreamerSizes(state_dim=4, rnn_hidden_dim=8, hidden_dim=8, mlp_cells=8, mlp_depth=1,
                    embed_dim=8, actor_depth=1, actor_cells=8)  # fmt: skip


def _lag_one(x: torch.Tensor) -> torch.Tensor:
    """Sample correlation of consecutive steps, over the first dimension: ``[N, T] -> [T-1]``."""
    a, b = x[:, :-1], x[:, 1:]
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).mean(0) / (a.square().mean(0) * b.square().mean(0)).sqrt()


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.8])
def test_ar1_variance_from_rest_and_lag_one_correlation(rho):
    torch.manual_seed(0)
    N, T = 20_000, 12
    n, steps = torch.zeros(N, 1, dtype=torch.float64), []
    for _ in range(T):
        n = ar1_noise_step(n, torch.randn(N, 1, dtype=torch.float64), rho)
        steps.append(n[:, 0])
    x = torch.stack(steps, 1)  # [N, T]
    t = torch.arange(1, T + 1, dtype=torch.float64)
    var = 1 - rho ** (2 * t)  # from n_0 = 0
    # the sample variance's s.e. is var * sqrt(2 / N); 5 s.e.
    assert ((x.var(0) - var).abs() < 5 * var * math.sqrt(2 / N)).all()
    # lag-one correlation rho * sqrt(var_t / var_{t+1}); s.e. of a correlation about 1/sqrt(N)
    expected = rho * (var[:-1] / var[1:]).sqrt()
    assert ((_lag_one(x) - expected).abs() < 5 / math.sqrt(N)).all()
    assert x.mean(0).abs().max() < 5 / math.sqrt(N)


def test_ar1_and_policies_reject_correlations_outside_zero_one():
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="correlation"):
            ar1_noise_step(torch.zeros(1), torch.zeros(1), bad)
        with pytest.raises(ValueError, match="correlation"):
            CorrelatedRandomPolicy(1, bad)
        with pytest.raises(ValueError, match="noise_correlation"):
            DreamerConfig(noise_correlation=bad).validate()


def _pendulum(batch, max_steps, primer=(4, 8, 1)):
    return make_agent_env("pendulum-swingup", pixels=False, batch_size=[batch],
                          max_steps=max_steps, action_repeat=1, seed=0,
                          primer_sizes=primer)  # fmt: skip


def test_correlated_random_policy_restarts_at_each_episode_and_stays_in_bounds():
    torch.manual_seed(0)
    env = _pendulum(4000, 6)
    with torch.no_grad():
        traj = env.rollout(12, CorrelatedRandomPolicy(1, 0.8), break_when_any_done=False)
    noise, action = traj["next", "noise"][..., 0], traj["action"][..., 0]  # [N, 12]
    assert (traj["noise"][:, [0, 6]] == 0).all()  # zero at each reset
    torch.testing.assert_close(traj["noise"][:, 1:6], traj["next", "noise"][:, :5])  # carried
    torch.testing.assert_close(action, noise.clamp(-1, 1))
    # the first step of each episode has variance 1 - 0.8^2 = 0.36 (s.e. 0.36 sqrt(2/4000))
    for t in (0, 6):
        assert abs(float(noise[:, t].var()) - 0.36) < 5 * 0.36 * math.sqrt(2 / 4000)
    var = 1 - 0.8 ** (2 * torch.arange(1.0, 7.0))  # steps 1..6 of an episode, from rest
    expected = 0.8 * (var[:-1] / var[1:]).sqrt()  # Corr(n_t, n_t+1) = rho sqrt(var_t / var_t+1)
    assert ((_lag_one(noise[:, :6]) - expected).abs() < 5 / math.sqrt(4000)).all()


def test_rssm_policy_noise_is_white_by_default_and_ar1_when_correlated():
    torch.manual_seed(0)
    p = make_dreamer_nets(1, 1, "observation", obs_dim=3, sizes=TINY).policy
    env = _pendulum(4000, 8, primer=(p.state_dim, p.belief_dim, 1))
    p.action_noise = 0.3
    for rho, low, high in ((0.0, -0.1, 0.1), (0.8, 0.7, 0.9)):
        p.noise_correlation = rho
        with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
            traj = env.rollout(8, p, break_when_any_done=False)
        noise = traj["next", "noise"][..., 0]  # [N, 8]
        torch.testing.assert_close(traj["noise"][:, 1:, 0], noise[:, :-1])  # carried between steps
        assert (traj["noise"][:, 0] == 0).all()
        # from step 3 on, lag-one correlation within 0.1 of rho (s.e. 1/sqrt(4000) = 0.016)
        corr = _lag_one(noise[:, 3:])
        assert ((corr > low) & (corr < high)).all(), corr
    # evaluation: no noise, none carried
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        traj = env.rollout(3, p, break_when_any_done=False)
    assert (traj["next", "noise"] == 0).all()
    with pytest.raises(ValueError, match="noise_correlation"):
        type(p)(p.encoder, p.prior, p.posterior, p.actor, "observation", 1, 1, 1,
                noise_correlation=1.0)  # fmt: skip


def test_agent_prefills_with_correlated_actions_and_collects_with_correlated_noise():
    cfg = DreamerConfig.preset("debug", task="pendulum-swingup", version=3, num_envs=4,
                               noise_correlation=0.8, action_noise=0.3, env_steps=96)  # fmt: skip
    agent = Dreamer(cfg)
    assert agent.nets.policy.noise_correlation == 0.8
    assert agent._prefill_steps() == 48  # one 12-step episode per env
    agent.iterate()  # the prefill: 4 episodes of correlated random actions, in this process
    assert agent._collector is None and agent.agent_steps == 48 and agent.updates > 0
    actions = agent.replay.buffer.storage[:48]["action"].reshape(4, 12)  # [E, L]
    # lag-one correlation over the episodes' later steps: about 0.8 (uniform white: 0)
    a, b = actions[:, 4:-1].flatten(), actions[:, 5:].flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.4
    assert actions.abs().max() <= 1.0
    agent.iterate()  # the collector, with the correlated noise of the policy
    assert agent._collector is not None and agent.agent_steps == 96
    agent.close()
    white = Dreamer(DreamerConfig.preset("debug", task="pendulum-swingup", version=3))
    collector = white._make_collector()  # TorchRL's uniformly random prefill frames
    assert collector.init_random_frames == white._prefill_steps()
    collector.shutdown()


def test_correlated_random_actions_swing_the_pendulum_up_far_more_often_than_uniform():
    """``benchmarks/exploration_noise.py``'s measurement, small: 400 episodes from the bottom
    (measured with 2,000: uniform 0.02, AR(1) 0.8 0.68; standard errors here at most 0.025)."""
    import runpy
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "exploration_noise.py"
    heights = runpy.run_path(str(bench))["heights"]
    uniform = heights("pendulum-swingup", None, 400, 100, seed=0)
    correlated = heights("pendulum-swingup", CorrelatedRandomPolicy(1, 0.8), 400, 100, seed=0)
    assert uniform.shape == correlated.shape == (400,)
    assert float((uniform > 0.99).float().mean()) < 0.15
    assert float((correlated > 0.99).float().mean()) > 0.5
