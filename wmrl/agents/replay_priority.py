"""Sequence replay prioritised by a per-step score, aggregated over the whole slice.

Prioritised experience replay (Schaul et al. 2016) draws transitions in proportion to a score
``s_i`` (there, the TD error; for a world model, how badly its prior predicted step ``i``).
A sequence model is trained on slices, so what should be drawn in proportion to the score is a
*slice*, and its weight must count every step it holds: TorchRL's ``PrioritizedSliceSampler``
weighs a slice by its start step alone. :class:`WindowPrioritySampler` draws the start ``t``
of a slice of ``L`` steps with probability

``P(t) = f w_t / sum_u w_u + (1 - f) / N``,   ``w_t = sum_{j=1}^{L-1} s_{t+j}^alpha``,

over the ``N`` starts whose slice stays within one stored row (no ``done`` flag among its first
``L - 1`` steps). The ``f``-part is prioritised; the rest is uniform over starts, which keeps every
stored step in reach whatever the scores. The first step of a slice is not counted: the agent
scores step ``i`` by the model's error at predicting it, and a slice's first step is never
predicted (a training sequence of ``T = L - 1`` transitions predicts steps ``t + 1 .. t + T``).

No importance weights are applied: the bias towards badly predicted steps is the purpose (the
model's capacity goes where it errs; the uniform part keeps the rest in view). New steps get the
mean score of the stored ones, so they are neither favoured nor neglected until first scored.
Scores are float64 and kept per storage slot; :meth:`state_dict` holds them, for exact resumes.
"""

from __future__ import annotations

from typing import Any

import torch
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.storages import Storage

from wmrl.agents.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["WindowPrioritySampler", "window_start_probabilities"]


def window_start_probabilities(
    scores: torch.Tensor, done: torch.Tensor, slice_len: int, fraction: float, exponent: float
) -> torch.Tensor:
    """``P(t)`` of the module docstring for every slot ``t`` (0 where no slice can start).

    Args:
        scores: ``[n]`` non-negative per-step scores ``s_i``.
        done: ``[n]`` bool, ``True`` at the last step of each stored row.
        slice_len: ``L >= 1``, steps per slice.
        fraction: ``f in [0, 1]``, the prioritised part.
        exponent: ``alpha >= 0``.

    Returns:
        ``[n]`` probabilities in the dtype of ``scores`` summing to 1 (all zero if no slice fits).

    Two rows of 3 steps, slices of 2 steps: starts 0, 1, 3 and 4 are valid; with ``f = 1`` the
    weight of a start is the score of the step after it.

    >>> s = torch.tensor([1., 1., 2., 1., 4., 1.], dtype=torch.float64)
    >>> d = torch.tensor([False, False, True, False, False, True])
    >>> window_start_probabilities(s, d, 2, 1.0, 1.0)
    tensor([0.1250, 0.2500, 0.0000, 0.5000, 0.1250, 0.0000], dtype=torch.float64)
    >>> window_start_probabilities(s, d, 2, 0.0, 1.0)  # uniform over valid starts
    tensor([0.2500, 0.2500, 0.0000, 0.2500, 0.2500, 0.0000], dtype=torch.float64)
    """
    n, L = scores.shape[0], slice_len
    if done.shape != (n,) or scores.dim() != 1:
        raise ValueError(f"scores and done must both be [n], got {tuple(scores.shape)} and "
                         f"{tuple(done.shape)}")  # fmt: skip
    probs = scores.new_zeros(n)
    if n < L:
        return probs
    starts = n - L + 1  # slots 0 .. n - L can hold a whole slice
    zero = done.new_zeros(1, dtype=torch.long)
    ends = torch.cat([zero, done.long().cumsum(0)])  # [n + 1]: ends[i] = #done in [0, i)
    valid = ends[L - 1 : L - 1 + starts] == ends[:starts]  # [starts]: no end in [t, t + L - 2]
    count = int(valid.sum())
    if count == 0:
        return probs
    powered = scores.clamp_min(0.0).pow(exponent)  # [n]
    cum = torch.cat([powered.new_zeros(1), powered.cumsum(0)])  # [n + 1]
    weight = (cum[L : L + starts] - cum[1 : 1 + starts]) * valid  # [starts]: s_{t+1..t+L-1}
    uniform = valid.to(scores.dtype) / count  # [starts]
    total = weight.sum()
    if L == 1 or total <= 0:  # nothing scored: uniform
        probs[:starts] = uniform
        return probs
    probs[:starts] = fraction * weight / total + (1.0 - fraction) * uniform
    return probs


