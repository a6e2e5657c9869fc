"""Latent overshooting (wmrl.rssm.overshooting) and its place in the Dreamer model losses."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tensordict import TensorDict

from wmrl.agents.dreamer import DreamerConfig
from wmrl.agents.dreamer_modules import DreamerSizes, make_dreamer_nets
from wmrl.rssm.dreamer import DreamerModelLoss
from wmrl.rssm.dreamer_v3 import DreamerV3ModelLoss
from wmrl.rssm.functional import categorical_kl, gaussian_kl, unimix_probs
from wmrl.rssm.overshooting import (
    gaussian_overshooting_losses,
    open_loop_predictions,
    overshooting_losses,
)
from wmrl.rssm.twohot import two_hot_cross_entropy

TINY = DreamerSizes(num_categoricals=2, num_classes=3, rnn_hidden_dim=8, hidden_dim=8,
                    mlp_cells=8, mlp_depth=1, embed_dim=8, actor_depth=1, actor_cells=8,
                    num_bins=15)  # fmt: skip
B, T, A = 3, 7, 2


def _nets(mode: str = "probs", version: int = 3):
    torch.manual_seed(0)
    if version == 1:  # a Gaussian state of the categorical one's size, 6
        sizes = dataclasses.replace(TINY, state_dim=6)
        return make_dreamer_nets(1, A, "observation", obs_dim=4, sizes=sizes)
    return make_dreamer_nets(3, A, "observation", obs_dim=4, sizes=TINY, categorical_state=mode)


def _batch(nets) -> TensorDict:
    torch.manual_seed(1)
    S, H = 6, 8
    return TensorDict(
        {
            "state": torch.zeros(B, T, S),
            "belief": torch.zeros(B, T, H),
            "action": torch.rand(B, T, A) * 2 - 1,
            "next": {"observation": torch.randn(B, T, 4), "reward": torch.randn(B, T, 1)},
        },
        [B, T],
    )


def _one_step_terms_unchanged(loss_cls, nets, **common):
    """A model loss with ``overshooting=4`` on a batch: ``(loss, loss_td, model_out, batch)``,
    checked to hold its prior and reward head unregistered and to leave the one-step terms of
    the same loss without overshooting unchanged (same seed)."""
    base = loss_cls(nets.world_model, **common)
    kw = dict(overshooting=4, prior=nets.parts["prior"], reward_head=nets.reward_read_out)
    loss = loss_cls(nets.world_model, **common, **kw)
    for m in (base, loss):
        m.set_keys(pixels="observation", reco_pixels="reco_observation")
    assert not any(k.startswith("_overshoot") for k, _ in loss.named_modules())
    batch = _batch(nets)
    torch.manual_seed(4)
    td0, _ = base(batch.clone())
    torch.manual_seed(4)
    td, out = loss(batch.clone())
    for k in td0.keys():
        torch.testing.assert_close(td[k], td0[k])
    return loss, td, out, batch


def test_one_step_predictions_are_the_filters_priors():
    """d = 1 from the latent at j, with action[j + 1], is the world model's prior at j + 1."""
    nets = _nets()
    out = nets.world_model(_batch(nets))
    nxt = out["next"]
    (logits, _, belief), *_ = open_loop_predictions(
        nets.parts["prior"], nxt["state"], nxt["belief"], out["action"], 1
    )
    torch.testing.assert_close(logits, nxt["prior_logits"][:, 1:])
    torch.testing.assert_close(belief, nxt["belief"][:, 1:])


def test_d_step_predictions_iterate_the_prior_with_the_replayed_actions():
    nets = _nets()
    out = nets.world_model(_batch(nets))
    nxt, prior, D = out["next"], nets.parts["prior"], 4
    predictions = open_loop_predictions(prior, nxt["state"], nxt["belief"], out["action"], D)
    assert [p[0].shape[1] for p in predictions] == [T - d for d in range(1, D + 1)]
    for j in (0, 2):  # from the latent at j, step by step
        s, h = nxt["state"][:, j], nxt["belief"][:, j]
        for d in range(1, D + 1):
            logits, s, h = prior(s, h, out["action"][:, j + d])
            torch.testing.assert_close(predictions[d - 1][0][:, j], logits)
            torch.testing.assert_close(predictions[d - 1][1][:, j], s)


