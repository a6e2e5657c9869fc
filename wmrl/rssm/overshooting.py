"""Latent overshooting: training the prior on its own multi-step, open-loop predictions.

The one-step KL of the world-model loss trains ``p(s_t | h_t)`` only one step away from a
filtered latent, while imagination runs the prior ``H`` steps open loop. Latent overshooting
(Hafner et al. 2019, "Learning Latent Dynamics for Planning from Pixels" (PlaNet), Sec. 4,
Eq. 7) also rolls the prior ``d = 2..D`` steps from every filtered latent with the replayed
actions and pulls each ``d``-step prediction towards the posterior of the step it predicts,
with the posterior's gradient stopped, so that the multi-step predictions move towards the
informed posteriors and not the reverse.

Here the DreamerV3 categorical latent: the dynamics term of Eq. 5 of Hafner et al. 2023
(``max(free_bits, KL(sg(q_t) || p_d(s_t)))``), and the reward head's two-hot cross-entropy on
the open-loop latents (Eq. 10), which trains the reward read-out on the latents imagination
feeds it. Both are averaged over the distances ``d = 2..D`` (``d = 1`` is the usual one-step
loss).

Index convention of a replayed sequence ``[*B, T]`` (as :class:`~wmrl.rssm.rollout.RSSMRollout`
writes it): ``("next", "state")[t]`` is the posterior latent after the action ``action[t]``;
the next action taken from it is ``action[t + 1]``. A ``d``-step prediction from the latent at
``i`` therefore uses ``action[i + 1 .. i + d]`` and predicts ``("next", ...)[i + d]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wmrl.rssm.functional import categorical_kl, unimix_probs
from wmrl.rssm.twohot import two_hot_cross_entropy

__all__ = ["open_loop_predictions", "overshooting_losses"]

#: ``(state [*N, S], belief [*N, H], action [*N, A]) -> (logits [*N, C, K], state, belief)``
PriorStep = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
]


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or float64 if it is (bfloat16 logits under autocast are lifted)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def open_loop_predictions(
    prior_step: PriorStep,
    state: torch.Tensor,
    belief: torch.Tensor,
    action: torch.Tensor,
    distance: int,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The prior's ``d``-step predictions from every filtered latent, ``d = 1..distance``.

    Args:
        prior_step: one prior step (e.g. :class:`~wmrl.rssm.categorical.RSSMPriorV3`).
        state: filtered latents ``("next", "state")``, ``[*B, T, S]``.
        belief: their beliefs ``("next", "belief")``, ``[*B, T, H]``.
        action: the replayed actions ``[*B, T, A]``.
        distance: ``D >= 1``, at most ``T - 1``.

    Returns:
        for ``d = 1..D``, ``(logits [*B, T - d, C, K], state [*B, T - d, S], belief
        [*B, T - d, H])``: entry ``j`` predicts step ``j + d`` of the sequence from the latent
        at ``j``, ``d`` steps open loop.

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
        logits, s, h = prior_step(s[..., :n, :], h[..., :n, :], action[..., d:, :])
        predictions.append((logits, s, h))  # [*B, n, C, K], [*B, n, S], [*B, n, H]
    return predictions


def overshooting_losses(
    predictions: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
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