class WindowPrioritySampler(Sampler):
    """TorchRL sampler of ``L``-step slices drawn by :func:`window_start_probabilities`.

    Args:
        capacity: slots of the storage it samples.
        slice_len: ``L``, steps per slice.
        fraction: ``f``, the prioritised part of the draw (0: uniform over valid starts).
        exponent: ``alpha``, how sharply the scores are followed.
        end_key: the storage's flag marking the last step of each row.

    ``sample`` returns the ``B L`` storage indices of ``B = batch_size / L`` slices, each ``L``
    consecutive slots of one row. :meth:`update_priority` sets the scores of the given slots.
    Draws use the replay buffer's generator if it has one, else torch's global one.
    """

    def __init__(
        self,
        capacity: int,
        slice_len: int,
        fraction: float,
        exponent: float = 1.0,
        end_key: Any = ("next", "done"),
    ) -> None:
        if capacity < 1 or slice_len < 1:
            raise ValueError(f"capacity and slice_len must be >= 1, got {capacity}, {slice_len}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        if not exponent >= 0.0:
            raise ValueError(f"exponent must be >= 0, got {exponent}")
        self.capacity, self.slice_len = capacity, slice_len
        self.fraction, self.exponent, self.end_key = fraction, exponent, end_key
        self.scores = torch.ones(capacity, dtype=torch.float64)  # [capacity]
        self.filled = 0  # slots written so far (the storage fills 0, 1, ... before wrapping)

    # ---------------------------------------------------------------- writing
    def extend(self, index: torch.Tensor) -> None:
        """New steps at ``index`` get the mean score of the steps already stored (1 if none)."""
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        kept = torch.ones(self.filled, dtype=torch.bool)  # overwritten slots hold new steps too
        kept[index[index < self.filled]] = False
        old = self.scores[: self.filled][kept]
        self.scores[index] = float(old.mean()) if old.numel() else 1.0
        if index.numel():
            self.filled = max(self.filled, int(index.max()) + 1)

    def add(self, index: int) -> None:
        self.extend(torch.as_tensor([index]))

    def update_priority(
        self,
        index: int | torch.Tensor,
        priority: float | torch.Tensor,
        *,
        storage: Storage | None = None,
    ) -> None:
        """Set the scores of the slots ``index`` (``[N]``) to ``priority`` (``[N]`` or scalar,
        finite, non-negative)."""
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        priority = torch.as_tensor(priority, dtype=torch.float64).reshape(-1).cpu()
        if priority.numel() == 1:
            priority = priority.expand(index.numel())
        if priority.numel() != index.numel():
            raise ValueError(f"{index.numel()} slots but {priority.numel()} scores")
        if not bool(torch.isfinite(priority).all()) or bool((priority < 0).any()):
            raise ValueError("scores must be finite and non-negative")
        if index.numel() and not (0 <= int(index.min()) and int(index.max()) < self.filled):
            raise IndexError(f"slots must lie in [0, {self.filled}), the filled storage")
        self.scores[index.cpu()] = priority

    # ---------------------------------------------------------------- sampling
    def probabilities(self, storage: Storage) -> torch.Tensor:
        """``[len(storage)]`` start probabilities for ``storage`` as it stands."""
        n = len(storage)
        if n == 0:
            return self.scores.new_zeros(0)
        done = storage.get(slice(0, n)).get(self.end_key)  # [n] or [n, 1]
        done = done.reshape(n, -1).any(-1).to(torch.bool).cpu()  # [n]
        return window_start_probabilities(
            self.scores[:n], done, self.slice_len, self.fraction, self.exponent
        )

    def sample(self, storage: Storage, batch_size: int) -> tuple[torch.Tensor, dict]:
        L = self.slice_len
        if batch_size % L:
            raise ValueError(f"batch_size {batch_size} is not a whole number of {L}-step slices")
        probs = self.probabilities(storage)  # [n]
        if probs.numel() == 0 or not bool(probs.sum() > 0):
            raise RuntimeError(f"the storage holds no slice of {L} steps within one row")
        starts = torch.multinomial(probs, batch_size // L, replacement=True, generator=self._rng)
        index = (starts.unsqueeze(-1) + torch.arange(L)).reshape(-1)  # [B L]
        return index, {}

    def _sampleable_count(self, storage: Storage, batch_size: int) -> int:
        return int((self.probabilities(storage) > 0).sum())

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"scores": self.scores[: self.filled].clone(), "filled": self.filled}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        filled = int(state_dict["filled"])
        scores = torch.as_tensor(state_dict["scores"], dtype=torch.float64)
        if scores.shape != (filled,) or filled > self.capacity:
            raise ValueError(f"scores of shape {tuple(scores.shape)} for {filled} filled slots "
                             f"do not fit a capacity of {self.capacity}")  # fmt: skip
        self.scores.fill_(1.0)
        self.scores[:filled] = scores
        self.filled = filled

    def _empty(self) -> None:
        self.scores.fill_(1.0)
        self.filled = 0

    def dumps(self, path: Any) -> None:
        save_checkpoint(f"{path}/window_priority.pt", self.state_dict())

    def loads(self, path: Any) -> None:
        self.load_state_dict(load_checkpoint(f"{path}/window_priority.pt"))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(slice_len={self.slice_len}, fraction={self.fraction}, "
                f"exponent={self.exponent}, filled={self.filled})")  # fmt: skip
