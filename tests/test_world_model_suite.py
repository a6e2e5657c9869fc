"""Both backends pass the shared WorldModel suite (wmrl.testing.WorldModelTestCase)."""

import torch
from tensordict import TensorDict

from wmrl.control import LinearController
from wmrl.envs.model_based import ImaginedEnv
from wmrl.gp import GPWorldModel
from wmrl.rssm.assemble import make_dreamer
from wmrl.testing import WorldModelTestCase

torch.set_num_threads(1)


def _gp_data(n=30, D=3, F=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    u = torch.randn(n, F, generator=g, dtype=torch.float64)
    nxt = x + 0.1 * torch.sin(x) + 0.1 * u
    return TensorDict({"observation": x, "action": u, ("next", "observation"): nxt}, [n])


class TestGPWorldModelSuite(WorldModelTestCase):
    dtypes = (torch.float64, torch.float32)

    def make_model(self, dtype, device):
        model = GPWorldModel(
            3, 1, angle_dims=(2,), dtype=dtype, device=device, restarts=1, max_iter=30, seed=0
        )
        return model.fit(_gp_data().to(device))

    def make_state(self, model, batch):
        g = torch.Generator().manual_seed(sum(batch) + 7)
        mean = torch.randn(*batch, 3, generator=g, dtype=model.dtype).to(model.device)
        A = 0.1 * torch.randn(*batch, 3, 3, generator=g, dtype=model.dtype).to(model.device)
        cov = A @ A.transpose(-1, -2) + 1e-3 * torch.eye(3, dtype=model.dtype, device=model.device)
        return TensorDict({"observation": {"mean": mean, "var": cov}}, batch)

    def make_policy(self, model):
        return LinearController(
            3,
            1,
            angle_dims=(2,),
            init_std=0.3,
            dtype=model.dtype,
            device=model.device,
            generator=torch.Generator().manual_seed(0),
        )

    def make_env(self, model):
        def reward(td):  # minus the expected squared norm of the belief
            m, S = td["observation", "mean"], td["observation", "var"]
            return -((m**2).sum(-1) + torch.diagonal(S, dim1=-2, dim2=-1).sum(-1))

        return ImaginedEnv(
            model,
            obs_dim=3,
            action_dim=1,
            dtype=model.dtype,
            device=model.device,
            reward_module=reward,
        )

    def make_observation(self, model, batch):
        return TensorDict({"observation": torch.randn(*batch, 3)}, batch)


class TestRSSMWorldModelSuite(WorldModelTestCase):
    dtypes = (torch.float32,)

    def _modules(self, dtype=torch.float32, device="cpu"):
        torch.manual_seed(0)
        return make_dreamer(
            1,
            channels=4,
            state_dim=4,
            rnn_hidden_dim=8,
            hidden_dim=8,
            mlp_cells=8,
            actor_depth=1,
            actor_cells=8,
            device=device,
        )

    actors: dict = {}

    def make_model(self, dtype, device):
        m = self._modules(dtype, device)
        env = m.model_based_env
        self.actors[id(env)] = m.actor
        return env

    def make_state(self, model, batch):
        g = torch.Generator().manual_seed(sum(batch) + 3)
        dev = model.device
        dtype = next(model.world_model.parameters()).dtype
        return TensorDict(
            {
                "state": torch.randn(*batch, 4, generator=g).to(dev, dtype),
                "belief": torch.randn(*batch, 8, generator=g).to(dev, dtype),
            },
            batch,
        )

    def make_policy(self, model):
        return self.actors[id(model)]

    def make_env(self, model):
        return model

    def make_observation(self, model, batch):
        return TensorDict({"pixels": torch.rand(*batch, 3, 64, 64)}, batch)
