"""RSSM prior and posterior with categorical stochastic states (DreamerV2/V3).

The stochastic state is a vector of ``C`` categoricals with ``K`` classes each (32 x 32 in the
papers), sampled as concatenated one-hot vectors with straight-through gradients (Hafner et al.
2021, "Mastering Atari with Discrete World Models", Sec. 2). DreamerV3 mixes each categorical with
1% uniform ("unimix") so that the KL terms stay bounded, and normalises its layers and uses SiLU
(Hafner et al. 2023, "Mastering Diverse Domains through World Models", Sec. 3 and App. B).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wmrl.rssm.functional import straight_through_one_hot, unimix_probs
from wmrl.rssm.heads import make_norm
from wmrl.rssm.prior import action_dim_of, check_inputs, gru_fp32

__all__ = ["ACTION_INPUTS", "RSSMPriorV3", "RSSMPosteriorV3", "STATE_MODES", "categorical_state",
           "sample_categorical_state"]  # fmt: skip

#: What a categorical latent passes on (:func:`categorical_state`).
STATE_MODES = ("sample", "probs")

#: How :class:`RSSMPriorV3` reads the action (its ``action_input``).
ACTION_INPUTS = ("joint", "separate")


def sample_categorical_state(
    logits: torch.Tensor, unimix: float, uniform: torch.Tensor | None = None
) -> torch.Tensor:
    """Flattened one-hot sample ``[*B, C * K]`` of logits ``[*B, C, K]`` (straight-through).

    Args:
        logits: ``[*B, C, K]``.
        unimix: uniform mixture weight.
        uniform: ``[*B, C]`` uniforms (drawn when ``None``).

    >>> s = sample_categorical_state(torch.zeros(2, 3, 4), 0.01)
    >>> s.shape, s.sum(-1)
    (torch.Size([2, 12]), tensor([3., 3.]))
    """
    probs = unimix_probs(logits, unimix)  # [*B, C, K]
    if uniform is None:
        uniform = torch.rand(probs.shape[:-1], dtype=probs.dtype, device=probs.device)  # [*B, C]
    return straight_through_one_hot(probs, uniform).flatten(-2)  # [*B, C * K]


def categorical_state(
    logits: torch.Tensor, unimix: float, uniform: torch.Tensor | None = None,
    mode: str = "sample",
) -> torch.Tensor:
    """The state ``[*B, C * K]`` a categorical latent with logits ``[*B, C, K]`` passes on.

    ``mode="sample"``: a one-hot sample with straight-through gradients
    (:func:`sample_categorical_state`; DreamerV2/V3). ``mode="probs"``: the ``unimix``-mixed
    probabilities themselves, the sample's expectation: the RSSM then carries no sampling noise
    (deterministic given the observations and actions) while its KL terms are unchanged. A
    one-hot sample reads a continuous quantity only to the width of the class it falls in; its
    probabilities interpolate between classes (``docs/benchmarks_dreamer_agent.md``, eleventh
    series: the pendulum's angle from pixels to 0.06 rad by samples, 0.006 by probabilities).

    >>> logits = torch.tensor([[[0.0, 0.0]]])  # one categorical, two equally likely classes
    >>> categorical_state(logits, 0.0, mode="probs").tolist()
    [[0.5, 0.5]]
    >>> categorical_state(logits, 0.0, torch.tensor([[0.7]])).sum().item()  # one-hot
    1.0
    """
    if _check_mode(mode, "mode") == "probs":
        return unimix_probs(logits, unimix).flatten(-2)  # [*B, C * K]
    return sample_categorical_state(logits, unimix, uniform)


def _check_mode(mode: str, name: str = "state_mode") -> str:
    if mode not in STATE_MODES:
        raise ValueError(f"{name} must be one of {STATE_MODES}, got {mode!r}")
    return mode


def _dense(in_f: int, out_f: int, norm: str | None, device: Any) -> list[nn.Module]:
    # Linear (+ norm) + SiLU; without a norm the layout matches TorchRL's V3 modules
    norm_layer = [] if norm is None else [make_norm(norm, out_f, device)]
    return [nn.Linear(in_f, out_f, device=device), *norm_layer, nn.SiLU()]


class RSSMPriorV3(nn.Module):
    """Categorical prior ``p(z_t | h_t)``, belief update ``h_t = GRU(h_{t-1}, x_t)`` with ``x_t``
    an embedding of ``(z_{t-1}, a_{t-1})``.

    How the action enters ``x_t`` (``action_input``):

    * ``"joint"`` (TorchRL's layout): ``x = SiLU(norm(W [z, a]))``, one layer over the ``C K``
      state entries and the ``A`` action entries together (a one-dimensional torque against
      a 16 x 16 latent: one input column of 257).
    * ``"separate"`` (DreamerV3's code embeds the previous stochastic state and the action in
      layers of their own, ``dynin1`` and ``dynin2``, and concatenates them):
      ``x = [SiLU(norm(W_z z)), SiLU(W_a a + b_a)]``, a ``2 hidden`` input to the GRU whose
      action half is the width of the state's. The action's layer has no norm: with
      ``A = 1``, normalising ``W_a a + b_a`` over its units keeps little of ``|a|`` (with a
      zero bias, only the sign of ``a``), and a torque's size is what balancing depends on.

    Args:
        action_spec: the action spec (only its last dimension is read), or ``None``.
        hidden_dim: width of the dense layers (default 512).
        rnn_hidden_dim: belief size (default 512).
        num_categoricals: ``C`` (default 32).
        num_classes: ``K`` (default 32).
        action_dim: action dimension (default: from ``action_spec``).
        device: where the parameters live.
        norm: ``"layer"`` (default), ``"rms"`` or ``None`` (TorchRL's layout, for parity).
        unimix: uniform mixture (default 0.01 as in DreamerV3; TorchRL defaults to 0).
        state_mode: ``"sample"`` (one-hot samples, DreamerV3) or ``"probs"`` (the
            probabilities, see :func:`categorical_state`).
        action_input: ``"joint"`` (default) or ``"separate"`` (above).

    ``forward(state [*B, C*K], belief [*B, H], action [*B, A], noise=None)`` returns
    ``(prior_logits [*B, C, K], state [*B, C*K], belief [*B, H])``; ``noise`` ``[*B, C]``
    holds the uniforms of the categorical sample.

    Example:
        >>> prior = RSSMPriorV3(None, hidden_dim=8, rnn_hidden_dim=6, num_categoricals=2,
        ...                     num_classes=3, action_dim=1)
        >>> logits, z, h = prior(torch.zeros(4, 6), torch.zeros(4, 6), torch.zeros(4, 1))
        >>> logits.shape, z.shape, h.shape
        (torch.Size([4, 2, 3]), torch.Size([4, 6]), torch.Size([4, 6]))
        >>> sep = RSSMPriorV3(None, hidden_dim=8, rnn_hidden_dim=6, num_categoricals=2,
        ...                   num_classes=3, action_dim=1, action_input="separate")
        >>> sep.rnn.input_size  # the state's 8 units and the action's 8
        16
    """

    def __init__(
        self,
        action_spec: Any = None,
        hidden_dim: int = 512,
        rnn_hidden_dim: int = 512,
        num_categoricals: int = 32,
        num_classes: int = 32,
        action_dim: int | None = None,
        device: torch.device | str | None = None,
        *,
        norm: str | None = "layer",
        unimix: float = 0.01,
        state_mode: str = "sample",
        action_input: str = "joint",
    ) -> None:
        super().__init__()
        if not 0.0 <= unimix < 1.0:
            raise ValueError(f"unimix must be in [0, 1), got {unimix}")
        if action_input not in ACTION_INPUTS:
            raise ValueError(f"action_input must be one of {ACTION_INPUTS}, got {action_input!r}")
        self.state_mode = _check_mode(state_mode)
        self.action_input = action_input
        self.action_dim = action_dim_of(action_spec, action_dim)
        self.num_categoricals, self.num_classes = num_categoricals, num_classes
        self.state_dim = num_categoricals * num_classes
        self.rnn_hidden_dim, self.unimix = rnn_hidden_dim, unimix
        if action_input == "joint":
            self.action_state_projector = nn.Sequential(
                *_dense(self.state_dim + self.action_dim, hidden_dim, norm, device)
            )
            rnn_in = hidden_dim
        else:
            self.state_projector = nn.Sequential(*_dense(self.state_dim, hidden_dim, norm, device))
            self.action_projector = nn.Sequential(
                *_dense(self.action_dim, hidden_dim, None, device)  # no norm: keeps |a|
            )
            rnn_in = 2 * hidden_dim
        self.rnn = nn.GRUCell(rnn_in, rnn_hidden_dim, device=device)
        self.rnn_to_prior_projector = nn.Sequential(
            *_dense(rnn_hidden_dim, hidden_dim, norm, device),
            nn.Linear(hidden_dim, self.state_dim, device=device),
        )

    def sample_noise(
        self, batch_shape: torch.Size | tuple[int, ...], like: torch.Tensor
    ) -> torch.Tensor:
        """Uniforms ``[*batch_shape, C]`` for :meth:`forward`'s ``noise``."""
        return torch.rand(*batch_shape, self.num_categoricals, dtype=like.dtype, device=like.device)

    def update_belief(
        self, state: torch.Tensor, belief: torch.Tensor, action: torch.Tensor
    ) -> torch.Tensor:
        """``h_t = GRU(h_{t-1}, x_t)``, ``x_t`` the ``action_input`` embedding of
        ``(z_{t-1}, a_{t-1})`` (class docstring): ``[*B, H]``."""
        check_inputs(
            state=(state, self.state_dim),
            belief=(belief, self.rnn_hidden_dim),
            action=(action, self.action_dim),
        )
        if not action.is_floating_point():
            action = action.to(state.dtype)
        if self.action_input == "joint":
            x = self.action_state_projector(torch.cat([state, action], dim=-1))  # [*B, hidden]
        else:
            z = self.state_projector(state)  # [*B, hidden]
            a = self.action_projector(action.to(state.dtype))  # [*B, hidden]
            x = torch.cat([z, a.to(z.dtype)], dim=-1)  # [*B, 2 hidden]
        batch = x.shape[:-1]
        h = gru_fp32(self.rnn, x.reshape(-1, x.shape[-1]), belief.reshape(-1, belief.shape[-1]))
        return h.reshape(*batch, -1)  # [*B, H]

    def forward(
        self,
        state: torch.Tensor,
        belief: torch.Tensor,
        action: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One prior step: ``(prior_logits, state, belief)`` (see the class docstring)."""
        belief = self.update_belief(state, belief, action)  # [*B, H]
        logits = self.rnn_to_prior_projector(belief)  # [*B, C * K]
        logits = logits.unflatten(-1, (self.num_categoricals, self.num_classes))  # [*B, C, K]
        return logits, categorical_state(logits, self.unimix, noise, self.state_mode), belief


class RSSMPosteriorV3(nn.Module):
    """Categorical posterior ``q(z_t | h_t, e_t)``: ``[h, e] -> Linear -> norm -> SiLU -> Linear``.

    Args:
        hidden_dim: hidden width (default 512).
        num_categoricals: ``C`` (default 32).
        num_classes: ``K`` (default 32).
        rnn_hidden_dim: belief size (default 512).
        obs_embed_dim: observation-embedding size (default 1024).
        device: where the parameters live.
        norm: ``"layer"`` (default), ``"rms"`` or ``None`` (TorchRL's layout).
        unimix: uniform mixture (default 0.01).
        state_mode: ``"sample"`` (one-hot samples, DreamerV3) or ``"probs"`` (the
            probabilities, see :func:`categorical_state`).

    ``forward(belief [*B, H], obs_embedding [*B, E], noise=None)`` returns
    ``(posterior_logits [*B, C, K], state [*B, C*K])``.

    Example:
        >>> post = RSSMPosteriorV3(8, 2, 3, rnn_hidden_dim=6, obs_embed_dim=5)
        >>> logits, z = post(torch.zeros(4, 6), torch.zeros(4, 5))
        >>> z.shape
        torch.Size([4, 6])
    """

    def __init__(
        self,
        hidden_dim: int = 512,
        num_categoricals: int = 32,
        num_classes: int = 32,
        rnn_hidden_dim: int = 512,
        obs_embed_dim: int = 1024,
        device: torch.device | str | None = None,
        *,
        norm: str | None = "layer",
        unimix: float = 0.01,
        state_mode: str = "sample",
    ) -> None:
        super().__init__()
        if not 0.0 <= unimix < 1.0:
            raise ValueError(f"unimix must be in [0, 1), got {unimix}")
        self.state_mode = _check_mode(state_mode)
        self.num_categoricals, self.num_classes = num_categoricals, num_classes
        self.state_dim, self.unimix = num_categoricals * num_classes, unimix
        self.rnn_hidden_dim, self.obs_embed_dim = rnn_hidden_dim, obs_embed_dim
        self.obs_rnn_to_post_projector = nn.Sequential(
            *_dense(rnn_hidden_dim + obs_embed_dim, hidden_dim, norm, device),
            nn.Linear(hidden_dim, self.state_dim, device=device),
        )

    def sample_noise(
        self, batch_shape: torch.Size | tuple[int, ...], like: torch.Tensor
    ) -> torch.Tensor:
        """Uniforms ``[*batch_shape, C]`` for :meth:`forward`'s ``noise``."""
        return torch.rand(*batch_shape, self.num_categoricals, dtype=like.dtype, device=like.device)

    def forward(
        self,
        belief: torch.Tensor,
        obs_embedding: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(posterior_logits, state)`` (see the class docstring)."""
        check_inputs(
            belief=(belief, self.rnn_hidden_dim), obs_embedding=(obs_embedding, self.obs_embed_dim)
        )
        x = torch.cat([belief, obs_embedding.to(belief.dtype)], dim=-1)  # [*B, H + E]
        logits = self.obs_rnn_to_post_projector(x)  # [*B, C * K]
        logits = logits.unflatten(-1, (self.num_categoricals, self.num_classes))  # [*B, C, K]
        return logits, categorical_state(logits, self.unimix, noise, self.state_mode)
