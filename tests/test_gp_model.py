"""GPWorldModel: fitting, point predictions, belief propagation vs Monte Carlo, gradients, I/O."""

from __future__ import annotations

import math

import gpytorch
import pytest
import torch
from tensordict import TensorDict

from wmrl.gp.model import GPWorldModel
from wmrl.gp.moment_matching import gp_predict
from wmrl.protocol import WorldModel

torch.set_num_threads(1)

F64 = torch.float64


def pendulum_data(n: int, seed: int = 0, batch: tuple[int, ...] = ()) -> TensorDict:
    """Transitions of a damped pendulum-on-a-cart-like system: x = [p, v, θ], u scalar.

    θ (dim 2) is an angle that is not wrapped; Δ depends on sin θ / cos θ.
    """
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, n) if batch else (n,)
    x = torch.randn(*shape, 3, dtype=F64, generator=g) * torch.tensor([0.5, 1.0, 1.5], dtype=F64)
    u = torch.rand(*shape, 1, dtype=F64, generator=g) * 4 - 2
    p, v, th = x.unbind(-1)
    dt = 0.1
    dv = dt * (-0.5 * v + 2.0 * torch.sin(th) + u[..., 0])
    dth = dt * v + 0.05 * torch.cos(th)
    dp = dt * v
    delta = torch.stack([dp, dv, dth], -1) + 1e-3 * torch.randn(*shape, 3, dtype=F64, generator=g)
    return TensorDict({"observation": x, "action": u, ("next", "observation"): x + delta},
                      batch_size=shape)


@pytest.fixture(scope="module")
def angle_model() -> GPWorldModel:
    return GPWorldModel(3, 1, angle_dims=(2,), restarts=2, seed=0).fit(pendulum_data(80))


@pytest.fixture(scope="module")
def plain_model() -> GPWorldModel:
    return GPWorldModel(3, 1, restarts=2, seed=0).fit(pendulum_data(60, seed=1))


def belief(seed: int = 0, batch: tuple[int, ...] = (), scale: float = 1.0):
    """A joint Gaussian state-action belief: u = a + K x + noise (exactly jointly Gaussian)."""
    g = torch.Generator().manual_seed(seed)
    m = torch.tensor([0.1, -0.3, 0.6], dtype=F64) + 0.1 * torch.randn(*batch, 3, dtype=F64,
                                                                        generator=g)
    A = 0.2 * scale * torch.randn(*batch, 3, 3, dtype=F64, generator=g)
    S = A @ A.transpose(-1, -2) + 0.01 * scale**2 * torch.eye(3, dtype=F64)
    K = torch.tensor([[0.5, -1.0, 0.8]], dtype=F64)  # [F, D]
    mu = 0.2 + m @ K.T  # [*B, 1]
    Su = K @ S @ K.T + 0.05 * scale**2  # [*B, 1, 1]
    Cxu = S @ K.T  # cov[x, u]  [*B, 3, 1]
    return m, S, mu, Su, Cxu


def as_td(m, S, mu, Su, Cxu) -> TensorDict:
    return TensorDict({"observation": {"mean": m, "var": S},
                       "action": {"mean": mu, "var": Su, "cross_covariance": Cxu}},
                      batch_size=m.shape[:-1])


