"""GP hyper-parameter fitting (exact marginal likelihood, curbs, restarts) and FITC sparse GPs."""

from __future__ import annotations

import math

import gpytorch
import pytest
import torch

from wmrl import settings
from wmrl.gp.fit import (
    GPHyperparameters,
    curb_penalty,
    exact_log_likelihood,
    fit_hyperparameters,
    posterior_weights,
    robust_cholesky,
    se_ard_kernel,
)
from wmrl.gp.moment_matching import gp_predict
from wmrl.gp.sparse import fit_inducing_inputs, fitc_log_likelihood, fitc_posterior

torch.set_num_threads(1)

F64 = torch.float64


def smooth_data(n: int, seed: int = 0, noise: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [n, 3] and two smooth targets [n, 2] of different scales."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, dtype=F64, generator=g) * torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    f1 = torch.sin(1.5 * X[:, 0]) + 0.3 * X[:, 1]
    f2 = 0.1 * torch.cos(X[:, 2]) * X[:, 0]
    Y = torch.stack([f1, f2], 1) + noise * torch.randn(n, 2, dtype=F64, generator=g) * \
        torch.tensor([1.0, 0.1], dtype=F64)
    return X, Y


def random_hyp(E: int, Din: int, seed: int = 1) -> GPHyperparameters:
    g = torch.Generator().manual_seed(seed)
    return GPHyperparameters(
        0.5 + torch.rand(E, Din, dtype=F64, generator=g),
        0.5 + torch.rand(E, dtype=F64, generator=g),
        0.01 + 0.05 * torch.rand(E, dtype=F64, generator=g),
    )


class BatchExactGP(gpytorch.models.ExactGP):
    """The reference model: zero mean, batched SE-ARD kernel, Gaussian likelihood."""

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, hyp: GPHyperparameters) -> None:
        E, Din = hyp.lengthscales.shape
        batch = torch.Size([E])
        lik = gpytorch.likelihoods.GaussianLikelihood(
            batch_shape=batch, noise_constraint=gpytorch.constraints.GreaterThan(1e-12)
        )
        super().__init__(X.expand(E, *X.shape), Y.T.contiguous(), lik)
        self.mean_module = gpytorch.means.ZeroMean(batch_shape=batch)
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.RBFKernel(ard_num_dims=Din, batch_shape=batch), batch_shape=batch
        )
        self.double()
        self.covar_module.base_kernel.lengthscale = hyp.lengthscales[:, None, :]
        self.covar_module.outputscale = hyp.signal_var
        self.likelihood.noise = hyp.noise_var[:, None]

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def exact_settings():
    return gpytorch.settings.max_cholesky_size(10**5), gpytorch.settings.fast_computations(
        False, False, False
    )


# ---------------------------------------------------------------------- exact likelihood
def test_log_likelihood_matches_gpytorch():
    X, Y = smooth_data(40)
    hyp = random_hyp(2, 3)
    model = BatchExactGP(X, Y, hyp)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    a, b = exact_settings()
    with a, b:
        ref = mll(model(*model.train_inputs), model.train_targets) * X.shape[0]  # [E]
    ours = exact_log_likelihood(X, Y, hyp.lengthscales, hyp.signal_var, hyp.noise_var)
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-10, atol=1e-8)


def test_log_likelihood_hand_computed_single_point():
    # n = 1: log N(y | 0, α² + σ²)
    X = torch.zeros(1, 2, dtype=F64)
    Y = torch.tensor([[0.7]], dtype=F64)
    ll = exact_log_likelihood(X, Y, torch.ones(1, 2, dtype=F64), torch.tensor([2.0], dtype=F64),
                              torch.tensor([0.5], dtype=F64))
    expected = -0.5 * (0.49 / 2.5 + math.log(2.5) + math.log(2 * math.pi))
    assert abs(ll.item() - expected) < 1e-14


