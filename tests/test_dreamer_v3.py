"""DreamerV3 losses: hand-computed values, option effects, TorchRL parity, the pages' example."""

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictSequential,
)
from torch import nn

from wmrl.envs.dreamer import DreamerEnv
from wmrl.rssm.dreamer_v3 import (
    DreamerV3ActorLoss,
    DreamerV3ModelLoss,
    DreamerV3ValueLoss,
    symlog,
    two_hot_cross_entropy,
)
from wmrl.rssm.twohot import default_bins

torch.set_num_threads(1)


# ---------------------------------------------------------------- model loss
class Fixed(nn.Module):
    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs

    def forward(self, td):
        for k, v in self.outputs.items():
            td["next", k] = v
        return td


def categorical_kl(q_logits, p_logits):
    q, p = torch.softmax(q_logits, -1), torch.softmax(p_logits, -1)
    return (q * (q.log() - p.log())).sum((-2, -1))


def v3_case(num_bins=5):
    g = torch.Generator().manual_seed(0)
    post = torch.randn(2, 3, 4, 5, generator=g) * 2
    prior = torch.randn(2, 3, 4, 5, generator=g)
    pixels = torch.rand(2, 3, 3, 2, 2, generator=g)
    reco = pixels + torch.randn(2, 3, 3, 2, 2, generator=g)
    reward = torch.randn(2, 3, 1, generator=g) * 3
    outputs = {
        "posterior_logits": post,
        "prior_logits": prior,
        "reco_pixels": reco,
        "reward_logits": torch.randn(2, 3, num_bins, generator=g),
        "reward": torch.randn(2, 3, 1, generator=g),
        "continue_pred": torch.randn(2, 3, 1, generator=g),
    }
    td = TensorDict(
        {
            "next": {
                "pixels": pixels,
                "reward": reward,
                "terminated": torch.tensor([[[False], [False], [True]]] * 2),
            }
        },
        [2, 3],
    )
    return Fixed(outputs), td, outputs


def test_model_loss_hand_values():
    wm, td, o = v3_case()
    loss = DreamerV3ModelLoss(wm, unimix=0.0, free_bits=0.5, num_reward_bins=5, lambda_continue=2.0)
    out, _ = loss(td)
    kl = categorical_kl(o["posterior_logits"], o["prior_logits"])  # [2, 3]: same value both terms
    term = kl.clamp_min(0.5).mean()
    torch.testing.assert_close(out["loss_model_kl"], (0.5 + 0.1) * term)
    torch.testing.assert_close(out["kl_dynamic"], term)
    reco = (symlog(td["next", "pixels"]) - symlog(o["reco_pixels"])).square().sum((-3, -2, -1))
    torch.testing.assert_close(out["loss_model_reco"], reco.mean())
    ce = two_hot_cross_entropy(o["reward_logits"], td["next", "reward"], default_bins(5))
    torch.testing.assert_close(out["loss_model_reward"], ce.mean())
    cont = torch.tensor([[[1.0], [1.0], [0.0]]] * 2)
    p = torch.sigmoid(o["continue_pred"])
    bce = -(cont * p.log() + (1 - cont) * (1 - p).log()).mean()
    torch.testing.assert_close(out["loss_model_continue"], 2.0 * bce)


