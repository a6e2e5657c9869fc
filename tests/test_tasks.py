"""Checks of the built-in swing-up tasks (wmrl/envs/tasks): physics, TorchRL plumbing, cost, pixels.

The equations of motion are checked three ways that do not share code with them: the
accelerations from an autograd Euler-Lagrange solve of each system's Lagrangian (written from
the positions of the bodies), the power balance dE/dt = (generalised force)·velocity, and energy
conservation of the frictionless, unforced RK4 integration. The integrator is checked against
scipy's DOP853 at tight tolerances.
"""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torchrl.envs import TransformedEnv
from torchrl.envs.transforms import ToTensorImage
from torchrl.envs.utils import check_env_specs

from wmrl.control.angle import augment_angles
from wmrl.envs.tasks import (
    CartPoleSwingUp,
    PendulumSwingUp,
    TaskInfo,
    cartpole_dynamics,
    cartpole_energy,
    pendulum_dynamics,
    pendulum_energy,
    rk4_step,
    upright_feedback,
)
from wmrl.envs.tasks.render import Camera, box_sdf, coverage, segment_sdf

torch.set_num_threads(1)

F64 = torch.float64
TASKS = [CartPoleSwingUp, PendulumSwingUp]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_states(cls, n: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    D = len(cls.state_names)
    return scale * torch.randn(n, D, generator=g, dtype=F64)


def random_actions(env, shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(*shape, 1, generator=g, dtype=F64)
    return (2.0 * u - 1.0) * env.action_bound


def run_actions(env, actions: torch.Tensor, start: torch.Tensor | None = None):
    """Step ``env`` with actions ``[*B, T, 1]``; returns the stacked output TensorDicts [*B, T]."""
    td = env.reset()
    if start is not None:
        td["true_state"] = start.to(env.dtype)
        td = env.reset(td, set_state=True)
    outs = []
    for t in range(actions.shape[-2]):
        td["action"] = actions[..., t, :].to(env.dtype)
        td = env.step(td)
        outs.append(td["next"].clone())
        td = td["next"].clone()
    return torch.stack(outs, dim=len(env.batch_size))


# ---------------------------------------------------------------- equations of motion
def euler_lagrange_accelerations(lagrangian, q, qd, Q):
    """q̈ from d/dt ∂L/∂q̇ - ∂L/∂q = Q by autograd: M q̈ = ∂L/∂q - (∂²L/∂q̇∂q) q̇ + Q."""
    from torch.func import grad, hessian, jacrev

    M = hessian(lagrangian, argnums=1)(q, qd)  # ∂²L/∂q̇²
    mixed = jacrev(grad(lagrangian, argnums=1), argnums=0)(q, qd)  # ∂(∂L/∂q̇)/∂q
    rhs = grad(lagrangian, argnums=0)(q, qd) - mixed @ qd + Q
    return torch.linalg.solve(M, rhs)


def rod_lagrangian(pivot, pivot_velocity, theta, theta_dot, m, l, g):
    """Uniform rod hinged at ``pivot``, angle from the downward vertical: T - V from positions."""
    com = pivot + 0.5 * l * torch.stack([torch.sin(theta), -torch.cos(theta)])
    com_velocity = pivot_velocity + 0.5 * l * theta_dot * torch.stack(
        [torch.cos(theta), torch.sin(theta)]
    )
    kinetic = 0.5 * m * com_velocity @ com_velocity + 0.5 * (m * l * l / 12.0) * theta_dot**2
    return kinetic - m * g * com[1]


def test_cartpole_matches_euler_lagrange():
    M, m, l, b, g = 0.5, 0.5, 0.5, 0.1, 9.82

    def lagrangian(q, qd):
        cart = torch.stack([q[0], torch.zeros_like(q[0])])
        cart_v = torch.stack([qd[0], torch.zeros_like(qd[0])])
        return 0.5 * M * qd[0] ** 2 + rod_lagrangian(cart, cart_v, q[1], qd[1], m, l, g)

    states = random_states(CartPoleSwingUp, 20, seed=0)
    forces = 10.0 * torch.rand(20, 1, generator=torch.Generator().manual_seed(1), dtype=F64) - 5
    ds = cartpole_dynamics(states, forces)  # [20, 4]
    for s, u, d in zip(states, forces, ds):
        q, qd = torch.stack([s[0], s[3]]), torch.stack([s[1], s[2]])
        Q = torch.stack([u[0] - b * s[1], torch.zeros_like(u[0])])
        qdd = euler_lagrange_accelerations(lagrangian, q, qd, Q)
        torch.testing.assert_close(d[[1, 2]], qdd, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(d[[0, 3]], qd, rtol=0, atol=0)


def test_pendulum_matches_euler_lagrange():
    m, l, b, g = 1.0, 1.0, 0.01, 9.81
    hinge = torch.zeros(2, dtype=F64)

    def lagrangian(q, qd):
        return rod_lagrangian(hinge, hinge, q[0], qd[0], m, l, g)

    states = random_states(PendulumSwingUp, 20, seed=2)
    torques = 5.0 * torch.rand(20, 1, generator=torch.Generator().manual_seed(3), dtype=F64) - 2.5
    ds = pendulum_dynamics(states, torques)  # [20, 2]
    for s, u, d in zip(states, torques, ds):
        qdd = euler_lagrange_accelerations(lagrangian, s[1:2], s[0:1], u - b * s[0:1])
        torch.testing.assert_close(d[0:1], qdd, rtol=1e-10, atol=1e-10)
        assert d[1] == s[0]


def test_upright_feedback_holds_the_pendulum():
    """From up to 0.2 rad and 0.5 rad/s off upright (either side of the wrap at θ = π), the
    clipped feedback settles the rod within 0.01 rad in 4 s; with no torque every rod falls."""
    g = torch.Generator().manual_seed(5)
    phi0 = 0.4 * torch.rand(64, generator=g, dtype=F64) - 0.2
    start = torch.stack([torch.rand(64, generator=g, dtype=F64) - 0.5, torch.pi + phi0], -1)

    def run(scale: float) -> torch.Tensor:
        """Angles from upright ``[40, 64]`` over 40 steps of 0.1 s (the task's)."""
        s, phis = start.clone(), []
        for _ in range(40):
            u = 2.5 * scale * upright_feedback(s).clamp(-1, 1)  # [64, 1] N m
            s = rk4_step(pendulum_dynamics, s, u, 0.1)
            phis.append(torch.remainder(s[:, 1], 2 * torch.pi) - torch.pi)
        return torch.stack(phis)

    assert run(1.0)[-1].abs().max() < 0.01
    assert run(0.0).abs().amax(0).min() > 2.0
    torch.testing.assert_close(upright_feedback(torch.tensor([0.0, -torch.pi])),
                               upright_feedback(torch.tensor([0.0, torch.pi])))  # fmt: skip


@pytest.mark.parametrize(
    "dynamics, energy, velocity, friction",
    [
        (cartpole_dynamics, cartpole_energy, lambda s: s[..., 1], 0.1),
        (pendulum_dynamics, pendulum_energy, lambda s: s[..., 0], 0.01),
    ],
)
def test_power_balance(dynamics, energy, velocity, friction):
    """dE/dt = ∇E · f(s, u) equals the power of the non-conservative force (u - b v) v."""
    D = 4 if dynamics is cartpole_dynamics else 2
    g = torch.Generator().manual_seed(4)
    s = 2.0 * torch.randn(50, D, generator=g, dtype=F64).requires_grad_(True)
    u = 5.0 * torch.randn(50, 1, generator=g, dtype=F64)
    (grad_e,) = torch.autograd.grad(energy(s).sum(), s)
    power = (grad_e * dynamics(s, u)).sum(-1)
    v = velocity(s)
    torch.testing.assert_close(power, (u[:, 0] - friction * v) * v, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", TASKS)
def test_energy_conserved_without_friction_or_force(cls):
    """RK4 integration of the frictionless, unforced system keeps the total energy for 1 s."""
    env = cls(friction=0.0, dtype=F64, seed=0)
    start = torch.tensor([0.3, 1.0, -2.0, 2.5] if cls is CartPoleSwingUp else [3.0, 2.0], dtype=F64)
    traj = run_actions(env, torch.zeros(10, 1, dtype=F64), start)["true_state"]  # [10, D]
    e0, e = env.energy(start), env.energy(traj)
    swing = (e0 - env.energy(torch.zeros_like(start))).abs()  # energy above the rest state
    assert swing > 1.0
    assert (e - e0).abs().max() < 1e-5 * swing
    # the same check fails for dynamics with a 5% error in the angular acceleration
    scale = torch.ones(start.shape[-1], dtype=F64)
    scale[-2 if cls is CartPoleSwingUp else 0] = 1.05

    def wrong(s, u):
        return env.dynamics(s, u) * scale

    s, drift = start, []
    for _ in range(10):
        s = rk4_step(wrong, s, torch.zeros(1, dtype=F64), env.dt, env.substeps)
        drift.append((env.energy(s) - e0).abs())
    assert max(drift) > 1e-2 * swing


@pytest.mark.parametrize("cls", TASKS)
def test_rk4_converges_to_solve_ivp(cls):
    """40 steps with random zero-order-hold actions: the env's trajectory approaches DOP853's
    (rtol 1e-11) at fourth order in the sub-step size."""
    actions = random_actions(cls(), (40,), seed=5)  # [40, 1]
    start = random_states(cls, 1, seed=6, scale=0.5)[0]
    env = cls(dtype=F64, seed=0)
    y, ref = start.numpy(), []
    for u in actions:
        def f(t, x, u=u):
            return env.dynamics(torch.from_numpy(x), u).numpy()

        y = solve_ivp(f, (0.0, env.dt), y, method="DOP853", rtol=1e-11, atol=1e-12).y[:, -1]
        ref.append(y)
    ref = torch.from_numpy(np.stack(ref))  # [40, D]
    err = {}
    for n in (10, 20, 40):
        traj = run_actions(cls(dtype=F64, seed=0, substeps=n), actions, start)["true_state"]
        err[n] = (traj - ref).abs().max().item()
    assert err[10] < 1e-3, err  # default sub-steps
    # 2⁴ = 16 asymptotically; the cart-pole's sensitivity to its start spreads the ratio
    assert 10.0 < err[10] / err[20] < 40.0 and 10.0 < err[20] / err[40] < 40.0, err


def test_rk4_order():
    """Halving the step divides the error of a rotation ODE by ~2⁴ = 16."""
    def rotate(s, u):
        return torch.stack([s[..., 1], -s[..., 0]], dim=-1)

    s0 = torch.tensor([1.0, 0.0], dtype=F64)
    exact = torch.tensor([math.cos(2.0), -math.sin(2.0)], dtype=F64)
    e1 = (rk4_step(rotate, s0, s0[:0], 2.0, 10) - exact).norm()
    e2 = (rk4_step(rotate, s0, s0[:0], 2.0, 20) - exact).norm()
    assert 14.0 < e1 / e2 < 18.0
    with pytest.raises(ValueError):
        rk4_step(rotate, s0, s0[:0], 1.0, 0)


# ---------------------------------------------------------------- TorchRL plumbing
@pytest.mark.parametrize("cls", TASKS)
@pytest.mark.parametrize(
    "mode", [{}, {"from_pixels": True}, {"from_pixels": True, "pixels_only": True}]
)
@pytest.mark.parametrize("batch_size", [(), (3,)])
def test_check_env_specs(cls, mode, batch_size):
    env = cls(batch_size=batch_size, seed=0, **mode)
    check_env_specs(env, break_when_any_done="both")
    td = env.reset()
    assert ("observation" in td.keys()) == (not mode.get("pixels_only", False))
    assert ("pixels" in td.keys()) == mode.get("from_pixels", False)
    if "pixels" in td.keys():
        assert td["pixels"].shape == (*batch_size, 64, 64, 3)
        assert td["pixels"].dtype == torch.uint8


@pytest.mark.parametrize("cls", TASKS)
def test_to_tensor_image_applies(cls):
    env = TransformedEnv(cls(batch_size=[2], from_pixels=True, pixels_only=True, seed=0),
                         ToTensorImage())
    check_env_specs(env)
    px = env.reset()["pixels"]
    assert px.shape == (2, 3, 64, 64) and px.dtype == torch.float32
    assert 0.0 <= px.min() and px.max() <= 1.0


@pytest.mark.parametrize("cls", TASKS)
def test_batch_equals_single_runs(cls):
    n, T = 4, 12
    batched = cls(batch_size=[n], dtype=F64, from_pixels=True, seed=0)
    starts = random_states(cls, n, seed=7, scale=0.5)
    actions = random_actions(batched, (n, T), seed=8)  # [n, T, 1]
    out = run_actions(batched, actions, starts)  # [n, T]
    for i in range(n):
        single = cls(dtype=F64, from_pixels=True, seed=i)
        ref = run_actions(single, actions[i], starts[i])  # [T]
        torch.testing.assert_close(out["true_state"][i], ref["true_state"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out["reward"][i], ref["reward"], rtol=1e-12, atol=1e-12)
        assert (out["pixels"][i].int() - ref["pixels"].int()).abs().max() <= 1
    # a [2, 2] batch steps the same systems
    grid = cls(batch_size=[2, 2], dtype=F64, seed=0)
    out2 = run_actions(grid, actions.reshape(2, 2, T, 1), starts.reshape(2, 2, -1))
    torch.testing.assert_close(out2["true_state"].reshape(n, T, -1), out["true_state"])


@pytest.mark.parametrize("cls", TASKS)
def test_seeding(cls):
    def episode(seed):
        env = cls(batch_size=[3], seed=seed)
        actions = random_actions(env, (3, 10), seed=9)
        return run_actions(env, actions)

    a, b, c = episode(11), episode(11), episode(12)
    assert torch.equal(a["observation"], b["observation"])
    assert torch.equal(a["true_state"], b["true_state"])
    assert not torch.equal(a["observation"], c["observation"])
    # set_seed restarts the stream
    env = cls(seed=0)
    env.set_seed(5)
    r1 = env.reset()["observation"]
    env.set_seed(5)
    assert torch.equal(env.reset()["observation"], r1)


@pytest.mark.parametrize("cls", TASKS)
def test_start_distribution_and_noise(cls):
    """Start states ~ N(0, 0.1² I) and observation noise ~ N(0, 0.01²), checked to 5 s.e."""
    n = 100_000
    env = cls(batch_size=[n], dtype=F64, seed=0)
    td = env.reset()
    s, noise = td["true_state"], td["observation"] - td["true_state"]
    for x, std in ((s, 0.1), (noise, 0.01)):
        assert (x.mean(0).abs() < 5 * std / n**0.5).all()
        # var of the sample variance: 2 σ⁴ / n
        assert ((x.var(0) - std**2).abs() < 5 * std**2 * (2 / n) ** 0.5).all()
    info = env.task_info
    assert isinstance(info, TaskInfo)
    torch.testing.assert_close(info.start_cov, 0.01 * torch.eye(len(cls.state_names), dtype=F64))
    assert info.max_steps == 40 and info.dt == 0.1 and info.solved_steps == 10
    assert info.observation_noise_std == 0.01


@pytest.mark.parametrize("cls", TASKS)
def test_uniform_start_angles(cls):
    """Exploring starts: the angle ~ U[-π, π) (mean 0, variance π²/3, checked to 5 s.e.), the
    other dimensions still N(0, 0.1²); the task's own start description is unchanged."""
    n = 100_000
    env = cls(batch_size=[n], dtype=F64, seed=0, uniform_start_angles=True)
    s = env.reset()["true_state"]  # [n, D]
    (a,) = cls.angle_dims
    angle = s[:, a]
    assert angle.min() >= -math.pi and angle.max() < math.pi
    var = math.pi**2 / 3  # of U[-π, π); var of the sample variance (4/45) π⁴ / n
    assert angle.mean().abs() < 5 * (var / n) ** 0.5
    assert (angle.var() - var).abs() < 5 * (4 / 45 * math.pi**4 / n) ** 0.5
    assert (angle.abs() > 3).float().mean() > 0.04  # upright starts occur (4.5%)
    others = [d for d in range(s.shape[-1]) if d != a]
    rest = s[:, others]
    assert (rest.mean(0).abs() < 5 * 0.1 / n**0.5).all()
    assert ((rest.var(0) - 0.01).abs() < 5 * 0.01 * (2 / n) ** 0.5).all()
    torch.testing.assert_close(env.task_info.start_cov, 0.01 * torch.eye(s.shape[-1], dtype=F64))
    again = cls(batch_size=[n], dtype=F64, seed=0, uniform_start_angles=True)
    assert torch.equal(again.reset()["true_state"], s)  # seeded
    plain = cls(batch_size=[n], dtype=F64, seed=0).reset()["true_state"]
    assert plain[:, a].abs().max() < 1.0  # off by default: N(0, 0.1²)


@pytest.mark.parametrize("cls", TASKS)
def test_uniform_start_angles_mixture(cls):
    """A fraction p = 0.3 of exploring starts: each episode's angle is uniform with probability
    p, else N(0, 0.1²). |θ| > 1 happens only for uniform starts (N(0, 0.1²) reaches it with
    probability ~1e-23), with probability p (π - 1)/π; checked to 5 binomial s.e."""
    n, p = 100_000, 0.3
    env = cls(batch_size=[n], dtype=F64, seed=0, uniform_start_angles=p)
    (a,) = cls.angle_dims
    angle = env.reset()["true_state"][:, a]
    q = p * (math.pi - 1) / math.pi
    assert ((angle.abs() > 1).double().mean() - q).abs() < 5 * (q * (1 - q) / n) ** 0.5
    near = angle[angle.abs() < 0.5]  # the task's own starts, plus uniform ones near 0
    assert near.numel() > (1 - p) * n * 0.99
    assert env.uniform_start_angles == p
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="uniform_start_angles"):
            cls(uniform_start_angles=bad)


@pytest.mark.parametrize("cls", TASKS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_dtype_preserved(cls, dtype):
    env = cls(batch_size=[2], dtype=dtype, seed=0)
    td = env.rollout(3, break_when_any_done=False)
    for key in ("observation", "true_state", "action", ("next", "reward")):
        assert td[key].dtype == dtype, key
    assert env.start_mean.dtype == dtype and env.cost_spec()[1].dtype == dtype
    # an action of another dtype is cast
    td = env.reset()
    td["action"] = torch.zeros(2, 1, dtype=F64 if dtype == torch.float32 else torch.float32)
    assert env.step(td)["next", "true_state"].dtype == dtype


@pytest.mark.parametrize("cls", TASKS)
def test_actions_are_clipped(cls):
    env = cls(batch_size=[3], dtype=F64, seed=0)
    start = random_states(cls, 3, seed=10, scale=0.5)
    a = env.action_bound
    out = run_actions(env, torch.tensor([[[10 * a]], [[a]], [[0.5 * a]]], dtype=F64), start)
    s = out["true_state"][:, 0]
    ref = run_actions(env, torch.tensor([[[a]], [[a]], [[0.5 * a]]], dtype=F64), start)
    torch.testing.assert_close(s, ref["true_state"][:, 0], rtol=0, atol=0)
    neg = run_actions(env, torch.full((3, 1, 1), -10 * a, dtype=F64), start)
    neg_ref = run_actions(env, torch.full((3, 1, 1), -a, dtype=F64), start)
    torch.testing.assert_close(neg["true_state"], neg_ref["true_state"], rtol=0, atol=0)
    assert env.action_spec.space.high.max() == a and env.action_spec.space.low.min() == -a


@pytest.mark.parametrize("cls", TASKS)
def test_truncation(cls):
    env = cls(batch_size=[2], seed=0)
    td = env.rollout(40, break_when_any_done=False)
    trunc = td["next", "truncated"][..., 0]
    assert not trunc[:, :-1].any() and trunc[:, -1].all()
    assert torch.equal(td["next", "done"], td["next", "truncated"])
    assert not td["next", "terminated"].any()
    assert td["next", "elapsed_steps"][0, :, 0].tolist() == list(range(1, 41))
    # break_when_any_done stops at max_steps, and a short episode resets automatically
    assert env.rollout(100).shape == (2, 40)
    short = cls(batch_size=[2], max_steps=5, seed=0)
    td = short.rollout(12, break_when_any_done=False)
    assert td["next", "done"][0, :, 0].nonzero().flatten().tolist() == [4, 9]
    assert td["elapsed_steps"][0, :, 0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


# ---------------------------------------------------------------- cost and success
def saturating_cost(states, env):
    """1 - exp(-½ (z - target)ᵀ W (z - target)) on z = augment_angles(states) (zero covariance)."""
    target, W = env.cost_spec()
    D = states.shape[-1]
    z, _, _ = augment_angles(states, states.new_zeros(*states.shape, D), env.angle_dims)
    r = z - target  # [*B, D+2]
    return 1.0 - torch.exp(-0.5 * torch.einsum("...i,ij,...j->...", r, W, r))


@pytest.mark.parametrize("cls", TASKS)
def test_cost_spec_reproduces_reward(cls):
    env = cls(batch_size=[256], dtype=F64, seed=0)
    states = random_states(cls, 256, seed=12, scale=0.3)
    states[:, env.angle_dims[0]] += math.pi * torch.rand(256, dtype=F64) + 0.5 * math.pi
    target, W = env.cost_spec()
    assert target.shape == (states.shape[-1] + 2,) and W.shape == (target.shape[0],) * 2
    torch.testing.assert_close(saturating_cost(states, env), env.cost(states), rtol=1e-12,
                               atol=1e-12)
    # the env's reward is minus this cost of the next noise-free state
    td = env.reset()
    td["true_state"] = states
    td = env.reset(td, set_state=True)
    td["action"] = random_actions(env, (256,), seed=13)
    nxt = env.step(td)["next"]
    torch.testing.assert_close(nxt["reward"][:, 0], -saturating_cost(nxt["true_state"], env),
                               rtol=1e-12, atol=1e-12)
    assert nxt["reward"].std() > 0.05  # the states are spread over the cost's range


def test_cost_hand_values():
    cp, pe = CartPoleSwingUp(dtype=F64), PendulumSwingUp(dtype=F64)
    up_cp = torch.tensor([0.0, 0.0, 0.0, math.pi], dtype=F64)
    down_cp = torch.zeros(4, dtype=F64)
    assert cp.cost(up_cp).item() == pytest.approx(0.0, abs=1e-15)
    # hanging: d = 2 l = 1, cost = 1 - exp(-1 / (2 · 0.25²)) = 1 - exp(-8)
    assert cp.cost(down_cp).item() == pytest.approx(1 - math.exp(-8.0), rel=1e-12)
    # upright but the cart 0.3 m away: d = 0.3
    shifted = torch.tensor([0.3, 0.0, 0.0, math.pi], dtype=F64)
    assert cp.tip_distance(shifted).item() == pytest.approx(0.3, rel=1e-12)
    assert cp.cost(shifted).item() == pytest.approx(1 - math.exp(-0.09 / 0.125), rel=1e-12)
    # pendulum horizontal: d = sqrt(2) l, cost = 1 - exp(-2 / (2 · 0.5²)) = 1 - exp(-4)
    horizontal = torch.tensor([0.0, math.pi / 2], dtype=F64)
    assert pe.tip_distance(horizontal).item() == pytest.approx(math.sqrt(2), rel=1e-12)
    assert pe.cost(horizontal).item() == pytest.approx(1 - math.exp(-4.0), rel=1e-12)
    assert cp.angle_dims == (3,) and pe.angle_dims == (1,)


@pytest.mark.parametrize("cls", TASKS)
def test_is_solved(cls):
    env = cls(dtype=F64)
    D, theta = len(cls.state_names), cls.angle_dims[0]
    up = torch.zeros(40, D, dtype=F64)
    up[:, theta] = math.pi
    up[:30, theta] = 0.0  # swung up at step 30: the last 10 states are upright
    near = up.clone()
    near[-1, theta] = math.pi + 0.09 / env.tip_target[1]  # tip ~0.09 m away: still solved
    late = up.clone()
    late[-10, theta] = math.pi / 2  # one state of the last second away from the target
    early_only = up.flip(0)  # upright at the start, hanging at the end
    states = torch.stack([up, near, late, early_only])  # [4, 40, D]
    assert env.is_solved(states).tolist() == [True, True, False, False]
    assert env.is_solved(up).item() is True
    with pytest.raises(ValueError):
        env.is_solved(up[:5])


# ---------------------------------------------------------------- pixels
def colour_centroid(frames: torch.Tensor, colour, tol: float = 0.12) -> torch.Tensor:
    """(column, row) centroid of pixels within ``tol`` of ``colour``: [*B, H, W, 3] -> [*B, 2]."""
    c = torch.tensor(colour) * 255
    mask = ((frames.float() - c).abs().max(-1).values < tol * 255).float()  # [*B, H, W]
    H, W = mask.shape[-2:]
    rows = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    cols = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    n = mask.sum((-2, -1))
    assert (n > 3).all(), "colour not found"
    return torch.stack([(mask * cols).sum((-2, -1)) / n, (mask * rows).sum((-2, -1)) / n], -1)


@pytest.mark.parametrize("cls", TASKS)
def test_pole_drawn_where_it_is(cls):
    """The pole's colour centroid sits at the rod's midpoint for θ = 0, π/2, π, -π/2."""
    env = cls()
    D, ti = len(cls.state_names), cls.angle_dims[0]
    thetas = torch.tensor([0.0, math.pi / 2, math.pi, -math.pi / 2, 2.5])
    states = torch.zeros(5, D)
    states[:, ti] = thetas
    if cls is CartPoleSwingUp:
        states[:, 0] = torch.tensor([0.0, 0.3, -0.4, 0.2, 0.5])  # the cart moves too
    frames = env.render(states)  # [5, 64, 64, 3]
    pivot = torch.stack([states[:, 0] if cls is CartPoleSwingUp else torch.zeros(5),
                         torch.zeros(5)], -1)
    midpoint = 0.5 * (pivot + env.tip_position(states))  # [5, 2]
    expected = env.camera.to_pixel(midpoint)  # [5, 2] (column, row)
    found = colour_centroid(frames, cls.pole_colour)
    # (the hinge dot and anti-aliased edges shift the visible part by up to ~1.5 px)
    assert (found - expected).abs().max() < 2.0, (found, expected)
    # down: below the pivot (larger row); up: above; θ = π/2: to the right
    piv = env.camera.to_pixel(pivot)
    assert found[0, 1] > piv[0, 1] + 4 and found[2, 1] < piv[2, 1] - 4
    assert found[1, 0] > piv[1, 0] + 4 and found[3, 0] < piv[3, 0] - 4
    if cls is CartPoleSwingUp:
        cart = colour_centroid(frames[:1], cls.cart_colour)
        assert (cart[0] - env.camera.to_pixel(pivot[0])).abs().max() < 1.0


@pytest.mark.parametrize("cls", TASKS)
def test_frames_mirror_and_move(cls):
    env = cls()
    D, ti = len(cls.state_names), cls.angle_dims[0]
    s = torch.zeros(2, D)
    s[0, ti], s[1, ti] = 1.0, -1.0
    if cls is CartPoleSwingUp:
        s[0, 0], s[1, 0] = 0.3, -0.3
    f = env.render(s).int()
    assert (f[0] - f[1].flip(-2)).abs().max() <= 1  # mirror image about x = 0
    assert (f[0] - f[1]).abs().sum() > 1000  # and not the same picture
    s2 = s.clone()
    s2[0, ti] += 0.2
    assert (env.render(s2)[0].int() - f[0]).abs().sum() > 500  # the pole moved


def test_rasteriser_areas():
    """Coverage of a capsule and a box integrates to their areas (in pixels) to ~1%."""
    cam = Camera((64, 64), (-1.0, 1.0), (-1.0, 1.0))
    px, py = cam.grid()
    pix = cam.pixel
    a, b, r = torch.tensor([-0.5, -0.2]), torch.tensor([0.4, 0.5]), 0.1
    area = coverage(segment_sdf(px, py, a, b, r), pix).sum() * pix**2
    exact = 2 * r * (b - a).norm() + math.pi * r**2
    assert abs(area - exact) / exact < 0.01
    box = coverage(box_sdf(px, py, torch.tensor([0.1, -0.3]), (0.3, 0.2)), pix).sum() * pix**2
    assert abs(box - 0.24) / 0.24 < 0.01


def test_render_batched_shapes_and_errors():
    env = PendulumSwingUp()
    s = torch.zeros(2, 3, 2)
    assert env.render(s).shape == (2, 3, 64, 64, 3)
    assert torch.equal(env.render(s)[1, 2], env.render(s[0, 0]))
    with pytest.raises(ValueError):
        env.render(torch.zeros(2, 4))


# ---------------------------------------------------------------- bad input and devices
def test_bad_arguments():
    with pytest.raises(ValueError, match="dtype"):
        CartPoleSwingUp(dtype=torch.int64)
    with pytest.raises(ValueError, match="pixels_only"):
        CartPoleSwingUp(pixels_only=True)
    with pytest.raises(ValueError):
        PendulumSwingUp(substeps=0)
    env = CartPoleSwingUp(batch_size=[2])
    td = env.reset()
    td["true_state"] = torch.full((2, 4), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        env.reset(td, set_state=True)
    with pytest.raises(ValueError, match="shape"):
        env.reset(env.reset().set("true_state", torch.zeros(2, 2)), set_state=True)
    # a state reset at the end of an episode starts a new one from that state
    last = env.rollout(40)[:, -1]["next"]
    assert last["done"].all()
    td = env.reset(last.clone().set("true_state", torch.ones(2, 4)), set_state=True)
    assert torch.equal(td["true_state"], torch.ones(2, 4))
    assert not td["done"].any() and (td["elapsed_steps"] == 0).all()


@cuda
@pytest.mark.parametrize("cls", TASKS)
def test_cuda_matches_cpu(cls):
    n, T = 8, 10
    cpu = cls(batch_size=[n], dtype=F64, from_pixels=True, seed=0)
    gpu = cls(batch_size=[n], dtype=F64, from_pixels=True, seed=0, device="cuda")
    starts = random_states(cls, n, seed=14, scale=0.5)
    actions = random_actions(cpu, (n, T), seed=15)
    out_c = run_actions(cpu, actions, starts)
    out_g = run_actions(gpu, actions.cuda(), starts.cuda())
    assert out_g["true_state"].device.type == "cuda" and out_g["pixels"].device.type == "cuda"
    torch.testing.assert_close(out_g["true_state"].cpu(), out_c["true_state"])
    assert (out_g["pixels"].cpu().int() - out_c["pixels"].int()).abs().max() <= 1
    check_env_specs(gpu)
    moved = cls(batch_size=[n], seed=0).to("cuda")
    assert moved.reset()["observation"].device.type == "cuda"
