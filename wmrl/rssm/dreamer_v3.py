"""DreamerV3 losses (Hafner et al. 2023, "Mastering Diverse Domains through World Models").

* :class:`DreamerV3ModelLoss`: KL balancing — separate dynamics and representation terms with
  free bits (Eq. 5) — symlog reconstruction (Eq. 9) and a two-hot reward head (Eq. 10-11).
* :class:`DreamerV3ActorLoss`: imagined lambda-returns (Eq. 7) scaled by a return range
  tracked as an EMA of the 5th-95th percentile span (Eq. 12), an entropy bonus, and REINFORCE
  for discrete actions or backpropagation through the dynamics for continuous ones (Sec. 3,
  "Actor learning").
* :class:`DreamerV3ValueLoss`: critic regression onto the lambda-returns, as symlog MSE or as a
  two-hot cross-entropy (Sec. 3, "Critic learning").

``symlog``, ``symexp``, ``two_hot_encode``, ``two_hot_decode`` and ``two_hot_cross_entropy`` are
re-exported from :mod:`wmrl.rssm.twohot`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torchrl.objectives.common import LossModule

from wmrl.rssm.dreamer import DreamerActorLoss
from wmrl.rssm.functional import (
    categorical_kl,
    cumulative_discount,
    kl_balanced,
    kl_dynamics_representation,
    pointwise_distance,
    unimix_probs,
)
from wmrl.rssm.imagination import evaluate_values
from wmrl.rssm.overshooting import open_loop_predictions, overshooting_losses
from wmrl.rssm.twohot import (
    default_bins,
    symexp,
    symlog,
    two_hot_cross_entropy,
    two_hot_decode,
    two_hot_encode,
)

__all__ = [
    "DreamerV3ModelLoss",
    "DreamerV3ActorLoss",
    "DreamerV3ValueLoss",
    "symlog",
    "symexp",
    "two_hot_encode",
    "two_hot_decode",
    "two_hot_cross_entropy",
]

_KL_MODES = ("separate", "balanced")


def _sum_features(x: torch.Tensor, batch_dims: int, global_average: bool) -> torch.Tensor:
    """Mean over all elements, or sum over the non-batch dimensions then mean."""
    if not global_average:
        x = x.sum(tuple(range(batch_dims, x.dim())))  # [*B]
    return x.mean()


class DreamerV3ModelLoss(LossModule):
    """DreamerV3 world-model loss: KL terms, symlog reconstruction, two-hot reward.

    ``world_model`` reads a batch of sequences ``[*B, T]`` and writes, under ``"next"``, the
    prior and posterior logits ``[*B, T, C, K]``, the reconstruction and the reward logits
    ``[*B, T, num_reward_bins]`` (or a scalar reward with ``reward_two_hot=False``). The true
    reward is renamed ``("next", "true_reward")`` first.

    * KL (Eq. 5), ``kl_mode="separate"`` (default): ``lambda_dynamic max(free_bits,
      KL(sg(q) || p)) + lambda_representation max(free_bits, KL(q || sg(p)))`` on the
      ``unimix``-mixed distributions, the KL of the whole latent clamped per time step
      (:func:`~wmrl.rssm.functional.kl_dynamics_representation`). ``kl_mode="balanced"``:
      DreamerV2's ``kl_alpha`` balancing (:func:`~wmrl.rssm.functional.kl_balanced`). Either way
      the result is ``loss_model_kl`` (times ``lambda_kl``); the unweighted terms are logged as
      ``kl_dynamic`` / ``kl_representation`` in ``"separate"`` mode.
    * Reconstruction: ``reco_loss`` (``"l2"`` or ``"l1"``) between ``symlog`` of target and
      prediction (``reco_symlog``), summed over non-batch dimensions and averaged.
    * Reward: two-hot cross-entropy over ``num_reward_bins`` symexp-spaced bins, or symlog MSE.
    * Continuation (``lambda_continue > 0``): binary cross-entropy of ``continue_pred`` logits
      against ``not terminated``, written as ``loss_model_continue``.
    * Latent overshooting (``overshooting = D >= 2``, :mod:`wmrl.rssm.overshooting`): the
      ``prior`` is also rolled ``d = 2..D`` steps open loop from every filtered latent with the
      replayed actions; the dynamics term of those predictions against the (stopped)
      posteriors, averaged over ``d`` and weighted as the one-step term, is
      ``loss_model_overshoot_kl``, and the ``reward_head``'s cross-entropy on them, weighted as
      the one-step reward, ``loss_model_overshoot_reward``.

    Defaults follow the paper (``lambda_dynamic = 0.5``, ``lambda_representation = 0.1``,
    ``unimix = 0.01``, ``free_bits = 1``, separate KL terms); TorchRL 0.14.1 defaults to the
    DreamerV2 balancing, ``lambda_dynamic = 1`` and ``unimix = 0`` and writes the separate terms
    under two keys. Losses are 0-dim scalars.

    Args:
        world_model: the world-model TensorDict module.
        lambda_kl, lambda_reco, lambda_reward, lambda_continue: weights.
        kl_mode: ``"separate"`` or ``"balanced"``.
        lambda_dynamic, lambda_representation: KL term weights (``"separate"``).
        unimix: uniform mixture of the KL distributions.
        kl_alpha: balancing weight (``"balanced"``).
        free_bits: KL floor in nats.
        free_bits_dynamic: floor of the dynamics term alone (``"separate"``; ``None``:
            ``free_bits``).
        reco_loss: ``"l2"`` or ``"l1"``.
        reco_symlog: compare ``symlog`` of target and prediction.
        reward_two_hot: two-hot reward logits (else a scalar prediction, symlog MSE).
        num_reward_bins: ``K`` of the reward head.
        global_average: average the reconstruction over all elements.
        overshooting: ``D``, the longest open-loop distance trained (0 or 1: off).
        prior: the prior step ``(state, belief, action) -> (logits, state, belief)`` the
            world model uses (with ``overshooting``).
        reward_head: ``(state, belief) -> reward logits`` (with ``overshooting``; ``None``: no
            reward term).

    ``forward(tensordict)`` returns ``(loss_td, model_output.detach())``.

    Example: a toy model whose prior and posterior agree (both KL terms are clamped to
    ``free_bits = 1``: ``0.5 + 0.1``), whose reconstruction is off by one on 12 pixel values
    (``12 log(2)²`` in symlog space) and whose reward logits are uniform (``log 255``).

    >>> class Toy(torch.nn.Module):
    ...     def forward(self, td):
    ...         td["next", "prior_logits"] = torch.zeros(*td.shape, 2, 4)  # [B, T, C, K]
    ...         td["next", "posterior_logits"] = torch.zeros(*td.shape, 2, 4)
    ...         td["next", "reco_pixels"] = td["next", "pixels"] + 1
    ...         td["next", "reward_logits"] = torch.zeros(*td.shape, 255)
    ...         return td
    >>> td = TensorDict({"next": {"pixels": torch.zeros(4, 5, 3, 2, 2),
    ...                           "reward": torch.ones(4, 5, 1)}}, [4, 5])
    >>> loss_td, _ = DreamerV3ModelLoss(Toy())(td)
    >>> [round(loss_td[k].item(), 4) for k in ("loss_model_kl", "loss_model_reco",
    ...                                         "loss_model_reward")]
    [0.6, 5.7654, 5.5413]
    """

    @dataclass
    class _AcceptedKeys:
        """Entries read under ``"next"``: ``reward`` (true, renamed ``true_reward``),
        ``reward_logits``, ``prior_logits``, ``posterior_logits``, ``pixels``, ``reco_pixels``,
        ``continue_pred``, ``done``, ``terminated``; with overshooting ``state`` and ``belief``
        under ``"next"`` and ``action`` at the root."""

        reward: NestedKey = "reward"
        reward_logits: NestedKey = "reward_logits"
        true_reward: NestedKey = "true_reward"
        prior_logits: NestedKey = "prior_logits"
        posterior_logits: NestedKey = "posterior_logits"
        pixels: NestedKey = "pixels"
        reco_pixels: NestedKey = "reco_pixels"
        continue_pred: NestedKey = "continue_pred"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        state: NestedKey = "state"
        belief: NestedKey = "belief"
        action: NestedKey = "action"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys

    def __init__(
        self,
        world_model: Any,
        *,
        lambda_kl: float = 1.0,
        lambda_reco: float = 1.0,
        lambda_reward: float = 1.0,
        lambda_continue: float = 0.0,
        kl_mode: str = "separate",
        lambda_dynamic: float = 0.5,
        lambda_representation: float = 0.1,
        unimix: float = 0.01,
        kl_alpha: float = 0.8,
        free_bits: float = 1.0,
        free_bits_dynamic: float | None = None,
        reco_loss: str = "l2",
        reco_symlog: bool = True,
        reward_two_hot: bool = True,
        num_reward_bins: int = 255,
        global_average: bool = False,
        overshooting: int = 0,
        prior: Any = None,
        reward_head: Any = None,
    ) -> None:
        super().__init__()
        if overshooting >= 2 and prior is None:
            raise ValueError("overshooting needs the prior step module")
        if overshooting >= 2 and reward_head is not None and not reward_two_hot:
            raise ValueError("the overshooting reward term needs reward_two_hot=True")
        if kl_mode not in _KL_MODES:
            raise ValueError(f"kl_mode must be one of {_KL_MODES}, got {kl_mode!r}")
        if reco_loss not in ("l1", "l2"):
            raise ValueError(f"reco_loss must be 'l1' or 'l2', got {reco_loss!r}")
        self.world_model = world_model
        self.lambda_kl, self.lambda_reco = lambda_kl, lambda_reco
        self.lambda_reward, self.lambda_continue = lambda_reward, lambda_continue
        self.kl_mode, self.kl_alpha, self.free_bits, self.unimix = (
            kl_mode,
            kl_alpha,
            free_bits,
            unimix,
        )
        if free_bits_dynamic is not None and kl_mode != "separate":
            raise ValueError("free_bits_dynamic applies to kl_mode='separate'")
        self.free_bits_dynamic = free_bits_dynamic
        self.lambda_dynamic, self.lambda_representation = lambda_dynamic, lambda_representation
        self.reco_loss, self.reco_symlog, self.global_average = (
            reco_loss,
            reco_symlog,
            global_average,
        )
        self.reward_two_hot, self.num_reward_bins = reward_two_hot, num_reward_bins
        self.register_buffer("reward_bins", default_bins(num_reward_bins))
        self.overshooting = overshooting
        # a tuple, not registered: the world model already holds both modules
        self._overshoot_modules = (prior, reward_head)

    def _forward_value_estimator_keys(self, **kwargs: Any) -> None:
        pass

    def forward(self, tensordict: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        """``(loss_td, model_output.detach())`` for a batch of sequences (see the class doc)."""
        keys = self.tensor_keys
        td = tensordict.copy()
        td.rename_key_(("next", keys.reward), ("next", keys.true_reward))
        td = self.world_model(td)
        nxt, nb = td.get("next"), td.batch_dims
        out = TensorDict()

        post = nxt.get(keys.posterior_logits).float()  # [*B, T, C, K]
        prior = nxt.get(keys.prior_logits).float()  # [*B, T, C, K]
        if post.shape != prior.shape or post.dim() < 2:
            raise ValueError(
                f"prior and posterior logits must both be [*B, T, C, K], got "
                f"{tuple(prior.shape)} and {tuple(post.shape)}"
            )
        if self.kl_mode == "separate":
            dyn, rep = kl_dynamics_representation(
                post, prior, self.free_bits, self.unimix, self.free_bits_dynamic
            )
            kl = self.lambda_dynamic * dyn + self.lambda_representation * rep
            out.set("kl_dynamic", dyn.detach())
            out.set("kl_representation", rep.detach())
        else:
            kl = kl_balanced(post, prior, self.kl_alpha, self.free_bits)
        out.set("loss_model_kl", self.lambda_kl * kl)

        target = nxt.get(keys.pixels)
        if not target.is_floating_point():
            target = target.float() / 255.0  # [*B, T, ...] uint8 images to [0, 1]
        pred = nxt.get(keys.reco_pixels).to(target.dtype)  # [*B, T, ...]
        if self.reco_symlog:
            target, pred = symlog(target), symlog(pred)  # [*B, T, ...]
        reco = pointwise_distance(target, pred, self.reco_loss)  # [*B, T, ...]
        out.set("loss_model_reco", self.lambda_reco * _sum_features(reco, nb, self.global_average))

        true_reward = nxt.get(keys.true_reward)  # [*B, T, 1]
        if self.reward_two_hot:
            logits = nxt.get(keys.reward_logits).float()  # [*B, T, K]
            if logits.shape[-1] != self.num_reward_bins:
                raise ValueError(
                    f"reward logits have {logits.shape[-1]} bins, expected {self.num_reward_bins}"
                )
            reward = two_hot_cross_entropy(logits, true_reward, self.reward_bins)  # [*B, T]
        else:
            pred_reward = nxt.get(keys.reward).to(true_reward.dtype)  # [*B, T, 1]
            reward = (symlog(true_reward) - symlog(pred_reward)).square()  # [*B, T, 1]
        out.set("loss_model_reward", self.lambda_reward * reward.mean())

        if self.lambda_continue > 0:
            logit = nxt.get(keys.continue_pred).float()  # [*B, T, 1]
            term = nxt.get(keys.terminated, None)
            term = nxt.get(keys.done) if term is None else term
            cont = F.binary_cross_entropy_with_logits(logit, (~term.bool()).to(logit.dtype))
            out.set("loss_model_continue", self.lambda_continue * cont)

        if self.overshooting >= 2:
            self._overshoot(td, out)
        return out, td.detach()

    def step_kl(self, model_output: TensorDictBase) -> torch.Tensor:
        """``KL(q || p)`` of each time step of a :meth:`forward` output (both distributions
        after ``unimix``, summed over the categoricals), unclamped: ``[*B, T]``, in float32
        (how badly the prior predicted each step)."""
        keys, nxt = self.tensor_keys, model_output.get("next")
        q = unimix_probs(nxt.get(keys.posterior_logits).float(), self.unimix)  # [*B, T, C, K]
        p = unimix_probs(nxt.get(keys.prior_logits).float(), self.unimix)  # [*B, T, C, K]
        return categorical_kl(q, p)  # [*B, T]

    def _overshoot(self, td: TensorDictBase, out: TensorDictBase) -> None:
        """Add the latent-overshooting losses of the filtered sequence ``td`` to ``out``."""
        keys, nxt = self.tensor_keys, td.get("next")
        prior, reward_head = self._overshoot_modules
        predictions = open_loop_predictions(
            prior, nxt.get(keys.state), nxt.get(keys.belief), td.get(keys.action),
            self.overshooting,
        )  # fmt: skip
        floor = self.free_bits_dynamic if self.free_bits_dynamic is not None else self.free_bits
        kl, reward = overshooting_losses(
            predictions, nxt.get(keys.posterior_logits), nxt.get(keys.true_reward),
            reward_head, self.reward_bins, unimix=self.unimix, free_bits=floor,
        )  # fmt: skip
        weight = self.lambda_dynamic if self.kl_mode == "separate" else self.kl_alpha
        out.set("loss_model_overshoot_kl", self.lambda_kl * weight * kl)
        if reward is not None:
            out.set("loss_model_overshoot_reward", self.lambda_reward * reward)


class DreamerV3ActorLoss(DreamerActorLoss):
    """DreamerV3 actor loss with return normalisation and an entropy bonus.

    Imagines ``imagination_horizon`` steps as :class:`~wmrl.rssm.dreamer.DreamerActorLoss`
    (lambda-returns ``R_t`` from TorchRL's value estimator, TDLambda by default) and with
    weights ``w_t = gamma^t`` (``discount_loss``) or 1, written to ``"discount_weight"``,
    minimises (Hafner et al. 2023, Eq. 11-12)

    * backpropagation (continuous actions): ``-mean(w_t R_t / S)``;
    * REINFORCE (discrete actions): ``-mean(w_t log pi(a_t | s_t) sg((R_t - v(s_t)) / S))``;

    minus ``entropy_bonus * mean(w_t H[pi(. | s_t)])``. ``S = max(min_scale, P95 - P5)`` with
    the percentiles of the returns tracked as EMAs (rate ``return_normalization_rate``, updated
    in training mode), or ``S = 1`` without ``return_normalization``. ``use_reinforce=None``
    (default) picks REINFORCE when the environment's action spec is discrete (TorchRL 0.14.1
    defaults to ``False``). REINFORCE and the entropy need ``actor_model.get_dist`` (a
    ``ProbabilisticTensorDictSequential``); the entropy falls back to ``-log pi`` of a sample when
    the distribution has no closed form (tanh-Gaussian).

    ``forward`` returns ``loss_actor`` and the logged ``actor_entropy``, ``return_low``,
    ``return_high`` and ``return_scale``.

    Example: the setting of :class:`~wmrl.rssm.dreamer.DreamerActorLoss`'s example (unit
    rewards, zero critic, ``γ = 1/2``, ``λ = 1``, three steps): targets ``1.75, 1.5, 1``,
    weights ``1, 1/2, 1/4``, so ``loss_actor = -(1.75 + 0.75 + 0.25) / 3``. The first update
    moves the percentile EMAs 1% of the way to ``P5 = 1`` and ``P95 = 1.75``; their span is
    below ``min_scale``, so ``S = 1``.

    >>> from tensordict.nn import TensorDictModule
    >>> from torchrl.data import Unbounded
    >>> from wmrl.envs.dreamer import DreamerEnv
    >>> step = TensorDictModule(lambda s, h, a: (s + a, h, torch.ones_like(a)),
    ...                         ["state", "belief", "action"], ["state", "belief", "reward"])
    >>> env = DreamerEnv(step, prior_shape=(1,), belief_shape=(2,), action_spec=Unbounded((1,)))
    >>> actor = TensorDictModule(torch.nn.Linear(1, 1), ["state"], ["action"])
    >>> critic = TensorDictModule(torch.zeros_like, ["state"], ["state_value"])
    >>> loss = DreamerV3ActorLoss(actor, critic, env, imagination_horizon=3, entropy_bonus=0.0)
    >>> start = TensorDict({"state": torch.zeros(4, 1), "belief": torch.zeros(4, 2)}, [4])
    >>> loss_td, trajectory = loss.make_value_estimator(gamma=0.5, lmbda=1.0)(start)
    >>> [round(loss_td[k].item(), 4) for k in ("loss_actor", "return_low", "return_high",
    ...                                         "return_scale")]
    [-0.9167, 0.01, 0.0175, 1.0]
    >>> trajectory["discount_weight"][0].flatten().tolist()
    [1.0, 0.5, 0.25]
    """

    @dataclass
    class _AcceptedKeys(DreamerActorLoss._AcceptedKeys):
        """Also ``action`` and ``discount_weight`` (written to the trajectory)."""

        action: NestedKey = "action"
        discount_weight: NestedKey = "discount_weight"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys

    def __init__(
        self,
        actor_model: TensorDictModule,
        value_model: TensorDictModule,
        model_based_env: Any,
        *,
        imagination_horizon: int = 15,
        discount_loss: bool = True,
        entropy_bonus: float = 3e-4,
        use_reinforce: bool | None = None,
        return_normalization: bool = True,
        return_normalization_rate: float = 0.01,
        return_normalization_quantiles: tuple[float, float] = (0.05, 0.95),
        return_normalization_min_scale: float = 1.0,
    ) -> None:
        super().__init__(
            actor_model, value_model, model_based_env, imagination_horizon, discount_loss
        )
        low, high = return_normalization_quantiles
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {(low, high)}")
        if not 0.0 <= return_normalization_rate <= 1.0:
            raise ValueError(
                f"return_normalization_rate must be in [0, 1], got {return_normalization_rate}"
            )
        if return_normalization_min_scale <= 0:
            raise ValueError("return_normalization_min_scale must be positive")
        self.entropy_bonus, self.use_reinforce = entropy_bonus, use_reinforce
        self.return_normalization = return_normalization
        self.return_normalization_rate = return_normalization_rate
        self.return_normalization_quantiles = (float(low), float(high))
        self.return_normalization_min_scale = return_normalization_min_scale
        self.register_buffer("return_low", torch.zeros(()))
        self.register_buffer("return_high", torch.zeros(()))

    def _reinforce(self) -> bool:
        if self.use_reinforce is not None:
            return self.use_reinforce
        spec = getattr(self.model_based_env, "action_spec", None)
        return getattr(spec, "domain", "continuous") == "discrete"

    def _return_scale(self, returns: torch.Tensor) -> torch.Tensor:
        """``S = max(min_scale, EMA(P_high) - EMA(P_low))`` (Eq. 12); EMAs updated in training."""
        if not self.return_normalization:
            return returns.new_ones(())
        if self.training:
            with torch.no_grad():
                q = torch.tensor(self.return_normalization_quantiles, dtype=returns.dtype)
                lo, hi = torch.quantile(returns.detach().flatten(), q.to(returns.device))
                self.return_low.lerp_(lo.to(self.return_low.dtype), self.return_normalization_rate)
                self.return_high.lerp_(
                    hi.to(self.return_high.dtype), self.return_normalization_rate
                )
        scale = (self.return_high - self.return_low).clamp_min(self.return_normalization_min_scale)
        return scale.to(returns.dtype)

    @staticmethod
    def _per_step(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A log-probability or entropy as one value per step, shaped like ``like`` ``[*B, H, 1]``.

        Per-dimension values ``[*B, H, A]`` (a distribution that is not ``Independent``) are
        summed: the joint log-probability / entropy of the action.
        """
        if x.dim() == like.dim() - 1:
            return x.unsqueeze(-1)  # [*B, H, 1]
        if x.dim() == like.dim():
            return x.sum(-1, keepdim=True)  # [*B, H, 1]
        raise ValueError(
            f"cannot align a log-probability/entropy of shape {tuple(x.shape)} with the "
            f"returns {tuple(like.shape)}"
        )

    def forward(self, tensordict: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        """``(loss_td, trajectory.detach())`` from the start states (see the class doc)."""
        keys = self.tensor_keys
        fake = self.imagine(tensordict)
        target = fake.get("lambda_target")  # [*B, H, 1]
        if self.discount_loss:
            weight = cumulative_discount(target, self.value_estimator.gamma).detach()  # [*B, H, 1]
        else:
            weight = torch.ones_like(target)  # [*B, H, 1]
        fake.set(keys.discount_weight, weight)
        scale = self._return_scale(target)

        reinforce = self._reinforce()
        dist = None
        if reinforce or self.entropy_bonus > 0:
            if not hasattr(self.actor_model, "get_dist"):
                raise ValueError(
                    "REINFORCE and the entropy bonus need an actor with get_dist (a "
                    "ProbabilisticTensorDictSequential); set entropy_bonus=0 and "
                    "use_reinforce=False otherwise"
                )
            dist = self.actor_model.get_dist(
                fake.select(*self.actor_model.in_keys, strict=False).detach()
            )
        if reinforce:
            log_prob = self._per_step(dist.log_prob(fake.get(keys.action).detach()), target)
            with torch.no_grad():
                baseline = evaluate_values(self.value_model, fake, keys.value, frozen_params=False)
            advantage = ((target - baseline) / scale).detach()  # [*B, H, 1]
            loss = -(weight * log_prob * advantage).mean()
        else:
            loss = -(weight * target / scale).mean()

        entropy = loss.new_zeros(())
        if self.entropy_bonus > 0:
            try:
                ent = dist.entropy()
            except NotImplementedError:
                ent = -dist.log_prob(dist.rsample())
            entropy = (weight * self._per_step(ent, target)).mean()
            loss = loss - self.entropy_bonus * entropy
        loss_td = TensorDict(
            loss_actor=loss,
            actor_entropy=entropy.detach(),
            return_low=self.return_low.clone(),
            return_high=self.return_high.clone(),
            return_scale=scale.detach(),
        )
        return loss_td, fake.detach()


class DreamerV3ValueLoss(LossModule):
    """DreamerV3 critic loss on imagined trajectories.

    Trains ``value_model`` to predict ``"lambda_target"`` (computed by
    :class:`DreamerV3ActorLoss`):

    * ``"symlog_mse"`` (default): ``(symlog(v) - symlog(R))^2``;
    * ``"two_hot"``: two-hot cross-entropy of the logits ``"state_value_logits"``
      ``[*B, H, num_value_bins]`` against ``R`` (the paper's distributional critic).

    Per-step weights: the trajectory's ``"discount_weight"`` if present, else ``gamma^t`` along
    the time dimension if ``discount_loss`` and the data has one, else 1; the weighted loss is
    averaged. ``gamma`` must match the actor's: pass ``actor_loss=`` to read it from the actor's
    value estimator at every call, or call :meth:`sync_gamma_with_actor_loss`.

    Args:
        value_model: the critic.
        value_loss: ``"symlog_mse"`` or ``"two_hot"``.
        discount_loss: weight by ``gamma^t``.
        gamma: discount (ignored when ``actor_loss`` is given).
        num_value_bins: bins of the two-hot critic (default 255).
        actor_loss: the actor loss whose ``gamma`` to use.

    Example:
        >>> from tensordict.nn import TensorDictModule
        >>> value = TensorDictModule(torch.nn.Linear(4, 1), ["state"], ["state_value"])
        >>> td = TensorDict({"state": torch.randn(8, 4), "lambda_target": torch.randn(8, 1)}, [8])
        >>> loss_td, _ = DreamerV3ValueLoss(value)(td)
        >>> "loss_value" in loss_td.keys()
        True
    """

    @dataclass
    class _AcceptedKeys:
        """``value``, ``value_logits`` (critic outputs), ``discount_weight`` and
        ``lambda_target`` (read from the trajectory)."""

        value: NestedKey = "state_value"
        value_logits: NestedKey = "state_value_logits"
        discount_weight: NestedKey = "discount_weight"
        lambda_target: NestedKey = "lambda_target"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys

    def __init__(
        self,
        value_model: TensorDictModule,
        value_loss: str = "symlog_mse",
        discount_loss: bool = True,
        gamma: float = 0.99,
        num_value_bins: int = 255,
        actor_loss: DreamerV3ActorLoss | None = None,
    ) -> None:
        super().__init__()
        if value_loss not in ("symlog_mse", "two_hot"):
            raise ValueError(f"value_loss must be 'symlog_mse' or 'two_hot', got {value_loss!r}")
        self.value_model = value_model
        self.value_loss, self.discount_loss, self.gamma = value_loss, discount_loss, gamma
        self.__dict__["_actor_loss"] = actor_loss  # not a submodule: it owns other parameters
        self.register_buffer("value_bins", default_bins(num_value_bins))

    def _forward_value_estimator_keys(self, **kwargs: Any) -> None:
        pass

    def sync_gamma_with_actor_loss(self, actor_loss: DreamerV3ActorLoss) -> None:
        """Set ``gamma`` to the discount of ``actor_loss``'s value estimator."""
        self.gamma = float(actor_loss.value_estimator.gamma)

    def _gamma(self) -> float:
        actor_loss = self.__dict__["_actor_loss"]
        return self.gamma if actor_loss is None else float(actor_loss.value_estimator.gamma)

    def forward(self, fake_data: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        """``(TensorDict(loss_value=...), fake_data)`` for an imagined trajectory."""
        keys = self.tensor_keys
        target = fake_data.get(keys.lambda_target).squeeze(-1)  # [*B, H] (or [N])
        weight = fake_data.get(keys.discount_weight, None)
        if weight is not None:
            weight = weight.squeeze(-1)  # [*B, H]
        elif self.discount_loss and target.dim() >= 2:
            weight = cumulative_discount(target, self._gamma(), dim=-1)  # [*B, H]
        else:
            weight = torch.ones_like(target)  # [*B, H]
        out = self.value_model(fake_data.select(*self.value_model.in_keys, strict=False))
        if self.value_loss == "two_hot":
            logits = out.get(keys.value_logits)  # [*B, H, K]
            if logits.shape[-1] != self.value_bins.numel():
                raise ValueError(
                    f"value logits have {logits.shape[-1]} bins, expected {self.value_bins.numel()}"
                )
            loss = two_hot_cross_entropy(logits.float(), target, self.value_bins)  # [*B, H]
        else:
            value = out.get(keys.value).squeeze(-1).float()  # [*B, H]
            loss = (symlog(value) - symlog(target)).square()  # [*B, H]
        return TensorDict(loss_value=(weight * loss).mean()), fake_data
