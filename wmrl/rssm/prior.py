"""The RSSM prior (transition model) with a diagonal-Gaussian stochastic state.

Hafner et al. 2019, "Learning Latent Dynamics for Planning from Pixels" (PlaNet), Eq. 1 and
Sec. 3 ("Recurrent state-space model"): the deterministic belief follows a GRU,
``h_t = f(h_{t-1}, s_{t-1}, a_{t-1})``, and the stochastic state is drawn from
``p(s_t | h_t) = N(mu(h_t), diag(sigma(h_t)^2))``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wmrl.rssm.functional import gaussian_rsample, positive_scale

__all__ = ["RSSMPrior", "gru_fp32", "action_dim_of", "check_inputs"]


def check_inputs(**named: tuple[torch.Tensor, int]) -> None:
    """``ValueError`` unless each ``name=(tensor, size)`` has last dimension ``size`` and all
    tensors share their leading (batch) dimensions.

    >>> check_inputs(state=(torch.zeros(2, 3), 3), belief=(torch.zeros(2, 5), 4))
    Traceback (most recent call last):
    ...
    ValueError: belief must be [*B, 4], got (2, 5)
    """
    batch = None
    for name, (x, size) in named.items():
        if x.dim() < 1 or x.shape[-1] != size:
            raise ValueError(f"{name} must be [*B, {size}], got {tuple(x.shape)}")
        if batch is None:
            batch = x.shape[:-1]
        elif x.shape[:-1] != batch:
            raise ValueError(
                f"{name} has batch dimensions {tuple(x.shape[:-1])}, expected {tuple(batch)}"
            )


def action_dim_of(action_spec: Any, action_dim: int | None) -> int:
    """Action dimension from an explicit ``action_dim`` or the last dim of ``action_spec``.

    >>> from torchrl.data import Bounded
    >>> action_dim_of(Bounded(-1.0, 1.0, (3,)), None), action_dim_of(None, 2)
    (3, 2)
    >>> action_dim_of(None, None)
    Traceback (most recent call last):
        ...
    ValueError: give action_dim or an action_spec with a shape
    """
    if action_dim is not None:
        return int(action_dim)
    shape = getattr(action_spec, "shape", None)
    if shape is None or len(shape) == 0:
        raise ValueError("give action_dim or an action_spec with a shape")
    return int(shape[-1])


def gru_fp32(cell: nn.GRUCell, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One ``GRUCell`` step in float32 (autocast off), returned in ``x``'s dtype.

    The recurrence accumulates over the whole sequence, so it runs in full precision even under
    bfloat16 autocast.

    Args:
        cell: the GRU cell (float32 parameters).
        x: input ``[N, in]``.
        h: previous hidden state ``[N, H]``.

    Returns:
        the next hidden state ``[N, H]`` in ``x.dtype``.

    >>> cell = nn.GRUCell(3, 2)
    >>> x, h = torch.ones(4, 3, dtype=torch.bfloat16), torch.zeros(4, 2)
    >>> out = gru_fp32(cell, x, h)
    >>> out.dtype, torch.equal(out, cell(x.float(), h).to(torch.bfloat16))
    (torch.bfloat16, True)
    """
    dtype = x.dtype
    with torch.autocast(device_type=x.device.type, enabled=False):
        out = cell(x.float(), h.float())  # [N, H]
    return out.to(dtype)


