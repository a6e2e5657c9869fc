"""The RSSM posterior (representation model) with a diagonal-Gaussian stochastic state.

Hafner et al. 2019, "Learning Latent Dynamics for Planning from Pixels" (PlaNet), Sec. 3:
the filtering posterior ``q(s_t | h_t, o_t) = N(mu(h_t, e_t), diag(sigma(h_t, e_t)^2))`` with
``e_t`` the encoded observation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wmrl.rssm.functional import gaussian_rsample, positive_scale
from wmrl.rssm.prior import check_inputs

__all__ = ["RSSMPosterior"]


class RSSMPosterior(nn.Module):
    """Posterior ``q(s_t | h_t, e_t)``: ``[h, e] -> Linear -> ELU -> Linear -> (mean, scale)``.

    The scale is ``max(softplus(.), scale_lb)``. The parameter layout
    (``obs_rnn_to_post_projector``) is TorchRL's. TorchRL builds the first layer lazily when the
    input sizes are not given; here they default to the pages' sizes (a 200-unit belief and the
    1024 features of :class:`~wmrl.rssm.encoder.ObsEncoder` on 64x64 frames).

    Args:
        hidden_dim: width of the hidden layer (default 200).
        state_dim: size of the stochastic state (default 30).
        scale_lb: lower bound of the standard deviation (default 0.1).
        rnn_hidden_dim: size of the belief (default 200).
        obs_embed_dim: size of the observation embedding (default 1024).
        device: where the parameters live.

    ``forward(belief [*B, H], obs_embedding [*B, E], noise=None)`` returns
    ``(posterior_mean [*B, S], posterior_std [*B, S], state [*B, S])``.

    Example:
        >>> post = RSSMPosterior(hidden_dim=8, state_dim=4, rnn_hidden_dim=6, obs_embed_dim=5)
        >>> mean, std, s = post(torch.zeros(3, 6), torch.zeros(3, 5))
        >>> s.shape
        torch.Size([3, 4])
    """

    def __init__(
        self,
        hidden_dim: int = 200,
        state_dim: int = 30,
        scale_lb: float = 0.1,
        rnn_hidden_dim: int = 200,
        obs_embed_dim: int = 1024,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.hidden_dim, self.state_dim, self.scale_lb = hidden_dim, state_dim, scale_lb
        self.rnn_hidden_dim, self.obs_embed_dim = rnn_hidden_dim, obs_embed_dim
        self.obs_rnn_to_post_projector = nn.Sequential(
            nn.Linear(rnn_hidden_dim + obs_embed_dim, hidden_dim, device=device),
            nn.ELU(),
            nn.Linear(hidden_dim, 2 * state_dim, device=device),
        )

    def sample_noise(
        self, batch_shape: torch.Size | tuple[int, ...], like: torch.Tensor
    ) -> torch.Tensor:
        """Standard-normal noise ``[*batch_shape, S]`` for :meth:`forward`'s ``noise``."""
        return torch.randn(*batch_shape, self.state_dim, dtype=like.dtype, device=like.device)

    def project_embedding(self, obs_embedding: torch.Tensor) -> torch.Tensor:
        """The embedding's share of the first layer, ``W_e e + b``: ``[*B, hidden]``.

        Split from :meth:`sample_from` so that a rollout can project a whole sequence at once.
        """
        lin = self.obs_rnn_to_post_projector[0]
        w = lin.weight[:, self.rnn_hidden_dim :]  # [hidden, E]
        return F.linear(obs_embedding.to(w.dtype), w, lin.bias)  # [*B, hidden]

    def sample_from(
        self,
        belief: torch.Tensor,
        embedding_projection: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean, std, state)`` of ``q(s_t | h_t, e_t)`` from the projected embedding."""
        lin, act, out = self.obs_rnn_to_post_projector
        x = F.linear(belief, lin.weight[:, : self.rnn_hidden_dim]) + embedding_projection
        mean, raw = out(act(x)).chunk(2, -1)  # [*B, S], [*B, S]
        std = positive_scale(raw, self.scale_lb)  # [*B, S]
        if noise is None:
            noise = torch.randn_like(std)  # [*B, S]
        return mean, std, gaussian_rsample(mean, std, noise)

    def forward(
        self,
        belief: torch.Tensor,
        obs_embedding: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(posterior_mean, posterior_std, state)`` (see the class docstring)."""
        check_inputs(
            belief=(belief, self.rnn_hidden_dim), obs_embedding=(obs_embedding, self.obs_embed_dim)
        )
        return self.sample_from(belief, self.project_embedding(obs_embedding), noise)
