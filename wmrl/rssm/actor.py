"""The Dreamer actor: a Gaussian policy on the latent state, bounded to ``[-1, 1]``.

Two action distributions over the same network (:class:`DreamerActor`, ``(loc, scale)``):

* the **tanh-Gaussian** of Hafner et al. 2019, "Dream to Control", Eq. 5 and App. A:
  ``a = tanh(mu(s) + sigma(s) eps)`` with ``eps ~ N(0, I)``, the mean squashed as
  ``5 tanh(mu / 5)`` and the scale a softplus offset so that it starts at 5 (``std_bias``)
  (:class:`TanhNormalSample`);
* the **bounded Normal** of DreamerV3's released agent (Hafner et al. 2023): a Gaussian in action
  space with mean ``tanh(mu(s))`` and standard deviation ``(max - min) sigmoid(raw + 2) + min``
  in ``[0.1, 1]``, samples clipped to ``[-1, 1]`` (:class:`BoundedNormalSample`,
  ``scale_mapping="bounded"``). Its entropy does not depend on the mean, so near the bounds the
  exploration noise stays in action space instead of being squashed by the tanh.

Either sample is reparameterised, so the actor is trained by backpropagating the lambda-returns
through the imagined dynamics.
"""

from __future__ import annotations

import math

import torch
from tensordict.nn import InteractionType
from tensordict.nn.probabilistic import interaction_type
from torch import nn
from torch.nn import functional as F

from wmrl.rssm.heads import DenseHead

__all__ = [
    "DreamerActor",
    "TanhNormalSample",
    "BoundedNormalSample",
    "bounded_normal_rsample",
    "bounded_sigmoid_scale",
    "tanh_normal_rsample",
    "deterministic_action_slope",
    "biased_softplus_scale",
    "sampling_actions",
]


def sampling_actions() -> bool:
    """Whether policies sample now: no deterministic interaction type (``DETERMINISTIC``,
    ``MODE``, ``MEAN``) is set through ``tensordict.nn.set_interaction_type`` (or TorchRL's
    ``set_exploration_type``).

    >>> from tensordict.nn import set_interaction_type
    >>> with set_interaction_type(InteractionType.DETERMINISTIC):
    ...     sampling_actions()
    False
    >>> with set_interaction_type(InteractionType.RANDOM):
    ...     sampling_actions()
    True
    """
    kind = interaction_type()
    return kind not in (InteractionType.DETERMINISTIC, InteractionType.MODE, InteractionType.MEAN)


def biased_softplus_scale(raw: torch.Tensor, bias: float, min_val: float) -> torch.Tensor:
    """``softplus(raw + c) + min_val`` with ``c`` such that ``raw = 0`` maps to ``bias``.

    (TorchRL's ``biased_softplus_{bias}_{min_val}`` scale mapping, then clamped at ``min_val``.)

    >>> biased_softplus_scale(torch.zeros(1), 5.0, 1e-4).item()  # doctest: +ELLIPSIS
    5.0...
    """
    c = math.log(math.expm1(bias - min_val))
    return (F.softplus(raw + c) + min_val).clamp_min(min_val)  # [*B, A]


def bounded_sigmoid_scale(raw: torch.Tensor, min_val: float, max_val: float) -> torch.Tensor:
    """``(max_val - min_val) sigmoid(raw + 2) + min_val``: DreamerV3's actor scale, in
    ``(min_val, max_val)``.

    >>> round(bounded_sigmoid_scale(torch.zeros(1), 0.1, 1.0).item(), 4)  # 0.9 sigmoid(2) + 0.1
    0.8927
    """
    return torch.sigmoid(raw + 2.0) * (max_val - min_val) + min_val  # [*B, A]