def test_model_loss_options_change_the_result_as_documented():
    wm, td, o = v3_case()
    base = dict(unimix=0.0, free_bits=0.0, num_reward_bins=5)
    kl = categorical_kl(o["posterior_logits"], o["prior_logits"]).mean()
    out, _ = DreamerV3ModelLoss(wm, lambda_dynamic=1.0, lambda_representation=0.0, **base)(td)
    torch.testing.assert_close(out["loss_model_kl"], kl)
    # unimix: the KL of the mixed distributions, smaller for these peaked logits
    out_mix, _ = DreamerV3ModelLoss(wm, lambda_dynamic=1.0, lambda_representation=0.0,
                                    **{**base, "unimix": 0.1})(td)  # fmt: skip
    assert out_mix["loss_model_kl"] < out["loss_model_kl"]
    # free bits clamp each step's whole-latent KL
    big = categorical_kl(o["posterior_logits"], o["prior_logits"]).max().item() + 1
    out, _ = DreamerV3ModelLoss(wm, **{**base, "free_bits": big})(td)
    torch.testing.assert_close(out["loss_model_kl"], torch.tensor((0.5 + 0.1) * big))
    # a floor of the dynamics term alone: the prior's term unclamped, the posterior's clamped
    out, _ = DreamerV3ModelLoss(wm, **{**base, "free_bits": big, "free_bits_dynamic": 0.0})(td)
    torch.testing.assert_close(out["kl_dynamic"], kl)
    torch.testing.assert_close(out["kl_representation"], torch.tensor(big))
    torch.testing.assert_close(out["loss_model_kl"], 0.5 * kl + 0.1 * big)
    with pytest.raises(ValueError, match="separate"):
        DreamerV3ModelLoss(wm, kl_mode="balanced", free_bits_dynamic=0.0)
    # no symlog: plain squared error; l1
    out, _ = DreamerV3ModelLoss(wm, reco_symlog=False, reco_loss="l1", **base)(td)
    err = (td["next", "pixels"] - o["reco_pixels"]).abs().sum((-3, -2, -1)).mean()
    torch.testing.assert_close(out["loss_model_reco"], err)
    out, _ = DreamerV3ModelLoss(wm, global_average=True, **base)(td)
    err = (symlog(td["next", "pixels"]) - symlog(o["reco_pixels"])).square().mean()
    torch.testing.assert_close(out["loss_model_reco"], err)
    # symlog MSE reward instead of two-hot
    out, _ = DreamerV3ModelLoss(wm, reward_two_hot=False, **base)(td)
    mse = (symlog(td["next", "reward"]) - symlog(o["reward"])).square().mean()
    torch.testing.assert_close(out["loss_model_reward"], mse)
    with pytest.raises(ValueError, match="bins"):
        DreamerV3ModelLoss(wm, num_reward_bins=7)(td)
    with pytest.raises(ValueError, match="kl_mode"):
        DreamerV3ModelLoss(wm, kl_mode="mixed")


@pytest.mark.parametrize("kl_mode", ["balanced", "separate"])
def test_model_loss_matches_torchrl(kl_mode):
    from torchrl.objectives import DreamerV3ModelLoss as TorchRLV3ModelLoss

    wm, td, _ = v3_case(num_bins=255)
    options = dict(kl_mode=kl_mode, unimix=0.01, free_bits=0.7, lambda_kl=0.5, lambda_continue=0.3)
    mine = DreamerV3ModelLoss(wm, **options, lambda_dynamic=0.5, lambda_representation=0.1)
    theirs = TorchRLV3ModelLoss(wm, **options, lambda_dynamic=0.5, lambda_representation=0.1)
    out, _ = mine(td)
    ref, _ = theirs(td)
    if kl_mode == "separate":
        ref_kl = ref["loss_model_dynamic"] + ref["loss_model_representation"]
    else:
        ref_kl = ref["loss_model_kl"]
    torch.testing.assert_close(out["loss_model_kl"], ref_kl.squeeze())
    for key in ("loss_model_reco", "loss_model_reward", "loss_model_continue"):
        torch.testing.assert_close(out[key], ref[key].squeeze(), rtol=1e-5, atol=1e-5)
    out, _ = DreamerV3ModelLoss(wm, reward_two_hot=False)(td)
    ref, _ = TorchRLV3ModelLoss(wm, reward_two_hot=False)(td)
    torch.testing.assert_close(out["loss_model_reward"], ref["loss_model_reward"].squeeze())


# ---------------------------------------------------------------- actor loss
S, HB, A = 2, 3, 2


