"""Dreamer's imagination environment: latent rollouts of an RSSM (Hafner et al. 2019, Sec. 3).

:class:`DreamerEnv` steps the RSSM prior and reward head: from ``("state", "belief")`` and an
``"action"`` it returns the next state, belief and predicted reward, never terminates, and keeps
the autograd graph, so ``env.rollout(H, actor, tensordict=start, auto_reset=False)`` is the
imagined trajectory that :class:`~wmrl.rssm.dreamer.DreamerActorLoss` backpropagates through.
:class:`DreamerDecoder` is a transform that decodes the imagined latents into pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import Bounded, Composite, TensorSpec, Unbounded
from torchrl.envs import EnvBase
from torchrl.envs.transforms import Transform

from wmrl.envs.model_based import ModelBasedEnvBase
from wmrl.protocol import RSSM_STATE_KEYS

__all__ = ["DreamerEnv", "DreamerDecoder"]


def _find_action_dim(module: Any) -> int | None:
    """The ``action_dim`` of the first RSSM prior found inside ``module``, if any."""
    if not isinstance(module, nn.Module):
        return None
    for m in module.modules():
        dim = getattr(m, "action_dim", None)
        if isinstance(dim, int) and hasattr(m, "rnn"):
            return dim
    return None


class DreamerEnv(ModelBasedEnvBase):
    """Imagination environment over RSSM latents; also a :class:`~wmrl.protocol.WorldModel`.

    ``world_model`` is a TensorDict module doing one imagined step, as in the documentation
    pages: it reads ``"state"``, ``"belief"`` and ``"action"`` and writes the next ``"state"``,
    ``"belief"`` and ``"reward"`` (at the root, overwriting, e.g. a ``WorldModelWrapper`` of an
    :class:`~wmrl.rssm.prior.RSSMPrior` module and a reward head), or writes them under
    ``"next"`` as the :class:`~wmrl.protocol.WorldModel` protocol does. Imagination never
    terminates: ``done`` / ``terminated`` are always false and no step reads a tensor on the host.

    Specs: ``observation_spec`` and ``state_spec`` hold ``state`` ``prior_shape`` and ``belief``
    ``belief_shape``; ``reward_spec`` is ``Unbounded((1,))``; ``action_spec`` is the one given,
    else ``Bounded(-1, 1, (A,))`` with ``A`` the ``action_dim`` of the RSSM prior inside
    ``world_model`` (Dreamer's tanh actions). :meth:`set_specs_from_env` copies a real
    environment's specs instead (as TorchRL's).

    Start states (:meth:`reset` / :meth:`initial_state`): a TensorDict holding ``"state"`` and
    ``"belief"`` (e.g. posterior states from the model loss) is used as is; one holding an
    observation (``observation_key``, default ``"pixels"``) is filtered from a zero belief with
    ``obs_encoder`` and ``rssm_posterior`` (``q(s_1 | h_0 = 0, e(o_1))``); ``reset()`` without a
    TensorDict starts from zeros (the RSSM's initial state) with the env's ``batch_size``.

    Args:
        world_model: the one-step imagination module (prior transition + reward head).
        prior_shape: shape of the stochastic state (e.g. ``(30,)``).
        belief_shape: shape of the belief (e.g. ``(200,)``).
        obs_decoder: module writing decoded observations from ``"state"``/``"belief"``
            (used by :meth:`decode_obs` and :class:`DreamerDecoder`).
        device: where the environment's tensors live.
        batch_size: imagined batch (default ``[]``: any start batch is stepped as is).
        obs_encoder: ``nn.Module`` mapping observations to embeddings (for :meth:`initial_state`).
        rssm_posterior: ``nn.Module`` ``(belief, embedding) -> (..., state)`` (idem).
        action_spec: spec of the action (see above).
        observation_key: the observation entry :meth:`initial_state` encodes.

    Example:
        >>> from tensordict.nn import TensorDictModule, TensorDictSequential
        >>> from wmrl.rssm import RSSMPrior, DenseHead
        >>> prior = RSSMPrior(None, 8, 6, 4, action_dim=2)
        >>> model = TensorDictSequential(
        ...     TensorDictModule(prior, ["state", "belief", "action"],
        ...                      ["_", "_", "state", "belief"]),
        ...     TensorDictModule(DenseHead(10, 1, 1, 8), ["state", "belief"], ["reward"]))
        >>> env = DreamerEnv(model, prior_shape=(4,), belief_shape=(6,))
        >>> start = TensorDict({"state": torch.zeros(5, 4), "belief": torch.zeros(5, 6)}, [5])
        >>> traj = env.rollout(3, tensordict=env.reset(start), auto_reset=False)
        >>> traj["next", "belief"].shape, traj["next", "reward"].shape
        (torch.Size([5, 3, 6]), torch.Size([5, 3, 1]))
    """

    state_keys: tuple[NestedKey, ...] = RSSM_STATE_KEYS
    action_keys: tuple[NestedKey, ...] = ("action",)
    predicts_reward: bool = True

    def __init__(
        self,
        world_model: Any,
        prior_shape: Sequence[int] | torch.Size,
        belief_shape: Sequence[int] | torch.Size,
        obs_decoder: Any = None,
        device: torch.device | str | None = "cpu",
        batch_size: int | Sequence[int] | torch.Size | None = None,
        *,
        obs_encoder: nn.Module | None = None,
        rssm_posterior: nn.Module | None = None,
        action_spec: TensorSpec | None = None,
        observation_key: NestedKey = "pixels",
    ) -> None:
        super().__init__(world_model, device=device, batch_size=batch_size)
        self.prior_shape, self.belief_shape = torch.Size(prior_shape), torch.Size(belief_shape)
        self.obs_decoder, self.obs_encoder, self.rssm_posterior = (
            obs_decoder,
            obs_encoder,
            rssm_posterior,
        )
        self.observation_key = observation_key
        dev, batch = self.device, self.batch_size
        self.observation_spec = Composite(
            state=Unbounded((*batch, *self.prior_shape), device=dev),
            belief=Unbounded((*batch, *self.belief_shape), device=dev),
            shape=batch,
            device=dev,
        )
        self.state_spec = self.observation_spec.clone()
        self.reward_spec = Unbounded((*batch, 1), device=dev)
        if action_spec is None:
            action_dim = _find_action_dim(world_model)
            if action_dim is not None:
                action_spec = Bounded(-1.0, 1.0, (*batch, action_dim), device=dev)
        if action_spec is not None:
            self.action_spec = action_spec.to(dev)

    def set_specs_from_env(self, env: EnvBase) -> None:
        """Copy ``env``'s specs; the state spec becomes its ``state`` and ``belief`` entries."""
        super().set_specs_from_env(env)
        self.action_spec = self.action_spec.to(self.device)
        self.state_spec = Composite(
            state=self.observation_spec["state"],
            belief=self.observation_spec["belief"],
            shape=env.batch_size,
        )

    # ------------------------------------------------------------------ WorldModel protocol
    def initial_state(self, observation: TensorDictBase) -> TensorDictBase:
        """``"state"`` ``[*B, S]`` and ``"belief"`` ``[*B, H]`` from a start TensorDict."""
        keys = set(observation.keys(True, True))
        if all(k in keys for k in self.state_keys):
            return observation.select(*self.state_keys)
        if self.obs_encoder is None or self.rssm_posterior is None:
            raise ValueError(
                "the start TensorDict has no 'state'/'belief' and DreamerEnv was built without "
                "obs_encoder and rssm_posterior to infer them from an observation"
            )
        if self.observation_key not in keys:
            raise ValueError(f"the start TensorDict has no {self.observation_key!r} observation")
        batch = observation.batch_size
        embedding = self.obs_encoder(observation.get(self.observation_key))  # [*B, E]
        belief = embedding.new_zeros(*batch, *self.belief_shape)  # [*B, H]
        state = self.rssm_posterior(belief, embedding)[-1]  # [*B, S]
        return TensorDict({"state": state, "belief": belief}, batch_size=batch)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """One imagined step (protocol form): writes ``("next", "state" / "belief" / "reward")``."""
        nxt = self._step(tensordict)
        for key in (*self.state_keys, "reward"):
            tensordict.set(("next", key), nxt.get(key))
        return tensordict

    def fit(
        self,
        dataset: TensorDictBase,
        *,
        model_loss: Any,
        optimizer: torch.optim.Optimizer,
        num_updates: int = 1,
    ) -> TensorDictBase:
        """Fit the RSSM behind this environment: ``num_updates`` gradient steps on the sum of the
        ``loss*`` entries of ``model_loss(dataset)`` (e.g. a
        :class:`~wmrl.rssm.dreamer.DreamerModelLoss` sharing this environment's modules).

        Returns:
            the last losses, detached.
        """
        loss_td = TensorDict()
        for _ in range(num_updates):
            loss_td, _ = model_loss(dataset)
            total = sum(v for k, v in loss_td.items() if k.startswith("loss"))
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
        return loss_td.detach()

    # ------------------------------------------------------------------ EnvBase
    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        out = self._call_world_model(tensordict.copy())
        src = out.get("next") if ("next", "state") in out.keys(True) else out
        batch = tensordict.batch_size
        result = TensorDict(
            {"state": src.get("state"), "belief": src.get("belief"), "reward": src.get("reward")},
            batch_size=batch,
            device=self.device,
        )
        return result.update(self._done_entries(batch))

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs: Any) -> TensorDictBase:
        if tensordict is None or tensordict.is_empty():
            batch = self.batch_size if tensordict is None else tensordict.batch_size
            start = TensorDict(
                {
                    "state": torch.zeros(*batch, *self.prior_shape, device=self.device),
                    "belief": torch.zeros(*batch, *self.belief_shape, device=self.device),
                },
                batch_size=batch,
                device=self.device,
            )
        else:
            batch = tensordict.batch_size
            start = self.initial_state(tensordict).copy()
        return start.update(self._done_entries(batch))

    def decode_obs(
        self, tensordict: TensorDictBase, compute_latents: bool = False
    ) -> TensorDictBase:
        """Run ``obs_decoder`` on the latents (after a world-model step if ``compute_latents``)."""
        if self.obs_decoder is None:
            raise ValueError("DreamerEnv was built without an obs_decoder")
        if compute_latents:
            tensordict = self._call_world_model(tensordict)
        return self.obs_decoder(tensordict)


