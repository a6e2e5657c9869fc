"""The Dreamer agent: objective, environments, policy, end-to-end runs, resume, CLI (its replay:
``tests/test_replay.py``)."""

import json
import math
import re

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.envs.utils import ExplorationType, set_exploration_type

from wmrl.agents.dreamer import Dreamer, DreamerConfig, make_agent_env
from wmrl.agents.dreamer_figures import open_loop_prediction
from wmrl.agents.dreamer_modules import DreamerSizes, make_dreamer_nets
from wmrl.agents.dreamer_objective import (
    DreamerObjective,
    normal_entropy,
    normal_log_prob,
    tanh_normal_entropy,
    tanh_normal_log_prob,
)
from wmrl.agents.envs import AngleFeatures, make_env
from wmrl.cli import main
from wmrl.rssm.imagination import build_value_estimator, lambda_targets
from wmrl.search import lambda_return_objective

torch.set_num_threads(1)

TINY = DreamerSizes(
    channels=4, state_dim=4, num_categoricals=2, num_classes=4, rnn_hidden_dim=8, hidden_dim=8,
    mlp_cells=8, mlp_depth=1, embed_dim=8, actor_depth=1, actor_cells=8, num_bins=15,
)  # fmt: skip


# ---------------------------------------------------------------------- objective
def _trajectory(B=3, H=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDict(
        {
            "scale": torch.rand(B, H, 2, generator=g, dtype=torch.float64) + 0.1,
            "action": torch.rand(B, H, 2, generator=g, dtype=torch.float64) * 1.8 - 0.9,
            "next": {
                "state": torch.randn(B, H, 4, generator=g, dtype=torch.float64),
                "reward": torch.randn(B, H, 1, generator=g, dtype=torch.float64),
            },
        },
        [B, H],
    )


def _critic():
    w = torch.tensor([[0.5], [-1.0], [2.0], [0.25]], dtype=torch.float64)
    return TensorDictModule(lambda s: s @ w, ["state"], ["state_value"])


def test_v1_objective_is_the_search_lambda_return_objective_with_torchrl_targets():
    traj = _trajectory()
    critic = _critic()
    obj = DreamerObjective(critic, gamma=0.9, lmbda=0.7)
    loss = obj(traj)
    ref = lambda_return_objective(lambda nxt: critic(nxt.copy())["state_value"], 0.9, 0.7)
    torch.testing.assert_close(loss, ref(traj))
    # the targets written for the critic are TorchRL's TD(lambda) estimates
    keys = {"value": "state_value", "reward": "reward", "done": "done", "terminated": "terminated"}
    _, est = build_value_estimator("TDLambda", keys, gamma=0.9, lmbda=0.7)
    value = critic(traj["next"].copy())["state_value"]
    expected = lambda_targets(est, traj["next", "reward"], value, keys)
    torch.testing.assert_close(traj["lambda_target"], expected)


def test_v3_objective_hand_computed_normalisation_weights_and_entropy():
    traj = _trajectory(B=4, H=5, seed=1)
    critic = _critic()
    eta, gamma = 0.1, 0.8
    obj = DreamerObjective(critic, gamma=gamma, lmbda=0.95, discount_weights=True,
                           return_normalization=True, rate=1.0, entropy_bonus=eta)  # fmt: skip
    loss = obj(traj)
    G = traj["lambda_target"]  # [B, H, 1]
    lo, hi = torch.quantile(G.flatten(), torch.tensor([0.05, 0.95], dtype=G.dtype))
    torch.testing.assert_close(obj.return_low, lo.float())
    torch.testing.assert_close(obj.return_high, hi.float())
    S = max(1.0, float(hi - lo))
    w = (gamma ** torch.arange(5, dtype=G.dtype)).view(1, 5, 1)
    ent = (torch.log(traj["scale"]) + 0.5 * math.log(2 * math.pi * math.e)
           + torch.log(1 - traj["action"] ** 2)).sum(-1, keepdim=True)  # fmt: skip
    expected = -(w * G / S).mean() - eta * (w * ent).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    # a second call moves the EMA no further in eval mode
    obj.eval()
    before = obj.return_low.clone()
    obj(_trajectory(B=4, H=5, seed=2))
    torch.testing.assert_close(obj.return_low, before)


def test_tanh_normal_entropy_agrees_with_quadrature_monte_carlo():
    m, s = 0.7, 0.8
    N = 200_000
    g = torch.Generator().manual_seed(0)
    a = torch.tanh(m + s * torch.randn(N, 1, generator=g, dtype=torch.float64))
    est = tanh_normal_entropy(torch.full((N, 1), s, dtype=torch.float64), a, eps=1e-300)
    mc, se = est.mean(), est.std() / math.sqrt(N)
    # exact entropy of a = tanh(u) by quadrature over u: H = -int p_u(u) log p_a(tanh u) du
    u = torch.linspace(m - 12 * s, m + 12 * s, 400_001, dtype=torch.float64)
    log_pu = -0.5 * ((u - m) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))
    log_pa = log_pu - torch.log1p(-torch.tanh(u) ** 2)
    exact = -torch.trapezoid(log_pu.exp() * log_pa, u)
    assert abs(float(mc - exact)) < 5 * float(se)


def test_tanh_normal_log_prob_is_the_change_of_variables_density():
    g = torch.Generator().manual_seed(3)
    loc = torch.randn(50, 2, generator=g, dtype=torch.float64) * 4
    scale = torch.rand(50, 2, generator=g, dtype=torch.float64) + 0.1
    action = torch.rand(50, 2, generator=g, dtype=torch.float64) * 1.98 - 0.99
    from torch.distributions import Normal, TanhTransform, TransformedDistribution

    dist = TransformedDistribution(Normal(5 * torch.tanh(loc / 5), scale), [TanhTransform()])
    torch.testing.assert_close(tanh_normal_log_prob(loc, scale, action),
                               dist.log_prob(action).sum(-1, keepdim=True))  # fmt: skip


