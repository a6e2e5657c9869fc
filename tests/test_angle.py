"""Monte Carlo and gradient checks of the angle augmentation (wmrl/control/angle.py)."""

import pytest
import torch

from wmrl.control.angle import angle_feature_indices, augment_angles, trig_moments

torch.set_num_threads(1)

N_MC = 200_000
K_SE = 5.0  # tolerance in standard errors estimated from the samples


def random_gaussian(D: int, seed: int, scale: float = 1.0, batch: tuple = ()):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(*batch, D, generator=g, dtype=torch.float64)
    A = torch.randn(*batch, D, D, generator=g, dtype=torch.float64)
    cov = scale * (A @ A.mT / D + 0.1 * torch.eye(D, dtype=torch.float64))
    return mean, 0.5 * (cov + cov.mT)


def sample(mean, cov, n, seed):
    g = torch.Generator().manual_seed(seed)
    L = torch.linalg.cholesky(cov)
    eps = torch.randn(n, mean.shape[-1], generator=g, dtype=torch.float64)
    return mean + eps @ L.mT  # [n, D]


def assert_mc_moments(x, y, M, S, C, k=K_SE):
    """Compare exact moments of y = f(x) with Monte Carlo samples x [n, D], y [n, E].

    Each entry must lie within k standard errors, estimated from the samples, of its MC estimate:
    se(mean_i) = std(y_i)/sqrt(n); se(cov_ij) = std((y_i - ȳ_i)(y_j - ȳ_j))/sqrt(n), and likewise
    for the cross-covariance C = cov[x, y].
    """
    n = y.shape[0]
    yc, xc = y - y.mean(0), x - x.mean(0)
    checks = [
        ("mean", M, y.mean(0), y.std(0) / n**0.5),
        ("cov", S, *_cov_and_se(yc, yc)),
        ("cross-cov", C, *_cov_and_se(xc, yc)),
    ]
    for name, exact, est, se in checks:
        tol = k * se + 1e-12
        err = (exact - est).abs()
        assert bool((err <= tol).all()), (
            f"{name}: max error/tolerance {(err / tol).max().item():.3g}\n"
            f"exact {exact}\nMC {est}\nse {se}"
        )


def _cov_and_se(a, b):
    prod = a.unsqueeze(-1) * b.unsqueeze(-2)  # [n, Da, Db]
    n = prod.shape[0]
    return prod.mean(0), prod.std(0) / n**0.5


def trig_features(x, dims):
    return torch.stack([torch.sin(x[..., dims]), torch.cos(x[..., dims])], dim=-1).flatten(-2)


@pytest.mark.parametrize("dims", [[1], [0, 2], [3, 1, 0]])
def test_trig_moments_monte_carlo(dims):
    mean, cov = random_gaussian(4, seed=len(dims), scale=0.8)
    M, S, V = trig_moments(mean, cov, dims)
    x = sample(mean, cov, N_MC, seed=10)
    assert_mc_moments(x, trig_features(x, dims), M, S, cov @ V)


def test_trig_moments_strong_correlation_and_large_variance():
    # nearly collinear angles with large variance: exercises e_plus / e_minus separately
    mean = torch.tensor([0.3, -2.0, 1.0], dtype=torch.float64)
    cov = torch.tensor([[2.0, 1.9, 0.1], [1.9, 2.0, -0.1], [0.1, -0.1, 0.8]], dtype=torch.float64)
    M, S, V = trig_moments(mean, cov, [0, 1, 2])
    x = sample(mean, cov, N_MC, seed=3)
    assert_mc_moments(x, trig_features(x, [0, 1, 2]), M, S, cov @ V)


def test_augment_angles_monte_carlo():
    mean, cov = random_gaussian(5, seed=7, scale=0.5)
    mz, Sz, V = augment_angles(mean, cov, [4, 2])
    x = sample(mean, cov, N_MC, seed=11)
    z = torch.cat([x, trig_features(x, [4, 2])], dim=-1)
    assert_mc_moments(x, z, mz, Sz, cov @ V)
    assert torch.equal(Sz, Sz.mT)
    assert torch.equal(V[:, :5], torch.eye(5, dtype=torch.float64))


def test_hand_computed_one_angle():
    # E[sin x] = exp(-s/2) sin m; var[cos x] = (1 + exp(-2s) cos 2m)/2 - exp(-s) cos^2 m
    m, s = 0.7, 0.3
    M, S, V = trig_moments(torch.tensor([m], dtype=torch.float64),
                           torch.tensor([[s]], dtype=torch.float64), [0])
    e = torch.exp(torch.tensor(-s / 2, dtype=torch.float64))
    mt = torch.tensor(m, dtype=torch.float64)
    torch.testing.assert_close(M, torch.stack([e * torch.sin(mt), e * torch.cos(mt)]))
    e2 = torch.exp(torch.tensor(-2 * s, dtype=torch.float64))
    var_cos = (1 + e2 * torch.cos(2 * mt)) / 2 - e**2 * torch.cos(mt) ** 2
    torch.testing.assert_close(S[1, 1], var_cos)
    torch.testing.assert_close(V, torch.stack([e * torch.cos(mt), -e * torch.sin(mt)]).view(1, 2))


def test_zero_covariance_is_the_point_map():
    mean = torch.tensor([0.4, -1.2, 2.5], dtype=torch.float64)
    mz, Sz, V = augment_angles(mean, torch.zeros(3, 3, dtype=torch.float64), [0, 2])
    torch.testing.assert_close(mz, torch.cat([mean, trig_features(mean, [0, 2])]))
    torch.testing.assert_close(Sz, torch.zeros(7, 7, dtype=torch.float64), atol=1e-15, rtol=0)
    # V is the Jacobian dz/dx transposed at a point
    J = torch.autograd.functional.jacobian(
        lambda x: torch.cat([x, trig_features(x, [0, 2])]), mean
    )
    torch.testing.assert_close(V, J.mT)


def test_batched_equals_loop():
    mean, cov = random_gaussian(4, seed=5, batch=(2, 3))
    M, S, V = augment_angles(mean, cov, [1, 3])
    for i in range(2):
        for j in range(3):
            Mi, Si, Vi = augment_angles(mean[i, j], cov[i, j], [1, 3])
            torch.testing.assert_close(M[i, j], Mi)
            torch.testing.assert_close(S[i, j], Si)
            torch.testing.assert_close(V[i, j], Vi)


def test_gradcheck():
    mean, cov = random_gaussian(4, seed=2, scale=0.5)
    A = torch.linalg.cholesky(cov)
    mean.requires_grad_(True)
    A.requires_grad_(True)

    def fn(m, A):
        return augment_angles(m, A @ A.mT, [0, 3])

    assert torch.autograd.gradcheck(fn, (mean, A))
    assert torch.autograd.gradgradcheck(lambda m, A: trig_moments(m, A @ A.mT, [3, 1]), (mean, A))


def test_feature_indices_and_errors():
    assert angle_feature_indices(4, [3]) == [0, 1, 2, 4, 5]
    assert angle_feature_indices(4, [-1]) == [0, 1, 2, 4, 5]
    assert angle_feature_indices(3, []) == [0, 1, 2]
    assert angle_feature_indices(5, [1, 3]) == [0, 2, 4, 5, 6, 7, 8]
    mean, cov = random_gaussian(3, seed=0)
    with pytest.raises(ValueError, match="out of range"):
        trig_moments(mean, cov, [3])
