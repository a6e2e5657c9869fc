"""Dreamer losses: hand-computed values, every option's documented effect, TorchRL parity."""

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn

from wmrl.envs.dreamer import DreamerEnv
from wmrl.rssm.dreamer import DreamerActorLoss, DreamerModelLoss, DreamerValueLoss

torch.set_num_threads(1)


# ---------------------------------------------------------------- world-model loss, by hand
class FixedOutputs(nn.Module):
    """A 'world model' writing chosen prior/posterior parameters, reconstructions and rewards."""

    def __init__(self, post_mean, reco, reward):
        super().__init__()
        self.post_mean, self.reco, self.reward = post_mean, reco, reward

    def forward(self, td):
        zeros = torch.zeros_like(self.post_mean)
        td["next", "prior_mean"], td["next", "prior_std"] = zeros, zeros + 1
        td["next", "posterior_mean"], td["next", "posterior_std"] = self.post_mean, zeros + 1
        td["next", "reco_pixels"] = self.reco
        td["next", "reward"] = self.reward
        return td


def fixed_case():
    # B=1, T=2, S=2: unit-variance Gaussians, so KL per dimension = posterior_mean^2 / 2
    post_mean = torch.tensor([[[1.0, 1.0], [2.0, 2.0]]])  # per-step KL sums: 1 and 4
    pixels = torch.zeros(1, 2, 1, 1, 2)
    reco = torch.tensor([[[[[0.5, 2.0]]], [[[1.0, 0.0]]]]])
    true_reward = torch.tensor([[[1.0], [0.0]]])
    pred_reward = torch.tensor([[[0.0], [3.0]]])
    td = TensorDict({"next": {"pixels": pixels, "reward": true_reward}}, [1, 2])
    return FixedOutputs(post_mean, reco, pred_reward), td


def losses(loss_module, td):
    out, _ = loss_module(td)
    return [out[k].item() for k in ("loss_model_kl", "loss_model_reco", "loss_model_reward")]


def test_model_loss_hand_values_default():
    wm, td = fixed_case()
    kl, reco, reward = losses(DreamerModelLoss(wm), td)
    assert kl == pytest.approx((3 + 4) / 2)  # clamp each step at 3 nats, then average
    assert reco == pytest.approx(((0.25 + 4.0) + 1.0) / 2)  # sum over pixels, mean over B, T
    assert reward == pytest.approx((1.0 + 9.0) / 2)
    assert "true_reward" not in td["next"].keys()  # the input is not modified


def test_model_loss_options_change_the_result_as_documented():
    wm, td = fixed_case()
    # delayed clamp: average first (2.5), then clamp at 3
    assert losses(DreamerModelLoss(wm, delayed_clamp=True), td)[0] == pytest.approx(3.0)
    assert losses(DreamerModelLoss(wm, free_nats=0, delayed_clamp=True), td)[0] == pytest.approx(
        2.5
    )
    # global average: per-element KL [0.5, 0.5, 2, 2] clamped at 0.6 then averaged
    kl, reco, reward = losses(DreamerModelLoss(wm, free_nats=0.6, global_average=True), td)
    assert kl == pytest.approx((0.6 + 0.6 + 2 + 2) / 4)
    assert reco == pytest.approx((0.25 + 4.0 + 1.0 + 0.0) / 4)  # mean over all elements
    assert reward == pytest.approx(5.0)  # one reward feature: unchanged
    # smooth L1 (Huber, delta 1): 0.5 x^2 below 1, |x| - 0.5 above
    kl, reco, reward = losses(DreamerModelLoss(wm, reco_loss="smooth_l1", reward_loss="l1"), td)
    assert reco == pytest.approx(((0.125 + 1.5) + 0.5) / 2)
    assert reward == pytest.approx((1.0 + 3.0) / 2)
    # weights
    kl, reco, reward = losses(
        DreamerModelLoss(wm, lambda_kl=2.0, lambda_reco=0.5, lambda_reward=0.1), td
    )
    assert (kl, reco, reward) == pytest.approx((7.0, 2.625 / 2, 0.5))
    with pytest.raises(ValueError, match="reco_loss"):
        DreamerModelLoss(wm, reco_loss="l3")
    wm.reco = wm.reco[..., :1]
    with pytest.raises(ValueError, match="shapes differ"):
        DreamerModelLoss(wm)(td)
    wm, td = fixed_case()

    def bad_prior(td):
        td = wm(td)
        td["next", "prior_std"] = td["next", "prior_std"][..., :1]  # would broadcast
        return td

    with pytest.raises(ValueError, match="one shape"):
        DreamerModelLoss(bad_prior)(td)