def test_losses_by_hand_and_stopped_posterior():
    torch.manual_seed(2)
    C, K, Kr = 2, 3, 5
    q = torch.randn(B, T, C, K, requires_grad=True)
    preds = [(torch.randn(B, T - d, C, K, requires_grad=True), torch.randn(B, T - d, 4),
              torch.randn(B, T - d, 3)) for d in (1, 2, 3)]  # fmt: skip
    head = torch.nn.Linear(7, Kr)
    reward, bins = torch.randn(B, T, 1), torch.linspace(-2, 2, Kr)
    kl, rew = overshooting_losses(preds, q, reward, lambda s, h: head(torch.cat([s, h], -1)),
                                  bins, unimix=0.01, free_bits=0.3)  # fmt: skip
    kl_hand = rew_hand = 0.0
    for d in (2, 3):
        logits, s, h = preds[d - 1]
        div = categorical_kl(unimix_probs(q[:, d:], 0.01), unimix_probs(logits, 0.01))
        kl_hand = kl_hand + div.clamp_min(0.3).mean() / 2
        ce = two_hot_cross_entropy(head(torch.cat([s, h], -1)), reward[:, d:], bins)
        rew_hand = rew_hand + ce.mean() / 2
    torch.testing.assert_close(kl, kl_hand)
    torch.testing.assert_close(rew, rew_hand)
    (kl + rew).backward()
    assert q.grad is None  # the posterior is the target only
    assert preds[0][0].grad is None  # d = 1 is the one-step loss's
    assert preds[1][0].grad.abs().sum() > 0 and preds[2][0].grad.abs().sum() > 0


def test_kl_gradient_gradcheck_float64():
    torch.manual_seed(3)
    q = torch.randn(2, 4, 2, 3, dtype=torch.float64)
    p2 = torch.randn(2, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    p3 = torch.randn(2, 1, 2, 3, dtype=torch.float64, requires_grad=True)

    def f(a, b):
        preds = [(None, None, None), (a, None, None), (b, None, None)]
        return overshooting_losses(preds, q, free_bits=0.0)[0]

    assert torch.autograd.gradcheck(f, (p2, p3))


def test_bad_input():
    s = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="distance"):
        open_loop_predictions(lambda *x: x, s, s, s, 5)
    with pytest.raises(ValueError, match="share"):
        open_loop_predictions(lambda *x: x, s, s, torch.zeros(2, 4, 1), 2)
    with pytest.raises(ValueError, match="D >= 2"):
        overshooting_losses([(s, s, s)], torch.zeros(2, 5, 1, 3))
    with pytest.raises(ValueError, match="prior"):
        DreamerV3ModelLoss(torch.nn.Identity(), overshooting=3)
    with pytest.raises(ValueError, match="D >= 2"):
        gaussian_overshooting_losses([(s, s, s, s)], s, s)
    with pytest.raises(ValueError, match="reward_loss"):
        gaussian_overshooting_losses([(s, s, s, s)] * 2, s, s, reward_loss="huber")
    with pytest.raises(ValueError, match="true_reward"):
        gaussian_overshooting_losses([(s, s, s, s)] * 2, s, s, None, lambda s, h: s)
    with pytest.raises(ValueError, match="prior"):
        DreamerModelLoss(torch.nn.Identity(), overshooting=3)
    with pytest.raises(ValueError, match=">= 0"):
        DreamerConfig.preset("debug", overshooting=-1).validate()
    with pytest.raises(ValueError, match="below seq_len"):
        DreamerConfig.preset("debug", version=3, overshooting=8).validate()