def test_log_likelihood_gradcheck():
    X, Y = smooth_data(12)
    hyp = random_hyp(2, 3)
    ell = hyp.lengthscales.clone().requires_grad_(True)
    sf2 = hyp.signal_var.clone().requires_grad_(True)
    sn2 = hyp.noise_var.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, c: exact_log_likelihood(X, Y, a, b, c),
                                    (ell, sf2, sn2))
    # batched over restarts [P, E]
    ell2 = (hyp.lengthscales * torch.tensor([[[1.0]], [[1.3]]], dtype=F64)).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a: exact_log_likelihood(X, Y, a, hyp.signal_var, hyp.noise_var), (ell2,)
    )


def test_posterior_weights_match_gpytorch_predictions():
    X, Y = smooth_data(40)
    hyp = random_hyp(2, 3)
    beta, inv_gram = posterior_weights(X, Y, hyp)
    Xs = smooth_data(15, seed=5)[0]
    mean, var = gp_predict(Xs, X.expand(2, *X.shape), beta, hyp.lengthscales, hyp.signal_var,
                           inv_gram)
    model = BatchExactGP(X, Y, hyp)
    model.eval()
    a, b = exact_settings()
    with a, b, torch.no_grad():
        post = model(Xs.expand(2, *Xs.shape))
    torch.testing.assert_close(mean, post.mean.T, rtol=0, atol=1e-8)
    torch.testing.assert_close(var, post.variance.T, rtol=0, atol=1e-8)


def test_kernel_hand_computed():
    x1 = torch.tensor([[0.0, 0.0]], dtype=F64)
    x2 = torch.tensor([[1.0, 2.0]], dtype=F64)
    K = se_ard_kernel(x1, x2, torch.tensor([1.0, 2.0], dtype=F64), torch.tensor(3.0, dtype=F64))
    assert abs(K.item() - 3.0 * math.exp(-0.5 * (1.0 + 1.0))) < 1e-15


def test_robust_cholesky():
    A = torch.tensor([[4.0, 2.0], [2.0, 3.0]], dtype=F64)
    torch.testing.assert_close(robust_cholesky(A), torch.linalg.cholesky(A), rtol=0, atol=0)
    singular = torch.ones(2, 3, 3, dtype=F64)  # rank one
    batch = torch.stack([torch.eye(3, dtype=F64), singular[0]])
    L = robust_cholesky(batch)
    assert torch.equal(L[0], torch.eye(3, dtype=F64))  # the good one untouched
    assert (L[1] @ L[1].T - singular[0]).abs().max() < 1e-6
    with pytest.raises(ValueError, match="not positive definite"):
        robust_cholesky(-torch.eye(2, dtype=F64))


# ---------------------------------------------------------------------- fitting
def test_fit_improves_on_init_and_keeps_best_restart():
    X, Y = smooth_data(80)
    res = fit_hyperparameters(X, Y, restarts=4, generator=torch.Generator().manual_seed(0))
    h = res.hyperparameters
    # recorded likelihood is that of the returned hyper-parameters
    ll = exact_log_likelihood(X, Y, h.lengthscales, h.signal_var, h.noise_var)
    torch.testing.assert_close(res.log_likelihood, ll, rtol=1e-10, atol=1e-8)
    pen = curb_penalty(h.lengthscales, h.signal_var, h.noise_var, X.std(0, correction=0))
    torch.testing.assert_close(res.objective, ll - 80 * pen, rtol=1e-10, atol=1e-8)
    # never worse than any restart
    assert res.restart_objective.shape == (4, 2)
    assert bool((res.objective >= res.restart_objective.max(0).values - 1e-9).all())
    # a local maximum: small moves in log-space do not improve the objective
    for k in range(5):
        g = torch.Generator().manual_seed(k)
        moved = [t * torch.exp(1e-2 * torch.randn(t.shape, dtype=F64, generator=g))
                 for t in (h.lengthscales, h.signal_var, h.noise_var)]
        ll2 = exact_log_likelihood(X, Y, *moved)
        obj2 = ll2 - 80 * curb_penalty(*moved, X.std(0, correction=0))
        assert bool((obj2 <= res.objective + 1e-6).all())
    # far better than the data-driven initialisation
    init = GPHyperparameters(X.std(0).expand(2, 3), Y.pow(2).mean(0), 0.01 * Y.pow(2).mean(0))
    ll0 = exact_log_likelihood(X, Y, init.lengthscales, init.signal_var, init.noise_var)
    assert bool((res.log_likelihood > ll0 + 10).all())


