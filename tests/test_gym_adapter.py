"""TaskAdapter and gymnasium's Pendulum-v1 as a PILCO task: start moments against Monte Carlo and
gymnasium's own resets, costs against hand values and the built-in pendulum, gymnasium's reward
untouched, batched episodes equal to single ones, bad input, and the example end to end."""

import importlib.util
import math
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("gymnasium")

from torchrl.data import Unbounded  # noqa: E402

from wmrl.envs.gym_adapter import (  # noqa: E402
    CostReward,
    TaskAdapter,
    make_gym_env,
    make_pendulum_v1,
    pendulum_v1_task,
)
from wmrl.envs.tasks import PendulumSwingUp  # noqa: E402

torch.set_num_threads(1)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pilco_gym_pendulum.py"


def _obs(theta: torch.Tensor, theta_dot: torch.Tensor) -> torch.Tensor:
    """Pendulum-v1 observations ``[cos θ, sin θ, θ̇]`` (θ = 0 upright)."""
    return torch.stack([theta.cos(), theta.sin(), theta_dot], dim=-1)


def _assert_moments(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, k: float = 5.0):
    """Sample mean and covariance of ``x`` [N, D] within ``k`` standard errors of mean, cov."""
    N = x.shape[0]
    m = x.mean(0)  # [D]
    d = x - m  # [N, D]
    S = d.T @ d / (N - 1)  # [D, D]
    se_m = (x.var(0) / N).sqrt()  # [D]
    prod = d[:, :, None] * d[:, None, :]  # [N, D, D]
    se_S = (prod.var(0) / N).sqrt()  # [D, D]
    assert ((m - mean).abs() <= k * se_m + 1e-12).all(), (m, mean, se_m)
    assert ((S - cov).abs() <= k * se_S + 1e-12).all(), (S, cov, se_S)


# ------------------------------------------------------------------ the task description
def test_start_belief_is_the_moments_of_gymnasiums_start_distribution():
    task = pendulum_v1_task()
    g = torch.Generator().manual_seed(0)
    N = 200_000
    theta = (2 * torch.rand(N, generator=g, dtype=torch.float64) - 1) * math.pi
    theta_dot = 2 * torch.rand(N, generator=g, dtype=torch.float64) - 1
    _assert_moments(_obs(theta, theta_dot), task["start_mean"], task["start_cov"])

    # and gymnasium's own resets follow that distribution (10 000 starts, float32 observations)
    env = make_gym_env("Pendulum-v1", [500])
    starts = []
    for seed in range(20):
        env.set_seed(1000 * seed)
        starts.append(env.reset()["observation"].to(torch.float64))
    _assert_moments(torch.cat(starts), task["start_mean"], task["start_cov"])


def test_pendulum_cost_hand_values_and_agrees_with_the_builtin_pendulum():
    env = make_pendulum_v1()
    theta = torch.tensor([0.0, math.pi / 2, math.pi, -math.pi / 3], dtype=torch.float64)
    c = env.state_cost(_obs(theta, torch.full_like(theta, 3.0)))
    # 1 - exp(-d² / (2 a²)), d² = 2 - 2 cos θ, a = 0.5, θ̇ not costed
    expected = torch.tensor([0.0, 1 - math.exp(-4), 1 - math.exp(-8), 1 - math.exp(-2)],
                            dtype=torch.float64)
    torch.testing.assert_close(c, expected, rtol=0, atol=1e-12)

    # the built-in task has θ = 0 hanging down: the same pole at θ_builtin = θ_gym + π
    builtin = PendulumSwingUp(dtype=torch.float64)
    theta = torch.empty(1000, dtype=torch.float64).uniform_(-math.pi, math.pi)
    omega = torch.randn(1000, dtype=torch.float64)
    torch.testing.assert_close(
        env.state_cost(_obs(theta, omega)),
        builtin.cost(torch.stack([omega, theta + math.pi], -1)),
    )
    target, W = env.cost_spec()
    assert target.dtype == W.dtype == env.start_mean.dtype == torch.float64


