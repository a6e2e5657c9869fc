"""DreamerEnv: the WorldModel protocol, imagined rollouts with gradients, start states, decoding."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded

from wmrl.envs.dreamer import DreamerDecoder, DreamerEnv
from wmrl.protocol import WorldModel
from wmrl.rssm import DreamerModelLoss
from wmrl.rssm.assemble import make_dreamer

torch.set_num_threads(1)

S, HB, A = 3, 8, 2


def modules():
    torch.manual_seed(0)
    return make_dreamer(A, channels=4, state_dim=S, rnn_hidden_dim=HB, hidden_dim=8, mlp_cells=8,
                        actor_depth=1, actor_cells=8)  # fmt: skip


def start(batch=5):
    g = torch.Generator().manual_seed(1)
    return TensorDict(
        {
            "state": torch.randn(batch, S, generator=g),
            "belief": torch.randn(batch, HB, generator=g),
        },
        [batch],
    )


def test_protocol_and_specs():
    env = modules().model_based_env
    assert isinstance(env, WorldModel)
    assert env.state_keys == ("state", "belief") and env.predicts_reward
    assert env.observation_spec["state"].shape == (S,)
    assert env.observation_spec["belief"].shape == (HB,)
    assert isinstance(env.action_spec, Bounded) and env.action_spec.shape == (A,)  # from the prior
    assert env.reward_spec.shape == (1,)


def test_rollout_is_the_prior_and_reward_head_with_the_graph_kept():
    m = modules()
    env, s0 = m.model_based_env, start()
    s0["state"].requires_grad_()
    torch.manual_seed(3)
    traj = env.rollout(4, m.actor, tensordict=env.reset(s0), auto_reset=False)
    assert traj.batch_size == (5, 4)
    assert not traj["next", "done"].any() and not traj["next", "terminated"].any()
    # replay the same steps by hand with the same noise
    torch.manual_seed(3)
    s, h = s0["state"], s0["belief"]
    for t in range(4):
        loc, scale = m.actor[0].module(s, h)
        noise_a = torch.randn_like(loc)
        a = torch.tanh(5 * torch.tanh(loc / 5) + scale * noise_a)
        torch.testing.assert_close(traj["action"][:, t], a)
        _, _, s, h = m.prior(s, h, a)
        torch.testing.assert_close(traj["next", "state"][:, t], s)
        torch.testing.assert_close(traj["next", "belief"][:, t], h)
        torch.testing.assert_close(traj["next", "reward"][:, t], m.reward(s, h))
    traj["next", "reward"].sum().backward()
    assert s0["state"].grad is not None and s0["state"].grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.actor.parameters())


def test_protocol_forward_and_next_style_world_models():
    m = modules()
    env = m.model_based_env
    td = start().update({"action": torch.zeros(5, A)})
    torch.manual_seed(0)
    out = env.forward(td.clone())
    torch.manual_seed(0)
    _, _, s, h = m.prior(td["state"], td["belief"], td["action"])
    torch.testing.assert_close(out["next", "state"], s)
    torch.testing.assert_close(out["next", "reward"], m.reward(s, h))

    # a world model in the protocol's form (writes under "next") steps the same way
    class NextStyle(torch.nn.Module):
        def __init__(self, prior, reward):
            super().__init__()
            self.prior, self.reward = prior, reward

        def forward(self, td):
            _, _, s, h = self.prior(td["state"], td["belief"], td["action"])
            td["next", "state"], td["next", "belief"] = s, h
            td["next", "reward"] = self.reward(s, h)
            return td

    env2 = DreamerEnv(NextStyle(m.prior, m.reward), (S,), (HB,))
    torch.manual_seed(0)
    out2 = env2.forward(td.clone())
    torch.testing.assert_close(out2["next", "state"], out["next", "state"])


def test_start_states():
    m = modules()
    env = m.model_based_env
    # zeros with the environment's batch size
    env_b = DreamerEnv(env.world_model, (S,), (HB,), batch_size=[2])
    td = env_b.reset()
    assert td.batch_size == (2,) and td["belief"].abs().sum() == 0
    # from pixels: the posterior on a zero belief
    obs = TensorDict({"pixels": torch.rand(3, 3, 64, 64)}, [3])
    torch.manual_seed(4)
    init = env.initial_state(obs)
    torch.manual_seed(4)
    _, _, ref = m.posterior(torch.zeros(3, HB), m.encoder(obs["pixels"]))
    torch.testing.assert_close(init["state"], ref)
    assert init["belief"].abs().sum() == 0
    torch.manual_seed(4)
    torch.testing.assert_close(env.reset(obs)["state"], ref)
    # errors
    bare = DreamerEnv(env.world_model, (S,), (HB,))
    with pytest.raises(ValueError, match="obs_encoder"):
        bare.initial_state(obs.select("pixels"))
    with pytest.raises(ValueError, match="'pixels'"):
        env.initial_state(TensorDict({"obs": torch.zeros(3, 4)}, [3]))


def test_decoder_transform_and_decode_obs():
    m = modules()
    env = m.model_based_env.append_transform(DreamerDecoder())
    traj = env.rollout(2, m.actor, tensordict=m.model_based_env.reset(start(2)), auto_reset=False)
    assert traj["next", "reco_pixels"].shape == (2, 2, 3, 64, 64)
    torch.testing.assert_close(
        traj["next", "reco_pixels"], m.decoder(traj["next", "state"], traj["next", "belief"])
    )
    out = m.model_based_env.decode_obs(start(2))
    assert out["reco_pixels"].shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="obs_decoder"):
        DreamerEnv(m.model_based_env.world_model, (S,), (HB,)).decode_obs(start(2))


def test_fit_steps_the_model_loss():
    m = modules()
    g = torch.Generator().manual_seed(2)
    data = TensorDict(
        {
            "state": torch.zeros(2, 3, S),
            "belief": torch.zeros(2, 3, HB),
            "action": torch.rand(2, 3, A, generator=g),
            "next": {
                "pixels": torch.rand(2, 3, 3, 64, 64, generator=g),
                "reward": torch.ones(2, 3, 1),
            },
        },
        [2, 3],
    )
    before = [p.detach().clone() for p in m.world_model.parameters()]
    opt = torch.optim.Adam(m.world_model.parameters(), 1e-3)
    losses = m.model_based_env.fit(
        data, model_loss=DreamerModelLoss(m.world_model), optimizer=opt, num_updates=2
    )
    assert set(losses.keys()) == {"loss_model_kl", "loss_model_reco", "loss_model_reward"}
    assert any(not torch.equal(a, b) for a, b in zip(before, m.world_model.parameters()))