# ---------------------------------------------------------------------- point predictions
class _RefGP(gpytorch.models.ExactGP):
    def __init__(self, X, Y, model: GPWorldModel):
        E, Din = model.lengthscales.shape
        b = torch.Size([E])
        lik = gpytorch.likelihoods.GaussianLikelihood(
            batch_shape=b, noise_constraint=gpytorch.constraints.GreaterThan(1e-14))
        super().__init__(X.expand(E, *X.shape), Y.T.contiguous(), lik)
        self.mean_module = gpytorch.means.ZeroMean(batch_shape=b)
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.RBFKernel(ard_num_dims=Din, batch_shape=b), batch_shape=b)
        self.double()
        self.covar_module.base_kernel.lengthscale = model.lengthscales[:, None, :]
        self.covar_module.outputscale = model.signal_var
        self.likelihood.noise = model.noise_var[:, None]

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def test_point_predictions_equal_gpytorch_exact_posterior(angle_model):
    data = pendulum_data(80)
    x, u = data["observation"], data["action"]
    X = torch.cat([x[:, :2], torch.sin(x[:, 2:]), torch.cos(x[:, 2:]), u], -1)  # x̃
    Y = data["next", "observation"] - x
    ref = _RefGP(X, Y, angle_model).eval()
    test = pendulum_data(25, seed=4)
    xs, us = test["observation"], test["action"]
    Xs = torch.cat([xs[:, :2], torch.sin(xs[:, 2:]), torch.cos(xs[:, 2:]), us], -1)
    with gpytorch.settings.max_cholesky_size(10**5), \
            gpytorch.settings.fast_computations(False, False, False), torch.no_grad():
        post = ref(Xs.expand(3, *Xs.shape))
    mean, var = angle_model.predict(xs, us)
    torch.testing.assert_close(mean - xs, post.mean.T, rtol=0, atol=1e-8)
    torch.testing.assert_close(var, post.variance.T, rtol=0, atol=1e-8)
    assert angle_model.fit_result is not None and not angle_model.is_sparse


def test_fit_flattens_batch_dimensions():
    flat = GPWorldModel(3, 1, restarts=1, seed=0).fit(pendulum_data(40, seed=3))
    data = pendulum_data(40, seed=3)
    nested = GPWorldModel(3, 1, restarts=1, seed=0).fit(data.reshape(4, 10))
    for name in ("inputs", "beta", "lengthscales", "signal_var", "noise_var"):
        torch.testing.assert_close(getattr(nested, name), getattr(flat, name), rtol=0, atol=0)


def test_predict_is_differentiable(plain_model):
    x = torch.tensor([[0.1, 0.2, 0.3]], dtype=F64, requires_grad=True)
    u = torch.tensor([[0.5]], dtype=F64, requires_grad=True)
    mean, var = plain_model.predict(x, u)
    (mean.sum() + var.sum()).backward()
    assert x.grad is not None and u.grad is not None
    assert float(u.grad.abs().sum()) > 0


# ---------------------------------------------------------------------- state dict
@pytest.mark.parametrize("sparse", [False, True])
def test_state_dict_round_trip_into_fresh_instance(sparse):
    kw = dict(angle_dims=(2,), restarts=1, seed=0)
    if sparse:
        kw.update(sparse_threshold=50, num_inducing=15, inducing_iter=3)
    model = GPWorldModel(3, 1, **kw).fit(pendulum_data(70))
    assert model.is_sparse == sparse
    n = 15 if sparse else 70
    assert model.inputs.shape == (3, n, 5) and model.inv_gram.shape == (3, n, n)
    fresh = GPWorldModel(3, 1, angle_dims=(2,))
    assert not fresh.fitted
    fresh.load_state_dict(model.state_dict())
    assert fresh.fitted
    x, u = pendulum_data(5, seed=9)["observation"], pendulum_data(5, seed=9)["action"]
    for a, b in zip(model.predict(x, u), fresh.predict(x, u)):
        assert torch.equal(a, b)
    td = as_td(*belief(batch=(2,)))
    out1, out2 = model(td.clone()), fresh(td.clone())
    assert torch.equal(out1["next", "observation", "var"], out2["next", "observation", "var"])
    assert torch.equal(out1["next", "observation", "mean"], out2["next", "observation", "mean"])