def toy_env(discrete=False):
    from torchrl.data import OneHot

    torch.manual_seed(0)
    lin, rew = nn.Linear(S + A, S), nn.Linear(S + HB, 1)

    def step(s, b, a):
        return torch.tanh(lin(torch.cat([s, a], -1))), b / 2

    world = TensorDictSequential(
        TensorDictModule(step, ["state", "belief", "action"], ["state", "belief"]),
        TensorDictModule(lambda s, b: rew(torch.cat([s, b], -1)), ["state", "belief"], ["reward"]),
    )
    world.lin, world.rew = lin, rew
    spec = OneHot(A) if discrete else None
    env = DreamerEnv(world, prior_shape=(S,), belief_shape=(HB,), action_spec=spec)
    if spec is None:
        from torchrl.data import Bounded

        env.action_spec = Bounded(-1, 1, (A,))
    return env


def normal_actor(independent=True):
    from torchrl.modules import IndependentNormal

    net = nn.Linear(S, 2 * A)

    def params(s):
        loc, raw = net(s).chunk(2, -1)
        return loc, nn.functional.softplus(raw) + 0.1

    actor = ProbabilisticTensorDictSequential(
        TensorDictModule(params, ["state"], ["loc", "scale"]),
        ProbabilisticTensorDictModule(
            ["loc", "scale"], ["action"],
            distribution_class=IndependentNormal if independent else torch.distributions.Normal,
            default_interaction_type=InteractionType.RANDOM,
        ),
    )  # fmt: skip
    actor.net = net
    return actor


def one_hot_actor():
    from torchrl.modules import OneHotCategorical

    net = nn.Linear(S, A)
    actor = ProbabilisticTensorDictSequential(
        TensorDictModule(net, ["state"], ["logits"]),
        ProbabilisticTensorDictModule(
            ["logits"], ["action"], distribution_class=OneHotCategorical,
            default_interaction_type=InteractionType.RANDOM,
        ),
    )  # fmt: skip
    return actor


def value_model():
    lin = nn.Linear(S + HB, 1)
    value = TensorDictModule(
        lambda s, b: lin(torch.cat([s, b], -1)), ["state", "belief"], ["state_value"]
    )
    value.lin = lin
    return value


def start_states():
    g = torch.Generator().manual_seed(5)
    return TensorDict(
        {"state": torch.randn(64, S, generator=g), "belief": torch.randn(64, HB, generator=g)}, [64]
    )


def test_actor_loss_backprop_with_return_normalisation_by_hand():
    torch.manual_seed(1)
    actor, value = normal_actor(), value_model()
    loss = DreamerV3ActorLoss(actor, value, toy_env(), imagination_horizon=4, entropy_bonus=0.0,
                              return_normalization_rate=1.0)  # fmt: skip
    out, fake = loss(start_states())
    R = fake["lambda_target"]  # [64, 4, 1]
    lo, hi = torch.quantile(R.flatten(), torch.tensor([0.05, 0.95]))
    scale = max(1.0, (hi - lo).item())
    w = 0.99 ** torch.arange(4.0).view(1, 4, 1)
    torch.testing.assert_close(fake["discount_weight"], w.expand_as(R))
    torch.testing.assert_close(out["loss_actor"], -(w * R).mean() / scale)
    torch.testing.assert_close(out["return_low"], lo)
    torch.testing.assert_close(out["return_high"], hi)
    # EMA with rate 0.01 from zero, and no update in eval mode
    loss2 = DreamerV3ActorLoss(actor, value, toy_env(), imagination_horizon=4, entropy_bonus=0.0)
    loss2(start_states())
    first = loss2.return_high.clone()
    loss2.eval()
    loss2(start_states())
    assert torch.equal(loss2.return_high, first)
    # without normalisation and discount
    loss3 = DreamerV3ActorLoss(actor, value, toy_env(), imagination_horizon=4, entropy_bonus=0.0,
                               return_normalization=False, discount_loss=False)  # fmt: skip
    out, fake = loss3(start_states())
    torch.testing.assert_close(out["loss_actor"], -fake["lambda_target"].mean())
    assert out["return_scale"].item() == 1.0