def test_restarts_on_subset_then_full_data():
    X, Y = smooth_data(120)
    res = fit_hyperparameters(X, Y, restarts=3, restart_subset=40,
                              generator=torch.Generator().manual_seed(0))
    assert bool((res.objective >= res.restart_objective.max(0).values - 1e-9).all())


def test_init_is_one_more_start():
    X, Y = smooth_data(60)
    first = fit_hyperparameters(X, Y, restarts=2, generator=torch.Generator().manual_seed(0))
    again = fit_hyperparameters(X, Y, restarts=1, init=first.hyperparameters, max_iter=3)
    assert again.restart_objective.shape == (2, 2)
    assert bool((again.objective >= first.objective - 1e-6).all())


def test_standardisation_invariance():
    X, Y = smooth_data(60)
    a = torch.tensor([10.0, 0.01, 3.0], dtype=F64)
    b = torch.tensor([100.0, -5.0, 0.0], dtype=F64)
    c = torch.tensor([1e3, 1e-2], dtype=F64)
    r1 = fit_hyperparameters(X, Y, restarts=2, generator=torch.Generator().manual_seed(3))
    r2 = fit_hyperparameters(X * a + b, Y * c, restarts=2,
                             generator=torch.Generator().manual_seed(3))
    h1, h2 = r1.hyperparameters, r2.hyperparameters
    # the optimiser runs on identical standardised data up to rounding: equal up to the
    # optimiser's tolerance (flat directions at the optimum)
    torch.testing.assert_close(h2.lengthscales, h1.lengthscales * a, rtol=1e-4, atol=0)
    torch.testing.assert_close(h2.signal_var, h1.signal_var * c**2, rtol=1e-4, atol=0)
    torch.testing.assert_close(h2.noise_var, h1.noise_var * c**2, rtol=1e-4, atol=0)
    torch.testing.assert_close(r2.log_likelihood, r1.log_likelihood - 60 * torch.log(c),
                               rtol=1e-6, atol=1e-6)
    # predictions transform exactly
    Xs = smooth_data(10, seed=9)[0]
    p1 = gp_predict(Xs, X.expand(2, *X.shape), *_weights(X, Y, h1))
    p2 = gp_predict(Xs * a + b, (X * a + b).expand(2, *X.shape), *_weights(X * a + b, Y * c, h2))
    torch.testing.assert_close(p2[0], p1[0] * c, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(p2[1], p1[1] * c**2, rtol=1e-5, atol=1e-12)


def _weights(X, Y, h):
    beta, iK = posterior_weights(X, Y, h)
    return beta, h.lengthscales, h.signal_var, iK


def test_predictions_in_data_units_equal_the_standardised_gp():
    # the hyper-parameters are converted, not re-fitted: predicting with the standardised GP and
    # mapping back gives the same numbers
    X, Y = smooth_data(50)
    res = fit_hyperparameters(X, Y, restarts=1, generator=torch.Generator().manual_seed(0))
    h = res.hyperparameters
    loc, sx = X.mean(0), X.std(0, correction=0)
    sy = Y.pow(2).mean(0).sqrt()
    hs = GPHyperparameters(h.lengthscales / sx, h.signal_var / sy**2, h.noise_var / sy**2)
    Xs = smooth_data(10, seed=9)[0]
    Xn = (X - loc) / sx
    p = gp_predict(Xs, X.expand(2, *X.shape), *_weights(X, Y, h))
    ps = gp_predict((Xs - loc) / sx, Xn.expand(2, *X.shape), *_weights(Xn, Y / sy, hs))
    torch.testing.assert_close(p[0], ps[0] * sy, rtol=1e-9, atol=1e-12)
    # α² - kᵀK⁻¹k cancels: compare at the scale of the prior variance
    torch.testing.assert_close(p[1], ps[1] * sy**2, rtol=0, atol=1e-9 * float(h.signal_var.max()))


@pytest.mark.parametrize("value", [0.3, 0.0])
def test_curbs_on_constant_targets(value):
    X, _ = smooth_data(50)
    Y = torch.full((50, 2), value, dtype=F64)
    res = fit_hyperparameters(X, Y, restarts=2, ls_max=100.0, snr_max=500.0,
                              generator=torch.Generator().manual_seed(0))
    h = res.hyperparameters
    for t in (h.lengthscales, h.signal_var, h.noise_var, res.log_likelihood):
        assert bool(torch.isfinite(t).all())
    # the likelihood grows without bound as ℓ -> ∞ and σ -> 0; the curbs hold them at the box
    ratio = h.lengthscales / X.std(0, correction=0)
    assert bool((ratio < 100.0 * 1.1).all()) and bool((ratio > 1 / (100.0 * 1.1)).all())
    assert bool(((h.signal_var / h.noise_var).sqrt() < 500.0 * 1.1).all())
    # noise floor: std >= max(1e-4 rms(y), 1e-6)
    assert bool((h.noise_var.sqrt() >= max(1e-4 * value, 1e-6) * (1 - 1e-9)).all())


def test_noise_floor_on_noiseless_data():
    X, Y = smooth_data(40, noise=0.0)
    res = fit_hyperparameters(X, Y, restarts=1, snr_max=1e12,
                              generator=torch.Generator().manual_seed(0))
    floor = torch.clamp_min(1e-4 * Y.pow(2).mean(0).sqrt(), 1e-6)
    assert bool((res.hyperparameters.noise_var.sqrt() >= floor * (1 - 1e-9)).all())


def test_fit_errors():
    X, Y = smooth_data(10)
    with pytest.raises(ValueError, match="restarts"):
        fit_hyperparameters(X, Y, restarts=0)
    with pytest.raises(ValueError, match="do not fit"):
        exact_log_likelihood(X, Y, torch.ones(3, 3, dtype=F64), torch.ones(3, dtype=F64),
                             torch.ones(3, dtype=F64))


# ---------------------------------------------------------------------- FITC
def _dense_fitc(X, Y, Z, h, Xs):
    """Snelson & Ghahramani (2006), Eqs. 8-9, with dense matrices and generic solves."""
    n, m = X.shape[0], Z.shape[1]
    out_ll, out_mean, out_var = [], [], []
    for a in range(Y.shape[1]):
        ell, sf2, sn2 = h.lengthscales[a], h.signal_var[a], h.noise_var[a]
        Kmm = se_ard_kernel(Z[a], Z[a], ell, sf2) + settings.jitter() * sf2 * torch.eye(m,
                                                                                      dtype=F64)
        Kmn = se_ard_kernel(Z[a], X, ell, sf2)
        Qnn = Kmn.T @ torch.linalg.solve(Kmm, Kmn)
        lam = sf2 - torch.diagonal(Qnn) + sn2
        cov = Qnn + torch.diag(lam)
        out_ll.append(torch.distributions.MultivariateNormal(torch.zeros(n, dtype=F64),
                                                             cov).log_prob(Y[:, a]))
        Q = Kmm + Kmn @ torch.diag(1 / lam) @ Kmn.T
        Ksm = se_ard_kernel(Xs, Z[a], ell, sf2)
        out_mean.append(Ksm @ torch.linalg.solve(Q, Kmn @ (Y[:, a] / lam)))
        Qss = Ksm @ torch.linalg.solve(Kmm, Ksm.T)
        out_var.append(sf2 - torch.diagonal(Qss) + torch.diagonal(Ksm @ torch.linalg.solve(Q,
                                                                                        Ksm.T)))
    return torch.stack(out_ll), torch.stack(out_mean, -1), torch.stack(out_var, -1)


def test_fitc_matches_dense_formulas():
    X, Y = smooth_data(60)
    h = random_hyp(2, 3)
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(2, 12, 3, dtype=F64, generator=g)
    Xs = smooth_data(9, seed=7)[0]
    ll_ref, mean_ref, var_ref = _dense_fitc(X, Y, Z, h, Xs)
    torch.testing.assert_close(fitc_log_likelihood(X, Y, Z, h), ll_ref, rtol=1e-9, atol=1e-8)
    beta, iK = fitc_posterior(X, Y, Z, h)
    mean, var = gp_predict(Xs, Z, beta, h.lengthscales, h.signal_var, iK)
    torch.testing.assert_close(mean, mean_ref, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(var, var_ref, rtol=1e-7, atol=1e-9)


def test_fitc_with_inducing_at_training_inputs_is_the_full_gp():
    X, Y = smooth_data(25)
    h = random_hyp(2, 3)
    Z = X.expand(2, *X.shape)
    ll_full = exact_log_likelihood(X, Y, h.lengthscales, h.signal_var, h.noise_var)
    torch.testing.assert_close(fitc_log_likelihood(X, Y, Z, h), ll_full, rtol=1e-6, atol=1e-5)
    Xs = smooth_data(9, seed=7)[0]
    full = gp_predict(Xs, Z, *_weights(X, Y, h))
    beta, iK = fitc_posterior(X, Y, Z, h)
    sparse = gp_predict(Xs, Z, beta, h.lengthscales, h.signal_var, iK)
    torch.testing.assert_close(sparse[0], full[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(sparse[1], full[1], rtol=0, atol=1e-6)


def test_fitc_gradcheck_in_inducing_inputs():
    X, Y = smooth_data(15)
    h = random_hyp(2, 3)
    Z = torch.randn(2, 4, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(lambda z: fitc_log_likelihood(X, Y, z, h),
                                    (Z.requires_grad_(True),))


def test_fitc_approximates_the_full_gp_with_few_inducing_inputs():
    X, Y = smooth_data(500, seed=2)
    h = fit_hyperparameters(X[:150], Y[:150], restarts=1,
                            generator=torch.Generator().manual_seed(0)).hyperparameters
    g = torch.Generator().manual_seed(0)
    Z0 = X[torch.randperm(500, generator=g)[:40]].expand(2, 40, 3)
    Z = fit_inducing_inputs(X, Y, h, 40, max_iter=30, init=Z0)
    # the optimised inducing inputs are at least as likely as the start
    assert bool((fitc_log_likelihood(X, Y, Z, h) >= fitc_log_likelihood(X, Y, Z0, h) - 1e-9)
                .all())
    Xs = smooth_data(200, seed=11)[0]
    full_mean, full_var = gp_predict(Xs, X.expand(2, *X.shape), *_weights(X, Y, h))
    beta, iK = fitc_posterior(X, Y, Z, h)
    mean, var = gp_predict(Xs, Z, beta, h.lengthscales, h.signal_var, iK)
    scale = Y.std(0)
    rmse = ((mean - full_mean).pow(2).mean(0).sqrt() / scale)
    assert bool((rmse < 0.05).all()), rmse
    # latent variances of the same order, within the prior variance
    assert bool((var > -1e-9).all()) and bool((var <= h.signal_var + 1e-9).all())
    assert bool(((var.mean(0) - full_var.mean(0)).abs() < 0.05 * h.signal_var).all())


def test_fit_inducing_inputs_errors():
    X, Y = smooth_data(10)
    with pytest.raises(ValueError, match="num_inducing"):
        fit_inducing_inputs(X, Y, random_hyp(2, 3), 11)
