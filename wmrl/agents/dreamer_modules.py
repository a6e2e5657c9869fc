"""The Dreamer agent's networks, wired for pixels or vector observations and for v1 or v3.

One builder, :func:`make_dreamer_nets`, covers the four combinations:

==========  ==============================================  =====================================
            Dreamer (``version=1``)                         DreamerV3 (``version=3``)
==========  ==============================================  =====================================
latent      diagonal Gaussian (:class:`RSSMPrior`)          ``C x K`` categoricals
                                                            (:class:`RSSMPriorV3`)
pixels      :class:`ObsEncoder` / :class:`ObsDecoder`       the same conv nets
vectors     ELU MLPs (:class:`DenseHead`)                   normalised SiLU MLPs, symlog inputs
                                                            (:class:`DreamerV3MLP`)
reward      scalar head (``"reward"``)                      two-hot logits (``"reward_logits"``)
critic      scalar head (``"state_value"``)                 two-hot logits, decoded to
                                                            ``"state_value"``
==========  ==============================================  =====================================

(Hafner et al. 2019, "Dream to Control", App. A; Hafner et al. 2023, "Mastering Diverse Domains
through World Models", Sec. 3 and App. B.) The keys are those of
:func:`wmrl.rssm.assemble.make_dreamer`: sequences ``[B, T]`` hold ``"state"``, ``"belief"``,
``"action"`` and ``("next", obs_key)``; the world model writes the prior/posterior parameters,
``("next", "state" / "belief")``, ``("next", "reco_" + obs_key)`` and the reward prediction.

:class:`RSSMPolicy` is the agent acting in the real environment: it filters the observation
stream with the RSSM (prior step, then the posterior on the encoded observation) and acts with the
actor on the filtered latent; its recurrent state travels in the environment's TensorDict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictSequential
from torch import nn
from torchrl.data import Unbounded
from torchrl.envs import TensorDictPrimer, ToTensorImage

from wmrl.agents.action_noise import NOISE_KEY, ar1_noise_step
from wmrl.agents.dreamer_objective import ACTOR_DISTS
from wmrl.envs.dreamer import DreamerEnv
from wmrl.rssm import (
    BoundedNormalSample,
    DenseHead,
    DreamerActor,
    DreamerV3MLP,
    ObsDecoder,
    ObsEncoder,
    RSSMPosterior,
    RSSMPosteriorV3,
    RSSMPrior,
    RSSMPriorV3,
    RSSMRollout,
    TanhNormalSample,
    default_bins,
    two_hot_decode,
)
from wmrl.rssm.actor import sampling_actions
from wmrl.rssm.functional import straight_through_one_hot

__all__ = [
    "DreamerSizes",
    "DreamerNets",
    "TwoHotDecode",
    "CentredEncoder",
    "CentredDecoder",
    "RSSMPolicy",
    "make_dreamer_nets",
]

#: recurrent entries the real-world policy carries between steps (see :class:`RSSMPolicy`)
POLICY_STATE_KEYS = ("state", "belief", "prev_action", NOISE_KEY)


@dataclass
class DreamerSizes:
    """Network sizes (defaults: Dreamer's, Hafner et al. 2019, App. A).

    Attributes:
        channels: conv depth of the pixel encoder and decoder.
        state_dim: Gaussian stochastic state size (v1).
        num_categoricals, num_classes: categorical latent ``C x K`` (v3).
        rnn_hidden_dim: GRU belief size.
        hidden_dim: width of the RSSM's dense layers.
        mlp_cells, mlp_depth: width and depth of the reward head, the critic (one layer more in
            v1, as the paper) and the vector encoder/decoder.
        embed_dim: vector encoder output size.
        actor_depth, actor_cells: actor MLP.
        num_bins: two-hot bins of the v3 reward and critic heads.

    Example: the paper's sizes, and a tiny set for quick experiments; the latent the actor
    and heads read is ``state_dim + rnn_hidden_dim`` (v1) or
    ``num_categoricals * num_classes + rnn_hidden_dim`` (v3).

    >>> s = DreamerSizes()
    >>> s.state_dim + s.rnn_hidden_dim, s.num_categoricals * s.num_classes + s.rnn_hidden_dim
    (230, 1224)
    >>> tiny = DreamerSizes(channels=4, state_dim=4, rnn_hidden_dim=8, hidden_dim=8, mlp_cells=8,
    ...                     mlp_depth=1, embed_dim=8, actor_depth=1, actor_cells=8)
    >>> nets = make_dreamer_nets(1, action_dim=1, obs_key="pixels", sizes=tiny)
    >>> nets.parts["encoder"](torch.zeros(1, 3, 64, 64)).shape  # conv depth 4: 32 * 4 features
    torch.Size([1, 128])
    """

    channels: int = 32
    state_dim: int = 30
    num_categoricals: int = 32
    num_classes: int = 32
    rnn_hidden_dim: int = 200
    hidden_dim: int = 200
    mlp_cells: int = 400
    mlp_depth: int = 2
    embed_dim: int = 200
    actor_depth: int = 4
    actor_cells: int = 200
    num_bins: int = 255


class TwoHotDecode(nn.Module):
    """Logits ``[*B, K]`` over DreamerV3's symexp bins to their expected value ``[*B, 1]``
    (Hafner et al. 2023, Eq. 11).

    >>> dec = TwoHotDecode(5)
    >>> dec(torch.zeros(3, 5)).flatten().tolist()  # uniform probabilities decode to zero
    [0.0, 0.0, 0.0]
    """

    def __init__(self, num_bins: int = 255, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.register_buffer("bins", default_bins(num_bins, device=device))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Expected value ``[*B, 1]`` of the bins under ``softmax(logits)`` ``[*B, K]``."""
        return two_hot_decode(logits.float(), self.bins).unsqueeze(-1)  # [*B, 1]


@dataclass
class DreamerNets:
    """The wired networks of one Dreamer agent.

    Attributes:
        version: 1 (Dreamer) or 3 (DreamerV3).
        obs_key: the observation entry the agent reads (``"pixels"`` or ``"observation"``).
        world_model: sequences ``[B, T]`` to latents, reconstructions and reward predictions.
        imagination_env: the :class:`~wmrl.envs.dreamer.DreamerEnv` the actor is trained in.
        actor: ``("state", "belief") -> ("loc", "scale", "action")``.
        value: ``("state", "belief") -> "state_value"`` (and ``"state_value_logits"`` in v3).
        policy: the real-world :class:`RSSMPolicy`.
        parts: every trained network by name (encoder, decoder, prior, posterior, reward, actor,
            value); the world-model parts are the first five.

    Example (built by :func:`make_dreamer_nets`; vector observations, tiny sizes):

    >>> tiny = DreamerSizes(state_dim=4, rnn_hidden_dim=8, hidden_dim=8, mlp_cells=8,
    ...                     mlp_depth=1, embed_dim=8, actor_depth=1, actor_cells=8)
    >>> nets = make_dreamer_nets(1, action_dim=1, obs_key="observation", obs_dim=3, sizes=tiny)
    >>> nets.version, nets.obs_key, list(nets.parts)
    (1, 'observation', ['encoder', 'decoder', 'prior', 'posterior', 'reward', 'actor', 'value'])
    >>> td = nets.actor(TensorDict({"state": torch.zeros(2, 4), "belief": torch.zeros(2, 8)}, [2]))
    >>> td["action"].shape, bool(td["action"].abs().max() <= 1)
    (torch.Size([2, 1]), True)
    """

    version: int
    obs_key: str
    world_model: TensorDictSequential
    imagination_env: DreamerEnv
    actor: TensorDictSequential
    value: TensorDictModuleBase
    policy: RSSMPolicy
    parts: dict[str, nn.Module] = field(default_factory=dict)

    WORLD_MODEL_PARTS = ("encoder", "decoder", "prior", "posterior", "reward")

    def world_model_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoder, decoder, prior, posterior and reward head (what the
        world-model optimiser updates; the actor and the critic have their own).

        >>> tiny = DreamerSizes(state_dim=4, rnn_hidden_dim=8, hidden_dim=8, mlp_cells=8,
        ...                     mlp_depth=1, embed_dim=8, actor_depth=1, actor_cells=8)
        >>> nets = make_dreamer_nets(1, 1, "observation", obs_dim=3, sizes=tiny)
        >>> model = {id(p) for p in nets.world_model_parameters()}
        >>> any(id(p) in model for p in nets.parts["actor"].parameters())
        False
        """
        return [p for k in self.WORLD_MODEL_PARTS for p in self.parts[k].parameters()]

    @property
    def reward_read_out(self) -> nn.Module:
        """``(state, belief) -> reward`` prediction (v1) or logits (v3) as the world model
        reads it (through :class:`SampledLatent` with ``categorical_state="mixed"``)."""
        return self.world_model[-1].module

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """One ``state_dict`` per part, keyed by the part's name (see :meth:`load_state_dict`)."""
        return {k: m.state_dict() for k, m in self.parts.items()}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Load a :meth:`state_dict` into every part (the nets must have the same sizes).

        >>> tiny = DreamerSizes(state_dim=4, rnn_hidden_dim=8, hidden_dim=8, mlp_cells=8,
        ...                     mlp_depth=1, embed_dim=8, actor_depth=1, actor_cells=8)
        >>> a, b = (make_dreamer_nets(1, 1, "observation", obs_dim=3, sizes=tiny) for _ in "ab")
        >>> b.load_state_dict(a.state_dict())
        >>> all(torch.equal(p, q) for p, q in zip(a.world_model_parameters(),
        ...                                       b.world_model_parameters()))
        True
        """
        for k, m in self.parts.items():
            m.load_state_dict(state[k])


class RSSMPolicy(TensorDictModuleBase):
    """Filter the real observation stream with the RSSM and act on the latent.

    At step ``t`` with the previous latent ``(s_{t-1}, h_{t-1})`` and action ``a_{t-1}`` (entries
    ``"state"``, ``"belief"``, ``"prev_action"``; zeros after a reset, see :meth:`primer`):
    ``h_t = f(h_{t-1}, s_{t-1}, a_{t-1})``, ``s_t ~ q(s_t | h_t, e(o_t))`` and
    ``a_t ~ pi(a_t | s_t, h_t)`` (Hafner et al. 2019, Sec. 3 and Alg. 1, "environment
    interaction"). It writes ``"action"`` and the carried entries under ``"next"`` so TorchRL's
    ``step_mdp`` hands them to the next step. The action is a sample under
    ``ExplorationType.RANDOM`` and the mode under ``DETERMINISTIC`` (evaluation). With
    ``action_noise = σ > 0`` a sampled action gets additive Gaussian noise, ``clip(a + σ n_t,
    -1, 1)`` (Dreamer's exploration during data collection); the noisy action is the one taken
    and the one the filter sees at the next step. ``n_t`` is white (``noise_correlation = 0``)
    or the AR(1) process of :mod:`wmrl.agents.action_noise` with lag-one correlation ``ρ``,
    carried between steps in the entry ``"noise"`` (zero at each reset).

    Args:
        encoder, prior, posterior: the RSSM networks.
        actor: the actor ``TensorDictSequential``.
        obs_key: observation entry; ``uint8`` frames ``[*B, H, W, 3]`` are converted by TorchRL's
            ``ToTensorImage`` first.
        state_dim, belief_dim, action_dim: sizes of the carried entries.
        action_noise: ``σ`` of the additive exploration noise (0: none).
        noise_correlation: ``ρ ∈ [0, 1)``, the noise's lag-one correlation (0: white).

    Example: the policy of tiny networks acting in a real environment whose TensorDict carries
    its latent (the :meth:`primer` zeroes it at each reset).

    >>> from wmrl.agents.envs import make_env
    >>> tiny = DreamerSizes(state_dim=4, rnn_hidden_dim=8, hidden_dim=8, mlp_cells=8,
    ...                     mlp_depth=1, embed_dim=8, actor_depth=1, actor_cells=8)
    >>> policy = make_dreamer_nets(1, 1, "observation", obs_dim=3, sizes=tiny).policy
    >>> env = make_env("pendulum-swingup", pixels=False, batch_size=[2], max_steps=12)
    >>> _ = env.append_transform(policy.primer())
    >>> with torch.no_grad():
    ...     traj = env.rollout(5, policy)
    >>> traj["action"].shape, traj["belief"].shape
    (torch.Size([2, 5, 1]), torch.Size([2, 5, 8]))
    >>> torch.equal(traj["belief"][:, 1:], traj["next", "belief"][:, :-1])  # carried over
    True
    """

    def __init__(
        self,
        encoder: nn.Module,
        prior: nn.Module,
        posterior: nn.Module,
        actor: TensorDictSequential,
        obs_key: str,
        state_dim: int,
        belief_dim: int,
        action_dim: int,
        action_noise: float = 0.0,
        noise_correlation: float = 0.0,
    ) -> None:
        super().__init__()
        if action_noise < 0:
            raise ValueError(f"action_noise must be >= 0, got {action_noise}")
        if not 0.0 <= noise_correlation < 1.0:
            raise ValueError(f"noise_correlation must be in [0, 1), got {noise_correlation}")
        self.encoder, self.prior, self.posterior, self.actor = encoder, prior, posterior, actor
        self.action_noise, self.noise_correlation = action_noise, noise_correlation
        self.obs_key = obs_key
        self.state_dim, self.belief_dim, self.action_dim = state_dim, belief_dim, action_dim
        self.to_image = ToTensorImage(in_keys=[obs_key]) if obs_key == "pixels" else None
        self.in_keys = [obs_key, *POLICY_STATE_KEYS]
        self.out_keys = ["action", "loc", "scale", *[("next", k) for k in POLICY_STATE_KEYS]]

    def primer(self) -> TensorDictPrimer:
        """The transform that puts zero recurrent entries in the environment's TensorDict at
        every reset (and declares them in its specs)."""
        return TensorDictPrimer(
            state=Unbounded(self.state_dim),
            belief=Unbounded(self.belief_dim),
            prev_action=Unbounded(self.action_dim),
            noise=Unbounded(self.action_dim),
            default_value=0.0,
            expand_specs=True,
        )

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """One filtering and acting step: writes ``"action"``, ``"loc"``, ``"scale"`` and the
        carried entries under ``"next"`` (see the class docstring)."""
        obs = tensordict.get(self.obs_key)
        if self.to_image is not None and not obs.is_floating_point():
            obs = self.to_image._apply_transform(obs)  # [*B, 3, H, W] in [0, 1]
        param = next(self.encoder.parameters())
        obs = obs.to(device=param.device, dtype=param.dtype)
        state = tensordict.get("state").to(param.device)  # [*B, S]
        belief = tensordict.get("belief").to(param.device)  # [*B, H]
        prev_action = tensordict.get("prev_action").to(param.device)  # [*B, A]
        belief = self.prior.update_belief(state, belief, prev_action)  # [*B, H]
        state = self.posterior(belief, self.encoder(obs))[-1]  # [*B, S]
        out = self.actor(TensorDict({"state": state, "belief": belief}, state.shape[:-1]))
        action = out.get("action")  # [*B, A]
        noise = tensordict.get(NOISE_KEY, None)  # [*B, A]: n_{t-1}
        noise = torch.zeros_like(action) if noise is None else noise.to(action)
        if self.action_noise > 0 and sampling_actions():
            noise = ar1_noise_step(noise, torch.randn_like(action), self.noise_correlation)
            action = (action + self.action_noise * noise).clamp(-1.0, 1.0)
        device = tensordict.device or obs.device
        tensordict.set("action", action.to(device))
        for key in ("loc", "scale"):
            tensordict.set(key, out.get(key).to(device))
        carried = {"state": state, "belief": belief, "prev_action": action, NOISE_KEY: noise}
        for key, value in carried.items():
            tensordict.set(("next", key), value.to(device))
        return tensordict


#: What a DreamerV3 latent passes on (:func:`make_dreamer_nets`' ``categorical_state``).
CATEGORICAL_STATES = ("sample", "probs", "mixed")


class SampledLatent(nn.Module):
    """A head that reads a one-hot sample of a categorical latent given as probabilities.

    ``forward(state [*B, C * K], belief [*B, H])`` draws one class per categorical from the
    probabilities ``state`` (straight-through gradients, DreamerV2's Alg. 1) and calls the
    wrapped ``net`` on the sample. With ``categorical_state="mixed"`` the decoder and the reward
    head read the latent this way, meant to press the posterior to be sharp (a reconstruction
    through a sample is only good when the sample is predictable), while the recurrence, the
    actor and the critic read the probabilities, free of sampling noise. On the pixel pendulum
    the posterior nevertheless ended broader than a sampled one (``docs/benchmarks.md``,
    eleventh series).

    >>> head = SampledLatent(lambda z, h: z, num_categoricals=2, num_classes=3)
    >>> z = head(torch.tensor([[0.0, 1.0, 0.0, 0.5, 0.0, 0.5]]), torch.zeros(1, 4))
    >>> z[0, :3].tolist(), z[0, 3:].sum().item(), z[0, 4].item()
    ([0.0, 1.0, 0.0], 1.0, 0.0)
    """

    def __init__(self, net: Any, num_categoricals: int, num_classes: int) -> None:
        super().__init__()
        self.net, self.shape = net, (num_categoricals, num_classes)

    def forward(self, state: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        """The wrapped head on a one-hot sample of ``state``'s categoricals."""
        probs = state.unflatten(-1, self.shape)  # [*B, C, K]
        uniform = torch.rand(probs.shape[:-1], dtype=probs.dtype, device=probs.device)
        return self.net(straight_through_one_hot(probs, uniform).flatten(-2), belief)


class CentredEncoder(nn.Module):
    """Dreamer's pixel preprocessing in front of an encoder: frames in ``[0, 1]`` enter it as
    ``x - 1/2`` (Hafner et al. 2019, whose code feeds ``obs / 255 - 0.5``).

    On the built-in tasks' near-white frames this is the difference between a pixel world model
    that sees the pendulum after about 600 updates and one that does not after 800
    (``docs/benchmarks_dreamer_agent.md``). The wrapped module keeps its parameters and their
    names; :class:`CentredDecoder` undoes the shift on the reconstruction.

    >>> enc = CentredEncoder(torch.nn.Identity())
    >>> enc(torch.tensor([0.0, 0.5, 1.0])).tolist()
    [-0.5, 0.0, 0.5]
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[*B, 3, H, W]`` in ``[0, 1]`` -> the encoder's embedding of ``pixels - 1/2``."""
        return self.encoder(pixels - 0.5)


class CentredDecoder(nn.Module):
    """The decoder's output shifted by ``+1/2``: it predicts centred frames, the loss compares
    frames in ``[0, 1]`` (the counterpart of :class:`CentredEncoder`).

    >>> dec = CentredDecoder(lambda state, belief: state + belief)
    >>> dec(torch.zeros(2), torch.ones(2)).tolist()
    [1.5, 1.5]
    """

    def __init__(self, decoder: Any) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, state: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        """The wrapped decoder's ``[*B, 3, H, W]`` plus ``1/2``."""
        return self.decoder(state, belief) + 0.5


def _conv_nets(
    sizes: DreamerSizes,
    latent: int,
    device: torch.device | str | None,
    image_channels: int,
    decoded_channels: int,
):
    encoder = ObsEncoder(sizes.channels, in_channels=image_channels, device=device)
    decoder = ObsDecoder(sizes.channels, latent_dim=latent, out_channels=decoded_channels,
                         device=device)  # fmt: skip
    return encoder, decoder, encoder.output_dim(64)


def _mlp(version: int, in_f: int, out_f: int, sizes: DreamerSizes, device, **kw) -> nn.Module:
    if version == 1:
        return DenseHead(in_f, out_f, depth=sizes.mlp_depth, num_cells=sizes.mlp_cells,
                         device=device)  # fmt: skip
    return DreamerV3MLP(in_f, out_f, depth=sizes.mlp_depth, num_cells=sizes.mlp_cells,
                        device=device, **kw)  # fmt: skip


def make_dreamer_nets(
    version: int,
    action_dim: int,
    obs_key: str = "pixels",
    obs_dim: int | None = None,
    sizes: DreamerSizes | None = None,
    device: torch.device | str | None = None,
    actor_dist: str = "tanh_normal",
    image_channels: int = 3,
    decoded: int | None = None,
    categorical_state: str = "sample",
    action_input: str = "joint",
) -> DreamerNets:
    """Build and wire the Dreamer (``version=1``) or DreamerV3 (``version=3``) networks.

    Args:
        version: 1 or 3.
        action_dim: action size (actions in ``[-1, 1]``).
        obs_key: ``"pixels"`` (64x64 RGB, conv nets) or a vector entry such as
            ``"observation"`` (MLP encoder/decoder).
        obs_dim: vector observation size (vector observations only).
        sizes: network sizes (default :class:`DreamerSizes`).
        device: where the parameters live.
        actor_dist: ``"tanh_normal"`` (:class:`~wmrl.rssm.actor.TanhNormalSample`, scale
            ``biased_softplus`` from 5 for v1, from 1 with minimum 0.1 for v3) or
            ``"bounded_normal"`` (DreamerV3's :class:`~wmrl.rssm.actor.BoundedNormalSample`,
            scale in ``[0.1, 1]``).
        image_channels: channels of the pixel observations (3: RGB; ``3 k`` for ``k`` stacked
            frames, :func:`~wmrl.agents.envs.stack_observations`).
        decoded: what the decoder reconstructs, the last ``decoded`` channels of the pixels or
            entries of the vector observation (``None``: all of it; e.g. 3 for the newest of
            ``k`` stacked frames).
        categorical_state: v3 only: what the categorical latent passes on, ``"sample"``
            (one-hot samples), ``"probs"`` (their probabilities,
            :func:`~wmrl.rssm.categorical.categorical_state`) or ``"mixed"`` (probabilities,
            read through a sample by the decoder and the reward head, :class:`SampledLatent`).
        action_input: v3 only: how the prior reads the action, ``"joint"`` (one layer over the
            state and the action) or ``"separate"`` (an embedding of its own, DreamerV3's code;
            :class:`~wmrl.rssm.categorical.RSSMPriorV3`).

    Example:
        >>> nets = make_dreamer_nets(3, 1, "observation", obs_dim=3, sizes=DreamerSizes(
        ...     num_categoricals=2, num_classes=3, rnn_hidden_dim=8, hidden_dim=8, mlp_cells=8,
        ...     mlp_depth=1, embed_dim=8, actor_depth=1, actor_cells=8, num_bins=15))
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"state": torch.zeros(2, 5, 6), "belief": torch.zeros(2, 5, 8),
        ...                  "action": torch.zeros(2, 5, 1),
        ...                  "next": {"observation": torch.randn(2, 5, 3)}}, [2, 5])
        >>> out = nets.world_model(td)
        >>> out["next", "reco_observation"].shape, out["next", "reward_logits"].shape
        (torch.Size([2, 5, 3]), torch.Size([2, 5, 15]))
    """
    if version not in (1, 3):
        raise ValueError(f"version must be 1 or 3, got {version}")
    if version == 1 and action_input != "joint":
        raise ValueError("action_input applies to version 3 (v1's Gaussian prior reads [s, a])")
    if actor_dist not in ACTOR_DISTS:
        raise ValueError(f"actor_dist must be one of {ACTOR_DISTS}, got {actor_dist!r}")
    sizes = sizes or DreamerSizes()
    pixels = obs_key == "pixels"
    if not pixels and (obs_dim is None or obs_dim < 1):
        raise ValueError("vector observations need obs_dim >= 1")
    H = sizes.rnn_hidden_dim
    S = sizes.state_dim if version == 1 else sizes.num_categoricals * sizes.num_classes
    latent = S + H
    full = image_channels if pixels else obs_dim
    assert full is not None
    decoded = full if decoded is None else decoded
    if not 1 <= decoded <= full:
        raise ValueError(f"decoded must be in [1, {full}], got {decoded}")
    if pixels:
        encoder, decoder, embed = _conv_nets(sizes, latent, device, image_channels, decoded)
        # centred frames inside the world model; the parts keep the plain networks
        encode: nn.Module = CentredEncoder(encoder)
        decode_obs: nn.Module = CentredDecoder(decoder)
    else:
        embed = sizes.embed_dim
        encoder = _mlp(version, obs_dim, embed, sizes, device, symlog_inputs=True)
        decoder = _mlp(version, latent, decoded, sizes, device)
        encode, decode_obs = encoder, decoder

    nxt = ("next",)
    if version == 1:
        prior = RSSMPrior(None, sizes.hidden_dim, H, S, action_dim=action_dim, device=device)
        posterior = RSSMPosterior(sizes.hidden_dim, S, rnn_hidden_dim=H, obs_embed_dim=embed,
                                  device=device)  # fmt: skip
        prior_out = [(*nxt, "prior_mean"), (*nxt, "prior_std"), "_", (*nxt, "belief")]
        post_out = [(*nxt, "posterior_mean"), (*nxt, "posterior_std"), (*nxt, "state")]
        step_out = ["_", "_", "state", "belief"]
        reward = DenseHead(latent, 1, depth=sizes.mlp_depth, num_cells=sizes.mlp_cells,
                           device=device)  # fmt: skip
        reward_modules = [TensorDictModule(reward, ["state", "belief"], ["reward"])]
        reward_seq = [TensorDictModule(reward, [(*nxt, "state"), (*nxt, "belief")],
                                       [(*nxt, "reward")])]  # fmt: skip
        value_head = DenseHead(latent, 1, depth=sizes.mlp_depth + 1, num_cells=sizes.mlp_cells,
                               device=device)  # fmt: skip
        value: TensorDictModuleBase = TensorDictModule(
            value_head, ["state", "belief"], ["state_value"]
        )
        actor_std: dict[str, Any] = {"std_bias": 5.0, "std_min_val": 1e-4}
    else:
        C, K = sizes.num_categoricals, sizes.num_classes
        if categorical_state not in CATEGORICAL_STATES:
            raise ValueError(f"categorical_state must be one of {CATEGORICAL_STATES}, "
                             f"got {categorical_state!r}")  # fmt: skip
        mode = "sample" if categorical_state == "sample" else "probs"
        prior = RSSMPriorV3(None, sizes.hidden_dim, H, C, K, action_dim=action_dim, device=device,
                            state_mode=mode, action_input=action_input)  # fmt: skip
        posterior = RSSMPosteriorV3(sizes.hidden_dim, C, K, rnn_hidden_dim=H, obs_embed_dim=embed,
                                    device=device, state_mode=mode)  # fmt: skip
        prior_out = [(*nxt, "prior_logits"), "_", (*nxt, "belief")]
        post_out = [(*nxt, "posterior_logits"), (*nxt, "state")]
        step_out = ["_", "state", "belief"]
        reward = _mlp(3, latent, sizes.num_bins, sizes, device, zero_init_output=True)
        reward_in: nn.Module = reward
        if categorical_state == "mixed":  # the heads that train the latent read a sample of it
            reward_in = SampledLatent(reward, C, K)
            decode_obs = SampledLatent(decode_obs, C, K)
        decode = TwoHotDecode(sizes.num_bins, device=device)
        reward_modules = [
            TensorDictModule(reward_in, ["state", "belief"], ["reward_logits"]),
            TensorDictModule(decode, ["reward_logits"], ["reward"]),
        ]
        reward_seq = [TensorDictModule(reward_in, [(*nxt, "state"), (*nxt, "belief")],
                                       [(*nxt, "reward_logits")])]  # fmt: skip
        value_head = _mlp(3, latent, sizes.num_bins, sizes, device, zero_init_output=True)
        value = TensorDictSequential(
            TensorDictModule(value_head, ["state", "belief"], ["state_value_logits"]),
            TensorDictModule(TwoHotDecode(sizes.num_bins, device=device),
                             ["state_value_logits"], ["state_value"]),
        )  # fmt: skip
        actor_std = {"std_bias": 1.0, "std_min_val": 0.1}

    rollout = RSSMRollout(
        TensorDictModule(prior, ["state", "belief", "action"], prior_out),
        TensorDictModule(posterior, [(*nxt, "belief"), (*nxt, "encoded_latents")], post_out),
    )
    next_latent = [(*nxt, "state"), (*nxt, "belief")]
    world_model = TensorDictSequential(
        TensorDictModule(encode, [(*nxt, obs_key)], [(*nxt, "encoded_latents")]),
        rollout,
        TensorDictModule(decode_obs, next_latent, [(*nxt, f"reco_{obs_key}")]),
        *reward_seq,
    )
    imagination = TensorDictSequential(
        TensorDictModule(prior, ["state", "belief", "action"], step_out), *reward_modules
    )
    env = DreamerEnv(
        imagination,
        prior_shape=(S,),
        belief_shape=(H,),
        obs_decoder=TensorDictModule(decode_obs, ["state", "belief"], [f"reco_{obs_key}"]),
        device=device if device is not None else "cpu",
        obs_encoder=encode,
        rssm_posterior=posterior,
        observation_key=obs_key,
    )
    sample: nn.Module = TanhNormalSample()
    if actor_dist == "bounded_normal":
        actor_std = {"scale_mapping": "bounded", "std_min_val": 0.1, "std_max_val": 1.0}
        sample = BoundedNormalSample()
    actor_net = DreamerActor(action_dim, depth=sizes.actor_depth, num_cells=sizes.actor_cells,
                             in_features=latent, device=device, **actor_std)  # fmt: skip
    actor = TensorDictSequential(
        TensorDictModule(actor_net, ["state", "belief"], ["loc", "scale"]),
        TensorDictModule(sample, ["loc", "scale"], ["action"]),
    )
    policy = RSSMPolicy(encode, prior, posterior, actor, obs_key, S, H, action_dim)
    parts: dict[str, nn.Module] = {
        "encoder": encoder,
        "decoder": decoder,
        "prior": prior,
        "posterior": posterior,
        "reward": reward,
        "actor": actor_net,
        "value": value_head,
    }
    return DreamerNets(version, obs_key, world_model, env, actor, value, policy, parts)
