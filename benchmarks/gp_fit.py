"""GP dynamics fitting: wmrl's ``GPWorldModel.fit`` vs TorchRL's, and the FITC sparse GP at scale.

Run from the repository root::

    .venv/bin/python benchmarks/gp_fit.py                # full run, writes docs/benchmarks_gpfit.md
    .venv/bin/python benchmarks/gp_fit.py --quick        # small sizes, prints only

Data: random-action episodes of the built-in :class:`~wmrl.envs.tasks.CartPoleSwingUp`
(``D = 4``, ``F = 1``, 40 steps each), float64. Both models see the same GP inputs ``[x, u]``
(wmrl without angle features, as TorchRL has none) and the same targets ``Δ = x' - x``.

Exact part (``--n`` transitions): the median of ``--repeats`` fits of each library, interleaved
in one process with ``torch.set_num_threads(--threads)``. The quality measure is the exact log
marginal likelihood on the same data of

* wmrl: the GP it fitted and integrates (zero mean, hyper-parameters in data units);
* TorchRL (a): its BoTorch ``SingleTaskGP`` models as fitted (constant mean, outcome
  standardisation; the likelihood of the raw targets includes the Jacobian ``-n log σ_y``);
* TorchRL (b): the GP its moment matching integrates (the same hyper-parameters read as data
  units, zero mean), which is what its predictions use.

Sparse part (``--n-sparse`` transitions, ``--inducing`` inducing inputs): time of a FITC fit
(hyper-parameters on a 400-point subset, then the inducing inputs) and the held-out RMSE of the
one-step mean against an exact GP fitted on a random 400-point subset.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch
from tensordict import TensorDict

from wmrl.envs.tasks import CartPoleSwingUp
from wmrl.gp import GPWorldModel, exact_log_likelihood

__all__ = ["cartpole_transitions", "torchrl_log_likelihoods", "main"]

F64 = torch.float64


def cartpole_transitions(n: int, seed: int) -> TensorDict:
    """``n`` random-action cart-pole transitions (``n`` a multiple of 40), flattened, float64."""
    episodes = max(1, n // 40)
    env = CartPoleSwingUp(batch_size=[episodes], seed=seed)
    torch.manual_seed(seed)  # the random actions come from torch's global generator
    with torch.no_grad():
        td = env.rollout(40, break_when_any_done=False)
    return TensorDict({
        "observation": td["observation"].to(F64),
        "action": td["action"].to(F64),
        ("next", "observation"): td["next", "observation"].to(F64),
    }, batch_size=td.batch_size).reshape(-1)[:n]


def _xy(data: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
    x, u = data["observation"], data["action"]
    return torch.cat([x, u], -1), data["next", "observation"] - x


def torchrl_log_likelihoods(model, X: torch.Tensor, Y: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact log likelihoods ``[D]`` of TorchRL's fitted GPs: (a) BoTorch's, (b) integrated."""
    fitted = []
    for a, gp in enumerate(model.model_list.models):
        tf = gp.outcome_transform
        mu_y, sd_y = tf.means.reshape(-1)[0].to(F64), tf.stdvs.reshape(-1)[0].to(F64)
        z = (Y[:, a] - mu_y) / sd_y - gp.mean_module.constant.detach().to(F64).reshape(())
        ell = gp.covar_module.base_kernel.lengthscale.detach().to(F64).reshape(1, -1)
        sf2 = gp.covar_module.outputscale.detach().to(F64).reshape(1)
        sn2 = gp.likelihood.noise.detach().to(F64).reshape(1)
        ll = exact_log_likelihood(X, z[:, None], ell, sf2, sn2)[0] - X.shape[0] * sd_y.log()
        fitted.append(ll)
    integrated = exact_log_likelihood(X, Y, model.ell.to(F64), model.alpha_sq[:, 0].to(F64),
                                      model.sigma_sq_eps.to(F64))
    return torch.stack(fitted), integrated


