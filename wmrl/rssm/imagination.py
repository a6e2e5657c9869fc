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
    *through* them to their inputs), restoring each parameter's flag afterwards."""
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
    inputs, e.g. the imagined states).
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
    vectorised), overridden by ``hyperparams``, reading the entries named in ``keys``."""
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
