"""Latent overshooting: training the prior on its own multi-step, open-loop predictions.

The one-step KL of the world-model loss trains ``p(s_t | h_t)`` only one step away from a
filtered latent, while imagination runs the prior ``H`` steps open loop. Latent overshooting
(Hafner et al. 2019, "Learning Latent Dynamics for Planning from Pixels" (PlaNet), Sec. 4,
Eq. 7) also rolls the prior ``d = 2..D`` steps from every filtered latent with the replayed
actions and pulls each ``d``-step prediction towards the posterior of the step it predicts,
with the posterior's gradient stopped, so that the multi-step predictions move towards the
informed posteriors and not the reverse.

Two latents:

* the DreamerV3 categorical latent (:func:`overshooting_losses`): the dynamics term of Eq. 5 of
  Hafner et al. 2023 (``max(free_bits, KL(sg(q_t) || p_d(s_t)))``), and the reward head's
  two-hot cross-entropy on the open-loop latents (Eq. 10);
* the Gaussian latent of PlaNet and Dreamer (:func:`gaussian_overshooting_losses`): PlaNet's
  Eq. 7 term ``max(free_nats, KL(sg(q_t) || p_d(s_t)))`` of diagonal Gaussians, and the reward
  head's distance to the true reward on the open-loop latents (PlaNet trains its reward model
  on them too).

The reward terms train the reward read-out on the latents imagination feeds it. All terms are
averaged over the distances ``d = 2..D`` (``d = 1`` is the usual one-step loss).

Index convention of a replayed sequence ``[*B, T]`` (as :class:`~wmrl.rssm.rollout.RSSMRollout`
writes it): ``("next", "state")[t]`` is the posterior latent after the action ``action[t]``;
the next action taken from it is ``action[t + 1]``. A ``d``-step prediction from the latent at
``i`` therefore uses ``action[i + 1 .. i + d]`` and predicts ``("next", ...)[i + d]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wmrl.rssm.functional import (
    DISTANCES,
    categorical_kl,
    gaussian_kl,
    pointwise_distance,
    unimix_probs,
)
from wmrl.rssm.twohot import two_hot_cross_entropy

__all__ = ["gaussian_overshooting_losses", "open_loop_predictions", "overshooting_losses"]

#: ``(state [*N, S], belief [*N, H], action [*N, A]) -> (*params, state [*N, S], belief
#: [*N, H])``: the prior's distribution parameters (``logits [*N, C, K]`` of the categorical
#: prior; ``mean, std [*N, S]`` of the Gaussian one), then its sampled state and new belief.
PriorStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or float64 if it is (bfloat16 logits under autocast are lifted)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def open_loop_predictions(
    prior_step: PriorStep,
    state: torch.Tensor,
    belief: torch.Tensor,
    action: torch.Tensor,
    distance: int,
) -> list[tuple[torch.Tensor, ...]]:
    """The prior's ``d``-step predictions from every filtered latent, ``d = 1..distance``.

    Args:
        prior_step: one prior step (:class:`~wmrl.rssm.categorical.RSSMPriorV3` or
            :class:`~wmrl.rssm.prior.RSSMPrior`).
        state: filtered latents ``("next", "state")``, ``[*B, T, S]``.
        belief: their beliefs ``("next", "belief")``, ``[*B, T, H]``.
        action: the replayed actions ``[*B, T, A]``.
        distance: ``D >= 1``, at most ``T - 1``.

    Returns:
        for ``d = 1..D``, the prior's outputs on ``[*B, T - d]``: ``(logits, state, belief)``
        of the categorical prior, ``(mean, std, state, belief)`` of the Gaussian one. Entry
        ``j`` predicts step ``j + d`` of the sequence from the latent at ``j``, ``d`` steps
        open loop.

    Example: a "prior" that adds the action to the state reads ``action[j + 1] + ...
    + action[j + d]`` onto the latent at ``j``.

    >>> step = lambda s, h, a: (s.unsqueeze(-1), s + a, h)
    >>> s, h = torch.zeros(1, 4, 1), torch.zeros(1, 4, 1)
    >>> a = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1)
    >>> [p[1].flatten().tolist() for p in open_loop_predictions(step, s, h, a, 3)]
    [[2.0, 3.0, 4.0], [5.0, 7.0], [9.0]]
    """
    T = state.shape[-2]
    if not 1 <= distance <= T - 1:
        raise ValueError(f"distance must be in [1, T - 1] = [1, {T - 1}], got {distance}")
    if belief.shape[:-1] != state.shape[:-1] or action.shape[:-1] != state.shape[:-1]:
        raise ValueError(
            f"state, belief and action must share [*B, T], got {tuple(state.shape)}, "
            f"{tuple(belief.shape)} and {tuple(action.shape)}"
        )
    predictions = []
    s, h = state, belief  # [*B, T, S], [*B, T, H]
    for d in range(1, distance + 1):
        n = T - d  # latents with a target d steps ahead
        out = tuple(prior_step(s[..., :n, :], h[..., :n, :], action[..., d:, :]))
        s, h = out[-2], out[-1]  # [*B, n, S], [*B, n, H]
        predictions.append(out)  # (*params [*B, n, ...], state, belief)
    return predictions


def overshooting_losses(
    predictions: list[tuple[torch.Tensor, ...]],
    posterior_logits: torch.Tensor,
    true_reward: torch.Tensor | None = None,
    reward_head: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    reward_bins: torch.Tensor | None = None,
    *,
    unimix: float = 0.01,
    free_bits: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Overshooting KL and reward losses of :func:`open_loop_predictions`, over ``d >= 2``.

    ``L_kl = mean_d mean_j max(free_bits, KL(sg(q_{j+d}) || p_d(. | j)))`` on the
    ``unimix``-mixed distributions, and, with a reward head, ``L_reward = mean_d mean_j
    CE(two_hot(r_{j+d}), reward_head(s_d, h_d))``.

    Args:
        predictions: :func:`open_loop_predictions` with ``D >= 2``.
        posterior_logits: ``("next", "posterior_logits")``, ``[*B, T, C, K]`` (detached here).
        true_reward: ``("next", "reward")``, ``[*B, T, 1]`` (with ``reward_head``).
        reward_head: ``(state, belief) -> logits [*N, K_r]``, or ``None`` for no reward term.
        reward_bins: the two-hot bins ``[K_r]``.
        unimix: uniform mixture of both distributions.
        free_bits: KL floor in nats, per latent (the one-step dynamics term's).

    Returns:
        ``(L_kl, L_reward)``, scalars (``L_reward`` is ``None`` without a reward head).

    Example: predictions equal to the posterior have zero KL, and the floor lifts it to
    ``free_bits``.

    >>> q = torch.randn(2, 5, 3, 4)
    >>> preds = [(q[:, d:], None, None) for d in (1, 2, 3)]
    >>> kl, _ = overshooting_losses(preds, q, free_bits=0.0)
    >>> round(kl.item(), 6), overshooting_losses(preds, q, free_bits=0.5)[0].item()
    (0.0, 0.5)
    """
    if len(predictions) < 2:
        raise ValueError("overshooting needs predictions for distances up to D >= 2")
    q = unimix_probs(_at_least_float32(posterior_logits.detach()), unimix)  # [*B, T, C, K]
    kls, rewards = [], []
    for d, (logits, s, h) in enumerate(predictions[1:], start=2):
        p = unimix_probs(_at_least_float32(logits), unimix)  # [*B, T - d, C, K]
        kls.append(categorical_kl(q[..., d:, :, :], p).clamp_min(free_bits).mean())
        if reward_head is not None:
            if true_reward is None or reward_bins is None:
                raise ValueError("the reward term needs true_reward and reward_bins")
            reward_logits = _at_least_float32(reward_head(s, h))  # [*B, T - d, K_r]
            target = true_reward[..., d:, :]  # [*B, T - d, 1]
            rewards.append(two_hot_cross_entropy(reward_logits, target, reward_bins).mean())
    reward = torch.stack(rewards).mean() if rewards else None
    return torch.stack(kls).mean(), reward