def test_reinforce_objective_by_hand_and_no_gradient_through_the_trajectory():
    traj = _trajectory(B=4, H=5, seed=4)
    traj["state"] = torch.randn(4, 5, 4, dtype=torch.float64, requires_grad=True)
    traj["action"] = traj["action"].clone().requires_grad_()
    critic = _critic()
    head_net = torch.nn.Linear(4, 4, dtype=torch.float64)

    def head_fn(state):
        out = head_net(state)
        return out[..., :2], torch.nn.functional.softplus(out[..., 2:]) + 0.1

    head = TensorDictModule(head_fn, ["state"], ["loc", "scale"])
    gamma, eta = 0.8, 0.05
    obj = DreamerObjective(critic, gamma=gamma, lmbda=0.9, discount_weights=True,
                           return_normalization=True, rate=1.0, entropy_bonus=eta,
                           actor_gradient="reinforce", policy_head=head)  # fmt: skip
    loss = obj(traj)
    # by hand: advantages against the critic at the current states, normalised, times log-probs
    G = traj["lambda_target"].detach()
    lo, hi = torch.quantile(G.flatten(), torch.tensor([0.05, 0.95], dtype=G.dtype))
    S = max(1.0, float(hi - lo))
    v = critic(TensorDict(state=traj["state"].detach(), batch_size=[4, 5]))["state_value"]
    w = (gamma ** torch.arange(5, dtype=G.dtype)).view(1, 5, 1)
    loc, scale = head_fn(traj["state"].detach())
    a = traj["action"].detach()
    logp = tanh_normal_log_prob(loc, scale, a)
    ent = tanh_normal_entropy(scale, a)
    expected = -(w * (G - v) / S * logp).mean() - eta * (w * ent).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert head_net.weight.grad is not None and head_net.weight.grad.abs().sum() > 0
    assert traj["state"].grad is None and traj["action"].grad is None  # nothing through the model
    with pytest.raises(ValueError, match="policy_head"):
        DreamerObjective(critic, actor_gradient="reinforce")
    with pytest.raises(ValueError, match="actor_gradient"):
        DreamerObjective(critic, actor_gradient="pathwise")


def test_bounded_normal_objective_entropy_and_log_density_by_hand():
    from torch.distributions import Normal

    g = torch.Generator().manual_seed(5)
    loc = torch.randn(40, 2, generator=g, dtype=torch.float64) * 2
    scale = torch.rand(40, 2, generator=g, dtype=torch.float64) * 0.9 + 0.1
    action = torch.rand(40, 2, generator=g, dtype=torch.float64) * 2 - 1
    dist = Normal(torch.tanh(loc), scale)
    torch.testing.assert_close(normal_log_prob(loc, scale, action),
                               dist.log_prob(action).sum(-1, keepdim=True))  # fmt: skip
    torch.testing.assert_close(normal_entropy(scale), dist.entropy().sum(-1, keepdim=True))
    # in the dynamics objective the bonus is the Normal's entropy: no dependence on the action
    traj = _trajectory(B=4, H=5, seed=6)
    eta, gamma = 0.1, 0.8
    kw = dict(gamma=gamma, lmbda=0.95, discount_weights=True, entropy_bonus=eta)
    loss = DreamerObjective(_critic(), actor_dist="bounded_normal", **kw)(traj)
    w = (gamma ** torch.arange(5, dtype=torch.float64)).view(1, 5, 1)
    ent = (torch.log(traj["scale"]) + 0.5 * math.log(2 * math.pi * math.e)).sum(-1, keepdim=True)
    expected = -(w * traj["lambda_target"]).mean() - eta * (w * ent).mean()
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="actor_dist"):
        DreamerObjective(_critic(), actor_dist="beta")


def test_entropy_target_adapts_the_bonus_as_sac_temperature():
    traj = _trajectory(B=4, H=5, seed=7)
    gamma, lr, target = 0.8, 0.3, 0.5
    kw = dict(gamma=gamma, lmbda=0.95, discount_weights=True, entropy_bonus=0.1,
              entropy_target=target, entropy_lr=lr)  # fmt: skip
    obj = DreamerObjective(_critic(), **kw)
    assert obj.entropy_weight == pytest.approx(0.1)
    loss = obj(traj)
    w = (gamma ** torch.arange(5, dtype=torch.float64)).view(1, 5, 1)
    H = (w * tanh_normal_entropy(traj["scale"], traj["action"])).mean()
    # the loss uses η before the step; then log η <- log η - lr (H - H*)
    expected = -(w * traj["lambda_target"]).mean() - 0.1 * H
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    assert obj.entropy_weight == pytest.approx(0.1 * math.exp(-lr * (float(H) - target)), rel=1e-5)
    # not in evaluation mode; clamped to the range; checkpointed and restored
    obj.eval()
    before = obj.entropy_weight
    obj(_trajectory(B=4, H=5, seed=8))
    assert obj.entropy_weight == before
    obj.train()
    low = DreamerObjective(_critic(), **{**kw, "entropy_target": 100.0, "entropy_lr": 1e3})
    low(traj)
    assert low.entropy_weight == pytest.approx(1.0)  # far below the target: capped at 1
    other = DreamerObjective(_critic(), **kw)
    other.load_state_dict(obj.state_dict())
    assert other.entropy_weight == pytest.approx(obj.entropy_weight)
    fixed = DreamerObjective(_critic(), entropy_bonus=0.1)
    fixed.load_state_dict(obj.state_dict())  # a stored η is dropped when η is fixed
    assert fixed.entropy_weight == 0.1
    obj.load_state_dict(fixed.state_dict())  # none stored: the initial η stays
    with pytest.raises(ValueError, match="entropy_lr"):
        DreamerObjective(_critic(), entropy_target=0.0, entropy_lr=0.0)
    with pytest.raises(ValueError, match="finite"):
        DreamerObjective(_critic(), entropy_target=math.nan)


def test_objective_rejects_bad_settings():
    with pytest.raises(ValueError):
        DreamerObjective(_critic(), gamma=0.0)
    with pytest.raises(ValueError):
        DreamerObjective(_critic(), quantiles=(0.9, 0.1))


# ---------------------------------------------------------------------- environments, policy
def test_angle_features_and_agent_env_specs():
    t = AngleFeatures([3])
    x = torch.tensor([[1.0, 2.0, 3.0, 0.5]])
    torch.testing.assert_close(
        t._apply_transform(x), torch.tensor([[1.0, 2.0, 3.0, math.sin(0.5), math.cos(0.5)]])
    )
    env = make_env("cartpole-swingup", pixels=False, batch_size=[2], max_steps=10)
    td = env.rollout(3)
    spec = env.observation_spec["observation"]
    assert td["observation"].shape == (2, 3, 5) and spec.shape == (2, 5)
    assert float(env.action_spec.space.high.max()) == 1.0  # the actor's range
    with pytest.raises(ValueError):
        make_env("cartpole-swingup", pixels=False, max_steps=10, action_repeat=3)
    with pytest.raises(ValueError):
        make_env("acrobot", pixels=False)


def test_pixel_world_model_sees_centred_frames_and_reconstructs_in_unit_range():
    nets = make_dreamer_nets(1, 1, "pixels", sizes=TINY)
    frames = torch.rand(2, 3, 64, 64)
    encoder, decoder = nets.parts["encoder"], nets.parts["decoder"]
    # the policy, the world model and the imagination environment share the centred networks
    assert torch.equal(nets.policy.encoder(frames), encoder(frames - 0.5))
    state, belief = torch.randn(2, TINY.state_dim), torch.randn(2, TINY.rnn_hidden_dim)
    reco = nets.imagination_env.obs_decoder.module(state, belief)
    assert torch.equal(reco, decoder(state, belief) + 0.5)
    seq = TensorDict({"state": torch.zeros(1, 3, TINY.state_dim),
                      "belief": torch.zeros(1, 3, TINY.rnn_hidden_dim),
                      "action": torch.zeros(1, 3, 1),
                      "next": {"pixels": torch.rand(1, 3, 3, 64, 64)}}, [1, 3])  # fmt: skip
    out = nets.world_model(seq)["next"]
    assert torch.equal(out["encoded_latents"], encoder(seq["next", "pixels"] - 0.5))
    assert torch.equal(out["reco_pixels"], decoder(out["state"], out["belief"]) + 0.5)
    # vector observations are not shifted
    vec = make_dreamer_nets(1, 1, "observation", obs_dim=3, sizes=TINY)
    obs = torch.randn(4, 3)
    assert torch.equal(vec.policy.encoder(obs), vec.parts["encoder"](obs))


