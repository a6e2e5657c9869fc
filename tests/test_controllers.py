"""Moment-matching controllers: Monte Carlo, exact limits, gradients, TensorDict I/O, errors.

What is exact and what is not (Deisenroth, Fox & Rasmussen 2015, Sec. 5):

* linear controller, any ``angle_dims``: exact (``u`` is linear in the features, whose mean and
  covariance are exact);
* RBF controller without angles: exact (an RBF network integrated against a Gaussian);
* squash alone, and linear∘squash without angles (``u`` Gaussian, ``(x, u)`` jointly Gaussian):
  exact, the chained ``V = V_xu V_uy`` included;
* RBF with angles, RBF∘squash, linear∘squash with angles: the inner output (or the features) is
  not Gaussian, so PILCO's moment matching is an approximation; checked against Monte Carlo with
  documented looser tolerances at a small state spread.

Every composition is also checked exactly at zero state covariance, where the moments must be
the point action and ``V`` its Jacobian (Stein's lemma in the limit).
"""

import pytest
import torch
from tensordict import TensorDict

from wmrl.control.base import PointPolicy, point_features
from wmrl.control.linear import LinearController
from wmrl.control.squash import SquashedController, saturate, saturating_squash_moments

torch.set_num_threads(1)

F64 = torch.float64
N_MC = 200_000
K_SE = 5.0

rbf_mod = pytest.importorskip("wmrl.control.rbf")
RBFController, rbf_weights = rbf_mod.RBFController, rbf_mod.rbf_weights


# ---------------------------------------------------------------- helpers
def random_gaussian(D, seed, scale=1.0, batch=()):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(*batch, D, generator=g, dtype=F64)
    A = torch.randn(*batch, D, D, generator=g, dtype=F64)
    cov = scale * (A @ A.mT / D + 0.1 * torch.eye(D, dtype=F64))
    return mean, 0.5 * (cov + cov.mT)


