"""Dreamer's actor objective on imagined trajectories, minimised by :class:`PolicySearch`.

The trajectory comes from :func:`wmrl.search.imagine` in the learned model; the objective is the
lambda-return objective of :func:`wmrl.search.lambda_return_objective` (Hafner et al. 2019,
"Dream to Control", Eq. 6-7) with the two DreamerV3 additions (Hafner et al. 2023, Sec. 3,
"Actor learning", Eq. 11-12):

``J = -mean_{b,t} w_t G^λ_t / S - η mean_{b,t} w_t H[π(·|s_t)]``

and, optionally, an exploration bonus ``β d_t`` (:class:`~wmrl.agents.exploration.
DisagreementEnsemble`, Plan2Explore) added to every imagined reward before the returns.

* ``G^λ_t`` from :func:`wmrl.search.lambda_returns` with the frozen critic on the imagined next
  states; ``w_t = γ^t`` (``discount_weights``) or 1;
* ``S = max(min_scale, EMA(P95) - EMA(P5))`` of the returns (``return_normalization``), else 1;
* ``η`` the entropy bonus, ``H`` estimated per step by :func:`tanh_normal_entropy` (the
  tanh-Gaussian actor) or :func:`normal_entropy` (the bounded Normal, ``actor_dist``). ``η``
  is fixed, or, given an ``entropy_target`` ``H*``, adapted after every call as the temperature
  of Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications",
  Eq. 17-18): ``log η ← log η - α (H̄ - H*)`` with ``H̄`` the weighted mean entropy of the call,
  so the bonus grows while the policy's entropy is below the target (a saturating, bang-bang
  tanh-Gaussian) and fades while it is above.

That is the gradient through the model's dynamics (``actor_gradient="dynamics"``, Dreamer and
DreamerV3's continuous actions). ``actor_gradient="reinforce"`` is the score-function form that
DreamerV3 uses for discrete actions (Sec. 3, Eq. 11), here for the continuous actor:

``J = -mean_{b,t} w_t sg((G^λ_t - v(s_t)) / S) log π(a_t | s_t) - η mean_{b,t} w_t H[π(·|s_t)]``

with ``log π`` and ``H`` evaluated on the detached imagined states and actions, so no gradient
passes through the model.

With ``discount_weights=False``, no normalisation and ``η = 0`` the dynamics form is exactly
:func:`~wmrl.search.lambda_return_objective` (Dreamer). It writes ``"lambda_target"`` and
``"discount_weight"`` into the trajectory, which the critic losses read.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from wmrl.agents.distributed import all_reduce_mean
from wmrl.rssm.functional import cumulative_discount
from wmrl.rssm.imagination import evaluate_values, frozen
from wmrl.search import lambda_returns

__all__ = [
    "DreamerObjective",
    "tanh_normal_entropy",
    "tanh_normal_log_prob",
    "normal_entropy",
    "normal_log_prob",
    "ACTOR_GRADIENTS",
    "ACTOR_DISTS",
]

#: the actor gradients :class:`DreamerObjective` accepts
ACTOR_GRADIENTS = ("dynamics", "reinforce")
#: the actor distributions: the tanh-Gaussian (:class:`~wmrl.rssm.actor.TanhNormalSample`) and
#: DreamerV3's bounded Normal (:class:`~wmrl.rssm.actor.BoundedNormalSample`)
ACTOR_DISTS = ("tanh_normal", "bounded_normal")


def tanh_normal_log_prob(
    loc: torch.Tensor,
    scale: torch.Tensor,
    action: torch.Tensor,
    mean_scale: float = 5.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``log π(a)`` of the actor's ``a = tanh(m tanh(loc / m) + scale ε)``, ``ε ~ N(0, I)``.

    ``log π(a) = Σ_i [log N(u_i; m tanh(loc_i / m), scale_i²) - log(1 - a_i²)]`` with
    ``u = atanh(a)`` (the action clamped to ``±(1 - eps)`` first).

    Args:
        loc, scale: ``[*B, A]`` the actor's outputs (:class:`~wmrl.rssm.actor.DreamerActor`).
        action: ``[*B, A]`` in ``(-1, 1)``.
        mean_scale: ``m`` (5, as :class:`~wmrl.rssm.actor.TanhNormalSample`).

    Returns:
        ``[*B, 1]``.

    >>> zero, one = torch.zeros(1, 1), torch.ones(1, 1)
    >>> round(tanh_normal_log_prob(zero, one, zero).item(), 4)  # log N(0; 0, 1) at a = 0
    -0.9189
    """
    a = action.clamp(-1 + eps, 1 - eps)  # [*B, A]
    u = torch.atanh(a)  # [*B, A]
    mean = mean_scale * torch.tanh(loc / mean_scale)  # [*B, A]
    z = (u - mean) / scale  # [*B, A]
    gauss = -0.5 * z.square() - torch.log(scale) - 0.5 * math.log(2 * math.pi)  # [*B, A]
    return (gauss - torch.log1p(-a.square())).sum(-1, keepdim=True)  # [*B, 1]


