"""Model-based environments with trivial differentiable world models."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from torchrl.data import Unbounded

from wmrl.envs.model_based import ImaginedEnv, WorldModelEnv

torch.set_num_threads(1)


class LinearModel(torch.nn.Module):
    """x' = A x + B u, reward -|x'|^2 (a differentiable deterministic world model)."""

    state_keys, action_keys, predicts_reward = ("x",), ("action",), True

    def __init__(self, D=3, F=2):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.A = torch.nn.Parameter(torch.eye(D) + 0.1 * torch.randn(D, D, generator=g))
        self.B = torch.nn.Parameter(torch.randn(D, F, generator=g))

    def forward(self, td):
        x = td["x"] @ self.A.T + td["action"] @ self.B.T
        td["next", "x"] = x
        td["next", "reward"] = -(x**2).sum(-1, keepdim=True)
        return td

    def initial_state(self, td):
        return TensorDict({"x": td["observation"]}, batch_size=td.batch_size)


def _env(model, batch=()):
    return WorldModelEnv(
        model,
        observation_spec=Unbounded((3,)),
        action_spec=Unbounded((2,)),
        reward_spec=Unbounded((1,)),
        batch_size=batch,
    )


def _linear_policy(F=2, D=3):
    lin = torch.nn.Linear(D, F)
    return TensorDictModule(lin, in_keys=["x"], out_keys=["action"]), lin


def test_world_model_env_rollout_matches_manual_loop_and_keeps_graph():
    model = LinearModel()
    env = _env(model)
    policy, lin = _linear_policy()
    x0 = torch.randn(5, 3)
    traj = env.rollout(7, policy, tensordict=TensorDict({"x": x0}, [5]), auto_reset=False)
    assert traj.batch_size == (5, 7)
    # manual loop
    x, total = x0, 0.0
    for _ in range(7):
        x = x @ model.A.T + lin(x) @ model.B.T
        total = total + (-(x**2).sum(-1))
    torch.testing.assert_close(traj["next", "reward"].sum((-2, -1)), total)
    torch.testing.assert_close(traj["next", "x"][:, -1], x)
    traj["next", "reward"].sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    assert model.A.grad is not None and model.A.grad.abs().sum() > 0


def test_world_model_env_never_terminates_and_reset_from_observation():
    model = LinearModel()
    env = _env(model)
    policy, _ = _linear_policy()
    start = TensorDict({"observation": torch.randn(2, 3)}, [2])
    traj = env.rollout(50, policy, tensordict=env.reset(start), auto_reset=False)
    assert traj.shape == (2, 50)
    assert not traj["next", "done"].any()
    with pytest.raises(RuntimeError, match="start state"):
        env.reset()


def test_rollout_reads_no_tensor_on_the_host(monkeypatch):
    """No ``bool(tensor)`` / ``.item()`` per step: on a GPU these would synchronise."""
    model = LinearModel()
    env = _env(model)
    policy, _ = _linear_policy()
    start = env.reset(TensorDict({"x": torch.randn(4, 3)}, [4]))
    calls = {"n": 0}
    orig_bool, orig_item = torch.Tensor.__bool__, torch.Tensor.item

    def counting_bool(self):
        calls["n"] += 1
        return orig_bool(self)

    def counting_item(self):
        calls["n"] += 1
        return orig_item(self)

    env.rollout(3, policy, tensordict=start.clone(), auto_reset=False)  # warm caches
    monkeypatch.setattr(torch.Tensor, "__bool__", counting_bool)
    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    calls["n"] = 0
    env.rollout(5, policy, tensordict=start.clone(), auto_reset=False)
    n5 = calls["n"]
    calls["n"] = 0
    env.rollout(25, policy, tensordict=start.clone(), auto_reset=False)
    # host reads, if any, do not grow with the number of steps
    assert calls["n"] == n5


class GaussianLinearModel(torch.nn.Module):
    """Exact Gaussian propagation of x' = A x + B u through the ImaginedEnv key conventions."""

    def __init__(self, A, B):
        super().__init__()
        self.A, self.B = A, B

    def forward(self, td):
        m, S = td["observation", "mean"], td["observation", "var"]
        mu, Su, C = td["action", "mean"], td["action", "var"], td["action", "cross_covariance"]
        A, B = self.A, self.B
        mean = m @ A.T + mu @ B.T
        ASB = A @ C @ B.T
        var = A @ S @ A.T + B @ Su @ B.T + ASB + ASB.transpose(-1, -2)
        td["next", "observation", "mean"] = mean
        td["next", "observation", "var"] = var
        return td