def sample(mean, cov, n=N_MC, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = torch.linalg.cholesky(cov)
    return mean + torch.randn(n, mean.shape[-1], generator=g, dtype=F64) @ L.mT


def _cov_and_se(a, b):
    prod = a.unsqueeze(-1) * b.unsqueeze(-2)  # [n, Da, Db]
    return prod.mean(0), prod.std(0) / prod.shape[0] ** 0.5


def mc_errors(x, y, M, S, C):
    """(name, |exact - MC|, standard error, scale) for mean, cov and cross-cov of y = f(x)."""
    n = y.shape[0]
    yc, xc = y - y.mean(0), x - x.mean(0)
    Smc, se_S = _cov_and_se(yc, yc)
    Cmc, se_C = _cov_and_se(xc, yc)
    sd_y, sd_x = Smc.diagonal().sqrt(), xc.std(0)
    return [
        ("mean", (M - y.mean(0)).abs(), y.std(0) / n**0.5, sd_y),
        ("cov", (S - Smc).abs(), se_S, sd_y[:, None] * sd_y[None, :]),
        ("cross-cov", (C - Cmc).abs(), se_C, sd_x[:, None] * sd_y[None, :]),
    ]


def assert_mc_exact(x, y, M, S, C, k=K_SE):
    """Every entry within k standard errors estimated from the samples."""
    for name, err, se, _ in mc_errors(x, y, M, S, C):
        ratio = err / (k * se + 1e-12)
        assert bool((ratio <= 1).all()), f"{name}: error/tolerance {ratio.max().item():.3g}"


def assert_mc_approx(x, y, M, S, C, rel, k=K_SE):
    """Approximate moments: error within rel[name] times the entry's scale, plus k SE."""
    for name, err, se, scale in mc_errors(x, y, M, S, C):
        ratio = err / (rel[name] * scale + k * se + 1e-12)
        assert bool((ratio <= 1).all()), f"{name}: error/tolerance {ratio.max().item():.3g}"


def check_mc(ctrl, mean, cov, exact=True, rel=None, seed=1):
    x = sample(mean, cov, seed=seed)
    with torch.no_grad():
        u = ctrl.act(x)
        M, S, V = ctrl.moments(mean, cov)
    if exact:
        assert_mc_exact(x, u, M, S, cov @ V)
    else:
        assert_mc_approx(x, u, M, S, cov @ V, rel)


def make_linear(D, F, angle_dims=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    ctrl = LinearController(D, F, angle_dims, generator=g)
    with torch.no_grad():  # O(1) weights so that the test sees the map
        ctrl.weight.normal_(generator=g)
        ctrl.bias.normal_(generator=g)
    return ctrl


def make_rbf(D, F, angle_dims=(), seed=0, n=20):
    g = torch.Generator().manual_seed(seed)
    ctrl = RBFController(D, F, n, angle_dims, generator=g)
    with torch.no_grad():  # unequal length-scales / signal variances, O(1) targets
        ctrl.targets.copy_(torch.randn(n, F, generator=g, dtype=F64))
        ctrl.log_lengthscales.copy_(0.3 * torch.randn(F, ctrl.feature_dim, generator=g, dtype=F64))
        ctrl.log_signal_var.copy_(0.3 * torch.randn(F, generator=g, dtype=F64))
    return ctrl


U_MAX = torch.tensor([2.0, 5.0], dtype=F64)
FACTORIES = {
    "linear": lambda: make_linear(4, 2),
    "linear-angles": lambda: make_linear(4, 2, [1, 3]),
    "rbf": lambda: make_rbf(4, 2),
    "rbf-angles": lambda: make_rbf(4, 2, [3]),
    "linear-squash": lambda: SquashedController(make_linear(4, 2), U_MAX),
    "linear-angles-squash": lambda: SquashedController(make_linear(4, 2, [3]), U_MAX),
    "rbf-squash": lambda: SquashedController(make_rbf(4, 2), U_MAX),
    "rbf-angles-squash": lambda: SquashedController(make_rbf(4, 2, [0, 3]), U_MAX),
}


# ---------------------------------------------------------------- Monte Carlo: exact cases
@pytest.mark.parametrize("angle_dims", [(), (1, 3)])
def test_linear_monte_carlo_exact(angle_dims):
    mean, cov = random_gaussian(4, seed=2, scale=0.5)
    check_mc(make_linear(4, 2, angle_dims), mean, cov)


def test_rbf_monte_carlo_exact_without_angles():
    mean, cov = random_gaussian(4, seed=3, scale=0.3)
    check_mc(make_rbf(4, 2), mean, cov)


def test_squash_monte_carlo_exact():
    mean = torch.tensor([0.4, -1.3], dtype=F64)
    cov = torch.tensor([[0.8, -0.5], [-0.5, 1.5]], dtype=F64)
    M, S, V = saturating_squash_moments(mean, cov, U_MAX)
    u = sample(mean, cov, seed=4)
    assert_mc_exact(u, saturate(u, U_MAX), M, S, cov @ V)
    assert torch.count_nonzero(V - torch.diag_embed(V.diagonal())) == 0  # diagonal


def test_linear_squash_composition_monte_carlo_exact():
    mean, cov = random_gaussian(3, seed=5, scale=0.5)
    check_mc(SquashedController(make_linear(3, 2), U_MAX), mean, cov)


# ---------------------------------------------------------------- Monte Carlo: approximations
# PILCO's moment matching of non-Gaussian intermediates. At a state std of about 0.2 the measured
# errors (4e5 samples) are at most 1% (mean, of the action std), 11% (cov, of sd_i sd_j) and 2.5%
# (cross-cov, of sd_x sd_u); the tolerances below are about twice those.
APPROX_REL = {"mean": 0.03, "cov": 0.25, "cross-cov": 0.06}


@pytest.mark.parametrize("name", ["rbf-angles", "rbf-squash", "linear-angles-squash",
                                  "rbf-angles-squash"])
def test_moment_matching_approximations_monte_carlo(name):
    mean, cov = random_gaussian(4, seed=0, scale=0.05)
    check_mc(FACTORIES[name](), mean, cov, exact=False, rel=APPROX_REL)


# ---------------------------------------------------------------- exact limits
@pytest.mark.parametrize("name", list(FACTORIES))
def test_zero_covariance_gives_point_action_and_jacobian(name):
    ctrl = FACTORIES[name]()
    x = torch.tensor([0.3, -0.7, 1.1, 2.6], dtype=F64)
    M, S, V = ctrl.moments(x, torch.zeros(4, 4, dtype=F64))
    torch.testing.assert_close(M, ctrl.act(x))
    torch.testing.assert_close(S, torch.zeros(2, 2, dtype=F64), atol=1e-12, rtol=0)
    J = torch.autograd.functional.jacobian(ctrl.act, x)  # [F, D]
    torch.testing.assert_close(V, J.mT)


@pytest.mark.parametrize("name", ["linear-angles", "rbf-angles-squash"])
def test_batched_moments_equal_loop(name):
    ctrl = FACTORIES[name]()
    mean, cov = random_gaussian(4, seed=6, scale=0.2, batch=(2, 3))
    M, S, V = ctrl.moments(mean, cov)
    assert M.shape == (2, 3, 2) and S.shape == (2, 3, 2, 2) and V.shape == (2, 3, 4, 2)
    for i in range(2):
        for j in range(3):
            Mi, Si, Vi = ctrl.moments(mean[i, j], cov[i, j])
            torch.testing.assert_close(M[i, j], Mi)
            torch.testing.assert_close(S[i, j], Si)
            torch.testing.assert_close(V[i, j], Vi)
    torch.testing.assert_close(S, S.mT, atol=0, rtol=0)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", ["linear-angles", "rbf-angles", "rbf-angles-squash"])
def test_gradcheck_moments(name):
    ctrl = {
        "linear-angles": lambda: make_linear(3, 2, [2]),
        "rbf-angles": lambda: make_rbf(3, 2, [2], n=5),
        "rbf-angles-squash": lambda: SquashedController(make_rbf(3, 2, [0], n=4), U_MAX),
    }[name]()
    mean, cov = random_gaussian(3, seed=7, scale=0.3)
    A = torch.linalg.cholesky(cov).requires_grad_(True)
    mean.requires_grad_(True)
    params = tuple(ctrl.parameters())  # gradcheck perturbs these in place

    def fn(m, A, *_):
        return ctrl.moments(m, A @ A.mT)

    assert torch.autograd.gradcheck(fn, (mean, A, *params))


def test_gradcheck_act_and_squash():
    ctrl = SquashedController(make_rbf(3, 2, [1], n=5), U_MAX)
    x = torch.randn(4, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *_: ctrl.act(x), (x, *ctrl.parameters()))
    m = torch.tensor([0.3, -2.0], dtype=F64, requires_grad=True)
    B = torch.tensor([[0.7, 0.0], [0.4, 1.1]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda m, B: saturating_squash_moments(m, B @ B.mT, U_MAX), (m, B)
    )


# ---------------------------------------------------------------- RBF specifics
def test_rbf_weights_and_point_map_against_dense_reference():
    ctrl = make_rbf(3, 2, [1], seed=8, n=7)
    z, y = ctrl.inputs.detach(), ctrl.targets.detach()
    ell, sf2 = ctrl.lengthscales.detach(), ctrl.signal_var.detach()
    x = torch.randn(5, 3, dtype=F64)
    zx = point_features(x, [1])
    for a in range(2):
        d = (z[:, None] - z[None]) / ell[a]
        K = sf2[a] * torch.exp(-0.5 * (d**2).sum(-1))
        beta = torch.linalg.solve(K + 1e-4 * sf2[a] * torch.eye(7, dtype=F64), y[:, a])
        torch.testing.assert_close(ctrl.beta()[a], beta)
        kx = sf2[a] * torch.exp(-0.5 * ((((zx[:, None] - z[None]) / ell[a]) ** 2).sum(-1)))
        torch.testing.assert_close(ctrl.act(x)[:, a], kx @ beta)
    torch.testing.assert_close(rbf_weights(z, y, ell, sf2, 1e-4), ctrl.beta())


def test_rbf_initialisation_and_learnable_signal_variance():
    m0 = torch.tensor([0.0, 0.0, 0.0, 0.5], dtype=F64)
    ctrl = RBFController(4, 1, 30, [3], start_mean=m0, start_cov=torch.zeros(4, 4, dtype=F64))
    # a deterministic start: every pseudo input is the start state's features
    expect = point_features(m0, [3]).expand(30, 5)
    torch.testing.assert_close(ctrl.inputs.detach(), expect)
    assert torch.all(ctrl.log_lengthscales == 0) and torch.all(ctrl.log_signal_var == 0)
    assert 0.05 < ctrl.targets.std().item() < 0.2
    g = torch.Generator().manual_seed(0)
    ctrl.reset_parameters(m0, torch.eye(4, dtype=F64), generator=g)
    sin2cos2 = ctrl.inputs[:, 3] ** 2 + ctrl.inputs[:, 4] ** 2
    torch.testing.assert_close(sin2cos2.detach(), torch.ones(30, dtype=F64))
    mean, cov = random_gaussian(4, seed=9, scale=0.2)
    ctrl.moments(mean, cov)[1].sum().backward()
    for p in ctrl.parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0)


def test_rbf_matches_torchrl_rbf_network():
    """TorchRL's RBFController (no squash) is the same RBF network with weights β, α² = 1 and
    one length-scale vector; it adds 1e-6 I to the covariance and returns V as its
    "cross-covariance"."""
    from torchrl.modules.models.rbf_controller import RBFController as TorchRLRBF

    torch.manual_seed(0)
    theirs = TorchRLRBF(3, 2, max_action=None, n_basis=6).double()
    with torch.no_grad():
        theirs.lengthscales.copy_(torch.tensor([0.7, 1.3, 1.0]))
    ours = RBFController(3, 2, 6)
    with torch.no_grad():
        ours.inputs.copy_(theirs.centers)
        ours.log_lengthscales.copy_(theirs.lengthscales.log().expand(2, 3))
        ours.log_signal_var.zero_()
        # choose targets so that β equals TorchRL's weights
        d = (theirs.centers[:, None] - theirs.centers[None]) / theirs.lengthscales
        G = torch.exp(-0.5 * (d**2).sum(-1)) + 1e-4 * torch.eye(6, dtype=F64)
        ours.targets.copy_(G @ theirs.weights)
    torch.testing.assert_close(ours.beta().mT, theirs.weights.detach())
    mean, cov = random_gaussian(3, seed=10, scale=0.4, batch=(4,))
    M, S, V = ours.moments(mean, cov)
    Mt, St, Vt = theirs(mean, cov)
    torch.testing.assert_close(M, Mt)
    torch.testing.assert_close(S + 1e-6 * torch.eye(2, dtype=F64), St)
    torch.testing.assert_close(V, Vt)


# ---------------------------------------------------------------- TensorDict interface
def test_tensordict_forward_writes_true_cross_covariance():
    ctrl = FACTORIES["rbf-angles-squash"]()
    mean, cov = random_gaussian(4, seed=11, scale=0.2, batch=(2, 3))
    td = TensorDict({("observation", "mean"): mean, ("observation", "var"): cov}, [2, 3])
    out = ctrl(td)
    M, S, V = ctrl.moments(mean, cov)
    torch.testing.assert_close(out["action", "mean"], M)
    torch.testing.assert_close(out["action", "var"], S)
    torch.testing.assert_close(out["action", "cross_covariance"], cov @ V)
    assert ctrl.in_keys == [("observation", "mean"), ("observation", "var")]
    assert ctrl.out_keys == [("action", "mean"), ("action", "var"), ("action", "cross_covariance")]
    custom = LinearController(4, 2, in_keys=["m", "S"], out_keys=["a", "Sa", "C"])
    out = custom(TensorDict(m=mean, S=cov, batch_size=[2, 3]))
    assert out["C"].shape == (2, 3, 4, 2)


def test_point_policy_casts_dtypes_and_keeps_gradients():
    ctrl = FACTORIES["rbf-angles-squash"]()
    obs = torch.randn(5, 4)
    td = PointPolicy(ctrl)(TensorDict(observation=obs, batch_size=[5]))
    assert td["action"].dtype == torch.float32 and td["action"].shape == (5, 2)
    torch.testing.assert_close(td["action"], ctrl.act(obs.double()).float())
    assert bool((td["action"].abs() <= U_MAX.float()).all())
    td["action"].sum().backward()
    assert ctrl.controller.targets.grad is not None
    pol = ctrl.as_policy(action_dtype=F64, in_key="obs", out_key="u")
    out = pol(TensorDict(obs=obs, batch_size=[5]))
    assert out["u"].dtype == F64 and pol.in_keys == ["obs"] and pol.out_keys == ["u"]


def test_state_dict_round_trip():
    src = FACTORIES["rbf-angles-squash"]()
    dst = SquashedController(make_rbf(4, 2, [0, 3], seed=99), torch.ones(2, dtype=F64))
    dst.load_state_dict(src.state_dict())
    mean, cov = random_gaussian(4, seed=12, scale=0.2)
    for a, b in zip(src.moments(mean, cov), dst.moments(mean, cov)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


# ---------------------------------------------------------------- errors
def test_errors():
    ctrl = make_rbf(3, 1, [2])
    mean, cov = random_gaussian(3, seed=13)
    with pytest.raises(ValueError, match="last dimension"):
        ctrl.moments(mean[:2], cov[:2, :2])
    with pytest.raises(ValueError, match="shape"):
        ctrl.moments(mean, cov[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        ctrl.moments(mean * float("nan"), cov)
    with pytest.raises(ValueError, match="positive semi-definite"):
        ctrl.moments(mean, cov - 5 * torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="dtype"):
        ctrl.moments(mean.float(), cov.float())
    with pytest.raises(ValueError, match="shape"):
        ctrl.act(torch.zeros(2, 4, dtype=F64))
    with pytest.raises(ValueError, match="NaN"):
        ctrl.act(torch.full((3,), float("inf"), dtype=F64))
    with pytest.raises(ValueError, match="out of range"):
        LinearController(3, 1, angle_dims=[3])
    with pytest.raises(ValueError, match="repeated"):
        LinearController(3, 1, angle_dims=[2, -1])
    with pytest.raises(ValueError, match="positive"):
        SquashedController(ctrl, torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="u_max"):
        SquashedController(ctrl, torch.ones(3))
    with pytest.raises(ValueError, match="num_basis"):
        RBFController(3, 1, 0)


def test_validate_false_still_checks_shapes_and_dtypes():
    ctrl = LinearController(3, 1, validate=False)
    mean, cov = random_gaussian(3, seed=14)
    ctrl.moments(mean, cov - 5 * torch.eye(3, dtype=F64))  # PSD not checked
    with pytest.raises(ValueError, match="last dimension"):
        ctrl.moments(mean[:2], cov[:2, :2])
    with pytest.raises(ValueError, match="dtype"):
        ctrl.moments(mean, cov.float())


@pytest.mark.gpu
def test_cuda_matches_cpu():
    ctrl = FACTORIES["rbf-angles-squash"]()
    mean, cov = random_gaussian(4, seed=15, scale=0.2, batch=(3,))
    expect = ctrl.moments(mean, cov)
    ctrl.cuda()
    got = ctrl.moments(mean.cuda(), cov.cuda())
    for a, b in zip(got, expect):
        assert a.is_cuda
        torch.testing.assert_close(a.cpu(), b)
    td = PointPolicy(ctrl)(TensorDict(observation=mean.float().cuda(), batch_size=[3]))
    assert td["action"].is_cuda and td["action"].dtype == torch.float32
    ctrl.controller.reset_parameters(mean[0].cuda(), cov[0].cuda())
    assert ctrl.controller.inputs.is_cuda