# ---------------------------------------------------------------- world-model loss vs TorchRL
def tiny_world_model(torchrl_layout: bool):
    """Encoder + RSSM rollout + decoder + reward head (TorchRL's WorldModelWrapper layout)."""
    from torchrl.modules import WorldModelWrapper

    from wmrl.rssm import DenseHead, ObsDecoder, ObsEncoder, RSSMPosterior, RSSMPrior, RSSMRollout

    torch.manual_seed(0)
    enc, dec = ObsEncoder(channels=4), ObsDecoder(4, latent_dim=11)
    prior = RSSMPrior(None, hidden_dim=8, rnn_hidden_dim=8, state_dim=3, action_dim=2)
    post = RSSMPosterior(hidden_dim=8, state_dim=3, rnn_hidden_dim=8, obs_embed_dim=128)
    rollout = RSSMRollout(
        TensorDictModule(
            prior,
            ["state", "belief", "action"],
            [("next", "prior_mean"), ("next", "prior_std"), "_", ("next", "belief")],
        ),
        TensorDictModule(
            post,
            [("next", "belief"), ("next", "encoded_latents")],
            [("next", "posterior_mean"), ("next", "posterior_std"), ("next", "state")],
        ),
    )
    nxt = [("next", "state"), ("next", "belief")]
    transition = TensorDictSequential(
        TensorDictModule(enc, [("next", "pixels")], [("next", "encoded_latents")]),
        rollout,
        TensorDictModule(dec, nxt, [("next", "reco_pixels")]),
    )
    reward = TensorDictModule(DenseHead(11, 1, 1, 8), nxt, [("next", "reward")])
    return WorldModelWrapper(transition, reward)


def sequences():
    g = torch.Generator().manual_seed(3)
    return TensorDict(
        {
            "state": torch.zeros(2, 4, 3),
            "belief": torch.zeros(2, 4, 8),
            "action": torch.rand(2, 4, 2, generator=g) * 2 - 1,
            "next": {
                "pixels": torch.rand(2, 4, 3, 64, 64, generator=g),
                "reward": torch.randn(2, 4, 1, generator=g),
            },
        },
        [2, 4],
    )


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"delayed_clamp": True, "free_nats": 0.5},
        {"global_average": True, "free_nats": 0.01},
        {"reco_loss": "smooth_l1", "reward_loss": "smooth_l1", "lambda_kl": 0.3},
    ],
)
def test_model_loss_matches_torchrl(options):
    from torchrl.objectives import DreamerModelLoss as TorchRLModelLoss

    wm, data = tiny_world_model(True), sequences()
    mine, theirs = DreamerModelLoss(wm, **options), TorchRLModelLoss(wm, **options)
    torch.manual_seed(7)
    out, sampled = mine(data)
    grads = torch.autograd.grad(sum(out.values()), list(wm.parameters()))
    torch.manual_seed(7)
    ref, ref_sampled = theirs(data)
    ref_grads = torch.autograd.grad(sum(v.sum() for v in ref.values()), list(wm.parameters()))
    for key in ("loss_model_kl", "loss_model_reco", "loss_model_reward"):
        assert out[key].shape == ()
        torch.testing.assert_close(out[key], ref[key].squeeze(), rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sampled["next", "state"], ref_sampled["next", "state"])
    assert not sampled["next", "state"].requires_grad


# ---------------------------------------------------------------- actor and value losses
S, HB, A = 2, 3, 2


