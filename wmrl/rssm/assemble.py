"""Wire the Dreamer networks into the TensorDict modules the losses and the environment use.

The keys are those of the documentation pages (and of TorchRL's Dreamer example): sequences
``[B, T]`` hold ``"state"``, ``"belief"``, ``"action"`` and ``("next", "pixels")``,
``("next", "reward")``; the world model writes ``("next", "encoded_latents")``, the prior and
posterior parameters, ``("next", "state")``, ``("next", "belief")``, ``("next", "reco_pixels")``
and the predicted ``("next", "reward")``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict.nn import TensorDictModule, TensorDictSequential

from wmrl.envs.dreamer import DreamerEnv
from wmrl.rssm.actor import DreamerActor, TanhNormalSample
from wmrl.rssm.decoder import ObsDecoder
from wmrl.rssm.encoder import ObsEncoder
from wmrl.rssm.heads import DenseHead
from wmrl.rssm.posterior import RSSMPosterior
from wmrl.rssm.prior import RSSMPrior
from wmrl.rssm.rollout import RSSMRollout

__all__ = ["DreamerModules", "make_dreamer"]


@dataclass
class DreamerModules:
    """The wired Dreamer modules.

    Attributes:
        world_model: sequences ``[B, T]`` -> latents, reconstructions and rewards (for
            :class:`~wmrl.rssm.dreamer.DreamerModelLoss`).
        model_based_env: the imagination environment (prior + reward head).
        actor: ``("state", "belief") -> "action"`` (tanh-Gaussian sample).
        value: ``("state", "belief") -> "state_value"``.
        encoder, decoder, prior, posterior, reward, rollout: the parts.

    Example: the parts are shared, so training the world model trains the imagination
    environment; the actor imagines in it and the critic values the imagined states.

    >>> from tensordict import TensorDict
    >>> m = make_dreamer(2, channels=4, state_dim=4, rnn_hidden_dim=8, hidden_dim=8,
    ...                  mlp_cells=8, actor_depth=1, actor_cells=8)
    >>> m.model_based_env.obs_decoder.module is m.decoder, m.world_model[0].module is m.encoder
    (True, True)
    >>> start = TensorDict({"state": torch.zeros(3, 4), "belief": torch.zeros(3, 8)}, [3])
    >>> trajectory = m.model_based_env.rollout(5, m.actor, tensordict=start, auto_reset=False)
    >>> trajectory["next", "reward"].shape, m.value(trajectory)["state_value"].shape
    (torch.Size([3, 5, 1]), torch.Size([3, 5, 1]))
    """

    world_model: TensorDictSequential
    model_based_env: DreamerEnv
    actor: TensorDictSequential
    value: TensorDictModule
    encoder: ObsEncoder
    decoder: ObsDecoder
    prior: RSSMPrior
    posterior: RSSMPosterior
    reward: DenseHead
    rollout: RSSMRollout


def make_dreamer(
    action_dim: int,
    *,
    channels: int = 32,
    state_dim: int = 30,
    rnn_hidden_dim: int = 200,
    hidden_dim: int = 200,
    mlp_cells: int = 400,
    actor_depth: int = 4,
    actor_cells: int = 200,
    image_size: int = 64,
    use_scan: bool = False,
    device: torch.device | str | None = None,
) -> DreamerModules:
    """Build Dreamer's networks (Hafner et al. 2019, App. A; defaults are the pages' sizes).

    Args:
        action_dim: action dimension (actions in ``[-1, 1]``).
        channels: conv depth of encoder and decoder (32).
        state_dim, rnn_hidden_dim, hidden_dim: RSSM sizes (30, 200, 200).
        mlp_cells: width of the reward (2 layers) and value (3 layers) heads (400).
        actor_depth, actor_cells: actor MLP (4 x 200).
        image_size: side of the square RGB frames (64).
        use_scan: run the RSSM rollout with ``scan``.
        device: where the parameters live.

    Example:
        >>> m = make_dreamer(2, channels=4, state_dim=4, rnn_hidden_dim=8, hidden_dim=8,
        ...                  mlp_cells=8, actor_depth=1, actor_cells=8)
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"state": torch.zeros(2, 3, 4), "belief": torch.zeros(2, 3, 8),
        ...                  "action": torch.zeros(2, 3, 2),
        ...                  "next": {"pixels": torch.rand(2, 3, 3, 64, 64)}}, [2, 3])
        >>> m.world_model(td)["next", "reco_pixels"].shape
        torch.Size([2, 3, 3, 64, 64])
    """
    latent = state_dim + rnn_hidden_dim
    encoder = ObsEncoder(channels, device=device)
    decoder = ObsDecoder(channels, latent_dim=latent, device=device)
    prior = RSSMPrior(
        None, hidden_dim, rnn_hidden_dim, state_dim, action_dim=action_dim, device=device
    )
    posterior = RSSMPosterior(
        hidden_dim, state_dim, rnn_hidden_dim=rnn_hidden_dim,
        obs_embed_dim=encoder.output_dim(image_size), device=device,
    )  # fmt: skip
    reward = DenseHead(latent, 1, depth=2, num_cells=mlp_cells, device=device)
    rollout = RSSMRollout(
        TensorDictModule(
            prior,
            in_keys=["state", "belief", "action"],
            out_keys=[("next", "prior_mean"), ("next", "prior_std"), "_", ("next", "belief")],
        ),
        TensorDictModule(
            posterior,
            in_keys=[("next", "belief"), ("next", "encoded_latents")],
            out_keys=[("next", "posterior_mean"), ("next", "posterior_std"), ("next", "state")],
        ),
        use_scan=use_scan,
    )
    next_latent = [("next", "state"), ("next", "belief")]
    world_model = TensorDictSequential(
        TensorDictModule(encoder, [("next", "pixels")], [("next", "encoded_latents")]),
        rollout,
        TensorDictModule(decoder, next_latent, [("next", "reco_pixels")]),
        TensorDictModule(reward, next_latent, [("next", "reward")]),
    )
    imagination = TensorDictSequential(
        TensorDictModule(prior, ["state", "belief", "action"], ["_", "_", "state", "belief"]),
        TensorDictModule(reward, ["state", "belief"], ["reward"]),
    )
    env = DreamerEnv(
        imagination,
        prior_shape=(state_dim,),
        belief_shape=(rnn_hidden_dim,),
        obs_decoder=TensorDictModule(decoder, ["state", "belief"], ["reco_pixels"]),
        device=device if device is not None else "cpu",
        obs_encoder=encoder,
        rssm_posterior=posterior,
    )
    actor = TensorDictSequential(
        TensorDictModule(
            DreamerActor(
                action_dim, depth=actor_depth, num_cells=actor_cells, in_features=latent,
                device=device,
            ),
            ["state", "belief"],
            ["loc", "scale"],
        ),
        TensorDictModule(TanhNormalSample(), ["loc", "scale"], ["action"]),
    )  # fmt: skip
    value = TensorDictModule(
        DenseHead(latent, 1, depth=3, num_cells=mlp_cells, device=device),
        ["state", "belief"],
        ["state_value"],
    )
    return DreamerModules(
        world_model, env, actor, value, encoder, decoder, prior, posterior, reward, rollout
    )
