"""Imagined trajectories and their lambda-return targets, shared by the Dreamer actor losses.

Hafner et al. 2019, "Dream to Control", Sec. 3-4: from posterior states of replayed sequences,
the actor acts for ``H`` steps in the learned model (prior transitions and predicted rewards);
the critic values the imagined states and the lambda-returns (Eq. 6)

    ``V_t = r_t + gamma ((1 - lambda) v(s_{t+1}) + lambda V_{t+1})``,  ``V_H = v(s_H)``

are the actor's objective and the critic's target. Returns are computed by TorchRL's value
estimators (``TDLambdaEstimator`` by default, ``gamma = 0.99``, ``lambda = 0.95``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives.utils import ValueEstimators, default_value_kwargs
from torchrl.objectives.value import (
    TD0Estimator,
    TD1Estimator,
    TDLambdaEstimator,
    ValueEstimatorBase,
)

from wmrl import search

__all__ = [
    "frozen",
    "imagine",
    "evaluate_values",
    "build_value_estimator",
    "lambda_targets",
    "SUPPORTED_VALUE_ESTIMATORS",
]

_ESTIMATORS: dict[ValueEstimators, type[ValueEstimatorBase]] = {
    ValueEstimators.TD0: TD0Estimator,
    ValueEstimators.TD1: TD1Estimator,
    ValueEstimators.TDLambda: TDLambdaEstimator,
}
#: value estimators the actor losses accept
SUPPORTED_VALUE_ESTIMATORS = tuple(_ESTIMATORS)


@contextlib.contextmanager
def frozen(*modules: Any) -> Iterator[None]:
    """Temporarily stop gradients to the parameters of ``modules`` (gradients still flow
    *through* them to their inputs), restoring each parameter's flag afterwards.

    >>> net = torch.nn.Linear(1, 1)
    >>> x = torch.ones(1, 1, requires_grad=True)
    >>> with frozen(net):
    ...     net(x).sum().backward()
    >>> net.weight.grad is None, x.grad is not None, net.weight.requires_grad
    (True, True, True)
    """
    params = [
        p
        for m in modules
        if isinstance(m, torch.nn.Module)
        for p in m.parameters()
        if p.requires_grad
    ]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def imagine(
    env: Any, actor: Any, start: TensorDictBase, horizon: int, state_keys: tuple[NestedKey, ...]
) -> TensorDictBase:
    """``env.rollout(horizon, actor)`` from the (detached) ``state_keys`` of ``start``.

    The model's parameters are frozen (no gradient to the world model), the actor samples
    (``ExplorationType.RANDOM``) and the graph from the actor's parameters through the imagined
    states is kept. The rollout itself is :func:`wmrl.search.imagine`, the one used by every
    backend's policy search.

    Returns:
        the trajectory ``[*B, horizon]``.

    Example: the model ``x' = a x + u`` (reward ``-|x'|²``, learnable ``a``) and a linear
    actor; the return's gradient reaches the actor, not the model.

    >>> from tensordict.nn import TensorDictModule
    >>> from torchrl.data import Unbounded
    >>> from wmrl.envs.model_based import WorldModelEnv
    >>> class Model(torch.nn.Module):
    ...     state_keys, action_keys, predicts_reward = ("x",), ("action",), True
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.a = torch.nn.Parameter(torch.ones(()))
    ...     def forward(self, td):
    ...         x = self.a * td["x"] + td["action"]  # [*B, 1]
    ...         td["next", "x"], td["next", "reward"] = x, -(x**2).sum(-1, keepdim=True)
    ...         return td
    >>> model = Model()
    >>> env = WorldModelEnv(model, Unbounded((1,)), Unbounded((1,)), state_key="x")
    >>> actor = TensorDictModule(torch.nn.Linear(1, 1, bias=False), ["x"], ["action"])
    >>> start = TensorDict(x=torch.ones(2, 1), other=torch.zeros(2), batch_size=[2])
    >>> trajectory = imagine(env, actor, start, horizon=4, state_keys=("x",))
    >>> trajectory.shape
    torch.Size([2, 4])
    >>> trajectory["next", "reward"].sum().backward()
    >>> actor.module.weight.grad is not None, model.a.grad is None
    (True, True)
    """
    start = start.select(*state_keys).detach()
    with frozen(env), set_exploration_type(ExplorationType.RANDOM):
        return search.imagine(env, actor, start, horizon)


def evaluate_values(
    value_model: TensorDictModuleBase,
    td: TensorDictBase,
    value_key: NestedKey,
    *,
    frozen_params: bool,
) -> torch.Tensor:
    """Run ``value_model`` on the entries of ``td`` it reads; return its ``value_key`` ``[*B, 1]``.

    With ``frozen_params`` the value parameters get no gradient (gradients still reach the
    inputs, e.g. the imagined states). ``td`` itself is not written to.

    >>> from tensordict.nn import TensorDictModule
    >>> critic = TensorDictModule(torch.nn.Linear(2, 1), ["state"], ["state_value"])
    >>> state = torch.ones(4, 2, requires_grad=True)
    >>> td = TensorDict(state=state, belief=torch.zeros(4, 3), batch_size=[4])
    >>> value = evaluate_values(critic, td, "state_value", frozen_params=True)
    >>> value.sum().backward()
    >>> value.shape, critic.module.weight.grad is None, state.grad is not None
    (torch.Size([4, 1]), True, True)
    """
    inputs = td.select(*value_model.in_keys, strict=False)
    ctx = frozen(value_model) if frozen_params else contextlib.nullcontext()
    with ctx:
        out = value_model(inputs)
    return out.get(value_key)


def build_value_estimator(
    value_type: ValueEstimators | str | None,
    keys: dict[str, NestedKey],
    **hyperparams: Any,
) -> tuple[ValueEstimators, ValueEstimatorBase]:
    """A TorchRL ``TD0`` / ``TD1`` / ``TDLambda`` estimator with TorchRL's default
    hyper-parameters (``gamma = 0.99``, ``lmbda = 0.95``, differentiable; ``TDLambda``
    vectorised), overridden by ``hyperparams``, reading the entries named in ``keys``.

    Returns:
        the estimator type (``TDLambda`` when ``value_type`` is ``None``) and the estimator.

    Raises:
        ValueError: for an estimator other than those in :data:`SUPPORTED_VALUE_ESTIMATORS`.

    >>> keys = {"reward": "reward", "value": "state_value", "done": "done",
    ...         "terminated": "terminated"}
    >>> value_type, estimator = build_value_estimator(None, keys)
    >>> value_type.name, type(estimator).__name__, round(float(estimator.lmbda), 2)
    ('TDLambda', 'TDLambdaEstimator', 0.95)
    >>> build_value_estimator("GAE", keys)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: value estimator <...GAE...> is not supported; use one of ['TD0', 'TD1', 'TDLambda']
    """
    if value_type is None:
        value_type = ValueEstimators.TDLambda
    if isinstance(value_type, str) and not isinstance(value_type, ValueEstimators):
        try:
            value_type = ValueEstimators[value_type]
        except KeyError:
            value_type = ValueEstimators(value_type)
    if value_type not in _ESTIMATORS:
        raise ValueError(
            f"value estimator {value_type!r} is not supported; use one of "
            f"{[v.name for v in SUPPORTED_VALUE_ESTIMATORS]}"
        )
    hp = {**default_value_kwargs(value_type), **hyperparams}
    if value_type is ValueEstimators.TDLambda:
        hp.setdefault("vectorized", True)
    estimator = _ESTIMATORS[value_type](value_network=None, **hp)
    estimator.set_keys(**keys)
    return value_type, estimator


def lambda_targets(
    estimator: ValueEstimatorBase,
    reward: torch.Tensor,
    next_value: torch.Tensor,
    keys: dict[str, NestedKey],
) -> torch.Tensor:
    """Value targets ``[*B, H, 1]`` from rewards ``r_t`` and values ``v(s_{t+1})`` ``[*B, H, 1]``.

    Imagination never terminates, so ``done`` and ``terminated`` are all false and the last
    target bootstraps from ``v(s_H)``. Computed with autocast disabled.

    Example: unit rewards and a zero critic with ``γ = 1/2``, ``λ = 1``: the discounted
    returns ``V_2 = 1``, ``V_1 = 1 + V_2 / 2``, ``V_0 = 1 + V_1 / 2``.

    >>> keys = {"reward": "reward", "value": "state_value", "done": "done",
    ...         "terminated": "terminated"}
    >>> _, estimator = build_value_estimator("TDLambda", keys, gamma=0.5, lmbda=1.0)
    >>> lambda_targets(estimator, torch.ones(1, 3, 1), torch.zeros(1, 3, 1), keys).flatten()
    tensor([1.7500, 1.5000, 1.0000])
    """
    if reward.shape != next_value.shape:
        raise ValueError(
            f"reward {tuple(reward.shape)} and next value {tuple(next_value.shape)} differ"
        )
    never = torch.zeros(reward.shape, dtype=torch.bool, device=reward.device)  # [*B, H, 1]
    td = TensorDict(
        {
            ("next", keys["reward"]): reward,
            ("next", keys["value"]): next_value,
            ("next", keys["done"]): never,
            ("next", keys["terminated"]): never,
        },
        batch_size=reward.shape[:-1],
    )
    with torch.autocast(device_type=reward.device.type, enabled=False):  # float32 returns
        return estimator.value_estimate(td, next_value=next_value)  # [*B, H, 1]
