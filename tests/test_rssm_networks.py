"""RSSM networks: TorchRL parity on shared weights, distribution maths, sampling, errors."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from wmrl.rssm import (
    BoundedNormalSample,
    DenseHead,
    DreamerActor,
    DreamerV3MLP,
    ObsDecoder,
    ObsEncoder,
    RSSMPosterior,
    RSSMPosteriorV3,
    RSSMPrior,
    RSSMPriorV3,
    TanhNormalSample,
    bounded_normal_rsample,
    tanh_normal_rsample,
)
from wmrl.rssm.actor import bounded_sigmoid_scale, deterministic_action_slope
from wmrl.rssm.categorical import categorical_state
from wmrl.rssm.functional import (
    cumulative_discount,
    gaussian_kl,
    kl_balanced,
    kl_dynamics_representation,
    pointwise_distance,
    straight_through_one_hot,
    unimix_probs,
)

torch.set_num_threads(1)


def test_encoder_decoder_match_torchrl_with_shared_weights():
    from torchrl.modules import ObsDecoder as TorchRLDecoder
    from torchrl.modules import ObsEncoder as TorchRLEncoder

    torch.manual_seed(0)
    enc, dec = ObsEncoder(channels=4), ObsDecoder(depth=4, latent_dim=12)
    t_enc, t_dec = TorchRLEncoder(channels=4, in_channels=3), TorchRLDecoder(4, latent_dim=12)
    t_enc.load_state_dict(enc.state_dict())
    t_dec.load_state_dict(dec.state_dict())
    x = torch.rand(2, 3, 3, 64, 64)
    z, h = torch.randn(2, 3, 4), torch.randn(2, 3, 8)
    assert enc(x).shape == (2, 3, enc.output_dim(64)) == (2, 3, 128)
    torch.testing.assert_close(enc(x), t_enc(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dec(z, h), t_dec(z, h), rtol=1e-5, atol=1e-5)
    # gradients agree too (the matrix-product first layer, the channels-last convolutions)
    (dec(z, h) ** 2).sum().backward()
    (t_dec(z, h) ** 2).sum().backward()
    for (name, p), q in zip(dec.named_parameters(), t_dec.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4, msg=name)
    # unbatched input, and the contiguous (NCHW) path
    assert dec(z[0, 0], h[0, 0]).shape == (3, 64, 64)
    enc.channels_last = dec.channels_last = False
    torch.testing.assert_close(enc(x), t_enc(x), rtol=1e-5, atol=1e-5)


def test_encoder_decoder_errors():
    with pytest.raises(ValueError, match="disagree"):
        ObsEncoder(channels=8, depth=16)
    with pytest.raises(ValueError, match=r"\[\*B, 3, H, W\]"):
        ObsEncoder(channels=4)(torch.zeros(2, 1, 64, 64))
    with pytest.raises(ValueError, match="at least 2"):
        ObsDecoder(4, num_layers=1)
    with pytest.raises(ValueError, match="features"):
        ObsDecoder(4, latent_dim=12)(torch.zeros(2, 4), torch.zeros(2, 9))


def test_prior_posterior_match_torchrl_with_shared_weights_and_noise():
    from torchrl.data import Bounded
    from torchrl.modules import RSSMPosterior as TorchRLPosterior
    from torchrl.modules import RSSMPrior as TorchRLPrior

    torch.manual_seed(1)
    spec = Bounded(-1, 1, (2,))
    prior = RSSMPrior(spec, hidden_dim=8, rnn_hidden_dim=8, state_dim=4)
    post = RSSMPosterior(hidden_dim=8, state_dim=4, rnn_hidden_dim=8, obs_embed_dim=5)
    t_prior = TorchRLPrior(spec, hidden_dim=8, rnn_hidden_dim=8, state_dim=4, action_dim=2)
    t_post = TorchRLPosterior(hidden_dim=8, state_dim=4, rnn_hidden_dim=8, obs_embed_dim=5)
    t_prior.load_state_dict(prior.state_dict())
    t_post.load_state_dict(post.state_dict())
    s, h, a, e = torch.randn(6, 4), torch.randn(6, 8), torch.rand(6, 2), torch.randn(6, 5)
    n1, n2 = torch.randn(6, 4), torch.randn(6, 4)
    for mine, theirs in zip(prior(s, h, a, noise=n1), t_prior(s, h, a, noise=n1)):
        torch.testing.assert_close(mine, theirs)
    for mine, theirs in zip(post(h, e, noise=n2), t_post(h, e, noise=n2)):
        torch.testing.assert_close(mine, theirs)
    mean, std, state, belief = prior(s, h, a, noise=n1)
    torch.testing.assert_close(state, mean + std * n1)
    assert bool((std >= 0.1).all())
    assert prior.sample_noise((3, 6), s).shape == (3, 6, 4)


def test_prior_allows_belief_and_hidden_sizes_to_differ_and_checks_inputs():
    prior = RSSMPrior(None, hidden_dim=8, rnn_hidden_dim=5, state_dim=3, action_dim=1)
    mean, std, s, h = prior(torch.zeros(2, 3), torch.zeros(2, 5), torch.zeros(2, 1))
    assert h.shape == (2, 5) and mean.shape == (2, 3)
    with pytest.raises(ValueError, match="action_dim"):
        RSSMPrior(None)
    with pytest.raises(ValueError, match=r"state must be \[\*B, 3\]"):
        prior(torch.zeros(2, 4), torch.zeros(2, 5), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="batch dimensions"):
        prior(torch.zeros(2, 3), torch.zeros(3, 5), torch.zeros(2, 1))
    post = RSSMPosterior(8, 3, rnn_hidden_dim=5, obs_embed_dim=4)
    with pytest.raises(ValueError, match="obs_embedding"):
        post(torch.zeros(2, 5), torch.zeros(2, 6))
    post_v3 = RSSMPosteriorV3(8, 2, 3, rnn_hidden_dim=5, obs_embed_dim=4)
    with pytest.raises(ValueError, match="belief"):
        post_v3(torch.zeros(2, 6), torch.zeros(2, 4))


def test_prior_runs_gru_in_float32_under_bf16_autocast():
    prior = RSSMPrior(None, hidden_dim=8, rnn_hidden_dim=8, state_dim=4, action_dim=2)
    s, h, a = torch.randn(3, 4), torch.randn(3, 8), torch.rand(3, 2)
    with torch.autocast("cpu", torch.bfloat16):
        belief = prior.update_belief(s, h, a)
    ref = prior.rnn(prior.action_state_projector(torch.cat([s, a], -1)).bfloat16().float(), h)
    torch.testing.assert_close(belief.float(), ref, rtol=2e-2, atol=2e-2)


def test_gaussian_kl_against_torch_distributions_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    mq, mp = (
        torch.randn(5, 3, generator=g, dtype=torch.float64),
        torch.randn(5, 3, dtype=torch.float64),
    )
    sq = torch.rand(5, 3, generator=g, dtype=torch.float64) + 0.1
    sp = torch.rand(5, 3, generator=g, dtype=torch.float64) + 0.1
    ref = kl_divergence(Normal(mq, sq), Normal(mp, sp))
    torch.testing.assert_close(gaussian_kl(mq, sq, mp, sp), ref)
    args = tuple(t.clone().requires_grad_() for t in (mq, sq, mp, sp))
    assert torch.autograd.gradcheck(gaussian_kl, args)


def test_straight_through_one_hot_frequencies_and_gradient():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]], dtype=torch.float64)
    n = 100_000
    u = torch.rand(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    onehot = straight_through_one_hot(probs.expand(n, 2, 3), u)
    assert bool((onehot.sum(-1) == 1).all())
    freq = onehot.mean(0)
    se = (probs * (1 - probs) / n).sqrt()
    assert bool(((freq - probs).abs() <= 5 * se).all()), (freq, probs)
    # straight-through: the gradient is that of the probabilities
    p = probs.clone().requires_grad_()
    w = torch.randn(2, 3, dtype=torch.float64)
    (straight_through_one_hot(p, u[0]) * w).sum().backward()
    torch.testing.assert_close(p.grad, w)


def test_unimix_and_categorical_kl_terms_against_torchrl():
    from torchrl.objectives.dreamer_v3 import categorical_kl_balanced, categorical_kl_terms

    logits = torch.tensor([[0.0, 100.0]])
    torch.testing.assert_close(unimix_probs(logits, 0.01), torch.tensor([[0.005, 0.995]]))
    q, p = torch.randn(4, 5, 3, 6), torch.randn(4, 5, 3, 6)
    for fb, mix in ((1.0, 0.01), (0.0, 0.0), (2.5, 0.1)):
        mine = kl_dynamics_representation(q, p, fb, mix)
        theirs = categorical_kl_terms(q, p, free_nats=fb, unimix=mix)
        torch.testing.assert_close(mine[0], theirs[0])
        torch.testing.assert_close(mine[1], theirs[1])
    torch.testing.assert_close(kl_balanced(q, p, 0.8, 0.1), categorical_kl_balanced(q, p, 0.8, 0.1))
    # hand value: one categorical, K=2, no unimix, no free bits
    qq, pp = torch.tensor([[[0.0, 0.0]]]), torch.tensor([[[0.0, math.log(3.0)]]])
    dyn, rep = kl_dynamics_representation(qq, pp, 0.0, 0.0)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert dyn.item() == pytest.approx(expected, abs=1e-6) and rep.item() == pytest.approx(expected)
    # a floor of the dynamics term alone: L_dyn unclamped, L_rep still at the floor
    dyn, rep = kl_dynamics_representation(qq, pp, 1.0, 0.0, free_bits_dynamic=0.0)
    assert dyn.item() == pytest.approx(expected, abs=1e-6) and rep.item() == 1.0
    dyn, rep = kl_dynamics_representation(qq, pp, 0.0, 0.0, free_bits_dynamic=0.5)
    assert dyn.item() == 0.5 and rep.item() == pytest.approx(expected, abs=1e-6)
    # below the floor only the unclamped term gives the prior a gradient
    for floor, trained in ((None, False), (0.0, True)):
        prior = pp.clone().requires_grad_()
        dyn, _ = kl_dynamics_representation(qq, prior, 1.0, 0.0, free_bits_dynamic=floor)
        dyn.backward()
        assert bool(prior.grad.abs().sum() > 0) == trained


def test_dynamics_and_representation_terms_train_different_sides():
    q = torch.randn(2, 3, 4, requires_grad=True)
    p = torch.randn(2, 3, 4, requires_grad=True)
    dyn, rep = kl_dynamics_representation(q, p, free_bits=0.0)
    gq, gp = torch.autograd.grad(dyn, (q, p), allow_unused=True, materialize_grads=True)
    assert gq.abs().max() == 0 and gp.abs().max() > 0
    gq, gp = torch.autograd.grad(rep, (q, p), allow_unused=True, materialize_grads=True)
    assert gq.abs().max() > 0 and gp.abs().max() == 0


def test_categorical_prior_posterior_match_torchrl():
    from torchrl.modules.models.model_based import RSSMPosteriorV3 as TorchRLPostV3
    from torchrl.modules.models.model_based import RSSMPriorV3 as TorchRLPriorV3

    torch.manual_seed(2)
    kw = dict(hidden_dim=8, rnn_hidden_dim=6, num_categoricals=3, num_classes=4, action_dim=2)
    prior = RSSMPriorV3(None, **kw, norm=None, unimix=0.01)
    post = RSSMPosteriorV3(8, 3, 4, rnn_hidden_dim=6, obs_embed_dim=5, norm=None, unimix=0.01)
    t_prior = TorchRLPriorV3(action_shape=(2,), **kw, unimix=0.01)
    t_post = TorchRLPostV3(8, 3, 4, rnn_hidden_dim=6, obs_embed_dim=5, unimix=0.01)
    t_prior.load_state_dict(prior.state_dict())
    t_post.load_state_dict(post.state_dict())
    s = torch.nn.functional.one_hot(torch.randint(4, (5, 3)), 4).flatten(-2).float()
    h, a, e = torch.randn(5, 6), torch.rand(5, 2), torch.randn(5, 5)
    u1, u2 = torch.rand(5, 3), torch.rand(5, 3)
    for mine, theirs in zip(prior(s, h, a, noise=u1), t_prior(s, h, a, _uniform=u1)):
        torch.testing.assert_close(mine, theirs)
    for mine, theirs in zip(post(h, e, noise=u2), t_post(h, e, _uniform=u2)):
        torch.testing.assert_close(mine, theirs)
    # with normalisation (the DreamerV3 default): shapes and one-hot states
    logits, z, belief = RSSMPriorV3(None, **kw)(s, h, a)
    assert logits.shape == (5, 3, 4) and bool((z.view(5, 3, 4).sum(-1) == 1).all())
    with pytest.raises(ValueError, match="unimix"):
        RSSMPriorV3(None, **kw, unimix=1.0)


def test_categorical_state_probs_is_the_expected_sample_and_deterministic():
    torch.manual_seed(5)
    kw = dict(hidden_dim=8, rnn_hidden_dim=6, num_categoricals=3, num_classes=4, action_dim=2)
    prior = RSSMPriorV3(None, **kw, state_mode="probs")
    post = RSSMPosteriorV3(8, 3, 4, rnn_hidden_dim=6, obs_embed_dim=5, state_mode="probs")
    s = torch.nn.functional.one_hot(torch.randint(4, (5, 3)), 4).flatten(-2).float()
    h, a, e = torch.randn(5, 6), torch.rand(5, 2), torch.randn(5, 5)
    for module, args in ((prior, (s, h, a)), (post, (h, e))):
        logits, z = module(*args)[:2]
        again = module(*args)[1]
        torch.testing.assert_close(z, again)  # no sampling noise
        probs = (0.99 * logits.softmax(-1) + 0.01 / 4).flatten(-2)  # unimix 1%
        torch.testing.assert_close(z, probs)
    # the probabilities are the one-hot sample's expectation (Monte Carlo, 4,000 draws)
    logits = torch.randn(3, 4)
    draws = torch.stack([categorical_state(logits, 0.01) for _ in range(4000)])  # [N, 12]
    p = categorical_state(logits, 0.01, mode="probs")  # [12]
    se = (p * (1 - p) / 4000).sqrt()
    assert bool(((draws.mean(0) - p).abs() < 5 * se + 1e-6).all())
    # gradients of the probabilities, float64
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda lg: categorical_state(lg, 0.01, mode="probs"), (x,))
    with pytest.raises(ValueError, match="state_mode must be one of"):
        RSSMPriorV3(None, **kw, state_mode="mean")
    with pytest.raises(ValueError, match="mode must be one of"):
        categorical_state(logits, 0.01, mode="mode")


def test_actor_matches_torchrl_and_tanh_normal_samples():
    from torchrl.modules import DreamerActor as TorchRLActor
    from torchrl.modules import TanhNormal

    torch.manual_seed(3)
    actor = DreamerActor(2, depth=2, num_cells=8, in_features=6)
    t_actor = TorchRLActor(2, depth=2, num_cells=8)
    s, h = torch.randn(4, 4), torch.randn(4, 2)
    t_actor(s, h)  # materialise the lazy first layer
    t_actor.load_state_dict(actor.state_dict())
    for mine, theirs in zip(actor(s, h), t_actor(s, h)):
        torch.testing.assert_close(mine, theirs)
    loc, scale = (
        torch.tensor([0.3, -2.0], dtype=torch.float64),
        torch.tensor([0.5, 0.2], dtype=torch.float64),
    )
    noise = torch.tensor([1.0, -1.0], dtype=torch.float64)
    expected = torch.tanh(5 * torch.tanh(loc / 5) + scale * noise)
    torch.testing.assert_close(tanh_normal_rsample(loc, scale, noise), expected)
    # same distribution as TorchRL's TanhNormal(tanh_loc=True): compare sample means (MC)
    n = 200_000
    torch.manual_seed(4)
    mine = TanhNormalSample()(loc.expand(n, 2), scale.expand(n, 2))
    theirs = TanhNormal(loc.expand(n, 2), scale.expand(n, 2), tanh_loc=True).sample()
    se = (mine.var(0) / n + theirs.var(0) / n).sqrt()
    assert bool(((mine.mean(0) - theirs.mean(0)).abs() <= 5 * se).all())
    from tensordict.nn import InteractionType, set_interaction_type

    with set_interaction_type(InteractionType.DETERMINISTIC):
        torch.testing.assert_close(
            TanhNormalSample()(loc, scale), torch.tanh(5 * torch.tanh(loc / 5))
        )


def test_bounded_normal_actor_samples_scale_and_gradients():
    from tensordict.nn import InteractionType, set_interaction_type

    torch.manual_seed(5)
    actor = DreamerActor(2, depth=1, num_cells=8, in_features=6, scale_mapping="bounded",
                         std_min_val=0.1, std_max_val=1.0)  # fmt: skip
    loc, scale = actor(torch.randn(64, 4) * 10, torch.randn(64, 2) * 10)
    assert bool((scale > 0.1).all() and (scale < 1.0).all())
    # the scale mapping: (max - min) sigmoid(raw + 2) + min, at its bounds and in between
    raw = torch.tensor([-100.0, 0.0, 100.0])
    expected = torch.tensor([0.1, 0.9 / (1 + math.exp(-2.0)) + 0.1, 1.0])
    torch.testing.assert_close(bounded_sigmoid_scale(raw, 0.1, 1.0), expected)
    # samples: clip(tanh(loc) + scale * noise), by hand; the mean when deterministic
    loc = torch.tensor([0.3, -0.5, 1.0], dtype=torch.float64)
    scale = torch.tensor([0.5, 0.2, 0.9], dtype=torch.float64)
    noise = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    expected = torch.tensor([math.tanh(0.3) + 0.5, math.tanh(-0.5) - 0.2, 1.0],
                            dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(bounded_normal_rsample(loc, scale, noise), expected)
    with set_interaction_type(InteractionType.DETERMINISTIC):
        torch.testing.assert_close(BoundedNormalSample()(loc, scale), torch.tanh(loc))
    n = 200_000
    many = BoundedNormalSample()(loc[:1].expand(n, 1), scale[:1].expand(n, 1))
    assert float(many.min()) >= -1.0 and float(many.max()) <= 1.0
    # tanh(0.3) + 0.5 N(0, 1) clipped: the mass at the upper bound is P(z > (1 - tanh 0.3) / 0.5)
    p_top = 0.5 * math.erfc((1 - math.tanh(0.3)) / 0.5 / math.sqrt(2))
    frac = float((many == 1).double().mean())
    assert abs(frac - p_top) < 5 * math.sqrt(p_top * (1 - p_top) / n)
    # reparameterised: gradcheck in float64 inside the bounds; no gradient where clipped
    loc_g, scale_g = loc[:2].clone().requires_grad_(), scale[:2].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda m, s: bounded_normal_rsample(m, s, noise[:2]), (loc_g, scale_g)
    )
    clipped = loc[2:].clone().requires_grad_()
    bounded_normal_rsample(clipped, scale[2:], noise[2:]).sum().backward()
    assert clipped.grad is not None and float(clipped.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="scale_mapping"):
        DreamerActor(2, in_features=6, scale_mapping="sigmoid")
    with pytest.raises(ValueError, match="std_min_val"):
        DreamerActor(2, in_features=6, scale_mapping="bounded", std_min_val=1.0, std_max_val=0.5)


def test_deterministic_action_slope_against_autograd():
    """``d a / d loc`` of both deterministic actions equals autograd's, in float64, at the
    centre and deep in the saturation; unknown distributions are refused."""
    loc = torch.tensor([-8.0, -3.4, -0.5, 0.0, 0.7, 3.4, 8.0], dtype=torch.float64,
                       requires_grad=True)  # fmt: skip
    zero = torch.zeros_like(loc)
    for dist, action in [
        ("tanh_normal", lambda x: tanh_normal_rsample(x, torch.ones_like(x), zero)),
        ("bounded_normal", torch.tanh),
    ]:
        (grad,) = torch.autograd.grad(action(loc).sum(), loc)  # elementwise: the diagonal
        slope = deterministic_action_slope(loc.detach(), dist)
        torch.testing.assert_close(slope, grad, rtol=1e-9, atol=0.0)  # 1 - a² cancels at ±8
        assert slope[3] == 1.0 and slope[0] < 1e-4  # centre and saturation
    with pytest.raises(ValueError, match="actor_dist"):
        deterministic_action_slope(loc, "beta")


def test_heads():
    head = DenseHead(6, 2, depth=2, num_cells=8)
    assert head(torch.zeros(3, 4), torch.zeros(3, 2)).shape == (3, 2)
    with pytest.raises(ValueError, match="features"):
        head(torch.zeros(3, 5))
    v3 = DreamerV3MLP(3, 2, depth=1, num_cells=8, norm="rms", symlog_inputs=True)
    x = torch.tensor([[100.0, -100.0, 0.5]])
    ref = v3.net(torch.sign(x) * torch.log1p(x.abs()))
    torch.testing.assert_close(v3(x), ref)
    with pytest.raises(ValueError, match="norm"):
        DreamerV3MLP(3, 2, norm="batch")


def test_pointwise_distance_and_discount():
    a, b = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.5, -2.0, 3.0])
    torch.testing.assert_close(pointwise_distance(a, b, "l2"), torch.tensor([0.25, 4.0, 9.0]))
    torch.testing.assert_close(pointwise_distance(a, b, "l1"), torch.tensor([0.5, 2.0, 3.0]))
    torch.testing.assert_close(
        pointwise_distance(a, b, "smooth_l1"), torch.tensor([0.125, 1.5, 2.5])
    )
    with pytest.raises(ValueError, match="unknown distance"):
        pointwise_distance(a, b, "huber")
    with pytest.raises(ValueError, match="shapes differ"):
        pointwise_distance(a, b[:2], "l2")
    w = cumulative_discount(torch.zeros(2, 4, 1), 0.9)
    torch.testing.assert_close(w[1, :, 0], torch.tensor([1.0, 0.9, 0.81, 0.729]))


def test_categorical_prior_separate_action_embedding():
    torch.manual_seed(7)
    kw = dict(hidden_dim=8, rnn_hidden_dim=6, num_categoricals=3, num_classes=4, action_dim=2)
    prior = RSSMPriorV3(None, **kw, action_input="separate", state_mode="probs")
    assert prior.rnn.input_size == 16 and not hasattr(prior, "action_state_projector")
    s = torch.softmax(torch.randn(5, 3, 4), -1).flatten(-2)
    h, a = torch.randn(5, 6), torch.rand(5, 2) * 2 - 1
    # by hand: the state through Linear -> LayerNorm -> SiLU, the action through Linear -> SiLU
    ws, wa = prior.state_projector, prior.action_projector
    x_s = torch.nn.functional.silu(torch.nn.functional.layer_norm(
        ws[0](s), (8,), ws[1].weight, ws[1].bias, ws[1].eps))  # fmt: skip
    x_a = torch.nn.functional.silu(a @ wa[0].weight.T + wa[0].bias)
    by_hand = prior.rnn(torch.cat([x_s, x_a], -1), h)  # [5, 6]
    torch.testing.assert_close(prior.update_belief(s, h, a), by_hand)
    logits, z, belief = prior(s, h, a)
    assert logits.shape == (5, 3, 4) and z.shape == (5, 12) and belief.shape == (5, 6)
    # the action's size survives its embedding (a norm over one input's image would divide it out)
    one = torch.ones(1, 2)
    emb = [prior.action_projector(c * one) for c in (0.25, 0.5, 1.0)]
    assert not torch.allclose(emb[0] / emb[0].norm(), emb[2] / emb[2].norm(), atol=1e-3)
    # the belief's gradient reaches the action and the action layer (the GRU runs in float32,
    # gru_fp32, so the hand computation above stands in for a float64 gradcheck)
    a_req = a.clone().requires_grad_()
    prior.update_belief(s, h, a_req).square().sum().backward()
    assert a_req.grad.abs().sum() > 0 and wa[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="action_input must be one of"):
        RSSMPriorV3(None, **kw, action_input="concat")
