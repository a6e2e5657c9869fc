"""Policy search: one rollout/optimisation path, two objectives."""

import pytest
import torch
from tensordict import TensorDict

from wmrl.envs.model_based import ImaginedEnv, WorldModelEnv
from wmrl.search import (
    PolicySearch,
    expected_cost_objective,
    imagine,
    lambda_return_objective,
    lambda_returns,
)

from .test_model_based_envs import GaussianLinearModel, GaussianLinearPolicy, LinearModel

torch.set_num_threads(1)


def _lqr_problem():
    torch.manual_seed(1)
    D, F = 2, 1
    dt = torch.float64
    A = torch.tensor([[1.0, 0.1], [0.0, 1.0]], dtype=dt)
    B = torch.tensor([[0.0], [0.1]], dtype=dt)
    policy = GaussianLinearPolicy(torch.zeros(F, D, dtype=dt), torch.zeros(F, dtype=dt))

    def neg_quadratic(td):  # reward = -E|x|^2
        m, S = td["observation", "mean"], td["observation", "var"]
        return -(torch.diagonal(S, dim1=-2, dim2=-1).sum(-1) + (m**2).sum(-1))

    env = ImaginedEnv(
        GaussianLinearModel(A, B), obs_dim=D, action_dim=F, dtype=dt, reward_module=neg_quadratic
    )
    start = TensorDict(
        {
            "observation": {
                "mean": torch.tensor([[1.0, 0.0]], dtype=dt),
                "var": 0.01 * torch.eye(D, dtype=dt).unsqueeze(0),
            }
        },
        [1],
    )
    return env, policy, start, A, B


def test_expected_cost_objective_is_minus_reward_sum():
    env, policy, start, *_ = _lqr_problem()
    traj = imagine(env, policy, start, 5)
    torch.testing.assert_close(expected_cost_objective(traj), -traj["next", "reward"].sum())


def test_lbfgs_search_finds_the_optimum_of_the_deterministic_objective():
    env, policy, start, A, B = _lqr_problem()
    search = PolicySearch(env, policy, expected_cost_objective, horizon=20, optimizer="lbfgs")
    before = float(search.loss(start).detach())
    result = search.run(start, steps=60, restarts=2)
    loss = search.loss(start)
    after = float(loss.detach())
    assert after < 0.5 * before
    assert after == pytest.approx(result.best_loss, rel=1e-12)  # left at the best parameters
    # an independent optimiser (scipy BFGS on the same objective) finds the same optimum
    import numpy as np
    from scipy.optimize import minimize

    def f(theta):
        with torch.no_grad():
            policy.K.copy_(torch.as_tensor(theta[:2]).view(1, 2))
            policy.k.copy_(torch.as_tensor(theta[2:]))
        policy.zero_grad()
        val = search.loss(start)
        val.backward()
        grad = torch.cat([policy.K.grad.flatten(), policy.k.grad.flatten()])
        return float(val.detach()), grad.numpy().astype(np.float64)

    ref = minimize(f, np.zeros(3), jac=True, method="BFGS", options={"gtol": 1e-10})
    assert after == pytest.approx(ref.fun, rel=1e-6)


def test_adam_search_with_lambda_return_objective_improves_return():
    torch.manual_seed(0)
    model = LinearModel()
    for p in model.parameters():
        p.requires_grad_(False)
    env = WorldModelEnv(
        model,
        state_key="x",
        observation_spec=__import__("torchrl").data.Unbounded((3,)),
        action_spec=__import__("torchrl").data.Unbounded((2,)),
    )
    from tensordict.nn import TensorDictModule

    lin = torch.nn.Linear(3, 2)
    policy = TensorDictModule(lin, in_keys=["x"], out_keys=["action"])
    objective = lambda_return_objective(lambda nxt: torch.zeros(*nxt.batch_size, 1), 0.9, 0.95)

    def start():
        return TensorDict({"x": torch.randn(16, 3)}, [16])

    search = PolicySearch(env, policy, objective, horizon=5, optimizer="adam", lr=1e-2)
    torch.manual_seed(3)
    fixed = start()
    before = float(search.loss(fixed))
    search.run(start, steps=150)
    assert float(search.loss(fixed)) < 0.5 * before


def test_lambda_returns_hand_computed():
    r = torch.tensor([[1.0], [2.0], [3.0]]).unsqueeze(0)  # [1, 3, 1]
    v = torch.tensor([[10.0], [20.0], [30.0]]).unsqueeze(0)
    g, l = 0.5, 0.5
    G2 = 3 + g * 30
    G1 = 2 + g * ((1 - l) * 20 + l * G2)
    G0 = 1 + g * ((1 - l) * 10 + l * G1)
    out = lambda_returns(r, v, g, l).flatten()
    torch.testing.assert_close(out, torch.tensor([G0, G1, G2]))


def test_bad_arguments():
    env, policy, *_ = _lqr_problem()
    with pytest.raises(ValueError):
        PolicySearch(env, policy, expected_cost_objective, horizon=0)
    with pytest.raises(ValueError):
        PolicySearch(env, policy, expected_cost_objective, horizon=3, optimizer="sgd")
