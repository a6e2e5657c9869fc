"""Exact GP moment matching vs Monte Carlo, finite differences, point predictions and TorchRL."""

from __future__ import annotations

import math

import pytest
import torch

from wmrl.gp.moment_matching import gp_moment_match, gp_predict

torch.set_num_threads(1)

F64 = torch.float64


def random_gp(
    gen: torch.Generator, E: int = 3, n: int = 30, Din: int = 4, shared: bool = True
) -> dict[str, torch.Tensor]:
    """A GP fitted (hyper-parameters drawn, not optimised) to a smooth random function."""
    X = torch.randn(1 if shared else E, n, Din, dtype=F64, generator=gen).expand(E, n, Din)
    ell = 0.8 + 1.2 * torch.rand(E, Din, dtype=F64, generator=gen)
    sf2 = 0.5 + 1.5 * torch.rand(E, dtype=F64, generator=gen)
    sn2 = 1e-2 * sf2
    w = torch.randn(E, Din, dtype=F64, generator=gen)
    y = torch.sin((X * w[:, None, :]).sum(-1)) + 0.1 * torch.randn(E, n, dtype=F64, generator=gen)
    d = (X[:, :, None, :] - X[:, None, :, :]) / ell[:, None, None, :]  # [E, n, n, Din]
    K = sf2[:, None, None] * torch.exp(-0.5 * d.square().sum(-1))  # [E, n, n]
    Kn = K + sn2[:, None, None] * torch.eye(n, dtype=F64)
    Lc = torch.linalg.cholesky(Kn)
    beta = torch.cholesky_solve(y.unsqueeze(-1), Lc).squeeze(-1)
    iK = torch.cholesky_inverse(Lc)
    return dict(inputs=X.contiguous(), beta=beta, lengthscales=ell, signal_var=sf2, inv_gram=iK,
                noise_var=sn2, targets=y)


def gp_args(gp: dict[str, torch.Tensor], deterministic: bool = False) -> tuple:
    return (gp["inputs"], gp["beta"], gp["lengthscales"], gp["signal_var"],
            None if deterministic else gp["inv_gram"])


def mc_moments(mean, chol, gp_arguments, n_samples: int, gen: torch.Generator, chunk=4096):
    """Samples x = mean + chol ε; returns estimates and standard errors of M, S and cov[x, f].

    ``cov[f] = cov_x[m(x)] + diag E_x[var(x)]`` (law of total variance; outputs independent given
    ``x``). Standard errors are estimated from the per-sample terms.
    """
    xs, ms, vs = [], [], []
    for start in range(0, n_samples, chunk):
        k = min(chunk, n_samples - start)
        eps = torch.randn(k, chol.shape[-1], dtype=F64, generator=gen)
        x = mean + eps @ chol.T
        m, v = gp_predict(x, *gp_arguments)
        xs.append(x)
        ms.append(m)
        vs.append(v)
    x, m, v = torch.cat(xs), torch.cat(ms), torch.cat(vs)
    N = x.shape[0]
    M = m.mean(0)
    dm = m - M
    E = M.shape[0]
    t = dm[:, :, None] * dm[:, None, :] + torch.diag_embed(v)  # [N, E, E]
    c = (x - mean)[:, :, None] * dm[:, None, :]  # [N, Din, E]

    def est(s):
        return s.mean(0), s.std(0) / math.sqrt(N)

    return est(m), est(t), est(c), E


def assert_within(value, estimate, se, k=5.0, what=""):
    err = (value - estimate).abs()
    ratio = (err / se.clamp_min(1e-300)).max().item()
    assert bool((err <= k * se).all()), f"{what}: max |error| / se = {ratio:.2f}"


def random_belief(gen, Din, scale=0.5):
    mean = 0.5 * torch.randn(Din, dtype=F64, generator=gen)
    A = scale * torch.randn(Din, Din, dtype=F64, generator=gen) / math.sqrt(Din)
    return mean, A @ A.T + 1e-3 * torch.eye(Din, dtype=F64)