class RSSMPrior(nn.Module):
    """Prior ``p(s_t | h_t)`` and belief update ``h_t = GRU(h_{t-1}, [s_{t-1}, a_{t-1}])``.

    ``[s, a] -> Linear -> ELU -> GRUCell -> Linear -> ELU -> Linear -> (mean, scale)`` with the
    scale ``max(softplus(.), scale_lb)`` (PlaNet Sec. 3; Hafner et al. 2019, "Dream to
    Control", App. A: 200 GRU units, 30-dimensional state, min std 0.1).

    The parameter layout is TorchRL's (``action_state_projector``, ``rnn``,
    ``rnn_to_prior_projector``); unlike TorchRL, the first layer of the prior head maps
    ``rnn_hidden_dim`` (not ``hidden_dim``) features, so the two sizes may differ.

    Args:
        action_spec: the action spec (only its last dimension is read); may be ``None`` when
            ``action_dim`` is given.
        hidden_dim: width of the dense layers (default 200).
        rnn_hidden_dim: size of the belief ``h`` (default 200).
        state_dim: size of the stochastic state ``s`` (default 30).
        scale_lb: lower bound of the standard deviation (default 0.1).
        action_dim: action dimension (default: from ``action_spec``).
        device: where the parameters live.

    ``forward(state [*B, S], belief [*B, H], action [*B, A], noise=None)`` returns
    ``(prior_mean [*B, S], prior_std [*B, S], state [*B, S], belief [*B, H])``; ``noise``
    ``[*B, S]`` (standard normal) makes the sample deterministic.

    Example:
        >>> prior = RSSMPrior(None, hidden_dim=8, rnn_hidden_dim=6, state_dim=4, action_dim=2)
        >>> mean, std, s, h = prior(torch.zeros(3, 4), torch.zeros(3, 6), torch.zeros(3, 2))
        >>> mean.shape, s.shape, h.shape, bool((std >= 0.1).all())
        (torch.Size([3, 4]), torch.Size([3, 4]), torch.Size([3, 6]), True)
    """

    def __init__(
        self,
        action_spec: Any,
        hidden_dim: int = 200,
        rnn_hidden_dim: int = 200,
        state_dim: int = 30,
        scale_lb: float = 0.1,
        action_dim: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.action_dim = action_dim_of(action_spec, action_dim)
        self.state_dim, self.rnn_hidden_dim, self.hidden_dim = state_dim, rnn_hidden_dim, hidden_dim
        self.scale_lb = scale_lb
        self.action_state_projector = nn.Sequential(
            nn.Linear(state_dim + self.action_dim, hidden_dim, device=device), nn.ELU()
        )
        self.rnn = nn.GRUCell(hidden_dim, rnn_hidden_dim, device=device)
        self.rnn_to_prior_projector = nn.Sequential(
            nn.Linear(rnn_hidden_dim, hidden_dim, device=device),
            nn.ELU(),
            nn.Linear(hidden_dim, 2 * state_dim, device=device),
        )

    def sample_noise(
        self, batch_shape: torch.Size | tuple[int, ...], like: torch.Tensor
    ) -> torch.Tensor:
        """Standard-normal noise ``[*batch_shape, S]`` for :meth:`forward`'s ``noise``."""
        return torch.randn(*batch_shape, self.state_dim, dtype=like.dtype, device=like.device)

    def project_action(self, action: torch.Tensor) -> torch.Tensor:
        """The action's share of the first layer, ``W_a a + b``: ``[*B, hidden]``.

        Split from :meth:`advance` so that a rollout can project a whole action sequence at once.
        """
        lin = self.action_state_projector[0]
        if not action.is_floating_point():
            action = action.to(lin.weight.dtype)
        return F.linear(action, lin.weight[:, self.state_dim :], lin.bias)  # [*B, hidden]

    def advance(
        self, state: torch.Tensor, belief: torch.Tensor, action_projection: torch.Tensor
    ) -> torch.Tensor:
        """``h_t = GRU(h_{t-1}, ELU(W_s s_{t-1} + W_a a_{t-1} + b))``: ``[*B, H]``."""
        lin = self.action_state_projector[0]
        x = F.linear(state, lin.weight[:, : self.state_dim]) + action_projection  # [*B, hidden]
        x = self.action_state_projector[1](x)  # [*B, hidden]
        batch = x.shape[:-1]
        h = gru_fp32(self.rnn, x.reshape(-1, x.shape[-1]), belief.reshape(-1, belief.shape[-1]))
        return h.reshape(*batch, -1)  # [*B, H]

    def update_belief(
        self, state: torch.Tensor, belief: torch.Tensor, action: torch.Tensor
    ) -> torch.Tensor:
        """``h_t = GRU(h_{t-1}, ELU(W [s_{t-1}, a_{t-1}]))``: ``[*B, H]``."""
        check_inputs(
            state=(state, self.state_dim),
            belief=(belief, self.rnn_hidden_dim),
            action=(action, self.action_dim),
        )
        return self.advance(state, belief, self.project_action(action))

    def distribution(self, belief: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` of ``p(s_t | h_t)``, each ``[*B, S]``."""
        mean, raw = self.rnn_to_prior_projector(belief).chunk(2, -1)  # [*B, S], [*B, S]
        return mean, positive_scale(raw, self.scale_lb)

    def forward(
        self,
        state: torch.Tensor,
        belief: torch.Tensor,
        action: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One prior step: ``(prior_mean, prior_std, state, belief)`` (see the class docstring)."""
        belief = self.update_belief(state, belief, action)  # [*B, H]
        mean, std = self.distribution(belief)  # [*B, S], [*B, S]
        if noise is None:
            noise = torch.randn_like(std)  # [*B, S]
        return mean, std, gaussian_rsample(mean, std, noise), belief