def _tiny_pixel_policy_and_env(batch: int):
    """The RSSM policy of tiny networks and a pixel pendulum (6-step episodes) carrying its
    latent."""
    torch.manual_seed(0)
    p = make_dreamer_nets(1, 1, "pixels", sizes=TINY).policy
    env = make_agent_env("pendulum-swingup", pixels=True, batch_size=[batch], max_steps=6,
                         action_repeat=1, seed=0,
                         primer_sizes=(p.state_dim, p.belief_dim, 1))  # fmt: skip
    return p, env


def test_rssm_policy_carries_its_latent_and_is_deterministic_in_evaluation():
    p, env = _tiny_pixel_policy_and_env(2)
    with torch.no_grad():
        traj = env.rollout(12, p, break_when_any_done=False)  # two episodes
    # the carried entries are those written at the previous step, zero after each reset
    torch.testing.assert_close(traj["belief"][:, 1:6], traj["next", "belief"][:, :5])
    torch.testing.assert_close(traj["prev_action"][:, 1:6], traj["action"][:, :5])
    assert (traj["belief"][:, [0, 6]] == 0).all() and (traj["state"][:, 6] == 0).all()
    td = env.reset()
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        torch.manual_seed(1)
        a1 = p(td.clone())
        torch.manual_seed(1)
        a2 = p(td.clone())
    torch.testing.assert_close(a1["action"], a2["action"])
    torch.testing.assert_close(a1["action"], torch.tanh(5 * torch.tanh(a1["loc"] / 5)))


def test_collection_noise_is_added_to_sampled_actions_only_and_carried_to_the_filter():
    p, env = _tiny_pixel_policy_and_env(64)
    td = env.reset()
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        torch.manual_seed(1)
        plain = p(td.clone())
        p.action_noise = 0.5
        torch.manual_seed(1)
        noisy = p(td.clone())
    # the same actor sample plus N(0, 0.5^2) noise, clipped to the action bounds
    noise = noisy["action"] - plain["action"]
    assert noisy["action"].abs().max() <= 1.0 and noise.abs().max() > 0
    inside = noisy["action"].abs() < 1.0
    assert 0.35 < float(noise[inside].std()) < 0.65  # 64 draws: std within about 3 s.e.
    torch.testing.assert_close(noisy["next", "prev_action"], noisy["action"])  # the action taken
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        p.action_noise = 0.0
        torch.manual_seed(2)  # the posterior samples its latent
        clean = p(td.clone())
        p.action_noise = 0.5
        torch.manual_seed(2)
        still = p(td.clone())
    torch.testing.assert_close(still["action"], clean["action"])  # evaluation is noise-free
    with pytest.raises(ValueError, match="action_noise"):
        type(p)(p.encoder, p.prior, p.posterior, p.actor, "pixels", 1, 1, 1, action_noise=-1)
    assert DreamerConfig(version=1).collection_noise() == 0.3
    assert DreamerConfig(version=3, action_noise=0.2).collection_noise() == 0.2


def test_open_loop_prediction_shapes_and_context_reconstruction():
    torch.manual_seed(0)
    nets = make_dreamer_nets(3, 1, "observation", obs_dim=3, sizes=TINY)
    episode = TensorDict({"observation": torch.randn(12, 3), "action": torch.rand(12, 1)}, [12])
    real, pred = open_loop_prediction(nets, episode, context=3, horizon=5)
    assert real.shape == pred.shape == (8, 3)
    torch.testing.assert_close(real, episode["observation"][1:9])


# ---------------------------------------------------------------------- the agent
def _cfg(**kw):
    return DreamerConfig.preset("debug", **{"task": "pendulum-swingup", **kw})


def _flat_state(agent):
    sd = agent.state_dict()
    return {k: sd[k] for k in ("nets", "objective", "exploration", "optimizers")}


def _assert_same(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list | tuple):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def _interrupted_and_resumed(cfg, out_dir):
    """A run of ``cfg`` in ``out_dir`` interrupted after the random baseline and two iterations
    (checkpointed every 12 steps), then resumed from its checkpoint."""
    part = Dreamer(cfg, out_dir=out_dir)
    part.evaluate(random=True)
    part.iterate()
    part.iterate()
    part.close()
    del part
    return Dreamer.resume(out_dir)


def test_pixel_agent_checkpoints_resumes_and_continues_with_identical_state(tmp_path):
    full = Dreamer(_cfg(pixels=True, env_steps=48), out_dir=tmp_path / "full")
    full.run()
    assert full.updates > 0 and full.env_steps == 48

    resumed = _interrupted_and_resumed(_cfg(pixels=True, env_steps=48), tmp_path / "part")
    assert resumed.env_steps == 24 and len(resumed.replay) == 24
    assert resumed.last_eval_episode["pixels"].dtype == torch.uint8  # kept for the figures
    resumed.run()
    _assert_same(_flat_state(resumed), _flat_state(full))
    n = len(full.replay)
    assert (resumed.replay.buffer.storage[:n] == full.replay.buffer.storage[:n]).all()
    strip = [("env_steps", "updates", "policy", "eval_return")]
    assert [tuple(getattr(r, k) for k in strip[0]) for r in resumed.records] == [
        tuple(getattr(r, k) for k in strip[0]) for r in full.records
    ]
    # only the newest replay copy is kept next to the checkpoint
    assert len(list((tmp_path / "part").glob("replay-[0-9]*"))) == 1


def test_agent_with_correlated_noise_resumes_after_its_prefill_identically(tmp_path):
    cfg = _cfg(version=3, env_steps=48, noise_correlation=0.8, action_noise=0.3)
    full = Dreamer(cfg, out_dir=tmp_path / "full")
    full.run()
    part = Dreamer(cfg, out_dir=tmp_path / "part")
    part.iterate()  # the correlated prefill, in this process
    part.iterate()  # the first collection through the collector
    part.close()
    del part
    resumed = Dreamer.resume(tmp_path / "part")
    assert resumed.config.noise_correlation == 0.8
    assert resumed.nets.policy.noise_correlation == 0.8
    resumed.run()
    _assert_same(_flat_state(resumed), _flat_state(full))
    n = len(full.replay)
    assert (resumed.replay.buffer.storage[:n] == full.replay.buffer.storage[:n]).all()
    resumed.close()
    full.close()