def test_predict_matches_textbook_gp():
    """gp_predict against the GP posterior written out per output (Rasmussen & Williams, Alg. 2.1)
    with the kernel built here element by element."""
    gen = torch.Generator().manual_seed(13)
    gp = random_gp(gen, E=2, n=15, Din=3, shared=False)
    x = torch.randn(4, 3, dtype=F64, generator=gen)
    mean, var = gp_predict(x, *gp_args(gp))
    for a in range(2):
        X, ell, sf2 = gp["inputs"][a], gp["lengthscales"][a], gp["signal_var"][a]

        def k(u, v, ell=ell, sf2=sf2):
            return sf2 * math.exp(-0.5 * float((((u - v) / ell) ** 2).sum()))

        K = torch.tensor([[k(xi, xj) for xj in X] for xi in X], dtype=F64)
        Ks = torch.tensor([[k(xs, xj) for xj in X] for xs in x], dtype=F64)  # [4, n]
        Kn = K + gp["noise_var"][a] * torch.eye(15, dtype=F64)
        ref_mean = Ks @ torch.linalg.solve(Kn, gp["targets"][a])
        ref_var = sf2 - (Ks * torch.linalg.solve(Kn, Ks.T).T).sum(-1)
        torch.testing.assert_close(mean[:, a], ref_mean, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(var[:, a], ref_var, rtol=1e-9, atol=1e-10)
    _, var0 = gp_predict(x, *gp_args(gp, deterministic=True))
    assert bool((var0 == 0).all())


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("shared", [True, False])
def test_monte_carlo(deterministic, shared):
    gen = torch.Generator().manual_seed(1 + 2 * deterministic + shared)
    gp = random_gp(gen, E=3, n=30, Din=4, shared=shared)
    args = gp_args(gp, deterministic)
    mean, cov = random_belief(gen, 4)
    M, S, V = gp_moment_match(mean, cov, *args)
    (Mm, Ms), (Sm, Ss), (Cm, Cs), _ = mc_moments(mean, torch.linalg.cholesky(cov), args,
                                                  200_000, gen)
    assert_within(M, Mm, Ms, what="mean")
    assert_within(S, Sm, Ss, what="covariance")
    assert_within(cov @ V, Cm, Cs, what="cross-covariance")
    # the test can fail: the mean differs from the plug-in prediction by far more than 5 se
    m0, _ = gp_predict(mean, *args)
    assert ((M - m0).abs() / Ms).max() > 20
    assert torch.allclose(S, S.mT, atol=0, rtol=0)
    assert torch.linalg.eigvalsh(S).min() > 0


def test_monte_carlo_singular_covariance():
    gen = torch.Generator().manual_seed(7)
    gp = random_gp(gen, E=2, n=40, Din=3)
    args = gp_args(gp)
    mean = torch.tensor([0.2, -0.3, 0.1], dtype=F64)
    # x_2 = 2 x_0 - x_1 exactly: rank-2 covariance
    J = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]], dtype=F64)
    A0 = torch.tensor([[0.6, 0.0], [0.2, 0.4]], dtype=F64)
    chol = J @ A0  # [3, 2]
    cov = chol @ chol.T
    assert torch.linalg.matrix_rank(cov) == 2
    M, S, V = gp_moment_match(mean, cov, *args)
    (Mm, Ms), (Sm, Ss), (Cm, Cs), _ = mc_moments(mean, chol, args, 200_000, gen)
    assert_within(M, Mm, Ms, what="mean")
    assert_within(S, Sm, Ss, what="covariance")
    assert_within(cov @ V, Cm, Cs, what="cross-covariance")