def test_is_solved_judges_only_the_last_second():
    env = make_pendulum_v1()
    assert env.solved_steps == 20 and env.max_steps == 200 and env.dt == 0.05
    theta = torch.zeros(4, 50, dtype=torch.float64)  # [episodes, T]
    theta[1, -1] = 0.11 * math.pi  # the last step leaves the goal
    theta[2, -21] = math.pi  # far off, but before the last second
    theta[3, -20] = -0.11 * math.pi  # first step of the last second
    solved = env.is_solved(_obs(theta, torch.zeros_like(theta)))
    assert solved.tolist() == [True, False, True, False]
    assert env.is_solved(_obs(theta, theta)[0]).shape == ()  # a single episode [T, D]
    with pytest.raises(ValueError, match="T >= 20"):
        env.is_solved(torch.zeros(3, 19, 3))
    with pytest.raises(ValueError, match="states must be"):
        env.is_solved(torch.zeros(3, 30, 2))


# ------------------------------------------------------------------ the environment
def test_cost_reward_and_gymnasium_reward():
    pol = lambda td: td.set("action", torch.full((*td.batch_size, 1), 1.5))  # noqa: E731
    for cost_reward in (True, False):
        env = make_pendulum_v1([2], cost_reward=cost_reward)
        env.set_seed(3)
        td = env.rollout(50, pol)
        reward = td["next", "reward"].squeeze(-1).to(torch.float64)  # [2, 50]
        if cost_reward:
            expected = -env.state_cost(td["next", "observation"])
            tol = 1e-6  # float32 rewards
        else:  # gymnasium's -(θ² + 0.1 θ̇² + 0.001 u²) of the state before the step
            x = td["observation"].to(torch.float64)
            theta = torch.atan2(x[..., 1], x[..., 0])
            expected = -(theta**2 + 0.1 * x[..., 2] ** 2 + 0.001 * 1.5**2)
            tol = 1e-4  # float32 observations
        torch.testing.assert_close(reward, expected, rtol=0, atol=tol)


def test_batched_episodes_equal_single_seeded_episodes():
    batch = make_pendulum_v1([3])
    single = make_pendulum_v1()
    assert batch.batch_size == (3,) and single.batch_size == ()
    assert batch.action_low.tolist() == single.action_low.tolist() == [-2.0]
    assert batch.action_high.tolist() == [2.0]

    def pol(td):
        x = td["observation"]
        return td.set("action", (-3.0 * x[..., 1:2] - 0.5 * x[..., 2:3]).clamp(-2, 2))

    batch.set_seed(7)
    tb = batch.rollout(200, pol, break_when_any_done=False)
    batch.set_seed(7)
    assert torch.equal(batch.rollout(200, pol, break_when_any_done=False)["next", "observation"],
                       tb["next", "observation"])  # a seeded batch is reproducible
    for i in range(3):  # copy i is seeded with 7 + i, its last transition kept (no auto-reset)
        single.set_seed(7 + i)
        ts = single.rollout(200, pol, break_when_any_done=False)
        assert torch.equal(tb[i]["observation"], ts["observation"])
        assert torch.equal(tb[i]["next", "observation"], ts["next", "observation"])
        assert torch.equal(tb[i]["next", "reward"], ts["next", "reward"])
    assert tb["next", "truncated"][:, -1].all() and not tb["next", "truncated"][:, :-1].any()
    with pytest.raises(ValueError, match="batch_size"):
        make_gym_env("Pendulum-v1", [2, 2])


def _builtin_kwargs(**kw):
    args = dict(
        start_mean=torch.zeros(2),
        start_cov=0.01 * torch.eye(2),
        cost_target=torch.tensor([0.0, 0.0, 0.0, -1.0]),
        cost_weights=torch.diag(torch.tensor([0.0, 0.0, 4.0, 4.0])),
        dt=0.1,
        max_steps=40,
        solved_fn=lambda s: s[..., 1].cos() < -0.995,
        solved_steps=10,
        angle_dims=(1,),
    )
    return {**args, **kw}