class GaussianLinearPolicy(TensorDictModuleBase):
    """u = K x + k: exact action moments (mean, covariance, cross-covariance)."""

    in_keys = [("observation", "mean"), ("observation", "var")]
    out_keys = [("action", "mean"), ("action", "var"), ("action", "cross_covariance")]

    def __init__(self, K, k):
        super().__init__()
        self.K = torch.nn.Parameter(K)
        self.k = torch.nn.Parameter(k)

    def forward(self, td):
        m, S = td["observation", "mean"], td["observation", "var"]
        td["action", "mean"] = m @ self.K.T + self.k
        td["action", "var"] = self.K @ S @ self.K.T
        td["action", "cross_covariance"] = S @ self.K.T
        return td


def test_imagined_env_gaussian_rollout_is_exact_and_costs_every_predicted_state():
    torch.manual_seed(0)
    D, F, H = 3, 1, 6
    dt = torch.float64
    A = torch.eye(D, dtype=dt) + 0.1 * torch.randn(D, D, dtype=dt)
    B = torch.randn(D, F, dtype=dt)
    policy = GaussianLinearPolicy(0.1 * torch.randn(F, D, dtype=dt), torch.zeros(F, dtype=dt))

    def neg_trace(td):  # reward = -tr(S') - |m'|^2 = -E|x'|^2
        m, S = td["observation", "mean"], td["observation", "var"]
        return -(torch.diagonal(S, dim1=-2, dim2=-1).sum(-1) + (m**2).sum(-1))

    env = ImaginedEnv(
        GaussianLinearModel(A, B), obs_dim=D, action_dim=F, dtype=dt, reward_module=neg_trace
    )
    m0 = torch.randn(2, D, dtype=dt)
    S0 = 0.1 * torch.eye(D, dtype=dt).expand(2, D, D)
    start = TensorDict({"observation": {"mean": m0, "var": S0}}, [2])
    traj = env.rollout(H, policy, tensordict=env.reset(start), auto_reset=False)
    assert traj.shape == (2, H)
    # closed loop: x' = (A + B K) x + B k
    Acl = A + B @ policy.K
    m, S, expected = m0, S0, []
    for _ in range(H):
        m = m @ Acl.T + (B @ policy.k)
        S = Acl @ S @ Acl.T
        expected.append(-(torch.diagonal(S, dim1=-2, dim2=-1).sum(-1) + (m**2).sum(-1)))
    torch.testing.assert_close(traj["next", "observation", "mean"][:, -1], m.detach())
    torch.testing.assert_close(traj["next", "reward"][..., 0], torch.stack(expected, -1).detach())
    traj["next", "reward"].sum().backward()
    assert policy.K.grad.abs().sum() > 0


def test_imagined_env_point_start_and_bad_start():
    env = ImaginedEnv(GaussianLinearModel(torch.eye(2), torch.ones(2, 1)), obs_dim=2, action_dim=1)
    td = env.reset(TensorDict({"observation": torch.zeros(3, 2)}, [3]))
    assert td["observation", "var"].shape == (3, 2, 2)
    assert (td["observation", "var"] == 0).all()
    with pytest.raises(ValueError, match="start belief"):
        env.reset(TensorDict({"observation": torch.zeros(3, 4)}, [3]))