@pytest.mark.parametrize("deterministic", [False, True])
def test_zero_covariance_equals_point_prediction(deterministic):
    gen = torch.Generator().manual_seed(3)
    gp = random_gp(gen, E=3, n=25, Din=4)
    args = gp_args(gp, deterministic)
    mean = torch.randn(5, 4, dtype=F64, generator=gen)
    M, S, V = gp_moment_match(mean, torch.zeros(5, 4, 4, dtype=F64), *args)
    m, v = gp_predict(mean, *args)
    torch.testing.assert_close(M, m, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(S, torch.diag_embed(v), rtol=1e-12, atol=1e-12)
    if deterministic:
        assert bool((S == 0).all())
    # V at Σ = 0 is the Jacobian of the posterior mean
    def mean_fn(x):
        return gp_predict(x, *args, validate=False)[0]

    jac = torch.func.vmap(torch.func.jacrev(mean_fn))(mean)  # [5, E, D]
    torch.testing.assert_close(V, jac.mT, rtol=1e-10, atol=1e-12)


def test_gradient_at_zero_covariance_is_half_hessian():
    """dM/dΣ at Σ = 0 is ½ ∇²m(μ) (second-order expansion of E[m(x)])."""
    gen = torch.Generator().manual_seed(4)
    gp = random_gp(gen, E=2, n=20, Din=3)
    args = gp_args(gp)
    mean = torch.randn(3, dtype=F64, generator=gen)
    cov = torch.zeros(3, 3, dtype=F64, requires_grad=True)
    M, _, _ = gp_moment_match(mean, cov, *args)
    for a in range(2):
        (g,) = torch.autograd.grad(M[a], cov, retain_graph=True)
        H = torch.autograd.functional.hessian(lambda x, a=a: gp_predict(x, *args)[0][a], mean)
        torch.testing.assert_close(g, 0.5 * H, rtol=1e-9, atol=1e-12)


def test_small_covariance_is_linearisation():
    """For Σ → 0, S → Vᵀ Σ V + diag(var): the centred form keeps its relative precision."""
    gen = torch.Generator().manual_seed(5)
    gp = random_gp(gen, E=3, n=30, Din=4)
    args = gp_args(gp, deterministic=True)
    mean = torch.randn(4, dtype=F64, generator=gen)
    A = torch.randn(4, 4, dtype=F64, generator=gen)
    cov = 1e-12 * (A @ A.T)
    M, S, V = gp_moment_match(mean, cov, *args)
    torch.testing.assert_close(S, V.T @ cov @ V, rtol=1e-6, atol=0)


@pytest.mark.parametrize("deterministic", [False, True])
def test_gradcheck(deterministic):
    gen = torch.Generator().manual_seed(6)
    gp = random_gp(gen, E=2, n=5, Din=2, shared=False)
    mean = torch.randn(2, 2, dtype=F64, generator=gen)
    A = 0.5 * torch.randn(2, 2, 2, dtype=F64, generator=gen)
    leaves = [mean, A, gp["inputs"], gp["beta"], gp["lengthscales"], gp["signal_var"]]
    if not deterministic:
        leaves.append(gp["inv_gram"])
    leaves = [t.clone().requires_grad_(True) for t in leaves]

    def f(m, A, X, beta, ell, sf2, iK=None):
        return gp_moment_match(m, A @ A.mT, X, beta, ell, sf2, iK)

    assert torch.autograd.gradcheck(f, leaves)
    # chunked evaluation (one [n, n] block at a time) has the same values and gradients
    assert torch.autograd.gradcheck(lambda *t: gp_moment_match(
        t[0], t[1] @ t[1].mT, *t[2:6], t[6] if len(t) > 6 else None, block_elements=1), leaves)


def test_gradcheck_at_zero_covariance():
    gen = torch.Generator().manual_seed(8)
    gp = random_gp(gen, E=2, n=5, Din=2)
    mean = torch.randn(2, dtype=F64, generator=gen, requires_grad=True)
    cov = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    # finite differences step off the PSD cone, so checks are off; the maths is analytic at 0
    assert torch.autograd.gradcheck(
        lambda m, S: gp_moment_match(m, S, *gp_args(gp), validate=False), (mean, cov))


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_batching(batch):
    gen = torch.Generator().manual_seed(9)
    gp = random_gp(gen, E=3, n=20, Din=4)
    args = gp_args(gp)
    mean = torch.randn(*batch, 4, dtype=F64, generator=gen)
    A = torch.randn(*batch, 4, 4, dtype=F64, generator=gen) * 0.3
    cov = A @ A.mT
    M, S, V = gp_moment_match(mean, cov, *args)
    assert M.shape == (*batch, 3) and S.shape == (*batch, 3, 3) and V.shape == (*batch, 4, 3)
    flat = [gp_moment_match(m, c, *args)
            for m, c in zip(mean.reshape(-1, 4), cov.reshape(-1, 4, 4))]
    for k, out in enumerate((M, S, V)):
        ref = torch.stack([f[k] for f in flat]).reshape(out.shape)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-13)
    # chunking over blocks does not change the result
    chunked = gp_moment_match(mean, cov, *args, block_elements=1)
    for out, ref in zip(chunked, (M, S, V)):
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-13)