def test_entropy_bonus_is_the_weighted_entropy():
    actor, value = normal_actor(independent=False), value_model()
    kw = dict(imagination_horizon=3, return_normalization=False)
    torch.manual_seed(2)
    out0, _ = DreamerV3ActorLoss(actor, value, toy_env(), entropy_bonus=0.0, **kw)(start_states())
    torch.manual_seed(2)
    out1, fake = DreamerV3ActorLoss(actor, value, toy_env(), entropy_bonus=0.1, **kw)(
        start_states()
    )
    # the joint entropy of the per-dimension Normal: a sum over the action dimensions
    dist = actor.get_dist(fake.select("state"))
    ent = (fake["discount_weight"] * dist.entropy().sum(-1, keepdim=True)).mean()
    torch.testing.assert_close(out1["actor_entropy"], ent.detach())
    torch.testing.assert_close(out1["loss_actor"], out0["loss_actor"] - 0.1 * ent)
    assert out0["actor_entropy"].item() == 0.0


def test_reinforce_for_discrete_actions():
    torch.manual_seed(3)
    actor, value = one_hot_actor(), value_model()
    env = toy_env(discrete=True)
    loss = DreamerV3ActorLoss(actor, value, env, imagination_horizon=3, entropy_bonus=0.0,
                              return_normalization=False)  # fmt: skip
    assert loss._reinforce()  # chosen from the one-hot action spec
    out, fake = loss(start_states())
    dist = actor.get_dist(fake.select("state"))
    logp = dist.log_prob(fake["action"]).unsqueeze(-1)
    with torch.no_grad():
        baseline = value.lin(torch.cat([fake["state"], fake["belief"]], -1))
    adv = fake["lambda_target"] - baseline
    expected = -(fake["discount_weight"] * logp * adv).mean()
    torch.testing.assert_close(out["loss_actor"], expected)
    g = torch.autograd.grad(out["loss_actor"], list(actor.parameters()))
    g_ref = torch.autograd.grad(expected, list(actor.parameters()))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)
    assert not DreamerV3ActorLoss(normal_actor(), value, toy_env())._reinforce()


