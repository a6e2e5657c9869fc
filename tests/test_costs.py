"""Expected saturating cost: hand-computed values, Monte Carlo, gradients, TorchRL parity."""

import pytest
import torch
from tensordict import TensorDict

from wmrl.control.angle import augment_angles
from wmrl.costs import ExponentialQuadraticCost, expected_saturating_cost, weight_factor

torch.set_num_threads(1)

F64 = torch.float64
N_MC = 200_000
K_SE = 5.0


def random_gaussian(D, seed, scale=1.0, batch=()):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(*batch, D, generator=g, dtype=F64)
    A = torch.randn(*batch, D, D, generator=g, dtype=F64)
    cov = scale * (A @ A.mT / D + 0.1 * torch.eye(D, dtype=F64))
    return mean, 0.5 * (cov + cov.mT)


def random_precision(D, seed, rank=None):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(D, rank or D, generator=g, dtype=F64)
    W = B @ B.mT / D
    return 0.5 * (W + W.mT)


def sample(mean, cov, n, seed):
    g = torch.Generator().manual_seed(seed)
    L = torch.linalg.cholesky(cov)
    return mean + torch.randn(n, mean.shape[-1], generator=g, dtype=F64) @ L.mT


def point_cost(x, target, W):
    d = x - target
    return 1 - torch.exp(-0.5 * ((d @ W) * d).sum(-1))


def assert_mc_mean_var(c, mean_cost, var_cost, k=K_SE):
    """c: [n] samples. se(mean) = std/sqrt(n); se(var) = std((c - c̄)²)/sqrt(n)."""
    n = c.shape[0]
    se_m = c.std() / n**0.5
    dev2 = (c - c.mean()) ** 2
    se_v = dev2.std() / n**0.5
    assert abs(mean_cost - c.mean()) <= k * se_m, (mean_cost, c.mean(), se_m)
    assert abs(var_cost - dev2.mean()) <= k * se_v, (var_cost, dev2.mean(), se_v)


def test_one_dimensional_hand_computed():
    for m, s, w in [(1.0, 1.0, 1.0), (-0.3, 0.2, 4.0), (2.0, 0.0, 0.5), (0.0, 3.0, 16.0)]:
        mean = torch.tensor([m], dtype=F64)
        cov = torch.tensor([[s]], dtype=F64)
        mc, vc = expected_saturating_cost(mean, cov, torch.zeros(1, dtype=F64),
                                          torch.tensor([[w]], dtype=F64))
        e1 = (1 + w * s) ** -0.5 * torch.exp(torch.tensor(-w * m**2 / (2 + 2 * w * s), dtype=F64))
        e2 = (1 + 2 * w * s) ** -0.5 * torch.exp(torch.tensor(-w * m**2 / (1 + 2 * w * s)))
        torch.testing.assert_close(mc, 1 - e1)
        torch.testing.assert_close(vc, e2 - e1**2)


@pytest.mark.parametrize("rank", [None, 2])
def test_monte_carlo_mean_and_variance(rank):
    mean, cov = random_gaussian(4, seed=1, scale=0.6)
    W = random_precision(4, seed=2, rank=rank)
    target = torch.tensor([0.5, -0.2, 0.0, 1.0], dtype=F64)
    mc, vc = expected_saturating_cost(mean, cov, target, W)
    c = point_cost(sample(mean, cov, N_MC, seed=3), target, W)
    assert_mc_mean_var(c, mc, vc)


def test_singular_weights_are_the_limit_of_definite_ones():
    mean, cov = random_gaussian(3, seed=4)
    W = random_precision(3, seed=5, rank=1)
    t = torch.zeros(3, dtype=F64)
    exact = expected_saturating_cost(mean, cov, t, W)
    near = expected_saturating_cost(mean, cov, t, W + 1e-9 * torch.eye(3, dtype=F64))
    torch.testing.assert_close(exact, near, atol=1e-7, rtol=0)
    L = weight_factor(W)
    torch.testing.assert_close(L @ L.mT, W)


def test_zero_covariance_is_the_point_cost_and_batches():
    mean, cov = random_gaussian(3, seed=6, batch=(2, 5))
    W = random_precision(3, seed=7)
    t = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    mc, vc = expected_saturating_cost(mean, torch.zeros_like(cov), t, W)
    torch.testing.assert_close(mc, point_cost(mean, t, W))
    torch.testing.assert_close(vc, torch.zeros_like(vc), atol=1e-14, rtol=0)
    mc, vc = expected_saturating_cost(mean, cov, t, W)
    assert mc.shape == vc.shape == (2, 5)
    torch.testing.assert_close(mc[1, 3], expected_saturating_cost(mean[1, 3], cov[1, 3], t, W)[0])