def test_float32_close_to_float64():
    gen = torch.Generator().manual_seed(14)
    gp = random_gp(gen, E=2, n=20, Din=3)
    mean, cov = random_belief(gen, 3)
    ref = gp_moment_match(mean, cov, *gp_args(gp))
    out = gp_moment_match(mean.float(), cov.float(), *(t.float() for t in gp_args(gp)))
    for o, r in zip(out, ref):
        assert o.dtype == torch.float32
        torch.testing.assert_close(o.double(), r, rtol=1e-3, atol=1e-4 * r.abs().max().item())


def test_far_from_data_is_finite():
    """Beliefs 100 length-scales from the data: no overflow, no NaN, finite gradients."""
    gen = torch.Generator().manual_seed(10)
    gp = random_gp(gen, E=2, n=20, Din=3)
    args = gp_args(gp)
    for shift, scale in [(100.0, 1.0), (100.0, 30.0), (0.0, 1e4)]:
        mean = (shift + torch.randn(3, dtype=F64, generator=gen)).requires_grad_(True)
        cov = (scale**2 * torch.eye(3, dtype=F64)).requires_grad_(True)
        M, S, V = gp_moment_match(mean, cov, *args)
        assert all(bool(torch.isfinite(t).all()) for t in (M, S, V))
        g = torch.autograd.grad(M.sum() + S.sum() + V.sum(), (mean, cov))
        assert all(bool(torch.isfinite(t).all()) for t in g)
        # far away the prediction is the prior: M ≈ 0, S ≈ diag(α² - 0)
        if shift:
            torch.testing.assert_close(S, torch.diag(gp["signal_var"]), rtol=1e-6, atol=1e-6)