class DreamerDecoder(Transform):
    """Decode imagined latents into observations with the :class:`DreamerEnv`'s ``obs_decoder``.

    Append it to a :class:`DreamerEnv` (``env.append_transform(DreamerDecoder())``) to record
    what the imagined trajectory looks like (e.g. ``"reco_pixels"``); the decoder's outputs are
    added at every step and at reset. The observation spec is left unchanged.

    Example: the environment of :class:`DreamerEnv`'s example with a linear decoder of the
    stochastic state; every imagined step carries its decoding.

    >>> from tensordict.nn import TensorDictModule, TensorDictSequential
    >>> from wmrl.rssm import RSSMPrior, DenseHead
    >>> prior = RSSMPrior(None, 8, 6, 4, action_dim=2)
    >>> model = TensorDictSequential(
    ...     TensorDictModule(prior, ["state", "belief", "action"],
    ...                      ["_", "_", "state", "belief"]),
    ...     TensorDictModule(DenseHead(10, 1, 1, 8), ["state", "belief"], ["reward"]))
    >>> decoder = TensorDictModule(nn.Linear(4, 3), ["state"], ["reco_observation"])
    >>> env = DreamerEnv(model, prior_shape=(4,), belief_shape=(6,), obs_decoder=decoder)
    >>> env = env.append_transform(DreamerDecoder())
    >>> start = TensorDict({"state": torch.zeros(5, 4), "belief": torch.zeros(5, 6)}, [5])
    >>> traj = env.rollout(3, tensordict=env.reset(start), auto_reset=False)
    >>> traj["next", "reco_observation"].shape
    torch.Size([5, 3, 3])
    >>> torch.allclose(traj["next", "reco_observation"], decoder.module(traj["next", "state"]))
    True
    """

    def __init__(self) -> None:
        super().__init__(in_keys=[], out_keys=[])

    def _decoder(self) -> Any:
        env = self.parent.base_env if self.parent is not None else None
        decoder = getattr(env, "obs_decoder", None)
        if decoder is None:
            raise ValueError("DreamerDecoder needs a parent DreamerEnv with an obs_decoder")
        return decoder

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return self._decoder()(next_tensordict)

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        return self._call(tensordict_reset)

    def transform_observation_spec(self, observation_spec: TensorSpec) -> TensorSpec:
        """Return ``observation_spec`` unchanged (the decoded entries are not declared)."""
        return observation_spec