def test_actor_loss_matches_torchrl():
    """Parity with TorchRL's DreamerV3ActorLoss (its lambda targets are one-step: use TD0)."""
    from torchrl.objectives import DreamerV3ActorLoss as TorchRLV3ActorLoss

    torch.manual_seed(4)
    actor, value, env = normal_actor(), value_model(), toy_env()
    for reinforce in (False, True):
        kw = dict(imagination_horizon=4, entropy_bonus=3e-3, use_reinforce=reinforce)
        mine = DreamerV3ActorLoss(actor, value, env, **kw)
        mine.make_value_estimator("TD0")
        theirs = TorchRLV3ActorLoss(actor, value, env, **kw)
        torch.manual_seed(9)
        out, fake = mine(start_states())
        torch.manual_seed(9)
        ref, ref_fake = theirs(start_states())
        torch.testing.assert_close(fake["lambda_target"], ref_fake["lambda_target"])
        for key in ("return_low", "return_high", "return_scale"):
            torch.testing.assert_close(out[key], ref[key])
        if not reinforce:  # IndependentNormal: analytic joint entropy on both sides
            torch.testing.assert_close(out["loss_actor"], ref["loss_actor"])
            torch.testing.assert_close(out["actor_entropy"], ref["actor_entropy"])
        else:
            torch.testing.assert_close(out["loss_actor"], ref["loss_actor"], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- value loss
def test_value_loss_seed_page_example():
    from torchrl.modules import MLP

    from wmrl.rssm.dreamer_v3 import DreamerV3ValueLoss

    value_model = TensorDictModule(
        MLP(out_features=1, depth=1, num_cells=8),
        in_keys=["state"],
        out_keys=["state_value"],
    )
    td = TensorDict({
        "state": torch.randn(8, 4),
        "lambda_target": torch.randn(8, 1),
    }, [8])  # fmt: skip
    loss = DreamerV3ValueLoss(value_model)
    loss_td, _ = loss(td)
    assert "loss_value" in loss_td.keys()
    # no time dimension: unweighted symlog MSE
    v = value_model(td.select("state"))["state_value"]
    torch.testing.assert_close(
        loss_td["loss_value"], (symlog(v) - symlog(td["lambda_target"])).square().mean()
    )


def test_value_loss_weights_and_two_hot_against_torchrl():
    from torchrl.objectives import DreamerV3ValueLoss as TorchRLV3ValueLoss

    torch.manual_seed(6)
    lin = nn.Linear(3, 1 + 255)
    value = TensorDictModule(
        lambda s: lin(s).split([1, 255], -1), ["state"], ["state_value", "state_value_logits"]
    )
    value.lin = lin
    fake = TensorDict(
        {"state": torch.randn(4, 5, 3), "lambda_target": torch.randn(4, 5, 1) * 10}, [4, 5]
    )
    with torch.no_grad():
        v, logits = lin(fake["state"]).split([1, 255], -1)
    R = fake["lambda_target"].squeeze(-1)
    w = 0.9 ** torch.arange(5.0)
    out, _ = DreamerV3ValueLoss(value, gamma=0.9)(fake)
    torch.testing.assert_close(
        out["loss_value"], (w * (symlog(v.squeeze(-1)) - symlog(R)).square()).mean()
    )
    out, _ = DreamerV3ValueLoss(value, value_loss="two_hot", discount_loss=False)(fake)
    ce = two_hot_cross_entropy(logits, R, default_bins())
    torch.testing.assert_close(out["loss_value"], ce.mean())
    for kind in ("symlog_mse", "two_hot"):
        for discount in (False, True):
            mine = DreamerV3ValueLoss(value, value_loss=kind, discount_loss=discount, gamma=0.8)
            ref = TorchRLV3ValueLoss(value, value_loss=kind, discount_loss=discount, gamma=0.8)
            torch.testing.assert_close(mine(fake)[0]["loss_value"], ref(fake)[0]["loss_value"])
    # a trajectory's own weights take precedence
    fake["discount_weight"] = torch.full((4, 5, 1), 2.0)
    out, _ = DreamerV3ValueLoss(value, gamma=0.9, discount_loss=False)(fake)
    torch.testing.assert_close(
        out["loss_value"], 2 * (symlog(v.squeeze(-1)) - symlog(R)).square().mean()
    )
    with pytest.raises(ValueError, match="value_loss"):
        DreamerV3ValueLoss(value, value_loss="mse")
    with pytest.raises(ValueError, match="bins"):
        DreamerV3ValueLoss(value, value_loss="two_hot", num_value_bins=11)(fake)


def test_gamma_follows_the_actor_loss():
    actor, value = normal_actor(), value_model()
    actor_loss = DreamerV3ActorLoss(actor, value, toy_env())
    actor_loss.make_value_estimator(gamma=0.5)
    linked = DreamerV3ValueLoss(value, actor_loss=actor_loss)
    assert linked._gamma() == pytest.approx(0.5)
    actor_loss.make_value_estimator(gamma=0.7)
    assert linked._gamma() == pytest.approx(0.7)
    legacy = DreamerV3ValueLoss(value, gamma=0.99)
    legacy.sync_gamma_with_actor_loss(actor_loss)
    assert legacy.gamma == pytest.approx(0.7) and isinstance(legacy.gamma, float)
    assert math.isfinite(
        linked(
            TensorDict(
                {
                    "state": torch.randn(2, 3, S),
                    "belief": torch.randn(2, 3, HB),
                    "lambda_target": torch.randn(2, 3, 1),
                },
                [2, 3],
            )
        )[0]["loss_value"].item()
    )