def test_gradcheck():
    mean, cov = random_gaussian(3, seed=8, scale=0.5)
    A = torch.linalg.cholesky(cov).requires_grad_(True)
    mean.requires_grad_(True)
    t = torch.tensor([0.2, -0.1, 0.4], dtype=F64, requires_grad=True)
    B = torch.linalg.cholesky(random_precision(3, seed=9) + 0.5 * torch.eye(3, dtype=F64))
    B.requires_grad_(True)

    def fn(m, A, t, B):
        return expected_saturating_cost(m, A @ A.mT, t, B @ B.mT)

    assert torch.autograd.gradcheck(fn, (mean, A, t, B))
    assert torch.autograd.gradgradcheck(lambda m, A: fn(m, A, t.detach(), B.detach()), (mean, A))


def test_gradcheck_singular_weights_in_mean_and_cov():
    mean, cov = random_gaussian(4, seed=10, scale=0.5)
    A = torch.linalg.cholesky(cov).requires_grad_(True)
    mean.requires_grad_(True)
    W = random_precision(4, seed=11, rank=2)
    t = torch.zeros(4, dtype=F64)
    assert torch.autograd.gradcheck(
        lambda m, A: expected_saturating_cost(m, A @ A.mT, t, W), (mean, A)
    )


def _td(mean, cov, batch):
    return TensorDict({("observation", "mean"): mean, ("observation", "var"): cov}, batch)


def test_module_reductions_width_and_keys():
    mean, cov = random_gaussian(3, seed=12, batch=(4, 2))
    W, t = random_precision(3, seed=13), torch.tensor([1.0, 0.0, -1.0], dtype=F64)
    per_state, var = expected_saturating_cost(mean, cov, t, W / 0.5**2)
    cost = ExponentialQuadraticCost(t, W, reduction="none", width=0.5, return_variance=True)
    out = cost(_td(mean, cov, [4, 2]))
    assert out.batch_size == (4, 2)
    torch.testing.assert_close(out["loss_cost"], per_state)
    torch.testing.assert_close(out["cost_variance"], var)
    for red, fn in [("mean", torch.mean), ("sum", torch.sum)]:
        out = ExponentialQuadraticCost(t, W, reduction=red, width=0.5)(_td(mean, cov, [4, 2]))
        assert out.batch_size == ()
        torch.testing.assert_close(out["loss_cost"], fn(per_state))
    # rewards: on the state, and written under "next" for a rollout
    torch.testing.assert_close(cost.reward(_td(mean, cov, [4, 2])), -per_state.unsqueeze(-1))
    td = TensorDict({"next": _td(mean, cov, [4, 2])}, [4, 2])
    torch.testing.assert_close(cost.write_reward(td)["next", "reward"], -per_state.unsqueeze(-1))
    # configurable keys
    cost.set_keys(loc="m", scale="S", loss_cost="c")
    out = cost(TensorDict(m=mean, S=cov, batch_size=[4, 2]))
    torch.testing.assert_close(out["c"], per_state)
    assert cost.in_keys == ["m", "S"]


def test_module_defaults_and_dtype():
    mean, cov = random_gaussian(2, seed=14, batch=(3,))
    cost = ExponentialQuadraticCost(reduction="none")
    t, W = torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)
    expect, _ = expected_saturating_cost(mean, cov, t, W)
    torch.testing.assert_close(cost(_td(mean, cov, [3]))["loss_cost"], expect)
    out32 = cost(_td(mean.float(), cov.float(), [3]))["loss_cost"]
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, expect.float())


def test_angle_dims_match_augmented_moments_and_point_cost():
    # cart-pole-like tip distance: d = (x - l sin θ, l cos θ - l) with target θ = π
    ell = 0.6
    C = torch.tensor([[1.0, 0.0, 0.0, 0.0, -ell, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, ell]], dtype=F64)
    W = C.mT @ C
    target = torch.tensor([0.0, 0.0, 0.0, torch.pi, 0.0, -1.0], dtype=F64)
    cost = ExponentialQuadraticCost(target, W, reduction="none", width=0.25, angle_dims=[3])
    mean, cov = random_gaussian(4, seed=15, scale=0.05, batch=(3,))
    mz, Sz, _ = augment_angles(mean, cov, [3])
    expect, _ = expected_saturating_cost(mz, Sz, target, W / 0.25**2)
    torch.testing.assert_close(cost(_td(mean, cov, [3]))["loss_cost"], expect)
    # at a point: 1 - exp(-d²/(2·0.25²)) with d the tip distance from upright
    x = torch.tensor([[0.1, 0.0, 0.0, 2.9]], dtype=F64)
    tip = torch.stack([x[:, 0] - ell * torch.sin(x[:, 3]), -ell * torch.cos(x[:, 3])], -1)
    d2 = ((tip - torch.tensor([0.0, ell], dtype=F64)) ** 2).sum(-1)
    got = cost(_td(x, torch.zeros(1, 4, 4, dtype=F64), [1]))["loss_cost"]
    torch.testing.assert_close(got, 1 - torch.exp(-d2 / (2 * 0.25**2)))