def _time(fn) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def exact_comparison(n: int, repeats: int) -> dict:
    from torchrl.modules.models.gp import GPWorldModel as TorchRLGPWorldModel

    ours_t, theirs_t, ll_ours, ll_fitted, ll_integrated = [], [], [], [], []
    for r in range(repeats):  # one data set per repeat, each fitted once by each library
        data = cartpole_transitions(n, seed=r)
        X, Y = _xy(data)
        ours = GPWorldModel(4, 1, seed=r, sparse_threshold=None)
        ours_t.append(_time(lambda m=ours, d=data: m.fit(d)))
        theirs = TorchRLGPWorldModel(4, 1).to(F64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs_t.append(_time(lambda m=theirs, d=data: m.fit(d)))
        h = ours.hyperparameters
        ll_ours.append(exact_log_likelihood(X, Y, h.lengthscales, h.signal_var, h.noise_var))
        fitted, integrated = torchrl_log_likelihoods(theirs, X, Y)
        ll_fitted.append(fitted)
        ll_integrated.append(integrated)
    return dict(n=n, repeats=repeats, ours_t=ours_t, theirs_t=theirs_t, ll_ours=ll_ours,
                ll_fitted=ll_fitted, ll_integrated=ll_integrated)


def sparse_run(n: int, inducing: int, repeats: int) -> dict:
    data = cartpole_transitions(n, seed=1)
    test = cartpole_transitions(2000, seed=2)
    times, model = [], None
    for r in range(repeats):
        model = GPWorldModel(4, 1, sparse_threshold=400, num_inducing=inducing, seed=r)
        times.append(_time(lambda m=model: m.fit(data)))
    g = torch.Generator().manual_seed(0)
    subset = data[torch.randperm(n, generator=g)[:400]]
    exact = GPWorldModel(4, 1, sparse_threshold=None, seed=0).fit(subset)
    xs, us = test["observation"], test["action"]
    target = test["next", "observation"]
    rmse = {}
    for name, m in (("fitc", model), ("exact400", exact)):
        with torch.no_grad():
            mean, _ = m.predict(xs, us)
        rmse[name] = (mean - target).pow(2).mean(0).sqrt()
    return dict(n=n, inducing=inducing, times=times, rmse=rmse,
                delta_std=(target - xs).std(0))


def _fmt(t: torch.Tensor, digits: int = 1) -> str:
    return ", ".join(f"{float(v):.{digits}f}" for v in t)


def report(ex: dict, sp: dict | None, threads: int) -> str:
    o, t = (statistics.median(w for w, _ in ex[k]) for k in ("ours_t", "theirs_t"))
    oc, tc = (statistics.median(c for _, c in ex[k]) for k in ("ours_t", "theirs_t"))
    lines = [
        "## GP dynamics fitting (`benchmarks/gp_fit.py`)",
        "",
        f"Cart-pole random-action transitions, D = 4, F = 1, float64, "
        f"`torch.set_num_threads({threads})`, CPU. {ex['repeats']} data sets (40-step episodes "
        "of different seeds), each fitted once by each library, interleaved in one process; "
        "times are medians. The machine was shared while these were taken: re-measure on a "
        "quiet machine; the ratios are the meaningful figures.",
        "",
        f"### Exact GP, n = {ex['n']}",
        "",
        "| | fit wall time (s) | fit CPU time (s) |",
        "|---|---|---|",
        f"| wmrl `GPWorldModel.fit` (3 restarts, L-BFGS, closed-form gradients) | {o:.2f} | "
        f"{oc:.2f} |",
        f"| TorchRL `GPWorldModel.fit` (BoTorch `fit_gpytorch_mll`) | {t:.2f} | {tc:.2f} |",
        "",
        f"wmrl is **{t / o:.1f}x** faster in wall time, **{tc / oc:.1f}x** in CPU time. All "
        f"fit wall times (s): wmrl {', '.join(f'{w:.2f}' for w, _ in ex['ours_t'])}; TorchRL "
        f"{', '.join(f'{w:.2f}' for w, _ in ex['theirs_t'])}.",
        "",
        "Exact log marginal likelihood of each output's GP (Δx, Δẋ, Δθ̇, Δθ) on its data set:",
        "",
        "| data set | wmrl | TorchRL, models as fitted | TorchRL, GP its moment matching "
        "integrates |",
        "|---|---|---|---|",
        *(f"| {r} | {_fmt(a)} (sum {float(a.sum()):.1f}) | {_fmt(b)} (sum {float(b.sum()):.1f}) "
          f"| {_fmt(c)} (sum {float(c.sum()):.1f}) |"
          for r, (a, b, c) in enumerate(zip(ex["ll_ours"], ex["ll_fitted"],
                                            ex["ll_integrated"]))),
        "",
        "wmrl's likelihood minus TorchRL's (models as fitted), smallest over outputs and data "
        f"sets: {min(float((a - b).min()) for a, b in zip(ex['ll_ours'], ex['ll_fitted'])):.1f}.",
        "",
        "TorchRL's models as fitted have a constant mean and standardised targets (its Gamma "
        "priors are not counted: this is the likelihood alone); its moment matching drops the "
        "mean and reads the standardised-unit variances as data units, hence the last column.",
    ]
    if sp is not None:
        lines += [
            "",
            f"### FITC sparse GP, n = {sp['n']}, {sp['inducing']} inducing inputs",
            "",
            f"`GPWorldModel(4, 1, sparse_threshold=400, num_inducing={sp['inducing']})`: "
            "hyper-parameters by exact marginal likelihood on a random 400-point subset, then "
            "the inducing inputs by the FITC likelihood on all points (20 L-BFGS iterations), "
            "then the FITC predictive weights. Fit time: median wall "
            f"{statistics.median(w for w, _ in sp['times']):.1f} s, CPU "
            f"{statistics.median(c for _, c in sp['times']):.1f} s "
            f"({len(sp['times'])} fit(s)).",
            "",
            "Held-out one-step RMSE of the next-state mean per state dimension (2000 "
            "transitions of other episodes):",
            "",
            "| model | RMSE (x, ẋ, θ̇, θ) |",
            "|---|---|",
            f"| FITC, all {sp['n']} points | {_fmt(sp['rmse']['fitc'], 4)} |",
            f"| exact GP, random 400-point subset | {_fmt(sp['rmse']['exact400'], 4)} |",
            f"| std of Δ (predicting no change) | {_fmt(sp['delta_std'], 4)} |",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--n-sparse", type=int, default=5000)
    p.add_argument("--inducing", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sparse-repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="small sizes, no file written")
    p.add_argument("--no-sparse", action="store_true")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks_gpfit.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.n, args.n_sparse, args.inducing, args.repeats = 120, 800, 40, 1
    ex = exact_comparison(args.n, args.repeats)
    sp = None if args.no_sparse else sparse_run(args.n_sparse, args.inducing,
                                                 args.sparse_repeats)
    text = report(ex, sp, args.threads)
    print(text)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