def gaussian_overshooting_losses(
    predictions: list[tuple[torch.Tensor, ...]],
    posterior_mean: torch.Tensor,
    posterior_std: torch.Tensor,
    true_reward: torch.Tensor | None = None,
    reward_head: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    *,
    free_nats: float = 3.0,
    reward_loss: str = "l2",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Overshooting KL and reward losses of a Gaussian prior's predictions, over ``d >= 2``.

    PlaNet's Eq. 7 with its free nats: ``L_kl = mean_d mean_j max(free_nats, sum_S KL(sg(q_{j+d})
    || p_d(. | j)))`` of diagonal Gaussians, and, with a reward head, ``L_reward = mean_d mean_j
    dist(r_{j+d}, reward_head(s_d, h_d))`` with the one-step loss's distance.

    Args:
        predictions: :func:`open_loop_predictions` of :class:`~wmrl.rssm.prior.RSSMPrior` with
            ``D >= 2``: ``(mean, std, state, belief)`` per distance.
        posterior_mean, posterior_std: ``("next", "posterior_mean" / "posterior_std")``,
            ``[*B, T, S]`` (detached here).
        true_reward: ``("next", "reward")``, ``[*B, T, 1]`` (with ``reward_head``).
        reward_head: ``(state, belief) -> reward [*N, 1]``, or ``None`` for no reward term.
        free_nats: KL floor per time step, in nats (the one-step term's).
        reward_loss: ``"l2"``, ``"l1"`` or ``"smooth_l1"``.

    Returns:
        ``(L_kl, L_reward)``, scalars (``L_reward`` is ``None`` without a reward head).

    Example: priors one unit of mean off a unit-variance posterior in each of 2 dimensions
    have a KL of ``2 * 1/2 = 1`` nat per step; a floor of 3 nats lifts it to 3.

    >>> mean, std = torch.zeros(2, 5, 2), torch.ones(2, 5, 2)
    >>> preds = [(mean[:, d:] + 1, std[:, d:], None, None) for d in (1, 2, 3)]
    >>> kl, _ = gaussian_overshooting_losses(preds, mean, std, free_nats=0.0)
    >>> kl.item(), gaussian_overshooting_losses(preds, mean, std)[0].item()
    (1.0, 3.0)
    """
    if len(predictions) < 2:
        raise ValueError("overshooting needs predictions for distances up to D >= 2")
    if reward_loss not in DISTANCES:
        raise ValueError(f"reward_loss must be one of {DISTANCES}, got {reward_loss!r}")
    if reward_head is not None and true_reward is None:
        raise ValueError("the reward term needs true_reward")
    mean_q = _at_least_float32(posterior_mean.detach())  # [*B, T, S]
    std_q = _at_least_float32(posterior_std.detach())  # [*B, T, S]
    kls, rewards = [], []
    for d, (mean_p, std_p, s, h) in enumerate(predictions[1:], start=2):
        kl = gaussian_kl(mean_q[..., d:, :], std_q[..., d:, :], _at_least_float32(mean_p),
                         _at_least_float32(std_p))  # [*B, T - d, S]  # fmt: skip
        kls.append(kl.sum(-1).clamp_min(free_nats).mean())
        if reward_head is not None:
            assert true_reward is not None
            target = true_reward[..., d:, :]  # [*B, T - d, 1]
            pred = reward_head(s, h).to(target.dtype)  # [*B, T - d, 1]
            rewards.append(pointwise_distance(target, pred, reward_loss).mean())
    reward = torch.stack(rewards).mean() if rewards else None
    return torch.stack(kls).mean(), reward