def tanh_normal_entropy(
    scale: torch.Tensor, action: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """One-sample estimate of the entropy of ``a = tanh(u)``, ``u ~ N(m, diag(σ²))``.

    ``H[a] = H[u] + E[log(1 - a²)]`` (change of variables), with ``H[u] = Σ_i log σ_i +
    ½ log(2πe)`` per dimension and ``log(1 - a²)`` of the sampled action (clamped at ``eps``);
    its expectation over samples is the exact entropy.

    Args:
        scale: ``[*B, A]`` standard deviations ``σ`` of ``u``.
        action: ``[*B, A]`` the sample ``a``.

    Returns:
        ``[*B, 1]``.

    >>> tanh_normal_entropy(torch.ones(1, 1), torch.zeros(1, 1))  # ½ log(2πe) at a = 0
    tensor([[1.4189]])
    """
    gauss = torch.log(scale) + 0.5 * math.log(2 * math.pi * math.e)  # [*B, A]
    jac = torch.log((1 - action.square()).clamp_min(eps))  # [*B, A]
    return (gauss + jac).sum(-1, keepdim=True)  # [*B, 1]


def normal_log_prob(loc: torch.Tensor, scale: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """``log N(a; tanh(loc), diag(scale²))`` summed over the action, ``[*B, A] -> [*B, 1]``: the
    bounded Normal's density inside ``(-1, 1)`` (:class:`~wmrl.rssm.actor.BoundedNormalSample`;
    DreamerV3 scores its clipped samples with the Gaussian density as well).

    >>> zero, one = torch.zeros(1, 1), torch.ones(1, 1)
    >>> round(normal_log_prob(zero, one, zero).item(), 4)
    -0.9189
    """
    z = (action - torch.tanh(loc)) / scale  # [*B, A]
    gauss = -0.5 * z.square() - torch.log(scale) - 0.5 * math.log(2 * math.pi)  # [*B, A]
    return gauss.sum(-1, keepdim=True)  # [*B, 1]


def normal_entropy(scale: torch.Tensor) -> torch.Tensor:
    """``Σ_i log σ_i + ½ log(2πe)``: the entropy of the bounded Normal's Gaussian (as DreamerV3),
    ``[*B, A] -> [*B, 1]``; unlike the tanh-Gaussian's it does not depend on the mean.

    >>> normal_entropy(torch.ones(1, 2))
    tensor([[2.8379]])
    """
    return (torch.log(scale) + 0.5 * math.log(2 * math.pi * math.e)).sum(-1, keepdim=True)


class DreamerObjective(nn.Module):
    """``trajectory -> J`` (to minimise) for :class:`~wmrl.search.PolicySearch` (see module doc).

    Args:
        value: the critic (reads ``"state"``/``"belief"``, writes ``value_key``); its parameters
            are frozen while the objective runs.
        gamma, lmbda: discount and lambda of the returns (0.99, 0.95).
        discount_weights: weight step ``t`` by ``γ^t``.
        return_normalization: divide by the EMA percentile range ``S`` (DreamerV3).
        rate: EMA rate of the percentiles (0.01).
        quantiles: the percentiles (0.05, 0.95).
        min_scale: lower bound of ``S`` (1).
        entropy_bonus: ``η`` (0; DreamerV3 uses 3e-4).
        value_key: the critic's output entry.
        exploration: an ensemble whose :meth:`~wmrl.agents.exploration.DisagreementEnsemble.
            bonus` of ``(state, belief)`` and ``action`` at step ``t`` is added, times
            ``exploration_bonus``, to the reward of that step (its parameters frozen here).
        exploration_bonus: ``β`` (0: off).
        actor_gradient: ``"dynamics"`` (backpropagation through the imagined trajectory) or
            ``"reinforce"`` (score function with the critic as baseline).
        policy_head: the module that writes ``"loc"`` and ``"scale"`` from the latent (the
            first module of the actor); needed for ``"reinforce"``.
        mean_scale: ``m`` of the actor's tanh-Gaussian (``"reinforce"``).
        actor_dist: ``"tanh_normal"`` (default) or ``"bounded_normal"``: which entropy and
            log-density the bonus and ``"reinforce"`` use.
        entropy_target: ``H*`` per step (nats); ``None`` (default) keeps ``η`` fixed. With a
            target, ``entropy_bonus`` is the initial ``η``.
        entropy_lr: ``α`` of the ``log η`` update (0.01).
        entropy_range: bounds of the adapted ``η`` (1e-6, 1).

    The percentile EMAs and ``log η`` are buffers (checkpointed with the state dict), updated in
    training mode from the returns and entropies of all data-parallel processes (averaged), so
    every process uses the same ``S`` and ``η``.

    Example:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> critic = TensorDictModule(lambda s: s.sum(-1, keepdim=True) * 0, ["state"],
        ...                           ["state_value"])
        >>> traj = TensorDict({"next": {"state": torch.zeros(2, 3, 1),
        ...                             "reward": torch.ones(2, 3, 1)}}, [2, 3])
        >>> DreamerObjective(critic, gamma=1.0, lmbda=1.0)(traj)  # -mean of [3, 2, 1]
        tensor(-2.)
    """

    def __init__(
        self,
        value: TensorDictModuleBase,
        *,
        gamma: float = 0.99,
        lmbda: float = 0.95,
        discount_weights: bool = False,
        return_normalization: bool = False,
        rate: float = 0.01,
        quantiles: tuple[float, float] = (0.05, 0.95),
        min_scale: float = 1.0,
        entropy_bonus: float = 0.0,
        value_key: str = "state_value",
        exploration: nn.Module | None = None,
        exploration_bonus: float = 0.0,
        actor_gradient: str = "dynamics",
        policy_head: TensorDictModuleBase | None = None,
        mean_scale: float = 5.0,
        actor_dist: str = "tanh_normal",
        entropy_target: float | None = None,
        entropy_lr: float = 0.01,
        entropy_range: tuple[float, float] = (1e-6, 1.0),
    ) -> None:
        super().__init__()
        if actor_dist not in ACTOR_DISTS:
            raise ValueError(f"actor_dist must be one of {ACTOR_DISTS}, got {actor_dist!r}")
        self.actor_dist = actor_dist
        if actor_gradient not in ACTOR_GRADIENTS:
            raise ValueError(
                f"actor_gradient must be one of {ACTOR_GRADIENTS}, got {actor_gradient!r}"
            )
        if actor_gradient == "reinforce" and policy_head is None:
            raise ValueError("actor_gradient='reinforce' needs the policy_head")
        self.actor_gradient, self.mean_scale = actor_gradient, mean_scale
        self.__dict__["policy_head"] = policy_head  # the actor's: not a submodule here
        if not (0 < gamma <= 1 and 0 <= lmbda <= 1):
            raise ValueError(f"need 0 < gamma <= 1 and 0 <= lmbda <= 1, got {gamma}, {lmbda}")
        low, high = quantiles
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}")
        if not 0.0 <= rate <= 1.0 or min_scale <= 0 or entropy_bonus < 0:
            raise ValueError("need 0 <= rate <= 1, min_scale > 0 and entropy_bonus >= 0")
        lo_eta, hi_eta = entropy_range
        if entropy_target is not None and not (entropy_lr > 0 and 0 < lo_eta < hi_eta):
            raise ValueError(
                f"an entropy target needs entropy_lr > 0 and 0 < {lo_eta} < {hi_eta} (range)"
            )
        if entropy_target is not None and not math.isfinite(entropy_target):
            raise ValueError(f"entropy_target must be finite, got {entropy_target}")
        self.entropy_target, self.entropy_lr = entropy_target, entropy_lr
        self.log_eta_range = (math.log(lo_eta), math.log(hi_eta))
        if exploration_bonus < 0 or (exploration_bonus > 0 and exploration is None):
            raise ValueError("exploration_bonus must be >= 0 and needs an exploration ensemble")
        self.__dict__["exploration"] = exploration  # trained by its own loss: not a submodule
        self.exploration_bonus = exploration_bonus
        self.__dict__["value"] = value  # trained by its own loss: not a submodule
        self.gamma, self.lmbda, self.discount_weights = gamma, lmbda, discount_weights
        self.return_normalization, self.rate = return_normalization, rate
        self.quantiles, self.min_scale = (float(low), float(high)), min_scale
        self.entropy_bonus, self.value_key = entropy_bonus, value_key
        self.register_buffer("return_low", torch.zeros(()))
        self.register_buffer("return_high", torch.zeros(()))
        if entropy_target is not None:
            start = min(max(entropy_bonus, lo_eta), hi_eta)
            self.register_buffer("log_entropy_weight", torch.tensor(math.log(start)))

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """As :meth:`torch.nn.Module.load_state_dict`, across a change of entropy target: a
        state without ``log_entropy_weight`` keeps the initial ``η``, and a stored one is
        dropped when ``η`` is fixed (a run resumed with or without ``entropy_target``)."""
        state = dict(state_dict)
        if self.entropy_target is None:
            state.pop("log_entropy_weight", None)
        else:
            state.setdefault("log_entropy_weight", self.log_entropy_weight.clone())
        return super().load_state_dict(state, strict=strict, assign=assign)

    @property
    def has_entropy_term(self) -> bool:
        """Whether the loss carries the entropy bonus: a positive ``η`` or an entropy target."""
        return self.entropy_bonus > 0 or self.entropy_target is not None

    @property
    def entropy_weight(self) -> float:
        """``η`` now: ``entropy_bonus``, or its adapted value under an entropy target."""
        if self.entropy_target is None:
            return self.entropy_bonus
        return float(self.log_entropy_weight.exp())

    def entropy_term(self, entropy: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``η mean_{b,t} w_t H_t`` (to subtract from the loss) for per-step entropies
        ``[*B, H, 1]``; under an entropy target, in training mode, ``log η`` then moves by
        ``-α (H̄ - H*)`` with ``H̄`` that weighted mean (averaged over processes), clamped to
        ``entropy_range``.

        >>> obj = DreamerObjective(None, entropy_bonus=0.1, entropy_target=-1.0, entropy_lr=0.5)
        >>> round(float(obj.entropy_term(torch.full((1, 2, 1), -3.0), torch.ones(1, 2, 1))), 4)
        -0.3
        >>> round(obj.entropy_weight, 4)  # 0.1 * exp(0.5 * 2): the entropy was below the target
        0.2718
        """
        mean_entropy = (weight * entropy).mean()
        if self.entropy_target is None:
            return self.entropy_bonus * mean_entropy
        # η as a tensor: no host synchronisation on the update path
        term = self.log_entropy_weight.exp().to(mean_entropy.dtype) * mean_entropy
        if self.training:
            with torch.no_grad():
                gap = all_reduce_mean(mean_entropy.detach().float()) - self.entropy_target
                step = self.log_entropy_weight - self.entropy_lr * gap.to(self.log_entropy_weight)
                self.log_entropy_weight.copy_(step.clamp(*self.log_eta_range))
        return term

    def return_scale(self, returns: torch.Tensor) -> torch.Tensor:
        """``S`` (Eq. 12); the percentile EMAs are updated first in training mode."""
        if not self.return_normalization:
            return returns.new_ones(())
        if self.training:
            with torch.no_grad():
                q = torch.tensor(self.quantiles, dtype=returns.dtype, device=returns.device)
                lohi = all_reduce_mean(torch.quantile(returns.detach().flatten(), q))  # [2]
                self.return_low.lerp_(lohi[0].to(self.return_low), self.rate)
                self.return_high.lerp_(lohi[1].to(self.return_high), self.rate)
        scale = (self.return_high - self.return_low).clamp_min(self.min_scale)
        return scale.to(returns.dtype)

    def intrinsic_reward(self, trajectory: TensorDictBase) -> torch.Tensor:
        """The exploration ensemble's bonus of each imagined step, ``[*B, H, 1]``."""
        latent = torch.cat([trajectory.get("state"), trajectory.get("belief")], -1)  # [*B, H, F]
        with frozen(self.exploration):
            return self.exploration.bonus(latent, trajectory.get("action"))  # [*B, H, 1]

    def forward(self, trajectory: TensorDictBase) -> torch.Tensor:
        """``J`` of an imagined ``trajectory`` ``[*B, H]``; writes ``"lambda_target"`` and
        ``"discount_weight"`` (each ``[*B, H, 1]``) into it.

        Unit rewards, a zero critic, ``γ = 1/2``, ``λ = 1`` and ``w_t = γ^t``: the returns are
        ``1.75, 1.5, 1`` and ``J = -(1.75 + 0.75 + 0.25) / 3``.

        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> critic = TensorDictModule(torch.zeros_like, ["state"], ["state_value"])
        >>> traj = TensorDict({"next": {"state": torch.zeros(1, 3, 1),
        ...                             "reward": torch.ones(1, 3, 1)}}, [1, 3])
        >>> objective = DreamerObjective(critic, gamma=0.5, lmbda=1.0, discount_weights=True)
        >>> objective(traj)
        tensor(-0.9167)
        >>> traj["lambda_target"].flatten().tolist(), traj["discount_weight"].flatten().tolist()
        ([1.75, 1.5, 1.0], [1.0, 0.5, 0.25])
        """
        nxt = trajectory.get("next")
        value = evaluate_values(self.value, nxt, self.value_key, frozen_params=True)  # [*B, H, 1]
        reward = nxt.get("reward")  # [*B, H, 1]
        dtype = torch.promote_types(reward.dtype, torch.float32)  # at least float32 (autocast)
        reward, value = reward.to(dtype), value.to(dtype)  # [*B, H, 1] each
        if self.exploration_bonus > 0:
            reward = reward + self.exploration_bonus * self.intrinsic_reward(trajectory).to(dtype)
        target = lambda_returns(reward, value, self.gamma, self.lmbda)  # [*B, H, 1]
        if self.discount_weights:
            weight = cumulative_discount(target, self.gamma)  # [*B, H, 1]
        else:
            weight = torch.ones_like(target)  # [*B, H, 1]
        trajectory.set("lambda_target", target)
        trajectory.set("discount_weight", weight)
        if self.actor_gradient == "reinforce":
            return self._reinforce(trajectory, target, weight, dtype)
        loss = -(weight * target / self.return_scale(target)).mean()
        if self.has_entropy_term:
            entropy = self.entropy(
                trajectory.get("scale").to(dtype), trajectory.get("action").to(dtype)
            )  # [*B, H, 1]
            loss = loss - self.entropy_term(entropy, weight)
        return loss

    def entropy(self, scale: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The actor distribution's entropy (estimate) per step, ``[*B, A] -> [*B, 1]``."""
        if self.actor_dist == "bounded_normal":
            return normal_entropy(scale)
        return tanh_normal_entropy(scale, action)

    def _reinforce(
        self,
        trajectory: TensorDictBase,
        target: torch.Tensor,
        weight: torch.Tensor,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """The score-function objective on the detached trajectory (module doc)."""
        target, weight = target.detach(), weight.detach()  # [*B, H, 1] each
        with torch.no_grad():
            baseline = evaluate_values(self.value, trajectory.detach(), self.value_key,
                                       frozen_params=True).to(dtype)  # [*B, H, 1]  # fmt: skip
        advantage = (target - baseline) / self.return_scale(target)  # [*B, H, 1]
        assert self.policy_head is not None
        latent = trajectory.select(*self.policy_head.in_keys).detach()
        head = self.policy_head(latent)
        loc, scale = head.get("loc").to(dtype), head.get("scale").to(dtype)  # [*B, H, A]
        action = trajectory.get("action").detach().to(dtype)  # [*B, H, A]
        if self.actor_dist == "bounded_normal":
            log_prob = normal_log_prob(loc, scale, action)  # [*B, H, 1]
        else:
            log_prob = tanh_normal_log_prob(loc, scale, action, self.mean_scale)  # [*B, H, 1]
        loss = -(weight * advantage * log_prob).mean()
        if self.has_entropy_term:
            entropy = self.entropy(scale, action)  # [*B, H, 1]
            loss = loss - self.entropy_term(entropy, weight)
        return loss