def test_adapter_on_a_builtin_task_with_an_angle_matches_its_cost():
    base = PendulumSwingUp(seed=0, dtype=torch.float64, observation_noise_std=0.0)
    env = TaskAdapter(base, **_builtin_kwargs(), cost_reward=True)
    td = env.rollout(40)
    # the built-in reward is -cost of the next state; CostReward recomputes it from z
    torch.testing.assert_close(td["next", "reward"].squeeze(-1),
                               -base.cost(td["next", "true_state"]))
    assert env.start_mean.dtype == torch.float64 and env.angle_dims == (1,)
    assert env.max_steps == 40 and env.action_high.tolist() == [2.5]


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(start_mean=torch.zeros(3), start_cov=torch.eye(3)), "observation"),
        (dict(start_mean=torch.zeros(1, 2)), "start_mean"),
        (dict(start_cov=torch.tensor([[1.0, 0.0], [0.0, -1.0]])), "positive semi-definite"),
        (dict(start_cov=torch.tensor([[1.0, 0.5], [0.0, 1.0]])), "symmetric"),
        (dict(start_mean=torch.tensor([0.0, math.nan])), "NaN"),
        (dict(cost_target=torch.zeros(3)), "cost_target"),
        (dict(cost_target=torch.tensor([0.0, 0.0, 0.0, math.inf])), "NaN or inf"),
        (dict(cost_weights=torch.diag(torch.tensor([0.0, 0.0, 4.0, -4.0]))), "semi-definite"),
        (dict(cost_weights=torch.triu(torch.ones(4, 4))), "symmetric"),
        (dict(angle_dims=(2,)), "angle_dims"),
        (dict(angle_dims=()), "cost_target"),  # the target is on [θ̇, θ, sin θ, cos θ]
        (dict(dt=0.0), "dt"),
        (dict(solved_steps=41), "solved_steps"),
    ],
)
def test_adapter_rejects_bad_descriptions(change, match):
    with pytest.raises(ValueError, match=match):
        TaskAdapter(PendulumSwingUp(seed=0), **_builtin_kwargs(**change))


def test_adapter_rejects_unbounded_actions_and_missing_observations():
    base = PendulumSwingUp(seed=0, spec_locked=False)
    base.action_spec = Unbounded((1,))
    with pytest.raises(ValueError, match="bounded"):
        TaskAdapter(base, **_builtin_kwargs())
    with pytest.raises(ValueError, match="no observation entry 'obs'"):
        TaskAdapter(PendulumSwingUp(seed=0), **_builtin_kwargs(), observation_key="obs")
    with pytest.raises(ValueError, match="states must be"):
        make_pendulum_v1().state_cost(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="cost_width"):
        pendulum_v1_task(cost_width=0.0)


def test_cost_reward_transform_is_the_saturating_cost():
    t = CostReward(torch.tensor([1.0, 2.0]), torch.tensor([[2.0, 0.5], [0.5, 1.0]]))
    x = torch.randn(5, 2, dtype=torch.float64)
    d = x - torch.tensor([1.0, 2.0], dtype=torch.float64)
    W = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    expected = 1 - torch.exp(-0.5 * torch.einsum("bi,ij,bj->b", d, W, d))
    torch.testing.assert_close(t.cost(x), expected)


# ------------------------------------------------------------------ the example, end to end
def test_example_debug_run():
    spec = importlib.util.spec_from_file_location("pilco_gym_pendulum", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    start = time.perf_counter()
    agent, result = example.main(["--preset", "debug", "--episodes", "2", "--no-progress"])
    assert time.perf_counter() - start < 40
    assert agent.horizon == 10 and agent.obs_dim == 3 and agent.angle_dims == ()
    random, learned = agent.records
    assert random.random and not learned.random
    assert learned.data_size == 2 * 200 and learned.interaction_s == pytest.approx(20.0)
    # costs are sums of the saturating cost per step: at most the number of steps
    assert 0 <= learned.predicted_cost <= agent.horizon
    assert 0 <= learned.real_cost <= 200 and 0 <= learned.test_cost <= 200
    episode = agent.last_episode
    torch.testing.assert_close(
        learned.real_cost,
        float(agent.env.state_cost(episode["next", "observation"]).sum()),
        rtol=1e-5, atol=1e-4,
    )
    assert 0 <= result["cost"] <= 200 and -200 * 16.3 <= result["gym_return"] <= 0
    assert 0.0 <= result["solved"] <= 1.0