@pytest.mark.parametrize("mode", ["probs", "mixed"])
def test_model_loss_adds_the_weighted_terms_and_trains_the_prior_through_them(mode):
    nets = _nets(mode)
    common = dict(reco_symlog=True, num_reward_bins=15, free_bits_dynamic=0.0)
    loss, td, out, batch = _one_step_terms_unchanged(DreamerV3ModelLoss, nets, **common)
    nxt = out["next"]
    preds = open_loop_predictions(nets.parts["prior"], nxt["state"], nxt["belief"],
                                  out["action"], 4)  # fmt: skip
    kl, rew = overshooting_losses(
        preds, nxt["posterior_logits"], batch["next", "reward"], nets.reward_read_out,
        loss.reward_bins, free_bits=0.0,
    )  # fmt: skip
    if mode == "probs":  # "mixed" reads a fresh sample of the latent in the reward head
        torch.testing.assert_close(td["loss_model_overshoot_kl"], 0.5 * kl)
        torch.testing.assert_close(td["loss_model_overshoot_reward"], rew)
    prior_params = list(nets.parts["prior"].parameters())
    grads = torch.autograd.grad(td["loss_model_overshoot_kl"], prior_params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


# ---------------------------------------------------------------- the Gaussian latent (v1)


def test_gaussian_one_step_predictions_are_the_filters_priors():
    """For the v1 prior too, d = 1 from the latent at j is the filter's prior at j + 1."""
    nets = _nets(version=1)
    out = nets.world_model(_batch(nets))
    nxt = out["next"]
    (mean, std, _, belief), *_ = open_loop_predictions(
        nets.parts["prior"], nxt["state"], nxt["belief"], out["action"], 1
    )
    torch.testing.assert_close(mean, nxt["prior_mean"][:, 1:])
    torch.testing.assert_close(std, nxt["prior_std"][:, 1:])
    torch.testing.assert_close(belief, nxt["belief"][:, 1:])


def test_gaussian_losses_by_hand_and_stopped_posterior():
    torch.manual_seed(5)
    S = 3
    mean_q = torch.randn(B, T, S, requires_grad=True)
    std_q = (torch.rand(B, T, S) + 0.5).requires_grad_()
    preds = [(torch.randn(B, T - d, S, requires_grad=True),
              (torch.rand(B, T - d, S) + 0.5).requires_grad_(),
              torch.randn(B, T - d, S), torch.randn(B, T - d, 4)) for d in (1, 2, 3)]  # fmt: skip
    head = torch.nn.Linear(S + 4, 1)
    reward = torch.randn(B, T, 1)
    kl, rew = gaussian_overshooting_losses(
        preds, mean_q, std_q, reward, lambda s, h: head(torch.cat([s, h], -1)), free_nats=2.0,
        reward_loss="l1",
    )  # fmt: skip
    kl_hand = rew_hand = 0.0
    for d in (2, 3):
        mean_p, std_p, s, h = preds[d - 1]
        div = gaussian_kl(mean_q[:, d:], std_q[:, d:], mean_p, std_p).sum(-1)  # [B, T - d]
        kl_hand = kl_hand + div.clamp_min(2.0).mean() / 2
        err = (head(torch.cat([s, h], -1)) - reward[:, d:]).abs()
        rew_hand = rew_hand + err.mean() / 2
    torch.testing.assert_close(kl, kl_hand)
    torch.testing.assert_close(rew, rew_hand)
    assert 2.0 <= kl.item()  # every step's KL is floored at the free nats
    (kl + rew).backward()
    assert mean_q.grad is None and std_q.grad is None  # the posterior is the target only
    assert preds[0][0].grad is None  # d = 1 is the one-step loss's
    for mean_p, std_p, *_ in preds[1:]:
        assert mean_p.grad.abs().sum() > 0 and std_p.grad.abs().sum() > 0


def test_gaussian_kl_gradient_gradcheck_float64():
    torch.manual_seed(6)
    mean_q = torch.randn(2, 4, 3, dtype=torch.float64)
    std_q = torch.rand(2, 4, 3, dtype=torch.float64) + 0.5
    m2 = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    s2 = (torch.rand(2, 2, 3, dtype=torch.float64) + 0.5).requires_grad_()
    m3 = torch.randn(2, 1, 3, dtype=torch.float64, requires_grad=True)

    def f(a, b, c):
        preds = [(None,) * 4, (a, b, None, None), (c, torch.ones_like(c), None, None)]
        kl, _ = gaussian_overshooting_losses(preds, mean_q, std_q, free_nats=0.0)
        return kl

    assert f(m2, s2, m3).dtype == torch.float64
    assert torch.autograd.gradcheck(f, (m2, s2, m3))


def test_v1_model_loss_adds_the_weighted_terms_and_trains_the_prior_through_them():
    nets = _nets(version=1)
    _, td, out, batch = _one_step_terms_unchanged(DreamerModelLoss, nets, lambda_kl=0.7,
                                                  lambda_reward=1.5)  # fmt: skip
    nxt = out["next"]
    rng = torch.get_rng_state()
    torch.manual_seed(4)
    nets.world_model(batch.clone())  # replays the filter's draws: the same noise follows
    preds = open_loop_predictions(nets.parts["prior"], nxt["state"], nxt["belief"],
                                  out["action"], 4)  # fmt: skip
    torch.set_rng_state(rng)
    kl, rew = gaussian_overshooting_losses(
        preds, nxt["posterior_mean"], nxt["posterior_std"], batch["next", "reward"],
        nets.reward_read_out, free_nats=3.0,
    )  # fmt: skip
    torch.testing.assert_close(td["loss_model_overshoot_kl"], 0.7 * kl)
    torch.testing.assert_close(td["loss_model_overshoot_reward"], 1.5 * rew)
    prior_params = list(nets.parts["prior"].parameters())
    total = td["loss_model_overshoot_kl"] + td["loss_model_overshoot_reward"]
    grads = torch.autograd.grad(total, prior_params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