def test_runs_checkpointed_before_the_noise_option_resume_noise_free(tmp_path):
    from wmrl.agents.checkpoint import load_checkpoint, save_checkpoint

    agent = Dreamer(_cfg(env_steps=24), out_dir=tmp_path)
    agent.iterate()
    path = agent.save()
    agent.close()
    state = load_checkpoint(path)
    del state["config"]["action_noise"]  # as written by earlier versions
    save_checkpoint(path, state)
    resumed = Dreamer.resume(tmp_path)
    assert resumed.config.action_noise == 0.0 and resumed.nets.policy.action_noise == 0.0
    resumed.close()
    switched = Dreamer.resume(tmp_path, action_noise=0.2)  # switched on explicitly
    assert switched.nets.policy.action_noise == 0.2
    switched.close()


def test_resume_rejects_settings_that_fix_the_networks_or_the_replay(tmp_path):
    agent = Dreamer(_cfg(env_steps=24), out_dir=tmp_path)
    agent.iterate()
    agent.save()
    agent.close()
    for change in ({"frame_stack": 2}, {"version": 3}, {"rnn_hidden_dim": 16}, {"pixels": True}):
        with pytest.raises(ValueError, match=f"cannot change {next(iter(change))}="):
            Dreamer.resume(tmp_path, **change)
    same = Dreamer.resume(tmp_path, frame_stack=1, env_steps=48)  # unchanged values pass
    assert same.config.env_steps == 48
    same.close()
    from wmrl.agents.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(tmp_path / "checkpoint.pt")
    del state["config"]["reconstruct"]  # as written before the setting existed
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    Dreamer.resume(tmp_path, reconstruct="all").close()  # its default: unchanged
    with pytest.raises(ValueError, match="cannot change reconstruct='all' -> 'newest'"):
        Dreamer.resume(tmp_path, reconstruct="newest")


def test_v3_entropy_bonus_default_and_override_on_resume(tmp_path):
    agent = Dreamer(_cfg(version=3, env_steps=24), out_dir=tmp_path)
    assert agent.objective.entropy_bonus == 3e-4  # DreamerV3's η
    agent.iterate()
    agent.save()
    agent.close()
    resumed = Dreamer.resume(tmp_path, entropy_bonus=3e-3)
    assert resumed.objective.entropy_bonus == 3e-3
    resumed.close()
    assert Dreamer(_cfg(version=1)).objective.entropy_bonus == 0.0  # Dreamer v1 has none
    assert Dreamer(_cfg(version=1, entropy_bonus=3e-3)).objective.entropy_bonus == 3e-3


def test_agent_with_an_entropy_target_logs_and_resumes_its_adapted_bonus(tmp_path):
    agent = Dreamer(_cfg(version=3, env_steps=24, entropy_target=5.0), out_dir=tmp_path)
    agent.run()
    eta = agent.objective.entropy_weight
    assert eta > 3e-4  # the tiny actor's entropy is below 5 nats: the bonus grew
    assert 3e-4 < agent.last_losses["entropy_weight"] <= eta  # the mean over the last updates
    agent.close()
    resumed = Dreamer.resume(tmp_path)
    assert resumed.objective.entropy_weight == pytest.approx(eta)
    resumed.close()
    fixed = Dreamer.resume(tmp_path, entropy_target=None)  # switched off: back to the fixed η
    assert fixed.objective.entropy_weight == 3e-4 and "entropy_weight" not in fixed.last_losses
    fixed.close()


def test_exploring_agent_resumes_with_its_ensemble_and_continues_identically(tmp_path):
    cfg = _cfg(version=3, env_steps=36, exploration_bonus=0.5)
    full = Dreamer(cfg, out_dir=tmp_path / "full")
    full.run()
    scale = float(full.exploration.scale)
    assert scale > 0 and "loss_exploration" in full.last_losses
    resumed = _interrupted_and_resumed(cfg, tmp_path / "part")
    resumed.run()
    _assert_same(_flat_state(resumed), _flat_state(full))
    # exploration switched on when resuming a run without it: a fresh, untrained ensemble
    plain = Dreamer(_cfg(version=3, env_steps=12), out_dir=tmp_path / "plain")
    plain.run()
    switched = Dreamer.resume(tmp_path / "plain", env_steps=36, exploration_bonus=0.5)
    assert switched.exploration is not None and float(switched.exploration.scale) == 0.0
    switched.run()
    assert switched.env_steps == 36 and float(switched.exploration.scale) > 0


