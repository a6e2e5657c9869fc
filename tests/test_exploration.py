"""The disagreement ensemble (Plan2Explore) and its bonus in the Dreamer objective."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from wmrl.agents.dreamer_objective import DreamerObjective
from wmrl.agents.exploration import DisagreementEnsemble

torch.set_num_threads(1)


def _ensemble(**kw):
    torch.manual_seed(0)
    return DisagreementEnsemble(latent_dim=3, action_dim=2, embed_dim=4, num_cells=6, **kw)


def test_members_are_independent_networks_equal_to_their_own_mlp():
    ens = _ensemble(members=3, depth=1).double()
    x, a = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    pred = ens.predict(x, a)  # [3, 5, 4]
    assert pred.shape == (3, 5, 4)
    for k in range(3):  # member k by hand: ELU(xa W1_k + b1_k) W2_k + b2_k
        h = torch.nn.functional.elu(
            torch.cat([x, a], -1) @ ens.layers[0].weight[k] + ens.layers[0].bias[k]
        )
        assert torch.allclose(pred[k], h @ ens.layers[1].weight[k] + ens.layers[1].bias[k])
    # different initial weights: the members disagree before training
    assert ens.disagreement(x, a).min() > 0


def test_disagreement_loss_and_scale_by_hand():
    ens = _ensemble(members=4, rate=0.5).double()
    x, a = torch.randn(2, 7, 3, dtype=torch.float64), torch.randn(2, 7, 2, dtype=torch.float64)
    y = torch.randn(2, 7, 4, dtype=torch.float64)
    pred = ens.predict(x, a)  # [4, 2, 7, 4]
    d = pred.var(0, unbiased=False).mean(-1, keepdim=True)  # [2, 7, 1]
    assert torch.allclose(ens.disagreement(x, a), d)
    assert torch.allclose(ens.bonus(x, a), d.log())  # D not yet measured: log d
    loss = ens.loss(x, a, y)
    assert torch.allclose(loss, ((pred - y) ** 2).mean(-1).sum(0).mean())
    assert torch.allclose(ens.scale, d.mean())  # first measurement taken as it is
    ens.loss(2 * x, a, y)
    d2 = ens.disagreement(2 * x, a).mean()
    assert torch.allclose(ens.scale, 0.5 * d.mean() + 0.5 * d2)  # then an EMA of rate 1/2
    assert torch.allclose(ens.bonus(x, a), (d / ens.scale).log())
    assert torch.allclose(ens.bonus(x, a, floor=10.0), torch.full_like(d, 10.0).log())
    ens.eval()
    before = ens.scale.clone()
    ens.loss(x, a, y)
    assert torch.equal(ens.scale, before)  # evaluation mode leaves D alone


def test_bonus_gradients_in_float64():
    ens = _ensemble(members=3).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    a = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a: ens.bonus(x, a), (x, a))


def test_ensemble_rejects_bad_settings():
    with pytest.raises(ValueError, match="at least 2"):
        DisagreementEnsemble(3, 1, 4, members=1)
    with pytest.raises(ValueError, match="rate"):
        DisagreementEnsemble(3, 1, 4, rate=0.0)


def test_objective_adds_the_bonus_to_every_imagined_reward():
    torch.manual_seed(1)
    B, H = 3, 5
    ens = DisagreementEnsemble(latent_dim=3, action_dim=1, embed_dim=2, num_cells=4).double()
    ens.scale.fill_(0.25)
    critic = TensorDictModule(lambda s: s.sum(-1, keepdim=True), ["state"], ["state_value"])
    traj = TensorDict({
        "state": torch.randn(B, H, 2, dtype=torch.float64),
        "belief": torch.randn(B, H, 1, dtype=torch.float64),
        "action": torch.rand(B, H, 1, dtype=torch.float64),
        "next": {"state": torch.randn(B, H, 2, dtype=torch.float64),
                 "reward": torch.randn(B, H, 1, dtype=torch.float64)},
    }, [B, H])  # fmt: skip
    beta = 0.7
    with_bonus = DreamerObjective(critic, exploration=ens, exploration_bonus=beta)(traj.clone())
    bonus = ens.bonus(torch.cat([traj["state"], traj["belief"]], -1), traj["action"])
    assert bonus.shape == (B, H, 1) and bool((bonus != 0).all())
    shifted = traj.clone()
    shifted["next", "reward"] = traj["next", "reward"] + beta * bonus.detach()
    assert torch.allclose(with_bonus, DreamerObjective(critic)(shifted))
    # the actor's gradient reaches the actions through the bonus; the ensemble stays untouched
    actions = traj["action"].clone().requires_grad_(True)
    traj["action"] = actions
    critic0 = TensorDictModule(lambda s: 0 * s.sum(-1, keepdim=True), ["state"], ["state_value"])
    DreamerObjective(critic0, exploration=ens, exploration_bonus=beta)(traj).backward()
    assert actions.grad is not None and actions.grad.abs().sum() > 0
    assert all(p.grad is None and p.requires_grad for p in ens.parameters())
    with pytest.raises(ValueError, match="exploration"):
        DreamerObjective(critic, exploration_bonus=1.0)