class Transition(nn.Module):
    """state' = tanh(W [state, action]), belief' = belief / 2 (deterministic)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(S + A, S)

    def forward(self, state, belief, action):
        return torch.tanh(self.lin(torch.cat([state, action], -1))), belief / 2


def toy_parts():
    torch.manual_seed(0)
    transition = Transition()
    reward = nn.Linear(S + HB, 1)
    world = TensorDictSequential(
        TensorDictModule(transition, ["state", "belief", "action"], ["state", "belief"]),
        TensorDictModule(
            lambda s, b: reward(torch.cat([s, b], -1)), ["state", "belief"], ["reward"]
        ),
    )
    world.reward_head = reward  # registered, so the environment sees its parameters
    actor = TensorDictModule(nn.Sequential(nn.Linear(S, A), nn.Tanh()), ["state"], ["action"])
    value = TensorDictModule(nn.Linear(S + HB, 1), ["state", "belief"], ["state_value"])
    value.module.forward = lambda s, b, lin=value.module: nn.functional.linear(
        torch.cat([s, b], -1), lin.weight, lin.bias
    )
    start = TensorDict({"state": torch.randn(4, S), "belief": torch.randn(4, HB)}, [4])
    return world, actor, value, start


def wmrl_env(world):
    return DreamerEnv(world, prior_shape=(S,), belief_shape=(HB,))


def torchrl_env(world):
    from torchrl.data import Bounded, Composite, Unbounded
    from torchrl.envs.model_based import DreamerEnv as TorchRLDreamerEnv

    env = TorchRLDreamerEnv(world, prior_shape=(S,), belief_shape=(HB,))
    env.observation_spec = Composite(state=Unbounded(S), belief=Unbounded(HB))
    env.state_spec = env.observation_spec.clone()
    env.action_spec = Bounded(-1, 1, (A,))
    env.reward_spec = Unbounded((1,))
    return env


def test_actor_loss_hand_computed_lambda_returns():
    world, actor, value, start = toy_parts()
    loss = DreamerActorLoss(actor, value, wmrl_env(world), imagination_horizon=3)
    gamma, lmbda = 0.5, 0.25
    loss.make_value_estimator(gamma=gamma, lmbda=lmbda)
    out, fake = loss(start)
    # recompute the trajectory and the returns by hand
    with torch.no_grad():
        s, b = start["state"], start["belief"]
        rewards, values = [], []
        for _ in range(3):
            a = actor.module(s)
            s, b = world[0].module(s, b, a)
            rewards.append(world.reward_head(torch.cat([s, b], -1)))
            values.append(value.module(s, b))
        G = values[-1]
        returns = []
        for r, v in zip(reversed(rewards), reversed(values)):
            # G_t = r_t + gamma((1 - lambda) v_{t+1} + lambda G_{t+1}), G_H = v_H
            G = r + gamma * ((1 - lmbda) * v + lmbda * G)
            returns.append(G)
        returns = torch.stack(returns[::-1], 1)  # [4, 3, 1]
    torch.testing.assert_close(fake["lambda_target"], returns)
    torch.testing.assert_close(out["loss_actor"], -returns.sum((1, 2)).mean())
    # discounting: step t weighted by gamma^t
    loss.discount_loss = True
    out, _ = loss(start)
    w = torch.tensor([1.0, gamma, gamma**2]).view(1, 3, 1)
    torch.testing.assert_close(out["loss_actor"], -(returns * w).sum((1, 2)).mean())


def test_actor_loss_gradients_reach_only_the_actor():
    world, actor, value, start = toy_parts()
    loss = DreamerActorLoss(actor, value, wmrl_env(world), imagination_horizon=4)
    out, fake = loss(start)
    out["loss_actor"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())
    assert all(p.grad is None for p in world.parameters())
    assert all(p.grad is None for p in value.parameters())
    assert all(p.requires_grad for p in (*world.parameters(), *value.parameters()))
    assert not fake["lambda_target"].requires_grad
    assert fake.batch_size == (4, 4)


@pytest.mark.parametrize("discount_loss", [False, True])
def test_actor_and_value_losses_match_torchrl(discount_loss):
    """Same trajectory, losses and gradients as TorchRL's classes — up to a TorchRL defect.

    TorchRL 0.14.1's ``DreamerActorLoss.lambda_target`` hands its value estimator a TensorDict
    with no batch dimensions, so the estimator's time dimension is the singleton feature
    dimension and every "lambda-return" is the one-step target ``r_t + gamma v(s_{t+1})``.
    Our loss reproduces TorchRL's numbers with the TD(0) estimator; with the default TD(lambda)
    it computes the lambda-returns (checked by hand in ``test_actor_loss_hand_computed_...``).
    """
    from torchrl.objectives import DreamerActorLoss as TorchRLActorLoss
    from torchrl.objectives import DreamerValueLoss as TorchRLValueLoss

    world, actor, value, start = toy_parts()
    mine = DreamerActorLoss(actor, value, wmrl_env(world), 5, discount_loss)
    theirs = TorchRLActorLoss(
        actor, value, torchrl_env(world), imagination_horizon=5, discount_loss=discount_loss
    )
    ref, ref_fake = theirs(start)
    ref_grads = torch.autograd.grad(ref["loss_actor"], list(actor.parameters()))
    out, fake = mine(start)
    for key in (("next", "state"), ("next", "belief"), ("next", "reward"), "action"):
        torch.testing.assert_close(fake[key], ref_fake[key])
    assert not torch.allclose(fake["lambda_target"], ref_fake["lambda_target"])  # the defect
    mine.make_value_estimator("TD0")
    out, fake = mine(start)
    grads = torch.autograd.grad(out["loss_actor"], list(actor.parameters()))
    torch.testing.assert_close(out["loss_actor"], ref["loss_actor"])
    torch.testing.assert_close(fake["lambda_target"], ref_fake["lambda_target"])
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)
    for value_loss in ("l2", "smooth_l1"):
        mine_v = DreamerValueLoss(value, value_loss=value_loss, discount_loss=discount_loss)
        ref_v = TorchRLValueLoss(value, value_loss=value_loss, discount_loss=discount_loss)
        torch.testing.assert_close(mine_v(fake)[0]["loss_value"], ref_v(ref_fake)[0]["loss_value"])


def test_value_loss_hand_values():
    value = TensorDictModule(lambda s: s.sum(-1, keepdim=True), ["state"], ["state_value"])
    td = TensorDict(
        {
            "state": torch.tensor([[[1.0], [2.0], [0.0]]]),
            "lambda_target": torch.tensor([[[0.0], [0.5], [3.0]]]),
        },
        [1, 3],
    )
    # squared errors 1, 2.25, 9
    assert DreamerValueLoss(value, discount_loss=False)(td)[0][
        "loss_value"
    ].item() == pytest.approx(12.25)
    out = DreamerValueLoss(value, gamma=0.5)(td)[0]["loss_value"]
    assert out.item() == pytest.approx(1 + 0.5 * 2.25 + 0.25 * 9)
    out = DreamerValueLoss(value, value_loss="smooth_l1", discount_loss=False)(td)[0]["loss_value"]
    assert out.item() == pytest.approx(0.5 + 1.0 + 2.5)


def test_value_estimators():
    from torchrl.objectives.utils import ValueEstimators

    world, actor, value, start = toy_parts()
    loss = DreamerActorLoss(actor, value, wmrl_env(world), imagination_horizon=3)
    assert loss.value_estimator.gamma.item() == pytest.approx(0.99)
    assert loss.value_estimator.lmbda.item() == pytest.approx(0.95)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=0.5)
    out, fake = loss(start)
    # TD(0): r_t + gamma v(s_{t+1})
    with torch.no_grad():
        nxt = fake["next"]
        r = nxt["reward"]
        v = value.module(nxt["state"], nxt["belief"])
    torch.testing.assert_close(fake["lambda_target"], r + 0.5 * v)
    loss.make_value_estimator("TD1")
    assert loss.value_type is ValueEstimators.TD1
    with pytest.raises(ValueError, match="not supported"):
        loss.make_value_estimator(ValueEstimators.GAE)
    with pytest.raises(ValueError, match="imagination_horizon"):
        DreamerActorLoss(actor, value, wmrl_env(world), imagination_horizon=0)


def test_losses_chain_on_a_real_rssm():
    """Model loss -> actor loss from its posterior states -> value loss, with the pages' flow."""
    from wmrl.rssm.assemble import make_dreamer

    m = make_dreamer(2, channels=4, state_dim=3, rnn_hidden_dim=8, hidden_dim=8, mlp_cells=8,
                     actor_depth=1, actor_cells=8)  # fmt: skip
    data = sequences()
    model_td, latent = DreamerModelLoss(m.world_model)(data)
    assert all(math.isfinite(v.item()) for v in model_td.values())
    actor_td, fake = DreamerActorLoss(m.actor, m.value, m.model_based_env, 3)(
        latent.get("next").select("state", "belief")
    )
    value_td, _ = DreamerValueLoss(m.value)(fake)
    actor_td["loss_actor"].backward()
    value_td["loss_value"].backward()
    assert fake.batch_size == (2, 4, 3)
    assert all(p.grad is not None for p in m.actor.parameters())
    assert all(p.grad is None for p in m.prior.parameters())


def test_losses_are_float32_under_bf16_autocast():
    from wmrl.rssm.assemble import make_dreamer

    m = make_dreamer(2, channels=4, state_dim=3, rnn_hidden_dim=8, hidden_dim=8, mlp_cells=8,
                     actor_depth=1, actor_cells=8)  # fmt: skip
    data = sequences()
    torch.manual_seed(0)
    ref, latent = DreamerModelLoss(m.world_model)(data)
    torch.manual_seed(0)
    with torch.autocast("cpu", torch.bfloat16):
        out, _ = DreamerModelLoss(m.world_model)(data)
    for key in ref.keys():
        assert out[key].dtype == torch.float32
        torch.testing.assert_close(out[key], ref[key], rtol=0.05, atol=0.05)
    start = latent.get("next").select("state", "belief")
    with torch.autocast("cpu", torch.bfloat16):
        actor_td, fake = DreamerActorLoss(m.actor, m.value, m.model_based_env, 3)(start)
        value_td, _ = DreamerValueLoss(m.value)(fake)
    assert fake["lambda_target"].dtype == torch.float32
    assert actor_td["loss_actor"].dtype == value_td["loss_value"].dtype == torch.float32