def test_torchrl_agreement():
    """TorchRL's uncertain_forward on injected hyper-parameters: the next-state mean agrees.

    With the same hyper-parameters injected the next-state covariance agrees as well
    (``Σ_x + S + diag(σ²) + C + Cᵀ`` plus TorchRL's ``1e-8`` jitter). After TorchRL's own ``fit``
    it would not: its signal and noise variances are then in standardised units, so in normal
    use its variances are those of another GP (its means still agree with Monte Carlo).
    """
    torchrl_gp = pytest.importorskip("torchrl.modules.models.gp")
    from tensordict import TensorDict

    D, F, n = 3, 1, 30
    gen = torch.Generator().manual_seed(11)
    gp = random_gp(gen, E=D, n=n, Din=D + F)
    model = torchrl_gp.GPWorldModel(obs_dim=D, action_dim=F).to(F64)
    model.X_tilde_train = gp["inputs"][0].clone()
    model.ell = gp["lengthscales"].clone()
    model.alpha_sq = gp["signal_var"][:, None].clone()
    model.sigma_sq_eps = gp["noise_var"].clone()
    model._cached_inv_K_noisy = gp["inv_gram"].clone()
    model._cached_beta = gp["beta"].clone()

    B = 4
    mean = 0.5 * torch.randn(B, D + F, dtype=F64, generator=gen)
    A = 0.4 * torch.randn(B, D + F, D + F, dtype=F64, generator=gen)
    cov = A @ A.mT + 1e-2 * torch.eye(D + F, dtype=F64)
    Sx, Sxu, Su = cov[:, :D, :D], cov[:, :D, D:], cov[:, D:, D:]
    td = TensorDict({
        ("observation", "mean"): mean[:, :D], ("observation", "var"): Sx,
        ("action", "mean"): mean[:, D:], ("action", "var"): Su,
        ("action", "cross_covariance"): torch.linalg.solve(Sx, Sxu),
    }, batch_size=[B])
    model.uncertain_forward(td)
    delta_torchrl = td["next", "observation", "mean"] - mean[:, :D]
    M, S, V = gp_moment_match(mean, cov, *gp_args(gp))
    torch.testing.assert_close(M, delta_torchrl, rtol=1e-10, atol=1e-12)
    C = (cov @ V)[:, :D]  # cov[x, Δ]
    var = Sx + S + torch.diag(gp["noise_var"]) + C + C.mT + 1e-8 * torch.eye(D, dtype=F64)
    torch.testing.assert_close(var, td["next", "observation", "var"], rtol=1e-10, atol=1e-12)


def _good(gen=None):
    gen = gen or torch.Generator().manual_seed(12)
    gp = random_gp(gen, E=2, n=6, Din=3)
    return torch.zeros(3, dtype=F64), 0.1 * torch.eye(3, dtype=F64), list(gp_args(gp))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: a.__setitem__(0, torch.zeros(4, dtype=F64)), "shape"),
        (lambda a: a.__setitem__(1, torch.eye(2, dtype=F64)), "shape"),
        (lambda a: a.__setitem__(2, torch.zeros(2, 6, 4, dtype=F64)), "inputs"),
        (lambda a: a.__setitem__(3, torch.zeros(2, 5, dtype=F64)), "beta"),
        (lambda a: a.__setitem__(4, torch.ones(3, 3, dtype=F64)), "lengthscales"),
        (lambda a: a.__setitem__(5, torch.ones(1, dtype=F64)), "signal_var"),
        (lambda a: a.__setitem__(6, torch.eye(6, dtype=F64)), "inv_gram"),
        (lambda a: a.__setitem__(0, torch.tensor([0.0, math.nan, 0.0], dtype=F64)), "NaN"),
        (lambda a: a[1].__setitem__((0, 0), math.inf), "NaN or inf"),
        (lambda a: a[3].__setitem__((0, 0), math.nan), "beta contains NaN"),
        (lambda a: a.__setitem__(1, torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=F64))),
         "positive semi-definite"),
        (lambda a: a.__setitem__(1, torch.tensor([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]],
                                                 dtype=F64)), "symmetric"),
        (lambda a: a.__setitem__(3, a[3].float()), "dtype"),
        (lambda a: a[4].__setitem__((0, 0), -1.0), "lengthscales must be positive"),
        (lambda a: a[5].__setitem__(0, 0.0), "signal_var must be positive"),
    ],
)
def test_bad_input(mutate, match):
    mean, cov, rest = _good()
    args = [mean, cov, *rest]
    mutate(args)
    with pytest.raises(ValueError, match=match):
        gp_moment_match(*args)


def test_bad_input_predict():
    mean, _, rest = _good()
    with pytest.raises(ValueError, match="shape"):
        gp_predict(torch.zeros(4, dtype=F64), *rest)
    with pytest.raises(ValueError, match="NaN"):
        gp_predict(torch.full((3,), math.nan, dtype=F64), *rest)
