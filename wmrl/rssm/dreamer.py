"""Dreamer losses: world model, actor and value (Hafner et al. 2019, "Dream to Control").

* :class:`DreamerModelLoss`: KL between posterior and prior with free nats, pixel
  reconstruction and reward prediction (Eq. 10 with the PlaNet objective, Hafner et al. 2019b,
  Eq. 3).
* :class:`DreamerActorLoss`: minus the lambda-returns of trajectories imagined by a
  :class:`~wmrl.envs.dreamer.DreamerEnv` (Eq. 6-7); gradients reach the actor through the
  imagined dynamics.
* :class:`DreamerValueLoss`: regression of the critic onto the lambda-returns (Eq. 8).

Each ``forward`` returns ``(loss_td, tensordict)``: the scalar losses (keys ``loss_*``) and the
detached data the next loss reads, as TorchRL's classes of the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torchrl.objectives.common import LossModule
from torchrl.objectives.utils import ValueEstimators

from wmrl.rssm.functional import DISTANCES, cumulative_discount, gaussian_kl, pointwise_distance
from wmrl.rssm.imagination import (
    build_value_estimator,
    evaluate_values,
    imagine,
    lambda_targets,
)
from wmrl.rssm.overshooting import gaussian_overshooting_losses, open_loop_predictions

__all__ = ["DreamerModelLoss", "DreamerActorLoss", "DreamerValueLoss", "reduce_kl"]


def _check_distance(name: str, kind: str) -> str:
    if kind not in DISTANCES:
        raise ValueError(f"{name} must be one of {DISTANCES}, got {kind!r}")
    return kind


def reduce_kl(
    kl: torch.Tensor, free_nats: float, delayed_clamp: bool, global_average: bool
) -> torch.Tensor:
    """Reduce an elementwise KL ``[*B, T, S]`` to the Dreamer KL loss (a scalar).

    Without ``global_average`` the KL is summed over the state dimensions first. Free nats
    (PlaNet, Sec. 3; Dreamer, App. A: 3 nats): with ``delayed_clamp=False`` each time step's KL is
    clamped at ``free_nats`` and then averaged; with ``delayed_clamp=True`` the average is
    clamped.

    >>> kl = torch.tensor([[[1.0, 1.0], [3.0, 3.0]]])  # [1, 2, 2]: per-step sums 2 and 6
    >>> reduce_kl(kl, 3.0, False, False), reduce_kl(kl, 3.0, True, False)
    (tensor(4.5000), tensor(4.))
    """
    if not global_average:
        kl = kl.sum(-1)  # [*B, T]
    if delayed_clamp:
        return kl.mean().clamp_min(free_nats)
    return kl.clamp_min(free_nats).mean()


class DreamerModelLoss(LossModule):
    """Dreamer world-model loss: ``lambda_kl KL + lambda_reco reco + lambda_reward reward``.

    ``world_model`` reads a batch of sequences ``[*B, T]`` and writes, under ``"next"``, the
    prior and posterior parameters, the reconstruction and the predicted reward (e.g. a
    ``TensorDictSequential`` of an :class:`~wmrl.rssm.encoder.ObsEncoder`, an
    :class:`~wmrl.rssm.rollout.RSSMRollout`, an :class:`~wmrl.rssm.decoder.ObsDecoder` and a
    reward head). The true reward ``("next", "reward")`` is moved to ``("next", "true_reward")``
    before the model runs.

    * KL: ``KL(q(s_t | h_t, o_t) || p(s_t | h_t))`` of the diagonal Gaussians, see
      :func:`reduce_kl` for ``free_nats``, ``delayed_clamp`` and ``global_average``.
    * Reconstruction: ``reco_loss`` (``"l2"``, ``"l1"`` or ``"smooth_l1"``) between
      ``("next", "pixels")`` and ``("next", "reco_pixels")``, summed over the non-batch
      dimensions and averaged over batch and time (``global_average=False``), or averaged over
      all elements (``global_average=True``). The ``l2`` sum is, up to a constant, the negative
      log-likelihood of a unit-variance Gaussian decoder (Dreamer, Eq. 10).
    * Reward: ``reward_loss`` between true and predicted reward, averaged (the reward has one
      feature, so ``global_average`` does not change it).
    * Latent overshooting (``overshooting = D >= 2``, :mod:`wmrl.rssm.overshooting`; PlaNet,
      Sec. 4, Eq. 7): the ``prior`` rolled ``d = 2..D`` steps open loop from every filtered
      latent with the replayed actions, its KL from the stopped posterior of the step it
      predicts (clamped at ``free_nats``) weighted as the one-step KL,
      ``loss_model_overshoot_kl``, and the ``reward_head``'s ``reward_loss`` on those latents,
      weighted as the one-step reward, ``loss_model_overshoot_reward``.

    Differences from TorchRL 0.14.1: the losses are 0-dim scalars (TorchRL: shape ``[1]``); the
    reconstruction sum runs over all non-batch dimensions (TorchRL sums the last three, which
    also sums over time for vector observations ``[B, T, D]``).

    Args:
        world_model: the world-model TensorDict module.
        lambda_kl, lambda_reco, lambda_reward: weights (default 1).
        reco_loss, reward_loss: distances (default ``"l2"``).
        free_nats: KL floor in nats (default 3).
        delayed_clamp: clamp the averaged KL instead of each step's KL.
        global_average: average over all dimensions instead of summing the feature dimensions.
        overshooting: ``D``, the longest open-loop distance trained (0 or 1: off).
        prior: the prior step ``(state, belief, action) -> (mean, std, state, belief)`` the
            world model uses (with ``overshooting``), e.g. :class:`~wmrl.rssm.prior.RSSMPrior`.
        reward_head: ``(state, belief) -> reward`` (with ``overshooting``; ``None``: no reward
            term).

    ``forward(tensordict)`` returns ``(loss_td, model_output.detach())`` with ``loss_td`` holding
    ``loss_model_kl``, ``loss_model_reco`` and ``loss_model_reward`` (and, with overshooting,
    ``loss_model_overshoot_kl`` and ``loss_model_overshoot_reward``).

    Example:
        >>> from tensordict.nn import TensorDictModule
        >>> class Toy(torch.nn.Module):  # writes fixed model outputs
        ...     def forward(self, td):
        ...         z = torch.zeros(*td.shape, 2)
        ...         td["next", "prior_mean"], td["next", "prior_std"] = z, z + 1
        ...         td["next", "posterior_mean"], td["next", "posterior_std"] = z + 3, z + 1
        ...         td["next", "reco_pixels"] = td["next", "pixels"] + 1
        ...         td["next", "reward"] = td["next", "true_reward"] * 0
        ...         return td
        >>> td = TensorDict({"next": {"pixels": torch.zeros(4, 5, 3, 2, 2),
        ...                           "reward": torch.ones(4, 5, 1)}}, [4, 5])
        >>> loss_td, _ = DreamerModelLoss(Toy())(td)
        >>> [round(loss_td[k].item(), 4) for k in ("loss_model_kl", "loss_model_reco",
        ...                                         "loss_model_reward")]
        [9.0, 12.0, 1.0]
    """

    @dataclass
    class _AcceptedKeys:
        """Entries read under ``"next"``: ``reward`` (true, renamed to ``true_reward`` before the
        model runs, then the model's prediction), ``prior_mean``, ``prior_std``,
        ``posterior_mean``, ``posterior_std``, ``pixels`` (target) and ``reco_pixels``; with
        overshooting also ``state`` and ``belief`` (under ``"next"``) and ``action``."""

        reward: NestedKey = "reward"
        true_reward: NestedKey = "true_reward"
        prior_mean: NestedKey = "prior_mean"
        prior_std: NestedKey = "prior_std"
        posterior_mean: NestedKey = "posterior_mean"
        posterior_std: NestedKey = "posterior_std"
        pixels: NestedKey = "pixels"
        reco_pixels: NestedKey = "reco_pixels"
        state: NestedKey = "state"
        belief: NestedKey = "belief"
        action: NestedKey = "action"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys

    def __init__(
        self,
        world_model: Any,
        lambda_kl: float = 1.0,
        lambda_reco: float = 1.0,
        lambda_reward: float = 1.0,
        reco_loss: str = "l2",
        reward_loss: str = "l2",
        free_nats: float = 3,
        delayed_clamp: bool = False,
        global_average: bool = False,
        overshooting: int = 0,
        prior: Any = None,
        reward_head: Any = None,
    ) -> None:
        super().__init__()
        if overshooting >= 2 and prior is None:
            raise ValueError("overshooting needs the prior step module")
        self.world_model = world_model
        self.lambda_kl, self.lambda_reco, self.lambda_reward = lambda_kl, lambda_reco, lambda_reward
        self.reco_loss = _check_distance("reco_loss", reco_loss)
        self.reward_loss = _check_distance("reward_loss", reward_loss)
        self.free_nats, self.delayed_clamp = free_nats, delayed_clamp
        self.global_average = global_average
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
        nxt = td.get("next")
        # losses in float32, also under bfloat16 autocast
        params = [nxt.get(k).float() for k in (keys.posterior_mean, keys.posterior_std)]
        params += [nxt.get(k).float() for k in (keys.prior_mean, keys.prior_std)]
        if len({p.shape for p in params}) != 1:
            raise ValueError(
                "prior and posterior parameters must have one shape, got "
                f"{[tuple(p.shape) for p in params]}"
            )
        kl = gaussian_kl(*params)  # [*B, T, S]
        kl = reduce_kl(kl, self.free_nats, self.delayed_clamp, self.global_average)

        pixels = nxt.get(keys.pixels)
        reco = pointwise_distance(
            pixels, nxt.get(keys.reco_pixels).to(pixels.dtype), self.reco_loss
        )
        if not self.global_average:
            reco = reco.sum(tuple(range(td.batch_dims, reco.dim())))  # [*B, T]
        reco = reco.mean()

        true_reward = nxt.get(keys.true_reward)
        pred_reward = nxt.get(keys.reward).to(true_reward.dtype)
        reward = pointwise_distance(true_reward, pred_reward, self.reward_loss).mean()

        loss_td = TensorDict(
            loss_model_kl=self.lambda_kl * kl,
            loss_model_reco=self.lambda_reco * reco,
            loss_model_reward=self.lambda_reward * reward,
        )
        if self.overshooting >= 2:
            self._overshoot(td, loss_td)
        return loss_td, td.detach()

    def step_kl(self, model_output: TensorDictBase) -> torch.Tensor:
        """``KL(q || p)`` of each time step of a :meth:`forward` output, summed over the state,
        unclamped: ``[*B, T]``, in float32 (how badly the prior predicted each step)."""
        keys, nxt = self.tensor_keys, model_output.get("next")
        params = [nxt.get(k).float() for k in (keys.posterior_mean, keys.posterior_std,
                                                keys.prior_mean, keys.prior_std)]  # fmt: skip
        return gaussian_kl(*params).sum(-1)  # [*B, T]

    def _overshoot(self, td: TensorDictBase, out: TensorDictBase) -> None:
        """Add the latent-overshooting losses of the filtered sequence ``td`` to ``out``."""
        keys, nxt = self.tensor_keys, td.get("next")
        prior, reward_head = self._overshoot_modules
        predictions = open_loop_predictions(
            prior, nxt.get(keys.state), nxt.get(keys.belief), td.get(keys.action),
            self.overshooting,
        )  # fmt: skip
        kl, reward = gaussian_overshooting_losses(
            predictions, nxt.get(keys.posterior_mean), nxt.get(keys.posterior_std),
            nxt.get(keys.true_reward), reward_head, free_nats=self.free_nats,
            reward_loss=self.reward_loss,
        )  # fmt: skip
        out.set("loss_model_overshoot_kl", self.lambda_kl * kl)
        if reward is not None:
            out.set("loss_model_overshoot_reward", self.lambda_reward * reward)


class DreamerActorLoss(LossModule):
    """Dreamer actor loss: minus the lambda-returns of imagined trajectories (Dreamer, Eq. 7).

    From the ``"state"`` / ``"belief"`` entries of the input (detached posterior states, any
    batch shape), ``model_based_env`` (a :class:`~wmrl.envs.dreamer.DreamerEnv`) is rolled out
    for ``imagination_horizon`` steps with ``actor_model`` sampling actions; its parameters are
    frozen for the rollout. The critic ``value_model`` (frozen too) values the imagined next
    states and the value estimator (TorchRL's ``TDLambdaEstimator`` by default: ``gamma = 0.99``,
    ``lmbda = 0.95``; see :meth:`make_value_estimator`) turns rewards and values into targets
    ``V^lambda_t`` ``[*B, H, 1]``, written to ``"lambda_target"``. The loss is
    ``-mean_B sum_t w_t V^lambda_t`` with ``w_t = gamma^t`` if ``discount_loss`` else 1.

    ``discount_loss`` defaults to ``False`` as in the documentation pages (TorchRL 0.14.1's
    implementation defaults to ``True``). TorchRL 0.14.1 hands its estimator a TensorDict without
    batch dimensions, so its time dimension is the singleton feature dimension and its targets
    are the one-step ``r_t + gamma v(s_{t+1})``; here they are the lambda-returns (use the
    ``TD0`` estimator to reproduce TorchRL's numbers).

    Args:
        actor_model: policy writing ``"action"`` from ``"state"`` and ``"belief"``.
        value_model: critic writing ``"state_value"``.
        model_based_env: the imagination environment.
        imagination_horizon: ``H`` (default 15).
        discount_loss: weight step ``t`` by ``gamma^t``.

    ``forward(tensordict)`` returns ``(TensorDict(loss_actor=...), trajectory.detach())``.

    Example: a model with unit rewards, a zero critic and ``γ = 1/2``, ``λ = 1``: over three
    steps the targets are ``1.75, 1.5, 1``, so the loss is ``-4.25``, or ``-(1.75 + 0.75 +
    0.25) = -2.75`` with ``discount_loss``.

    >>> from tensordict.nn import TensorDictModule
    >>> from torchrl.data import Unbounded
    >>> from wmrl.envs.dreamer import DreamerEnv
    >>> step = TensorDictModule(lambda s, h, a: (s + a, h, torch.ones_like(a)),
    ...                         ["state", "belief", "action"], ["state", "belief", "reward"])
    >>> env = DreamerEnv(step, prior_shape=(1,), belief_shape=(2,), action_spec=Unbounded((1,)))
    >>> actor = TensorDictModule(torch.nn.Linear(1, 1), ["state"], ["action"])
    >>> critic = TensorDictModule(torch.zeros_like, ["state"], ["state_value"])
    >>> start = TensorDict({"state": torch.zeros(4, 1), "belief": torch.zeros(4, 2)}, [4])
    >>> loss = DreamerActorLoss(actor, critic, env, imagination_horizon=3)
    >>> loss_td, trajectory = loss.make_value_estimator(gamma=0.5, lmbda=1.0)(start)
    >>> loss_td["loss_actor"], trajectory["lambda_target"][0].flatten().tolist()
    (tensor(-4.2500), [1.75, 1.5, 1.0])
    >>> loss = DreamerActorLoss(actor, critic, env, imagination_horizon=3, discount_loss=True)
    >>> loss.make_value_estimator(gamma=0.5, lmbda=1.0)(start)[0]["loss_actor"]
    tensor(-2.7500)
    """

    @dataclass
    class _AcceptedKeys:
        """``state`` and ``belief`` (start state), ``reward`` (under ``"next"``), ``value``
        (critic output), ``done`` and ``terminated`` (for the value estimator)."""

        state: NestedKey = "state"
        belief: NestedKey = "belief"
        reward: NestedKey = "reward"
        value: NestedKey = "state_value"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    default_value_estimator = ValueEstimators.TDLambda

    def __init__(
        self,
        actor_model: TensorDictModule,
        value_model: TensorDictModule,
        model_based_env: Any,
        imagination_horizon: int = 15,
        discount_loss: bool = False,
    ) -> None:
        super().__init__()
        if imagination_horizon < 1:
            raise ValueError(f"imagination_horizon must be positive, got {imagination_horizon}")
        self.actor_model = actor_model
        # the critic and the environment are trained by other losses: not registered here
        self.__dict__["value_model"] = value_model
        self.__dict__["model_based_env"] = model_based_env
        self.imagination_horizon, self.discount_loss = imagination_horizon, discount_loss

    def _estimator_keys(self) -> dict[str, NestedKey]:
        k = self.tensor_keys
        return {"value": k.value, "reward": k.reward, "done": k.done, "terminated": k.terminated}

    def _forward_value_estimator_keys(self, **kwargs: Any) -> None:
        if self._value_estimator is not None:
            self._value_estimator.set_keys(**self._estimator_keys())

    def make_value_estimator(
        self, value_type: ValueEstimators | None = None, **hyperparams: Any
    ) -> DreamerActorLoss:
        """Build the value estimator (TD0, TD1 or TDLambda, default TDLambda) with TorchRL's
        default hyper-parameters (``gamma=0.99``, ``lmbda=0.95``) overridden by ``hyperparams``.

        An estimator instance or class is passed on to TorchRL's ``LossModule``.
        """
        from torchrl.objectives.value import ValueEstimatorBase

        if isinstance(value_type, ValueEstimatorBase) or (
            isinstance(value_type, type) and issubclass(value_type, ValueEstimatorBase)
        ):
            LossModule.make_value_estimator(self, value_type, **hyperparams)
            return self
        self.value_type, self._value_estimator = build_value_estimator(
            value_type or self.default_value_estimator, self._estimator_keys(), **hyperparams
        )
        return self

    def imagine(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The imagined trajectory ``[*B, H]`` with ``"lambda_target"`` ``[*B, H, 1]`` set."""
        keys = self.tensor_keys
        fake = imagine(
            self.model_based_env,
            self.actor_model,
            tensordict,
            self.imagination_horizon,
            (keys.state, keys.belief),
        )
        next_value = evaluate_values(
            self.value_model, fake.get("next"), keys.value, frozen_params=True
        ).float()  # [*B, H, 1]
        reward = fake.get(("next", keys.reward)).float()  # [*B, H, 1]
        target = lambda_targets(self.value_estimator, reward, next_value, self._estimator_keys())
        fake.set("lambda_target", target)
        return fake

    def forward(self, tensordict: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        """``(TensorDict(loss_actor=...), trajectory.detach())`` from the start states."""
        fake = self.imagine(tensordict)
        target = fake.get("lambda_target")  # [*B, H, 1]
        if self.discount_loss:
            target = target * cumulative_discount(target, self.value_estimator.gamma)  # [*B, H, 1]
        loss = -target.sum((-2, -1)).mean()
        return TensorDict(loss_actor=loss), fake.detach()


class DreamerValueLoss(LossModule):
    """Dreamer critic loss: ``mean_B sum_t w_t d(v(s_t), V^lambda_t)`` (Dream to Control, Eq. 8).

    Reads the imagined trajectory returned by :class:`DreamerActorLoss` (states and
    ``"lambda_target"``, already detached), evaluates ``value_model`` on its states and regresses
    onto the targets with distance ``value_loss``; ``w_t = gamma^t`` if ``discount_loss``.

    Args:
        value_model: critic writing ``"state_value"``.
        value_loss: ``"l2"`` (default), ``"l1"`` or ``"smooth_l1"``.
        discount_loss: weight step ``t`` by ``gamma^t`` (default ``True``, as TorchRL).
        gamma: discount (default 0.99).

    Example:
        >>> from tensordict.nn import TensorDictModule
        >>> value = TensorDictModule(lambda s: s.sum(-1, keepdim=True), ["state"], ["state_value"])
        >>> td = TensorDict({"state": torch.ones(2, 3, 2), "lambda_target": torch.zeros(2, 3, 1)},
        ...                 [2, 3])
        >>> loss_td, _ = DreamerValueLoss(value, discount_loss=False)(td)
        >>> loss_td["loss_value"]
        tensor(12.)
    """

    @dataclass
    class _AcceptedKeys:
        """``value`` (critic output) and ``lambda_target`` (regression target)."""

        value: NestedKey = "state_value"
        lambda_target: NestedKey = "lambda_target"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys

    def __init__(
        self,
        value_model: TensorDictModule,
        value_loss: str = "l2",
        discount_loss: bool = True,
        gamma: float = 0.99,
    ) -> None:
        super().__init__()
        self.value_model = value_model
        self.value_loss = _check_distance("value_loss", value_loss)
        self.discount_loss, self.gamma = discount_loss, gamma

    def _forward_value_estimator_keys(self, **kwargs: Any) -> None:
        pass

    def forward(self, fake_data: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        """``(TensorDict(loss_value=...), fake_data)`` for an imagined trajectory."""
        target = fake_data.get(self.tensor_keys.lambda_target)  # [*B, H, 1]
        value = evaluate_values(
            self.value_model, fake_data, self.tensor_keys.value, frozen_params=False
        ).float()  # [*B, H, 1]
        loss = pointwise_distance(value, target.float(), self.value_loss)  # [*B, H, 1]
        if self.discount_loss:
            loss = loss * cumulative_discount(loss, self.gamma)  # [*B, H, 1]
        return TensorDict(loss_value=loss.sum((-2, -1)).mean()), fake_data
