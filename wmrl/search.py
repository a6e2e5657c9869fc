"""Policy search in imagination, one code path for every backend.

A search step is: roll the policy out for ``horizon`` steps in an imagined environment
(:mod:`wmrl.envs.model_based`; the graph is kept), turn the trajectory into a scalar loss with an
*objective*, backpropagate into the policy and step an optimiser. Only the objective and the
optimiser differ between backends:

* PILCO (GP backend): :func:`expected_cost_objective` — the sum over the ``H`` predicted Gaussian
  states of their expected cost (Deisenroth & Rasmussen 2011, Eq. 2), a deterministic function of
  the policy parameters, minimised with full-batch L-BFGS (with restarts).
* Dreamer (RSSM backend): :func:`lambda_return_objective` — minus the mean lambda-return of
  sampled imagined trajectories bootstrapped with a critic (Hafner et al. 2019, Eq. 6-8),
  minimised with Adam.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from tensordict import TensorDictBase
from tqdm.auto import tqdm

__all__ = [
    "imagine",
    "expected_cost_objective",
    "lambda_return_objective",
    "lambda_returns",
    "PolicySearch",
    "SearchResult",
]

Objective = Callable[[TensorDictBase], torch.Tensor]
#: a function returning a fresh context manager entered around each rollout and objective
RolloutContext = Callable[[], contextlib.AbstractContextManager[Any]]
#: called on the parameters after each backward pass, before clipping and the optimiser step
GradHook = Callable[[list[torch.nn.Parameter]], None]


def imagine(env: Any, policy: Any, start: TensorDictBase, horizon: int) -> TensorDictBase:
    """Imagined trajectory ``[*B, horizon]`` of ``policy`` in ``env`` from the state ``start``.

    The autograd graph is kept: anything computed on the result is differentiable in the policy's
    (and the model's) parameters.

    Example: the model ``x' = x + u`` with reward ``-|x'|²`` and the linear policy ``u = K x``.
    At ``K = 0`` the state stays at ``x_0 = (1, 1)``, so every reward is ``-2``; and since
    ``x_t = (I + K)^t x_0``, ``d/dK sum_t |x_t|² = sum_t 2 t x_0 x_0ᵀ = 20`` for ``H = 4``.

    >>> from tensordict import TensorDict
    >>> from tensordict.nn import TensorDictModule
    >>> from torchrl.data import Unbounded
    >>> from wmrl.envs.model_based import WorldModelEnv
    >>> model = TensorDictModule(lambda x, u: x + u, ["x", "action"], [("next", "x")])  # x' = x + u
    >>> env = WorldModelEnv(model, Unbounded((2,)), Unbounded((2,)), state_key="x",
    ...                     reward_model=lambda td: -(td["x"] ** 2).sum(-1, keepdim=True))
    >>> net = torch.nn.Linear(2, 2, bias=False)  # u = K x, from K = 0
    >>> _ = torch.nn.init.zeros_(net.weight)
    >>> policy = TensorDictModule(net, ["x"], ["action"])
    >>> start = TensorDict({"x": torch.ones(3, 2)}, [3])
    >>> trajectory = imagine(env, policy, start, horizon=4)
    >>> trajectory.batch_size, trajectory["next", "reward"][0].flatten().tolist()
    (torch.Size([3, 4]), [-2.0, -2.0, -2.0, -2.0])
    >>> (-trajectory["next", "reward"].sum((-2, -1)).mean()).backward()
    >>> net.weight.grad
    tensor([[20., 20.],
            [20., 20.]])
    """
    td = env.reset(start.copy())
    return env.rollout(horizon, policy, tensordict=td, auto_reset=False, break_when_any_done=False)


def expected_cost_objective(trajectory: TensorDictBase) -> torch.Tensor:
    """PILCO's objective: ``J = sum_t E[c(x_t)]`` for ``t = 1..H``, averaged over start beliefs.

    The imagined environment's reward at step ``t`` is minus the expected cost of the predicted
    state ``x_{t+1}`` (:class:`~wmrl.envs.model_based.ImaginedEnv`), so ``J = -sum_t r_t``.

    Args:
        trajectory: ``[*B, H]`` with ``("next", "reward")`` ``[*B, H, 1]``.

    Returns:
        scalar ``J`` (to minimise).

    >>> from tensordict import TensorDict
    >>> reward = -torch.tensor([[0.5, 0.25], [1.0, 1.0]]).unsqueeze(-1)  # [2, 2, 1]
    >>> trajectory = TensorDict({"next": {"reward": reward}}, [2, 2])
    >>> expected_cost_objective(trajectory)  # mean of 0.75 and 2.0
    tensor(1.3750)
    """
    reward = trajectory.get(("next", "reward"))  # [*B, H, 1]
    return -reward.sum(dim=(-2, -1)).mean()


def lambda_returns(
    reward: torch.Tensor, value: torch.Tensor, gamma: float, lmbda: float
) -> torch.Tensor:
    """Lambda-returns ``G^λ_t`` (Hafner et al. 2019, Eq. 6; Sutton & Barto 12.1).

    ``G_t = r_t + γ((1-λ) v_{t+1} + λ G_{t+1})`` with ``G_H = v_H`` (bootstrapped by the critic).

    Args:
        reward: ``[*B, H, 1]`` rewards ``r_t``.
        value: ``[*B, H, 1]`` critic values ``v_{t+1}`` of the *next* states.
        gamma, lmbda: discount and trace parameters.

    Returns:
        ``[*B, H, 1]``.

    >>> r = torch.ones(1, 3, 1); v = torch.zeros(1, 3, 1)
    >>> lambda_returns(r, v, gamma=1.0, lmbda=1.0).flatten().tolist()
    [3.0, 2.0, 1.0]
    """
    H = reward.shape[-2]
    out = []
    nxt = value[..., -1, :]  # [*B, 1]
    for t in reversed(range(H)):
        boot = (1 - lmbda) * value[..., t, :] + lmbda * nxt
        nxt = reward[..., t, :] + gamma * boot
        out.append(nxt)
    return torch.stack(out[::-1], dim=-2)


def lambda_return_objective(
    value_fn: Callable[[TensorDictBase], torch.Tensor], gamma: float = 0.99, lmbda: float = 0.95
) -> Objective:
    """Dreamer's actor objective: ``-mean_t G^λ_t`` over imagined trajectories.

    Args:
        value_fn: maps the ``"next"`` sub-TensorDict ``[*B, H]`` to values ``[*B, H, 1]``.
        gamma, lmbda: discount and trace parameters of :func:`lambda_returns`.

    Returns:
        ``trajectory -> scalar`` loss, to minimise.

    Example: rewards ``-1`` for three steps, a zero critic, ``γ = λ = 1``: the returns are
    ``-3, -2, -1`` and the loss is minus their mean.

    >>> from tensordict import TensorDict
    >>> objective = lambda_return_objective(
    ...     lambda nxt: torch.zeros(*nxt.batch_size, 1), gamma=1.0, lmbda=1.0)
    >>> trajectory = TensorDict({"next": {"reward": -torch.ones(1, 3, 1)}}, [1, 3])
    >>> objective(trajectory)
    tensor(2.)
    """

    def objective(trajectory: TensorDictBase) -> torch.Tensor:
        reward = trajectory.get(("next", "reward"))
        value = value_fn(trajectory.get("next"))
        return -lambda_returns(reward, value, gamma, lmbda).mean()

    return objective


@dataclass
class SearchResult:
    """Outcome of :meth:`PolicySearch.run`.

    Attributes:
        best_loss: the lowest objective value seen (the policy is left at those parameters).
        history: objective value after each optimiser step.
        evaluations: number of objective (and gradient) evaluations.
        trajectory: the last imagined trajectory ``[*B, H]``, detached, with whatever the
            objective wrote into it (e.g. Dreamer's ``"lambda_target"`` for the critic).

    >>> result = SearchResult(best_loss=0.5, history=[2.0, 0.5, 0.7], evaluations=5)
    >>> result.best_loss == min(result.history), result.trajectory is None
    (True, True)

    :class:`PolicySearch` shows one returned by a search.
    """

    best_loss: float
    history: list[float] = field(default_factory=list)
    evaluations: int = 0
    trajectory: TensorDictBase | None = None


class PolicySearch:
    """Optimise a policy's parameters on an objective of its imagined trajectories.

    Args:
        env: an imagined environment (any :class:`~wmrl.envs.model_based.ModelBasedEnvBase`).
        policy: a ``TensorDictModuleBase`` acting in ``env``.
        objective: trajectory ``->`` scalar loss (e.g. :func:`expected_cost_objective`).
        horizon: imagined steps per evaluation.
        optimizer: ``"lbfgs"`` (deterministic objectives: PILCO) or ``"adam"`` (stochastic
            objectives: Dreamer).
        lr: learning rate (Adam) or initial step (L-BFGS).
        parameters: what to optimise (default: ``policy.parameters()``).
        max_grad_norm: gradient clipping for Adam (``None``: off).
        progress: show a progress bar.
        context: returns a context manager entered around every rollout and objective (e.g.
            frozen model parameters, the exploration type, autocast); ``None``: none.
        grad_hook: called with the optimised parameters after every backward pass, before
            clipping and the step (e.g. averaging gradients across data-parallel processes).

    With Adam the optimiser (and its moment estimates) is created once and kept across
    :meth:`run` calls as :attr:`optimizer`, so a training loop can call ``run(start, 1)`` per
    update and checkpoint ``search.optimizer.state_dict()``.

    Example: L-BFGS on the deterministic objective of :func:`imagine`'s example (model
    ``x' = x + u``, cost ``|x'|²``, policy ``u = K x`` from ``K = 0``); the optimum sends
    ``x_0 = (1, 1)`` to the origin in one step, which the gradient direction ``x_0 x_0ᵀ`` reaches
    at ``K = -½ 1 1ᵀ``. :class:`wmrl.agents.pilco.PILCO` runs the same search on a GP model.

    >>> from tensordict import TensorDict
    >>> from tensordict.nn import TensorDictModule
    >>> from torchrl.data import Unbounded
    >>> from wmrl.envs.model_based import WorldModelEnv
    >>> model = TensorDictModule(lambda x, u: x + u, ["x", "action"], [("next", "x")])  # x' = x + u
    >>> env = WorldModelEnv(model, Unbounded((2,)), Unbounded((2,)), state_key="x",
    ...                     reward_model=lambda td: -(td["x"] ** 2).sum(-1, keepdim=True))
    >>> net = torch.nn.Linear(2, 2, bias=False)  # u = K x, from K = 0
    >>> _ = torch.nn.init.zeros_(net.weight)
    >>> policy = TensorDictModule(net, ["x"], ["action"])
    >>> start = TensorDict({"x": torch.ones(3, 2)}, [3])
    >>> search = PolicySearch(env, policy, expected_cost_objective, horizon=4, optimizer="lbfgs")
    >>> search.loss(start).item()  # 4 steps at |x|² = 2
    8.0
    >>> result = search.run(start, steps=10)
    >>> result.best_loss < 1e-6, len(result.history), result.trajectory.batch_size
    (True, 10, torch.Size([3, 4]))
    >>> torch.allclose(net.weight, torch.full((2, 2), -0.5), atol=1e-3)
    True
    """

    def __init__(
        self,
        env: Any,
        policy: Any,
        objective: Objective,
        horizon: int,
        *,
        optimizer: str = "lbfgs",
        lr: float | None = None,
        parameters: Iterable[torch.nn.Parameter] | None = None,
        max_grad_norm: float | None = None,
        progress: bool = False,
        context: RolloutContext | None = None,
        grad_hook: GradHook | None = None,
    ) -> None:
        if optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.env, self.policy, self.objective, self.horizon = env, policy, objective, horizon
        self.optimizer_name = optimizer
        self.params = [p for p in (parameters or policy.parameters()) if p.requires_grad]
        if not self.params:
            raise ValueError("the policy has no trainable parameters")
        self.lr = lr if lr is not None else (1.0 if optimizer == "lbfgs" else 1e-3)
        self.max_grad_norm = max_grad_norm
        self.progress = progress
        self.context = context
        self.grad_hook = grad_hook
        self.optimizer: torch.optim.Optimizer | None = (
            torch.optim.Adam(self.params, lr=self.lr) if optimizer == "adam" else None
        )

    def evaluate(self, start: TensorDictBase) -> tuple[torch.Tensor, TensorDictBase]:
        """The objective of one imagined rollout from ``start`` and the trajectory
        (differentiable)."""
        with self.context() if self.context is not None else contextlib.nullcontext():
            trajectory = imagine(self.env, self.policy, start, self.horizon)
            return self.objective(trajectory), trajectory

    def loss(self, start: TensorDictBase) -> torch.Tensor:
        """The objective of one imagined rollout from ``start`` (differentiable)."""
        return self.evaluate(start)[0]

    def _after_backward(self) -> None:
        if self.grad_hook is not None:
            self.grad_hook(self.params)

    def _snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def _restore(self, snap: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, s in zip(self.params, snap):
                p.copy_(s)

    def run(
        self,
        start: TensorDictBase | Callable[[], TensorDictBase],
        steps: int,
        *,
        restarts: int = 1,
        desc: str = "policy search",
    ) -> SearchResult:
        """Optimise for ``steps`` optimiser iterations.

        With L-BFGS the policy is left at the best parameters seen (the objective is
        deterministic); with Adam at the last ones (the objective is a stochastic estimate).

        Args:
            start: the start state, or a function returning a fresh one per evaluation
                (stochastic objectives sample start states from replay).
            steps: L-BFGS iterations (each with a strong-Wolfe line search) in total over all
                restarts, or Adam steps.
            restarts: L-BFGS only: the optimiser's curvature memory is reset ``restarts`` times,
                each from the best parameters so far (escapes a stalled line search).
        """
        get_start = start if callable(start) else (lambda: start)
        result = SearchResult(best_loss=math.inf)
        # a deterministic objective keeps the best parameters seen; a stochastic one the last
        keep_best = self.optimizer_name == "lbfgs"
        best = self._snapshot()
        bar = tqdm(total=steps, desc=desc, disable=not self.progress, leave=False)

        def evaluate() -> torch.Tensor:
            loss, trajectory = self.evaluate(get_start())
            result.trajectory = trajectory.detach()
            result.evaluations += 1
            value = float(loss.detach())
            if math.isfinite(value) and value < result.best_loss:
                result.best_loss = value
                if keep_best:
                    best[:] = self._snapshot()
            return loss

        if self.optimizer_name == "lbfgs":
            per_round = max(1, math.ceil(steps / max(1, restarts)))
            done = 0
            while done < steps:
                n = min(per_round, steps - done)
                opt = torch.optim.LBFGS(
                    self.params,
                    lr=self.lr,
                    max_iter=1,
                    max_eval=25,  # evaluations allowed to each iteration's line search
                    history_size=50,
                    line_search_fn="strong_wolfe",
                    tolerance_grad=1e-9,
                    tolerance_change=1e-12,
                )

                def closure(opt: torch.optim.Optimizer = opt) -> torch.Tensor:
                    opt.zero_grad(set_to_none=True)
                    loss = evaluate()
                    if not torch.isfinite(loss):
                        # steer the line search away from a diverging step
                        return loss.detach().new_tensor(float("inf")).requires_grad_()
                    loss.backward()
                    self._after_backward()
                    return loss

                for _ in range(n):
                    loss = opt.step(closure)
                    result.history.append(float(loss.detach()))
                    bar.update(1)
                    bar.set_postfix(loss=f"{result.best_loss:.4g}")
                    done += 1
                    if not all(torch.isfinite(p).all() for p in self.params):
                        break
                self._restore(best)
        else:
            opt = self.optimizer
            assert opt is not None
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                loss = evaluate()
                loss.backward()
                self._after_backward()
                if self.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
                opt.step()
                result.history.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{result.best_loss:.4g}")
        bar.close()
        return result