def test_angle_dims_monte_carlo_approximation():
    """With angles the cost integrates a Gaussian with z's exact moments (PILCO); z itself is not
    Gaussian, so the result is an approximation: for a state std of 0.1 rad it must agree with
    Monte Carlo to 2% of the cost (5 standard errors added)."""
    W = torch.diag(torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=F64))
    target = torch.tensor([0.0, 0.0, 0.0, -1.0], dtype=F64)
    mean = torch.tensor([0.2, 2.5], dtype=F64)
    cov = torch.tensor([[0.02, 0.005], [0.005, 0.01]], dtype=F64)
    cost = ExponentialQuadraticCost(target, W, reduction="none", angle_dims=[1])
    mc = cost(_td(mean, cov, []))["loss_cost"]
    x = sample(mean, cov, N_MC, seed=16)
    z = torch.cat([x, torch.sin(x[:, 1:]), torch.cos(x[:, 1:])], -1)
    c = point_cost(z, target, W)
    assert abs(mc - c.mean()) <= 0.02 * c.mean() + K_SE * c.std() / N_MC**0.5


def test_torchrl_parity():
    from torchrl.objectives.pilco import ExponentialQuadraticCost as TorchRLCost

    mean, cov = random_gaussian(3, seed=17, scale=0.3, batch=(6,))
    W = random_precision(3, seed=18) + 0.1 * torch.eye(3, dtype=F64)
    t = torch.tensor([0.3, 0.0, -0.5], dtype=F64)
    ours = ExponentialQuadraticCost(t, W, reduction="none")(_td(mean, cov, [6]))["loss_cost"]
    theirs = TorchRLCost(t, W, reduction="none")(_td(mean, cov, [6]))["loss_cost"]
    # TorchRL adds ε I (ε = 1e-5) to A = I + U S U (U = W^½, b = U μ). To first order in ε,
    # log|A + εI| = log|A| + ε tr A⁻¹ and bᵀ(A + εI)⁻¹b = bᵀA⁻¹b - ε |A⁻¹b|², so its cost is
    # ours + (1 - ours) · ε/2 (tr A⁻¹ - |A⁻¹b|²); the remainder is O(ε² (tr A⁻² + |A⁻¹b|⁴)),
    # below 1e-9 here (A ⪰ I).
    eps = 1e-5
    lam, Q = torch.linalg.eigh(W)
    U = Q @ torch.diag(lam.sqrt()) @ Q.mT
    A = torch.eye(3, dtype=F64) + U @ cov @ U  # [6, 3, 3]
    Ainv = torch.linalg.inv(A)
    Ainv_b = (Ainv @ (U @ (mean - t).unsqueeze(-1))).squeeze(-1)  # [6, 3]
    trace = Ainv.diagonal(dim1=-2, dim2=-1).sum(-1)
    predicted = ours + (1 - ours) * eps / 2 * (trace - (Ainv_b**2).sum(-1))
    assert (theirs - ours).abs().max() > 1e-6  # the jitter is visible at this size
    torch.testing.assert_close(theirs, predicted, atol=1e-9, rtol=0)


def test_errors():
    mean, cov = random_gaussian(3, seed=19)
    t, W = torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64)
    with pytest.raises(ValueError, match="shape"):
        expected_saturating_cost(mean, cov[:2, :2], t, W)
    with pytest.raises(ValueError, match="NaN"):
        expected_saturating_cost(mean * float("nan"), cov, t, W)
    with pytest.raises(ValueError, match="positive semi-definite"):
        expected_saturating_cost(mean, cov - 5 * torch.eye(3, dtype=F64), t, W)
    with pytest.raises(ValueError, match="positive semi-definite"):
        expected_saturating_cost(mean, cov, t, -W)
    with pytest.raises(ValueError, match="symmetric"):
        expected_saturating_cost(mean, cov, t, W + torch.triu(torch.ones(3, 3, dtype=F64), 1))
    with pytest.raises(ValueError, match=r"\[3, 3\]"):
        expected_saturating_cost(mean, cov, t, torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match="target"):
        expected_saturating_cost(mean, cov, torch.zeros(2, dtype=F64), W)
    with pytest.raises(ValueError, match="dtype"):
        expected_saturating_cost(mean, cov, t.float(), W)
    with pytest.raises(ValueError, match="reduction"):
        ExponentialQuadraticCost(reduction="max")
    with pytest.raises(ValueError, match="positive semi-definite"):
        ExponentialQuadraticCost(weights=-W)
    cost = ExponentialQuadraticCost(t, W, angle_dims=[0])  # expects the 5-dim augmented vector
    with pytest.raises(ValueError, match="do not match"):
        cost(_td(mean, cov, []))


@pytest.mark.gpu
def test_cuda_matches_cpu():
    mean, cov = random_gaussian(4, seed=20, scale=0.3, batch=(5,))
    W, t = random_precision(6, seed=21, rank=2), torch.ones(6, dtype=F64)
    cost = ExponentialQuadraticCost(t, W, reduction="none", angle_dims=[1], return_variance=True)
    expect = cost(_td(mean, cov, [5]))
    got = cost.cuda()(_td(mean.cuda(), cov.cuda(), [5]))
    torch.testing.assert_close(got["loss_cost"].cpu(), expect["loss_cost"])
    torch.testing.assert_close(got["cost_variance"].cpu(), expect["cost_variance"])