def test_disagreement_map_script(tmp_path, monkeypatch, capsys):
    """``benchmarks/disagreement_map.py``: the bonus of a run's ensemble on real episodes, binned
    by the real state; the held episodes stay in the top row; a run without an ensemble is
    refused."""
    import runpy
    import sys
    from pathlib import Path

    agent = Dreamer(_cfg(version=3, env_steps=24, exploration_bonus=0.5), out_dir=tmp_path / "x")
    agent.run()
    agent.close()
    script = str(Path(__file__).resolve().parents[1] / "benchmarks" / "disagreement_map.py")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # leave the test's threads
    monkeypatch.setattr(sys, "argv", ["disagreement_map.py", str(tmp_path / "x"),
                                      "--episodes", "4"])  # fmt: skip
    runpy.run_path(script, run_name="__main__")
    out = capsys.readouterr().out
    steps = 4 * (agent.config.max_steps // agent.config.action_repeat)
    tables = out.split("\n\n")[1:]
    assert len(tables) == 2 and "held upright" in tables[1]
    for table in tables:
        assert math.isfinite(float(table.split("all ")[1].split()[0]))
        lines = table.splitlines()[2:]  # the rows of |φ|
        counts = [[int(n) for n in re.findall(r"\((\d+)\)", line)] for line in lines]
        assert sum(map(sum, counts)) == steps  # every step in one cell
    held_top = re.findall(r"\((\d+)\)", tables[1].splitlines()[2])
    assert sum(map(int, held_top)) >= 0.9 * steps  # |φ| < 0.5: held near upright
    plain = Dreamer(_cfg(version=3, env_steps=12), out_dir=tmp_path / "plain")
    plain.run()
    plain.close()
    monkeypatch.setattr(sys, "argv", ["disagreement_map.py", str(tmp_path / "plain")])
    with pytest.raises(SystemExit, match="no disagreement ensemble"):
        runpy.run_path(script, run_name="__main__")


def test_records_separate_evaluation_from_training_and_the_random_baseline():
    agent = Dreamer(_cfg(version=3, env_steps=24, precision="bf16"))  # CPU autocast
    records = agent.run()
    assert [r.policy for r in records] == ["random", "agent"]
    assert records[0].env_steps == 0 and records[1].env_steps == 24
    L = agent.episode_len
    for r in records:
        assert -L <= r.eval_return <= 0
        assert r.eval_cost_per_step == pytest.approx(-r.eval_return / L)
    assert math.isfinite(records[1].train_return)
    assert set(agent.last_losses) >= {"loss_model_kl", "loss_actor", "loss_value"}
    assert 0 < agent.last_losses["actor_slope"] <= 1  # the actor's tanh, 1 when unsaturated
    assert agent.summary().startswith("env steps: 24")


def test_exploring_starts_reach_training_episodes_and_not_evaluation():
    agent = Dreamer(_cfg(version=3, exploring_starts=True, env_steps=24))
    collector = agent._make_collector()
    assert collector.env.base_env.uniform_start_angles  # training episodes
    collector.shutdown()
    assert not agent.eval_env.base_env.uniform_start_angles  # the task's own start
    assert agent.eval_env.reset()["true_state"][..., 1].abs().max() < 1.0
    many = agent._env_fn([4000], seed=0, collect=True)().reset()["true_state"][..., 1]
    assert many.abs().max() > 3.0 and many.abs().min() < 0.1
    agent.run()
    assert agent.env_steps == 24
    plain = Dreamer(_cfg(version=3))
    assert plain._env_fn([4000], seed=0, collect=True)().reset()["true_state"][..., 1].abs(
    ).max() < 1.0  # fmt: skip
    with pytest.raises(ValueError, match="built-in"):
        Dreamer(_cfg(exploring_starts=True), env_fn=lambda batch_size, seed: None)
    half = Dreamer(_cfg(version=3, exploring_starts=0.5))
    starts = half._env_fn([4000], seed=0, collect=True)().reset()["true_state"][..., 1]
    far = (starts.abs() > 1).float().mean()  # 0.5 (π - 1)/π = 0.341, s.e. 0.0075
    assert (far - 0.5 * (math.pi - 1) / math.pi).abs() < 0.04
    assert half.eval_env.base_env.uniform_start_angles == 0.0


def test_agent_runs_on_a_user_environment_with_float_frames():
    from torchrl.envs import ActionScaling, Compose, ToTensorImage, TransformedEnv

    from wmrl.envs.tasks import CartPoleSwingUp

    def env_fn(batch_size, seed):  # 40-step episodes, frames already float [3, 64, 64]
        base = CartPoleSwingUp(batch_size=batch_size, from_pixels=True, pixels_only=True,
                               seed=seed)  # fmt: skip
        return TransformedEnv(base, Compose(ToTensorImage(in_keys=["pixels"]), ActionScaling()))

    agent = Dreamer(_cfg(pixels=True, env_steps=24), env_fn=env_fn)
    agent.run()
    assert agent.env_steps == 24 and len(agent.replay) == 24  # truncated at 12 agent steps
    assert agent.replay.buffer.storage[0]["pixels"].shape == (3, 64, 64)
    assert agent.replay.sample()["next", "pixels"].dtype == torch.float32
    assert [r.policy for r in agent.records] == ["random", "agent"]


def test_stacked_observations_oldest_first_padded_at_reset_in_any_layout():
    from torchrl.envs import ToTensorImage

    from wmrl.agents.envs import stack_observations

    env = stack_observations(make_env("pendulum-swingup", pixels=False, batch_size=[2],
                                      max_steps=4), "observation", 3)  # fmt: skip
    traj = env.rollout(4)
    obs = traj["observation"]  # [2, 4, 9]: three [θ̇, sin θ, cos θ], oldest first
    assert obs.shape == (2, 4, 9)
    assert torch.equal(obs[:, 0, :3], obs[:, 0, 6:]) and torch.equal(obs[:, 0, 3:6], obs[:, 0, 6:])
    assert torch.equal(obs[:, 2, :3], obs[:, 0, 6:]) and torch.equal(obs[:, 2, 3:6], obs[:, 1, 6:])
    assert torch.equal(traj["next", "observation"][:, :-1], obs[:, 1:])
    again = env.reset()["observation"]  # a new episode does not see the last one's
    assert torch.equal(again[:, :3], again[:, 6:])

    chw = make_env("pendulum-swingup", pixels=True, max_steps=4)
    chw.append_transform(ToTensorImage(in_keys=["pixels"]))
    frames = stack_observations(chw, "pixels", 2).rollout(3)["pixels"]  # float [3, 6, 64, 64]
    assert frames.shape == (3, 6, 64, 64) and torch.equal(frames[1, :3], frames[0, 3:])
    base = make_env("pendulum-swingup", pixels=True, max_steps=4)
    assert stack_observations(base, "pixels", 1) is base
    with pytest.raises(ValueError, match="frames must be >= 1"):
        stack_observations(base, "pixels", 0)


@pytest.mark.parametrize("version", [1, 3])
def test_agent_with_stacked_frames_sees_and_reconstructs_them_and_resumes(tmp_path, version):
    cfg = _cfg(pixels=True, version=version, env_steps=36, frame_stack=2)
    agent = Dreamer(cfg, out_dir=tmp_path)
    agent.run()
    frames = agent.replay.buffer.storage[:12]["pixels"]  # one episode, uint8 [12, 64, 64, 6]
    assert frames.shape == (12, 64, 64, 6)
    assert torch.equal(frames[1:, ..., :3], frames[:-1, ..., 3:])  # the previous frame first
    assert agent.nets.parts["encoder"].in_channels == 6
    batch = agent.replay.sample()  # [B, T]
    S, H = agent.nets.policy.state_dim, agent.nets.policy.belief_dim
    seq = batch.select("action", ("next", "pixels")).update(
        {"state": torch.zeros(*batch.shape, S), "belief": torch.zeros(*batch.shape, H)})
    with torch.no_grad():
        out = agent.nets.world_model(seq)
    assert out["next", "reco_pixels"].shape == batch["next", "pixels"].shape  # [B, T, 6, 64, 64]
    agent.close()
    resumed = Dreamer.resume(tmp_path)
    assert resumed.config.frame_stack == 2 and resumed.env_steps == 36
    _assert_same(_flat_state(resumed), _flat_state(agent))


@pytest.mark.parametrize("version,pixels", [(3, True), (1, False)])
def test_agent_reconstructing_the_newest_of_stacked_observations(tmp_path, version, pixels):
    cfg = _cfg(pixels=pixels, version=version, env_steps=24, frame_stack=3,
               reconstruct="newest")  # fmt: skip
    agent = Dreamer(cfg, out_dir=tmp_path)
    agent.run()
    key = agent.obs_key
    batch = agent.replay.sample()  # [B, T]
    S, H = agent.nets.policy.state_dim, agent.nets.policy.belief_dim
    batch.set("state", torch.zeros(*batch.shape, S))
    batch.set("belief", torch.zeros(*batch.shape, H))
    with torch.no_grad():
        losses, out = agent.model_loss(agent._with_reco_target(batch))
    stacked, reco = batch["next", key], out["next", f"reco_{key}"]
    if pixels:  # encoder: three frames; decoder: the newest
        assert agent.nets.parts["encoder"].in_channels == 9 and stacked.shape[-3] == 9
        newest = stacked[..., -3:, :, :]  # [B, T, 3, 64, 64]
        dims: tuple[int, ...] = (-3, -2, -1)
    else:
        newest = stacked[..., -stacked.shape[-1] // 3 :]  # [B, T, D]
        dims = (-1,)
    assert reco.shape == newest.shape
    # squared error summed over the newest observation's entries (v1; v3 on pixels: no symlog)
    expected = (reco - newest).pow(2).sum(dims).mean()
    assert torch.allclose(losses["loss_model_reco"], expected, rtol=1e-5)
    agent.close()
    resumed = Dreamer.resume(tmp_path)
    assert resumed.config.reconstruct == "newest"
    resumed.close()
    with pytest.raises(ValueError, match="reconstruct"):
        Dreamer.resume(tmp_path, reconstruct="all")
    with pytest.raises(ValueError, match="reconstruct must be"):
        DreamerConfig(reconstruct="oldest").validate()
    with pytest.raises(ValueError, match=r"decoded must be in \[1, 3\]"):
        make_dreamer_nets(3, 1, "observation", obs_dim=3, decoded=4)


@pytest.mark.parametrize("mode", ["probs", "mixed"])
def test_agent_with_categorical_probabilities_as_its_latent(tmp_path, mode):
    cfg = _cfg(pixels=True, version=3, env_steps=24, categorical_state=mode)
    agent = Dreamer(cfg, out_dir=tmp_path)
    seen: list[torch.Tensor] = []  # what the decoder network reads as its state
    hook = agent.nets.parts["decoder"].register_forward_hook(
        lambda module, args, out: seen.append(args[0].detach()))  # fmt: skip
    agent.run()
    hook.remove()
    assert agent.updates > 0
    C, K = cfg.num_categoricals, cfg.num_classes
    z_dec = torch.cat([z.reshape(-1, C, K) for z in seen])
    one_hot = bool(((z_dec == 0) | (z_dec == 1)).all())
    assert one_hot == (mode == "mixed")  # "mixed": the decoder reads a sample of the latent
    torch.testing.assert_close(z_dec.sum(-1), torch.ones(z_dec.shape[:-1]))
    # the filtered latent the policy carries: probabilities, not one-hot, and no sampling noise
    env = make_agent_env(cfg.task, pixels=True, batch_size=[2], max_steps=cfg.max_steps,
                         action_repeat=1, seed=3,
                         primer_sizes=(C * K, cfg.rnn_hidden_dim, 1))  # fmt: skip
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        run = env.rollout(5, agent.nets.policy, break_when_any_done=False)
    z = run["next", "state"].unflatten(-1, (C, K))  # [2, 5, C, K]
    torch.testing.assert_close(z.sum(-1), torch.ones(z.shape[:-1]))
    assert bool((z > 0).all()) and bool((z.amax(-1) < 1).all())  # unimix keeps every class
    # imagination is deterministic too: two rollouts of the prior from the same start agree
    prior = agent.nets.parts["prior"]
    start = run["next", "state"][:, -1], run["next", "belief"][:, -1]
    a = torch.zeros(2, 1)
    with torch.no_grad():
        one, two = prior(*start, a), prior(*start, a)
    torch.testing.assert_close(one[1], two[1])
    agent.close()
    _assert_v3_setting_kept(tmp_path, agent, "categorical_state", other="sample", bad="mode")


def _assert_v3_setting_kept(tmp_path, agent, name: str, other: str, bad: str) -> None:
    """A closed v3 ``agent`` saved in ``tmp_path`` resumes with its setting ``name`` and the
    same state, refuses a resume that changes it to ``other``, and the setting rejects ``bad``
    and version 1."""
    value = getattr(agent.config, name)
    resumed = Dreamer.resume(tmp_path)
    assert getattr(resumed.config, name) == value
    _assert_same(_flat_state(resumed), _flat_state(agent))
    resumed.close()
    with pytest.raises(ValueError, match=name):
        Dreamer.resume(tmp_path, **{name: other})
    with pytest.raises(ValueError, match=f"{name} must be one of"):
        _cfg(version=3, **{name: bad}).validate()
    with pytest.raises(ValueError, match="applies to version 3"):
        _cfg(version=1, **{name: value}).validate()


def test_agent_with_a_separate_action_embedding(tmp_path):
    cfg = _cfg(version=3, env_steps=24, action_input="separate")
    agent = Dreamer(cfg, out_dir=tmp_path)
    prior = agent.nets.parts["prior"]
    before = prior.action_projector[0].weight.detach().clone()
    agent.run()
    assert agent.updates > 0
    assert not torch.equal(prior.action_projector[0].weight, before)  # the model trains it
    assert prior.rnn.input_size == 2 * cfg.hidden_dim
    agent.close()
    _assert_v3_setting_kept(tmp_path, agent, "action_input", other="joint", bad="concat")


def test_agent_with_prioritised_replay_scores_steps_and_resumes_identically(
    tmp_path, monkeypatch, capsys
):
    cfg = DreamerConfig.preset("debug", task="pendulum-swingup", pixels=True, version=3,
                               env_steps=48, replay_priority=0.5)  # fmt: skip
    full = Dreamer(cfg, out_dir=tmp_path / "full")
    full.run()
    sampler = full.replay.buffer.sampler
    assert full.replay.prioritized and sampler.filled == 48
    assert not torch.all(sampler.scores[:48] == sampler.scores[0]), "no step was scored"
    resumed = _interrupted_and_resumed(cfg, tmp_path / "part")
    assert resumed.replay.prioritized
    resumed.run()
    assert torch.equal(resumed.replay.buffer.sampler.scores, sampler.scores)
    _assert_same(_flat_state(resumed), _flat_state(full))
    # benchmarks/replay_contents.py reads the scores back from the checkpoint's replay copy
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "replay_contents.py"
    helpers = runpy.run_path(str(script))
    L = cfg.seq_len + 1
    probs = torch.zeros(20, dtype=torch.float64)
    probs[[0, 5, 19 - L + 1]] = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    rate = helpers["predicted_rate"](probs, L)  # every slice predicts L - 1 steps
    assert float(rate.sum()) == pytest.approx(L - 1) and rate[0] == 0 and rate[1] == 0.5
    near = torch.tensor([1, 1, 0, 1, 0, 1, 1, 1, 0, 0], dtype=torch.bool)
    done = torch.tensor([0, 0, 0, 1, 0, 0, 0, 1, 0, 1], dtype=torch.bool)
    assert helpers["longest_stays"](near, done).tolist() == [2, 3, 0]
    monkeypatch.setattr(sys, "argv", ["replay_contents.py", str(tmp_path / "full"), "--block", "1"])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "48 steps in 4 episodes stored" in out and "rate vs uniform" in out
    assert "\n3-3 " in out and "nan" not in out
    full.close()
    resumed.close()
    with pytest.raises(ValueError, match="replay_priority"):
        DreamerConfig.preset("debug", replay_priority=1.5).validate()
    with pytest.raises(ValueError, match="priority_exponent"):
        DreamerConfig.preset("debug", priority_exponent=-1.0).validate()


def test_train_ratio_sets_the_number_of_updates():
    # 12-step episodes, batches of 2 x 8 = 16 replayed steps: ratio 16 -> 12 updates per episode
    agent = Dreamer(_cfg(state_dim=2, env_steps=36, pretrain_updates=3, train_ratio=16.0,
                         prefill_episodes=2))  # fmt: skip
    counts = []
    for _ in range(3):
        agent.iterate()
        counts.append(agent.updates)
    agent.close()
    assert counts == [0, 12 + 3, 24 + 3]  # training (and pretraining) starts after the prefill


def test_reinforce_agent_trains_its_actor_through_the_score_function():
    agent = Dreamer(_cfg(version=3, actor_gradient="reinforce", env_steps=24))
    before = [p.detach().clone() for p in agent.nets.parts["actor"].parameters()]
    agent.run()
    agent.close()
    assert agent.updates > 0
    after = list(agent.nets.parts["actor"].parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after))
    assert all(math.isfinite(v) for v in agent.last_losses.values())


def test_bounded_normal_agent_acts_in_bounds_and_trains():
    agent = Dreamer(_cfg(version=3, actor_dist="bounded_normal", env_steps=24))
    td = agent.nets.imagination_env.reset()
    out = agent.nets.actor(td.clone())
    assert bool(((out["scale"] >= 0.1) & (out["scale"] <= 1.0)).all())
    assert bool((out["action"].abs() <= 1).all())
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        det = agent.nets.actor(td.clone())
    torch.testing.assert_close(det["action"], torch.tanh(det["loc"]))
    before = [p.detach().clone() for p in agent.nets.parts["actor"].parameters()]
    agent.run()
    agent.close()
    after = list(agent.nets.parts["actor"].parameters())
    assert agent.updates > 0 and any(not torch.equal(b, a) for b, a in zip(before, after))
    assert all(math.isfinite(v) for v in agent.last_losses.values())


def test_config_validation():
    with pytest.raises(ValueError, match="version"):
        _cfg(version=2).validate()
    with pytest.raises(ValueError, match="too short"):
        _cfg(seq_len=20).validate()
    with pytest.raises(ValueError, match="precision"):
        _cfg(precision="fp8").validate()
    with pytest.raises(ValueError, match="unknown preset"):
        DreamerConfig.preset("huge")
    with pytest.raises(ValueError, match="action_noise"):
        _cfg(action_noise=-0.1).validate()
    with pytest.raises(ValueError, match="actor_gradient"):
        _cfg(actor_gradient="pathwise").validate()
    with pytest.raises(ValueError, match="entropy_bonus"):
        _cfg(entropy_bonus=-1e-3).validate()
    with pytest.raises(ValueError, match="actor_dist"):
        _cfg(actor_dist="beta").validate()
    with pytest.raises(ValueError, match="entropy_lr"):
        _cfg(entropy_lr=0.0).validate()
    with pytest.raises(ValueError, match="entropy_target"):
        _cfg(entropy_target=math.inf).validate()
    with pytest.raises(ValueError, match="frame_stack"):
        _cfg(frame_stack=0).validate()
    with pytest.raises(ValueError, match="free_bits"):
        _cfg(free_bits=-0.1).validate()
    with pytest.raises(ValueError, match="free_bits_dynamic"):
        _cfg(version=3, free_bits_dynamic=-0.1).validate()
    with pytest.raises(ValueError, match="version 3"):
        _cfg(version=1, free_bits_dynamic=0.0).validate()
    with pytest.raises(ValueError, match="exploring_starts"):
        _cfg(task="dmc:pendulum-swingup", exploring_starts=True).validate()
    with pytest.raises(ValueError, match="fraction"):
        _cfg(exploring_starts=1.5).validate()


def test_kl_floors_reach_the_model_losses():
    assert Dreamer(_cfg(version=3)).model_loss.free_bits == 1.0  # the paper's
    assert Dreamer(_cfg(version=3, free_bits=0.1)).model_loss.free_bits == 0.1
    assert Dreamer(_cfg(version=3)).model_loss.free_bits_dynamic is None
    assert Dreamer(_cfg(version=3, free_bits_dynamic=0.0)).model_loss.free_bits_dynamic == 0.0
    assert Dreamer(_cfg(version=1, free_nats=2.0)).model_loss.free_nats == 2.0


@pytest.mark.parametrize("version", [1, 3])
def test_agent_with_latent_overshooting_trains_and_logs_its_terms(version):
    plain = Dreamer(_cfg(version=version))
    assert plain.model_loss.overshooting == 0
    v3 = dict(categorical_state="probs", free_bits_dynamic=0.0) if version == 3 else {}
    agent = Dreamer(_cfg(version=version, overshooting=3, **v3))
    assert agent.model_loss.overshooting == 3
    assert agent.model_loss._overshoot_modules == (
        agent.nets.parts["prior"], agent.nets.reward_read_out)
    before = [p.detach().clone() for p in agent.nets.parts["prior"].parameters()]
    agent.run()
    losses = agent.last_losses
    for k in ("loss_model_overshoot_kl", "loss_model_overshoot_reward"):
        assert math.isfinite(losses[k]) and losses[k] > 0, k
    after = list(agent.nets.parts["prior"].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    agent.close()


def test_cli_runs_writes_figures_and_resumes(tmp_path, capsys, monkeypatch):
    import wmrl.cpu_memory

    retained = []  # the CLI keeps freed memory on CPU unless --release-memory (recorded here)
    monkeypatch.setattr(wmrl.cpu_memory, "retain_freed_memory", lambda: retained.append(1))
    out = tmp_path / "run"
    args = ["dreamer", "--task", "pendulum-swingup", "--pixels", "--version", "3",
            "--preset", "debug", "--env-steps", "24", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("env steps: 24")
    names = ("learning_curve.png", "cost_per_step.png", "open_loop.png", "checkpoint.pt",
             "records.json", "config.json")  # fmt: skip
    for name in names:
        assert (out / name).is_file(), name
    assert list(out.glob("log/**/*.csv")) or list(out.glob("**/*.csv"))
    assert retained == [1]
    assert main(args) == 2  # refuses to overwrite a run
    assert json.loads((out / "config.json").read_text())["entropy_bonus"] is None  # v3: 3e-4
    resume = ["dreamer", "--out", str(out), "--resume", "--env-steps", "36", "--no-progress",
              "--no-plots", "--entropy-bonus", "0.003", "--entropy-target", "-1",
              "--free-bits-dynamic", "0", "--exploring-starts", "--release-memory",
              "--noise-correlation", "0.8", "--overshooting", "3", "--replay-priority", "0.5",
              "--priority-exponent", "0.7"]  # fmt: skip
    assert main(resume) == 0
    assert retained == [1]
    records = json.loads((out / "records.json").read_text())
    assert [r["env_steps"] for r in records] == [0, 24, 36]
    config = json.loads((out / "config.json").read_text())
    assert config["entropy_bonus"] == 0.003 and config["entropy_target"] == -1.0
    assert config["free_bits_dynamic"] == 0.0 and config["exploring_starts"] == 1.0
    assert config["noise_correlation"] == 0.8 and config["overshooting"] == 3
    assert config["replay_priority"] == 0.5 and config["priority_exponent"] == 0.7
    from wmrl.cli import build_parser

    parsed = build_parser().parse_args(["dreamer", "--out", "x", "--exploring-starts", "0.5",
                                        "--action-input", "separate"])  # fmt: skip
    assert parsed.exploring_starts == 0.5  # a mixture of starts
    assert parsed.action_input == "separate"


def test_load_trained_nets_restores_a_saved_run(tmp_path):
    """The networks, config and counters of a saved state run come back without the agent."""
    from wmrl.agents.dreamer import load_trained_nets

    agent = Dreamer(_cfg(version=3, env_steps=24), out_dir=tmp_path)
    agent.run()
    agent.close()
    config, nets, counters = load_trained_nets(tmp_path)
    assert config == agent.config and counters["updates"] == agent.updates
    for name, part in agent.nets.parts.items():
        for (k, v), w in zip(part.state_dict().items(), nets.parts[name].state_dict().values()):
            assert torch.equal(v.cpu(), w), (name, k)
    assert nets.policy.action_noise == agent.nets.policy.action_noise
    with pytest.raises(FileNotFoundError):
        load_trained_nets(tmp_path / "missing")


def test_pendulum_checkpoint_scripts_run(tmp_path, monkeypatch, capsys):
    """``benchmarks/dreamer_episodes.py``, ``dreamer_diagnose.py``, ``dreamer_open_loop.py``,
    ``dreamer_actions.py`` and ``open_loop_error.py`` on a tiny pixel run with stacked frames
    and a latent of probabilities whose prior is trained below the KL floor."""
    import runpy
    import sys
    from pathlib import Path

    cfg = _cfg(pixels=True, version=3, env_steps=24, max_steps=24, frame_stack=3,
               reconstruct="newest", categorical_state="probs", free_bits_dynamic=0.0)  # fmt: skip
    agent = Dreamer(cfg, out_dir=tmp_path)
    agent.run()
    agent.close()
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # leave the test's threads
    monkeypatch.setattr(sys, "argv", ["dreamer_episodes.py", str(tmp_path), "--episodes", "2",
                                      "--every", "4", "--out", str(tmp_path / "ep")])  # fmt: skip
    runpy.run_path(str(bench / "dreamer_episodes.py"), run_name="__main__")
    assert (tmp_path / "ep.png").is_file() and (tmp_path / "ep_frames.png").is_file()
    costs = capsys.readouterr().out.splitlines()[-1].split(":")[1].split()[:2]
    assert all(0.0 <= float(x) <= 1.0 for x in costs)  # the task's saturating cost per step
    monkeypatch.setattr(sys, "argv", ["dreamer_diagnose.py", str(tmp_path)])
    runpy.run_path(str(bench / "dreamer_diagnose.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "one step ahead" in out and "zero torque, from the top" in out
    assert "the torque's effect on the one-step θ̇" in out
    assert "nan" not in out
    monkeypatch.setattr(sys, "argv", ["dreamer_diagnose.py", str(tmp_path), "--hold"])
    runpy.run_path(str(bench / "dreamer_diagnose.py"), run_name="__main__")
    held = capsys.readouterr().out  # held upright: every step of the probes' episodes near it
    n_top, n_all = re.search(r"the (\d+) of (\d+) near the top", held).groups()
    assert int(n_top) == int(n_all) and "nan" not in held
    monkeypatch.setattr(sys, "argv", ["dreamer_open_loop.py", str(tmp_path), "--context", "3",
                                      "--horizon", "4", "--out", str(tmp_path / "ol.png")])
    runpy.run_path(str(bench / "dreamer_open_loop.py"), run_name="__main__")
    assert (tmp_path / "ol.png").is_file() and "moving-object pixels" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["dreamer_actions.py", str(tmp_path), "--episodes", "3",
                                      "--plan-iters", "5"])  # fmt: skip
    runpy.run_path(str(bench / "dreamer_actions.py"), run_name="__main__")
    out = capsys.readouterr().out
    rows = {line[:36].strip(): line[36:].split() for line in out.splitlines()[-7:]}
    planned = rows.pop("the model's best actions (planned)")
    assert planned[2] == "-" and -1 <= float(planned[0]) <= 1  # imagined only; in the bounds
    # Adam on the imagined reward sum, from pumping's actions, does not lose imagined reward
    assert float(planned[1]) >= float(rows["pump: sign θ̇"][1]) - 0.01
    assert [rows[k][0] for k in ("constant +1", "constant -1", "zero torque")] == [
        "+1.000", "-1.000", "+0.000"]  # fmt: skip
    assert rows["actor (closed loop in imagination)"][2] == "-"  # no real counterpart
    for name, (_, imagined, real, end, ret, far) in rows.items():
        assert "nan" not in (imagined + end + ret), name
        if real != "-":  # rewards are minus a saturating cost in [0, 1] per step
            assert -cfg.horizon <= float(real) <= 0 and 0 <= float(far) <= 1, name
    monkeypatch.setattr(sys, "argv", ["dreamer_actions.py", str(tmp_path), "--episodes", "4",
                                      "--start", "top", "--context", "1",
                                      "--plan-iters", "5"])  # fmt: skip
    runpy.run_path(str(bench / "dreamer_actions.py"), run_name="__main__")
    out = capsys.readouterr().out
    start = next(line for line in out.splitlines() if line.startswith("start after"))
    assert float(start.split("|θ - π| (wrapped) ")[1].split()[0]) < 0.5  # near upright
    rows = {line[:36].strip(): line[36:].split() for line in out.splitlines()[-8:]}
    held, fell = float(rows["balance: PD at the top"][2]), float(rows["zero torque"][2])
    assert held > fell  # the real pendulum: the feedback holds it, without torque it falls
    planned = float(rows["the model's best actions (planned)"][1])
    assert planned >= float(rows["balance: PD at the top"][1]) - 0.01  # Adam from the PD's
    monkeypatch.setattr(sys, "argv", ["open_loop_error.py", str(tmp_path), "--episodes", "2",
                                      "--distances", "1", "3", "10"])  # fmt: skip
    runpy.run_path(str(bench / "open_loop_error.py"), run_name="__main__")
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[-3:]]
    assert [r[0] for r in rows] == ["1", "3", "10"]
    for r in rows:  # decoded rewards of a cost in [0, 1]; a KL is non-negative
        assert 0 <= float(r[1]) <= 1.5 and float(r[-1]) >= 0, r