# ---------------------------------------------------------------------- belief propagation
def sample_gp(model: GPWorldModel, xt: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One draw of the latent f at each GP input ``[N, Din]``: mean + latent std · ε."""
    mean, var = gp_predict(xt, model.inputs, model.beta, model.lengthscales, model.signal_var,
                           model.inv_gram)
    return mean + var.clamp_min(0).sqrt() * torch.randn(mean.shape, dtype=F64, generator=g)


def mc_next_state(model: GPWorldModel, m, S, mu, Su, Cxu, n_samples: int, seed: int):
    """Sample (x, u) jointly, x̃ = features, f ~ GP posterior (mean + latent std · ε), x' = x + f.

    Returns sample mean, covariance and their standard errors (from the samples).
    """
    g = torch.Generator().manual_seed(seed)
    joint_m = torch.cat([m, mu])
    joint_S = torch.cat([torch.cat([S, Cxu], 1), torch.cat([Cxu.T, Su], 1)], 0)
    L = torch.linalg.cholesky(joint_S)
    xs = []
    for _ in range(n_samples // 5_000):
        xu = joint_m + torch.randn(5_000, 4, dtype=F64, generator=g) @ L.T
        x, u = xu[:, :3], xu[:, 3:]
        f = sample_gp(model, model.gp_inputs(x, u), g)
        xs.append(x + f)
    x_next = torch.cat(xs)
    N = x_next.shape[0]
    mean = x_next.mean(0)
    d = x_next - mean
    prods = d[:, :, None] * d[:, None, :]  # [N, D, D]
    cov = prods.mean(0) * N / (N - 1)
    return mean, cov, d.std(0) / math.sqrt(N), prods.std(0) / math.sqrt(N)


@pytest.mark.parametrize("which", ["plain", "angle"])
def test_forward_matches_monte_carlo(which, plain_model, angle_model):
    model = plain_model if which == "plain" else angle_model
    m, S, mu, Su, Cxu = belief(seed=1, scale=1.0)
    out = model(as_td(m, S, mu, Su, Cxu))
    mean, cov = out["next", "observation", "mean"], out["next", "observation", "var"]
    mc_mean, mc_cov, se_mean, se_cov = mc_next_state(model, m, S, mu, Su, Cxu, 200_000, seed=2)
    assert bool(((mean - mc_mean).abs() <= 5 * se_mean).all()), (mean - mc_mean) / se_mean
    assert bool(((cov - mc_cov).abs() <= 5 * se_cov).all()), (cov - mc_cov) / se_cov
    assert torch.equal(cov, cov.T)
    assert float(torch.linalg.eigvalsh(cov).min()) > 0


def test_moment_match_on_gp_inputs_matches_monte_carlo(plain_model):
    m, S, mu, Su, Cxu = belief(seed=3)
    mean = torch.cat([m, mu])
    cov = torch.cat([torch.cat([S, Cxu], 1), torch.cat([Cxu.T, Su], 1)], 0)
    M, SD, C = plain_model.moment_match(mean, cov)
    g = torch.Generator().manual_seed(0)
    L = torch.linalg.cholesky(cov)
    xt = mean + torch.randn(200_000, 4, dtype=F64, generator=g) @ L.T
    f = torch.cat([sample_gp(plain_model, chunk, g) for chunk in xt.split(5_000)])
    N = f.shape[0]
    df, dx = f - f.mean(0), xt - xt.mean(0)
    cross = dx[:, :, None] * df[:, None, :]  # [N, 4, 3]
    assert bool(((M - f.mean(0)).abs() <= 5 * df.std(0) / math.sqrt(N)).all())
    prods = df[:, :, None] * df[:, None, :]
    assert bool(((SD - prods.mean(0)).abs() <= 5 * prods.std(0) / math.sqrt(N) + 1e-12).all())
    assert bool(((C - cross.mean(0)).abs() <= 5 * cross.std(0) / math.sqrt(N)).all())


def test_zero_covariance_equals_point_prediction_with_gradients(angle_model):
    m, _, mu, _, _ = belief(seed=4, batch=(3,))
    m = m.clone().requires_grad_(True)
    mu = mu.clone().requires_grad_(True)
    zeros = dict(S=torch.zeros(3, 3, 3, dtype=F64), Su=torch.zeros(3, 1, 1, dtype=F64),
                 Cxu=torch.zeros(3, 3, 1, dtype=F64))
    mean, cov = angle_model.propagate(m, zeros["S"], mu, zeros["Su"], zeros["Cxu"])
    p_mean, p_var = angle_model.predict(m, mu)
    # two evaluation orders of α² - kᵀ iK k: equal to rounding at the scale of α²
    tol = 1e-9 * float(angle_model.signal_var.max())
    torch.testing.assert_close(mean, p_mean, rtol=0, atol=tol)
    torch.testing.assert_close(cov, torch.diag_embed(p_var), rtol=0, atol=tol)
    gm, gu = torch.autograd.grad(mean.sum() + cov.diagonal(dim1=-2, dim2=-1).sum(), (m, mu))
    pm, pu = torch.autograd.grad(p_mean.sum() + p_var.sum(), (m, mu))
    torch.testing.assert_close(gm, pm, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(gu, pu, rtol=1e-8, atol=1e-10)
    assert float(gu.abs().min()) > 0


def test_forward_gradcheck():
    model = GPWorldModel(2, 1, angle_dims=(1,), restarts=1, max_iter=20, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 2, dtype=F64, generator=g)
    u = torch.randn(10, 1, dtype=F64, generator=g)
    xn = x + 0.1 * torch.stack([torch.sin(x[:, 1]) + u[:, 0], x[:, 0]], -1)
    model.fit(TensorDict({"observation": x, "action": u, ("next", "observation"): xn}, [10]))
    m0 = torch.tensor([[0.2, 0.4]], dtype=F64, requires_grad=True)
    mu0 = torch.tensor([[0.1]], dtype=F64, requires_grad=True)
    A0 = (0.3 * torch.eye(3, dtype=F64) + 0.05 * torch.randn(3, 3, dtype=F64, generator=g)
          ).tril()[None].requires_grad_(True)

    def step(m, mu, A):
        J = A @ A.transpose(-1, -2)  # joint state-action covariance
        td = as_td(m, J[:, :2, :2], mu, J[:, 2:, 2:], J[:, :2, 2:])
        out = model(td)
        return out["next", "observation", "mean"], out["next", "observation", "var"]

    assert torch.autograd.gradcheck(step, (m0, mu0, A0))


def test_propagate_noise_adds_noise_variance(plain_model):
    m, S, mu, Su, Cxu = belief(seed=5)
    _, cov = plain_model.propagate(m, S, mu, Su, Cxu)
    noisy = GPWorldModel(3, 1, propagate_noise=True)
    noisy.load_state_dict(plain_model.state_dict())
    _, cov_n = noisy.propagate(m, S, mu, Su, Cxu)
    torch.testing.assert_close(cov_n - cov, torch.diag(plain_model.noise_var), rtol=0,
                               atol=1e-14)
    _, var = plain_model.predict(m, mu)
    _, var_n = noisy.predict(m, mu)
    torch.testing.assert_close(var_n - var, plain_model.noise_var, rtol=0, atol=1e-14)


def test_batched_forward_equals_single(angle_model):
    m, S, mu, Su, Cxu = belief(seed=6, batch=(2, 3))
    out = angle_model(as_td(m, S, mu, Su, Cxu))
    one = angle_model(as_td(m[1, 2], S[1, 2], mu[1, 2], Su[1, 2], Cxu[1, 2]))
    torch.testing.assert_close(out["next", "observation", "mean"][1, 2],
                               one["next", "observation", "mean"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["next", "observation", "var"][1, 2],
                               one["next", "observation", "var"], rtol=1e-12, atol=1e-12)


def test_step_matches_torchrl_on_the_same_gp(plain_model):
    """TorchRL's moment matching (its own implementation of D&R 2011, Eqs. 10-23) given our GP.

    TorchRL reads ``("action", "cross_covariance")`` as ``S⁻¹ cov[x, u]``, adds the noise variance
    and 1e-8 to the diagonal: convert, and compare with ``propagate_noise=True``.
    """
    from torchrl.modules.models.gp import GPWorldModel as TorchRLGPWorldModel

    ref = TorchRLGPWorldModel(3, 1).to(F64)
    ref.X_tilde_train = plain_model.inputs[0].clone()
    ref.ell = plain_model.lengthscales.clone()
    ref.alpha_sq = plain_model.signal_var[:, None].clone()
    ref.sigma_sq_eps = plain_model.noise_var.clone()
    ref._cached_inv_K_noisy = plain_model.inv_gram.clone()
    ref._cached_beta = plain_model.beta.clone()
    noisy = GPWorldModel(3, 1, propagate_noise=True)
    noisy.load_state_dict(plain_model.state_dict())
    m, S, mu, Su, Cxu = belief(seed=7, batch=(2,))
    ours = noisy(as_td(m, S, mu, Su, Cxu))
    theirs = ref.uncertain_forward(as_td(m, S, mu, Su, torch.linalg.solve(S, Cxu)))
    torch.testing.assert_close(ours["next", "observation", "mean"],
                               theirs["next", "observation", "mean"], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(ours["next", "observation", "var"] + 1e-8 * torch.eye(3, dtype=F64),
                               theirs["next", "observation", "var"], rtol=1e-8, atol=1e-10)


def test_imagined_rollout_backpropagates_into_the_policy(angle_model):
    from wmrl.control.linear import LinearController
    from wmrl.envs.model_based import ImaginedEnv

    env = ImaginedEnv(angle_model, obs_dim=3, action_dim=1, dtype=F64)
    policy = LinearController(3, 1, angle_dims=(2,), init_std=0.3,
                              generator=torch.Generator().manual_seed(0))
    start = angle_model.initial_state(TensorDict({"observation": torch.tensor([[0.1, 0.2, 0.3]])},
                                                 [1]), 0.01 * torch.eye(3, dtype=F64))
    traj = env.rollout(8, policy, tensordict=start, auto_reset=False)
    var = traj["next", "observation", "var"]
    assert var.shape == (1, 8, 3, 3)
    assert float(torch.linalg.eigvalsh(var.detach()).min()) > 0
    var.diagonal(dim1=-2, dim2=-1).sum().backward()
    grads = [p.grad for p in policy.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


# ---------------------------------------------------------------------- sparse
def test_sparse_fit_approximates_exact_fit():
    data = pendulum_data(300, seed=7)
    exact = GPWorldModel(3, 1, sparse_threshold=None, restarts=1, seed=0).fit(data)
    sparse = GPWorldModel(3, 1, sparse_threshold=150, num_inducing=40, inducing_iter=15,
                          restarts=1, seed=0).fit(data)
    assert sparse.is_sparse and sparse.inputs.shape == (3, 40, 4)
    test = pendulum_data(200, seed=8)
    xs, us = test["observation"], test["action"]
    m_exact, _ = exact.predict(xs, us)
    m_sparse, v_sparse = sparse.predict(xs, us)
    delta = test["next", "observation"] - xs
    rel = (m_sparse - m_exact).pow(2).mean(0).sqrt() / delta.std(0)
    assert bool((rel < 0.05).all()), rel
    assert bool((v_sparse > -1e-9).all())
    # and its belief propagation runs through the same moment matching
    out = sparse(as_td(*belief(seed=1)))
    assert bool(torch.isfinite(out["next", "observation", "var"]).all())


# ---------------------------------------------------------------------- protocol, state, keys
def test_protocol_and_initial_state(plain_model):
    assert isinstance(plain_model, WorldModel)
    assert plain_model.state_keys == (("observation", "mean"), ("observation", "var"))
    assert plain_model.action_keys == (("action", "mean"), ("action", "var"),
                                       ("action", "cross_covariance"))
    assert plain_model.predicts_reward is False
    obs = torch.randn(4, 3)  # float32 from a real environment
    st = plain_model.initial_state(TensorDict({"observation": obs}, [4]))
    assert st["observation", "mean"].dtype == F64 and torch.equal(
        st["observation", "var"], torch.zeros(4, 3, 3, dtype=F64))
    cov = 0.01 * torch.eye(3, dtype=F64)
    st = plain_model.initial_state(TensorDict({"observation": obs}, [4]), cov)
    assert torch.equal(st["observation", "var"], cov.expand(4, 3, 3))
    passed = plain_model.initial_state(as_td(*belief(batch=(2,))))
    assert torch.equal(passed["observation", "mean"], belief(batch=(2,))[0])


def test_custom_keys(plain_model):
    model = GPWorldModel(3, 1, in_keys=["um", "uv", "uc", "xm", "xv"], out_keys=["nm", "nv"])
    model.load_state_dict(plain_model.state_dict())
    m, S, mu, Su, Cxu = belief(seed=2)
    td = TensorDict({"um": mu, "uv": Su, "uc": Cxu, "xm": m, "xv": S}, [])
    out = model(td)
    ref = plain_model.propagate(m, S, mu, Su, Cxu)
    assert torch.equal(out["nm"], ref[0]) and torch.equal(out["nv"], ref[1])


# ---------------------------------------------------------------------- errors
def test_errors(plain_model):
    td = as_td(*belief())
    with pytest.raises(RuntimeError, match="not fitted"):
        GPWorldModel(3, 1)(td.clone())
    with pytest.raises(RuntimeError, match="not fitted"):
        GPWorldModel(3, 1).predict(torch.zeros(3, dtype=F64), torch.zeros(1, dtype=F64))
    m, S, mu, Su, Cxu = belief()
    with pytest.raises(ValueError, match="dimension 2, expected 3"):
        plain_model.propagate(m[:2], S[:2, :2], mu, Su, Cxu)
    with pytest.raises(ValueError, match="cross covariance"):
        plain_model.propagate(m, S, mu, Su, Cxu[:2])
    with pytest.raises(ValueError, match="NaN"):
        plain_model.propagate(m * math.nan, S, mu, Su, Cxu)
    with pytest.raises(ValueError, match="positive semi-definite"):
        plain_model.propagate(m, S - torch.eye(3, dtype=F64), mu, Su, Cxu)
    with pytest.raises(ValueError, match="positive semi-definite"):  # joint not PSD
        plain_model.propagate(m, S, mu, Su, 10 * Cxu + 1.0)
    with pytest.raises(ValueError, match="dtype"):
        plain_model.propagate(m.float(), S.float(), mu.float(), Su.float(), Cxu.float())
    with pytest.raises(ValueError, match="dtype"):
        plain_model.predict(m.float(), mu.float())
    with pytest.raises(ValueError, match="expected, got"):
        plain_model.predict(m, torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match="angle_dims"):
        GPWorldModel(3, 1, angle_dims=(3,))
    model = GPWorldModel(3, 1, restarts=1)
    data = pendulum_data(10)
    with pytest.raises(ValueError, match="at least two"):
        model.fit(data[:1])
    bad = data.clone()
    bad["observation"][3, 1] = math.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        model.fit(bad)
    with pytest.raises(ValueError, match="shape"):
        model.fit(TensorDict({"observation": data["observation"], "action": data["observation"],
                              ("next", "observation"): data["next", "observation"]}, [10]))
    with pytest.raises(ValueError, match="needs a tensor"):
        model.fit(data.exclude("action"))
    with pytest.raises(ValueError, match="dtype"):
        model.fit(TensorDict({"observation": data["observation"].float(),
                              "action": data["action"],
                              ("next", "observation"): data["next", "observation"]}, [10]))
    with pytest.raises(TypeError, match="unexpected"):
        model.fit(data, bogus=1)


@pytest.mark.gpu
def test_cuda_matches_cpu(plain_model):
    model = GPWorldModel(3, 1, device="cuda")
    model.load_state_dict(plain_model.state_dict())
    m, S, mu, Su, Cxu = belief(seed=3, batch=(4,))
    cpu = plain_model.propagate(m, S, mu, Su, Cxu)
    gpu = model.propagate(*(t.cuda() for t in (m, S, mu, Su, Cxu)))
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-9, atol=1e-11)
    fitted = GPWorldModel(3, 1, device="cuda", restarts=1, seed=0).fit(pendulum_data(40))
    assert fitted.inputs.is_cuda
    with pytest.raises(ValueError, match="cuda|device"):
        model.propagate(m, S, mu, Su, Cxu)