def bounded_normal_rsample(
    loc: torch.Tensor, scale: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """``clip(tanh(loc) + scale * noise, -1, 1)``: DreamerV3's bounded Normal, reparameterised
    (the gradient is zero where the sample is clipped).

    >>> bounded_normal_rsample(torch.zeros(2), torch.ones(2), torch.tensor([0.5, 3.0]))
    tensor([0.5000, 1.0000])
    """
    return torch.addcmul(torch.tanh(loc), scale, noise).clamp(-1.0, 1.0)  # [*B, A]


def tanh_normal_rsample(
    loc: torch.Tensor, scale: torch.Tensor, noise: torch.Tensor, mean_scale: float = 5.0
) -> torch.Tensor:
    """``tanh(m tanh(loc / m) + scale * noise)`` with ``m = mean_scale`` (Dream to Control, App. A).

    >>> tanh_normal_rsample(torch.zeros(2), torch.ones(2), torch.zeros(2))
    tensor([0., 0.])
    """
    mean = mean_scale * torch.tanh(loc / mean_scale)  # [*B, A]
    return torch.tanh(torch.addcmul(mean, scale, noise))  # [*B, A]


def deterministic_action_slope(
    loc: torch.Tensor, actor_dist: str = "tanh_normal", mean_scale: float = 5.0
) -> torch.Tensor:
    """``d a / d loc`` of the deterministic action, elementwise ``[*B, A] -> [*B, A]``: how
    much of a gradient on the action reaches the actor's network.

    * tanh-Gaussian, ``a = tanh(m tanh(loc / m))``: ``(1 - a²)(1 - tanh²(loc / m))``;
    * bounded Normal, ``a = tanh(loc)``: ``1 - a²``.

    1 at ``loc = 0``; near 0 when the actor's mean is saturated at a bound, where the
    reparameterised gradient of the lambda-returns vanishes and the imagined samples of a
    tanh-Gaussian all lie at the bound.

    >>> deterministic_action_slope(torch.tensor([0.0, 3.4]))
    tensor([1.0000, 0.0070])
    """
    if actor_dist == "bounded_normal":
        return 1 - torch.tanh(loc).square()
    if actor_dist != "tanh_normal":
        raise ValueError(
            f"actor_dist must be 'tanh_normal' or 'bounded_normal', got {actor_dist!r}"
        )
    inner = torch.tanh(loc / mean_scale)  # [*B, A]
    a = torch.tanh(mean_scale * inner)  # [*B, A]
    return (1 - a.square()) * (1 - inner.square())


class DreamerActor(nn.Module):
    """``(state, belief) -> (loc, scale)`` of the actor's action distribution.

    An MLP of ``depth`` hidden layers of ``num_cells`` units (ELU), output ``2 * out_features``
    split into ``loc`` and a scale: ``biased_softplus(., std_bias, std_min_val)`` (the default,
    the tanh-Gaussian's) or, with ``scale_mapping="bounded"``,
    :func:`bounded_sigmoid_scale` ``(., std_min_val, std_max_val)`` (DreamerV3's bounded
    Normal). The parameter layout (``backbone``) follows TorchRL's ``MLP``, so TorchRL's
    ``DreamerActor`` state dicts load. Sample actions with :class:`TanhNormalSample` (or
    TorchRL's ``TanhNormal`` with ``tanh_loc=True``, which has the same distribution) or
    :class:`BoundedNormalSample`.

    Args:
        out_features: action dimension.
        depth: hidden layers (default 4).
        num_cells: hidden width (default 200).
        activation_class: hidden activation (default ``nn.ELU``).
        std_bias: scale at a zero pre-activation (default 5).
        std_min_val: minimum scale (default 1e-4).
        scale_mapping: ``"softplus"`` (default) or ``"bounded"``.
        std_max_val: maximum scale of the ``"bounded"`` mapping (default 1).
        in_features: ``S + H`` (default 230).
        device: where the parameters live.

    Example:
        >>> actor = DreamerActor(2, depth=2, num_cells=8, in_features=6)
        >>> loc, scale = actor(torch.zeros(3, 4), torch.zeros(3, 2))
        >>> loc.shape, bool((scale > 0).all())
        (torch.Size([3, 2]), True)
    """

    def __init__(
        self,
        out_features: int,
        depth: int = 4,
        num_cells: int = 200,
        activation_class: type[nn.Module] = nn.ELU,
        std_bias: float = 5.0,
        std_min_val: float = 1e-4,
        in_features: int = 230,
        device: torch.device | str | None = None,
        scale_mapping: str = "softplus",
        std_max_val: float = 1.0,
    ) -> None:
        super().__init__()
        if scale_mapping not in ("softplus", "bounded"):
            raise ValueError(f"scale_mapping must be 'softplus' or 'bounded': {scale_mapping!r}")
        if scale_mapping == "bounded" and not 0 < std_min_val < std_max_val:
            raise ValueError(f"need 0 < std_min_val < std_max_val: {std_min_val}, {std_max_val}")
        mlp = DenseHead(in_features, 2 * out_features, depth, num_cells, activation_class, device)
        self.backbone = mlp.net
        self.std_bias, self.std_min_val = std_bias, std_min_val
        self.scale_mapping, self.std_max_val = scale_mapping, std_max_val

    def forward(
        self, state: torch.Tensor, belief: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Action ``(loc, scale)``, each ``[*B, A]``, of ``state`` and ``belief``."""
        loc, raw = self.backbone(torch.cat([state, belief], dim=-1)).chunk(2, -1)  # [*B, A] x 2
        if self.scale_mapping == "bounded":
            return loc, bounded_sigmoid_scale(raw, self.std_min_val, self.std_max_val)
        return loc, biased_softplus_scale(raw, self.std_bias, self.std_min_val)


class TanhNormalSample(nn.Module):
    """Reparameterised sample of the tanh-Gaussian: ``(loc, scale) -> action`` in ``(-1, 1)``.

    Samples by default; under ``tensordict.nn.set_interaction_type`` with a deterministic type
    (``DETERMINISTIC``, ``MODE``, ``MEAN``) returns ``tanh(m tanh(loc / m))`` instead.

    Args:
        mean_scale: ``m`` in :func:`tanh_normal_rsample` (default 5, TorchRL's ``tanh_loc``
            upscale).

    Example:
        >>> TanhNormalSample()(torch.zeros(4, 2), torch.ones(4, 2)).shape
        torch.Size([4, 2])
    """

    def __init__(self, mean_scale: float = 5.0) -> None:
        super().__init__()
        self.mean_scale = mean_scale

    def forward(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """An action ``[*B, A]`` in ``(-1, 1)``: a sample, or the deterministic action."""
        noise = torch.randn_like(loc) if sampling_actions() else torch.zeros_like(loc)  # [*B, A]
        return tanh_normal_rsample(loc, scale, noise, self.mean_scale)


class BoundedNormalSample(nn.Module):
    """Reparameterised sample of DreamerV3's bounded Normal: ``(loc, scale) -> action`` in
    ``[-1, 1]``, ``clip(tanh(loc) + scale ε, -1, 1)``.

    Samples by default; under a deterministic interaction type returns the mean ``tanh(loc)``.

    Example:
        >>> from tensordict.nn import set_interaction_type
        >>> with set_interaction_type(InteractionType.DETERMINISTIC):
        ...     BoundedNormalSample()(torch.zeros(1, 1), torch.ones(1, 1))
        tensor([[0.]])
    """

    def forward(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """An action ``[*B, A]`` in ``[-1, 1]``: a sample, or the deterministic action."""
        if not sampling_actions():
            return torch.tanh(loc)  # [*B, A]
        return bounded_normal_rsample(loc, scale, torch.randn_like(loc))  # [*B, A]
