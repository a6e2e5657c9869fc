"""Dreamer: learn a world model from pixels (or states) and a policy in imagination.

Hafner et al. 2019, "Dream to Control: Learning Behaviors by Latent Imagination" (Alg. 1), and
with ``version=3`` the losses of Hafner et al. 2023, "Mastering Diverse Domains through World
Models". One run is a sequence of *iterations*; each

1. collects one episode per environment with a TorchRL collector (``Collector``, or
   ``MultiSyncCollector`` with ``collector_workers > 1`` processes), acting with
   :class:`~wmrl.agents.dreamer_modules.RSSMPolicy` (uniformly random actions for the first
   ``prefill_episodes``), and appends the episodes to the on-disk sequence replay
   (:class:`~wmrl.agents.replay.SequenceReplay`);
2. runs ``train_ratio x steps / (B T)`` updates (``train_ratio`` is the number of replayed
   steps per collected agent step, DreamerV3's definition). An update is

   * world model: the Dreamer (:class:`~wmrl.rssm.DreamerModelLoss`) or DreamerV3
     (:class:`~wmrl.rssm.DreamerV3ModelLoss`) loss on ``B`` sequences of ``T`` steps, each
     filtered from a zero latent;
   * actor: one Adam step of :class:`~wmrl.search.PolicySearch` — the rollout and optimisation
     code of the PILCO agent — on :class:`~wmrl.agents.dreamer_objective.DreamerObjective`
     (the lambda-return objective) from every posterior state of the batch, ``horizon`` steps
     in the learned model with its parameters frozen;
   * critic: regression onto the lambda-returns of that imagined trajectory
     (:class:`~wmrl.rssm.DreamerValueLoss` / :class:`~wmrl.rssm.DreamerV3ValueLoss`);

3. every ``eval_every`` environment steps, runs ``eval_episodes`` separate evaluation episodes
   with the deterministic policy (the actor's mode); only those are reported as evaluation
   returns (training returns are logged as ``train/return``).

Checkpoints (every ``checkpoint_every`` environment steps and at the end) hold the networks, the
optimisers, the return-normalisation statistics, counters, records, RNG states and a copy of the
replay (written before the checkpoint file, which names it, so a checkpoint never refers to a
partial copy). Every iteration reseeds torch and the environments from ``(seed, rank,
iteration)`` and starts new episodes, so :meth:`Dreamer.resume` continues exactly as the
uninterrupted run would have (single collector process, deterministic kernels).

Data parallel (``distributed=True`` under ``torchrun``): every process collects with its own
seeds into its own replay, gradients are averaged after each backward
(:mod:`wmrl.agents.distributed`); rank 0 evaluates and logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.collectors import Collector, MultiSyncCollector, RandomPolicy
from torchrl.data import Unbounded
from torchrl.envs import EnvBase, StepCounter, TensorDictPrimer, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from tqdm.auto import tqdm

from wmrl.agents.action_noise import CorrelatedRandomPolicy
from wmrl.agents.checkpoint import load_checkpoint, save_checkpoint
from wmrl.agents.distributed import (
    DistributedInfo,
    average_gradients,
    broadcast_parameters,
    init_distributed,
)
from wmrl.agents.dreamer_modules import (
    CATEGORICAL_STATES,
    DreamerNets,
    DreamerSizes,
    make_dreamer_nets,
)
from wmrl.agents.dreamer_objective import ACTOR_DISTS, ACTOR_GRADIENTS, DreamerObjective
from wmrl.agents.envs import episode_length, make_env, newest_observation, stack_observations
from wmrl.agents.exploration import DisagreementEnsemble
from wmrl.agents.replay import SequenceReplay
from wmrl.rssm import DreamerModelLoss, DreamerV3ModelLoss, DreamerV3ValueLoss, DreamerValueLoss
from wmrl.rssm.actor import deterministic_action_slope
from wmrl.rssm.categorical import ACTION_INPUTS
from wmrl.rssm.imagination import frozen
from wmrl.search import PolicySearch

__all__ = ["DreamerConfig", "Dreamer", "EvalRecord", "FIXED_ON_RESUME", "PRIORITY_BURN_IN",
           "disagreement_ensemble", "load_trained_nets", "make_agent_env",
           "wrap_agent_env"]  # fmt: skip

#: Settings a resumed run keeps: they fix the networks' shapes (the sizes, ``version``,
#: ``frame_stack``, ``reconstruct``, ``action_input``, ``ensemble_size``), what their latent means
#: (``categorical_state``) or the meaning of the stored replay (``task``, ``pixels``).
FIXED_ON_RESUME: tuple[str, ...] = (
    "task", "pixels", "version", "frame_stack", "reconstruct", "categorical_state",
    "action_input", "ensemble_size",
    *(f.name for f in dataclasses.fields(DreamerSizes)),
)  # fmt: skip

#: Steps at the start of each replayed sequence whose KL does not score them for prioritised
#: replay: the filter starts from a zero latent, so there the KL measures missing context.
PRIORITY_BURN_IN = 5


@dataclass(kw_only=True)
class DreamerConfig(DreamerSizes):
    """Settings of a Dreamer run (defaults: Dreamer's, Hafner et al. 2019, App. A): the network
    sizes of :class:`~wmrl.agents.dreamer_modules.DreamerSizes` and the run's own settings.

    Attributes:
        task: ``"cartpole-swingup"``, ``"pendulum-swingup"`` or ``"dmc:<domain>-<task>"``.
        pixels: observe 64x64 frames (else the low-dimensional state, MLP encoder/decoder).
        version: 1 (Dreamer losses) or 3 (DreamerV3 losses and networks).
        seed: seeds the networks, the environments and every iteration.
        max_steps: episode length in environment steps (built-in tasks, ``dt = 0.1`` s).
        action_repeat: environment steps per action.
        frame_stack: observations the agent sees at once, the last ``k`` agent steps'
            concatenated along the channels (:func:`~wmrl.agents.envs.stack_observations`;
            1: off, Dreamer's setting). Its encoder then reads a velocity off one observation
            and its decoder reconstructs all ``k`` (see ``reconstruct``).
        reconstruct: with ``frame_stack > 1``, what the decoder reconstructs: ``"all"`` ``k``
            stacked observations or the ``"newest"`` only (the encoder reads all ``k`` either
            way).
        categorical_state: what the DreamerV3 latent passes on to the dynamics, the decoder, the
            heads, the actor and the critic: ``"sample"`` (one-hot samples, the paper's) or
            ``"probs"`` (their probabilities: a latent without sampling noise,
            :func:`~wmrl.rssm.categorical.categorical_state`) or ``"mixed"`` (probabilities, but
            the decoder and the reward head read a sample of them,
            :class:`~wmrl.agents.dreamer_modules.SampledLatent`).
        action_input: how the DreamerV3 prior reads the action: ``"joint"`` (one layer over the
            latent and the action, TorchRL's layout) or ``"separate"`` (an embedding of the
            action's own as wide as the latent's, DreamerV3's code;
            :class:`~wmrl.rssm.categorical.RSSMPriorV3`).
        num_envs: environments stepped together per collector process (built-in tasks).
        collector_workers: collector processes (``> 1``: TorchRL's ``MultiSyncCollector``).
        env_steps: budget in environment steps (including repeats).
        max_wall_s: stop after this much wall time (checked between iterations; ``None``: off).
        prefill_episodes: episodes (per collector process and environment) with random actions.
        train_ratio: replayed steps per collected agent step.
        pretrain_updates: extra updates once the prefill is done.
        capacity: replay size in agent steps.
        replay_priority: ``f``: draw that part of the replayed sequences in proportion to how
            badly the world model predicted their steps, the rest uniformly
            (:mod:`wmrl.agents.replay_priority`; each step is scored by the unclamped KL between
            posterior and prior at it, ``step_kl`` of the model loss, when last replayed, the
            first ``PRIORITY_BURN_IN`` steps of a sequence excepted). 0: uniform, as the papers.
        priority_exponent: ``alpha``, the exponent on those scores.
        batch_size, seq_len: ``B`` sequences of ``T`` steps per update.
        horizon: imagination horizon ``H``.
        channels, state_dim, num_categoricals, num_classes, rnn_hidden_dim, hidden_dim,
            mlp_cells, mlp_depth, embed_dim, actor_depth, actor_cells, num_bins: network sizes
            (see :class:`~wmrl.agents.dreamer_modules.DreamerSizes`).
        model_lr, actor_lr, value_lr: Adam learning rates (``None``: 6e-4, 8e-5, 8e-5 for v1;
            1e-4, 3e-5, 3e-5 for v3).
        grad_clip: gradient-norm clipping of every optimiser.
        gamma, lmbda: discount and lambda of the returns.
        free_nats: KL floor of the Dreamer v1 loss, in nats (the whole latent's KL, averaged).
        free_bits: KL floor of the DreamerV3 loss, in nats, per time step (1 in the paper).
        free_bits_dynamic: floor of its dynamics term alone, the one that trains the prior
            (``None``: ``free_bits``). ``0`` keeps training the prior below the floor, which a
            latent of probabilities (``categorical_state="probs"``) needs: its KL can sit below
            the floor while the prior's probabilities still miss the posterior's.
        overshooting: ``D``: also train the prior on its ``d = 2..D``-step open-loop
            predictions from every replayed latent, and the reward head on the latents they
            reach (latent overshooting, PlaNet Sec. 4; :mod:`wmrl.rssm.overshooting`; the
            categorical KL for v3, the Gaussian one with ``free_nats`` for v1). 0 or 1: off,
            the papers' one-step loss; ``horizon`` matches what imagination asks of the prior.
        entropy_bonus: ``η`` of the actor's entropy bonus (``None``: 3e-4 for v3, as DreamerV3,
            0 for v1, which has none).
        entropy_target: adapt ``η`` so that the imagined policy's mean entropy per step
            approaches this many nats, as Soft Actor-Critic's temperature (``None``: ``η``
            fixed; ``-1`` per action dimension is SAC's choice); ``entropy_bonus`` is then the
            initial ``η`` (see :class:`~wmrl.agents.dreamer_objective.DreamerObjective`).
        entropy_lr: step size of the ``log η`` adaptation.
        discount_weights: weight imagined step ``t`` by ``gamma^t`` in the actor and critic
            losses (``None``: off for v1 as the pages, on for v3 as the paper).
        exploration_bonus: ``β`` of the ensemble-disagreement bonus added to the imagined
            rewards (:mod:`wmrl.agents.exploration`, Plan2Explore; 0: off, no ensemble built).
        ensemble_size: members of the disagreement ensemble.
        actor_dist: the actor's action distribution: ``"tanh_normal"`` (Dreamer's tanh-Gaussian,
            the default for either version) or ``"bounded_normal"`` (DreamerV3's released agent:
            a Normal in action space, mean ``tanh(μ)``, scale in ``[0.1, 1]``, samples clipped;
            see :mod:`wmrl.rssm.actor`).
        actor_gradient: ``"dynamics"`` (backpropagation of the lambda-returns through the
            imagined trajectory, Dreamer's) or ``"reinforce"`` (score function with the critic as
            baseline; see :class:`~wmrl.agents.dreamer_objective.DreamerObjective`).
        action_noise: ``σ`` of the Gaussian noise added to the actions taken while collecting
            data (``clip(a + σ ε, -1, 1)``; ``None``: 0.3 for v1, as Dreamer's released
            configuration, 0 for v3, which explores through its entropy bonus; evaluation is
            always noise-free).
        noise_correlation: ``ρ ∈ [0, 1)``, the lag-one correlation of that noise, an AR(1)
            process per action dimension (:mod:`wmrl.agents.action_noise`; 0: white, as
            Dreamer). With ``ρ > 0`` the prefill episodes also act with it, ``clip(n_t, -1, 1)``
            at unit scale, instead of uniformly random actions: correlated actions pump energy
            into a swing-up, white ones average out.
        eval_every: environment steps between evaluations.
        exploring_starts: built-in tasks: the fraction of training episodes that start at
            angles drawn uniformly from ``[-π, π)`` (as dm_control's pendulum swing-up does),
            so the data show the upright states early; ``True`` (``1.0``) for all of them,
            ``0.5`` for a mixture with the task's own start, each episode drawn independently.
            Evaluation episodes keep the task's own start (hanging down), so the evaluated
            task is unchanged.
        eval_episodes: evaluation episodes (deterministic policy, own environment and seeds).
        checkpoint_every: environment steps between checkpoints (``0``: only at the end).
        precision: ``"auto"`` (bfloat16 autocast on CUDA devices that support it, else
            float32), ``"bf16"`` or ``"fp32"``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        distributed: data-parallel training under ``torchrun``.
        progress: show a progress bar.

    Example: the ``"debug"`` preset shrinks every size and budget (smoke tests), keyword
    arguments override it, and :meth:`validate` rejects inconsistent settings.

    >>> cfg = DreamerConfig.preset("debug", task="pendulum-swingup", pixels=True)
    >>> cfg.max_steps, cfg.batch_size, cfg.seq_len, cfg.rnn_hidden_dim, cfg.device
    (12, 2, 8, 8, 'cpu')
    >>> DreamerConfig.preset("debug", seq_len=20).validate()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: episodes of 12 agent steps are too short for seq_len=20 (need seq_len + 1): ...
    """

    task: str = "cartpole-swingup"
    pixels: bool = False
    version: int = 1
    seed: int = 0
    max_steps: int = 100
    action_repeat: int = 1
    frame_stack: int = 1
    reconstruct: str = "all"
    categorical_state: str = "sample"
    action_input: str = "joint"
    num_envs: int = 1
    collector_workers: int = 1
    env_steps: int = 100_000
    max_wall_s: float | None = None
    prefill_episodes: int = 5
    train_ratio: float = 512.0
    pretrain_updates: int = 100
    capacity: int = 100_000
    replay_priority: float = 0.0
    priority_exponent: float = 1.0
    batch_size: int = 16
    seq_len: int = 50
    horizon: int = 15
    model_lr: float | None = None
    actor_lr: float | None = None
    value_lr: float | None = None
    grad_clip: float = 100.0
    gamma: float = 0.99
    lmbda: float = 0.95
    free_nats: float = 3.0
    free_bits: float = 1.0
    free_bits_dynamic: float | None = None
    overshooting: int = 0
    entropy_bonus: float | None = None
    entropy_target: float | None = None
    entropy_lr: float = 0.01
    discount_weights: bool | None = None
    exploration_bonus: float = 0.0
    ensemble_size: int = 5
    action_noise: float | None = None
    noise_correlation: float = 0.0
    actor_gradient: str = "dynamics"
    actor_dist: str = "tanh_normal"
    exploring_starts: float = 0.0
    eval_every: int = 5_000
    eval_episodes: int = 5
    checkpoint_every: int = 5_000
    precision: str = "auto"
    device: str = "auto"
    distributed: bool = False
    progress: bool = True

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DreamerConfig:
        """``"default"`` (the paper's sizes), ``"small"`` (a model that trains on two CPU cores:
        conv depth 16, GRU 128, 16 x 32 batches) or ``"debug"`` (tiny, for smoke tests), then
        ``overrides``."""
        presets: dict[str, dict[str, Any]] = {
            "default": {},
            "small": dict(
                channels=16, state_dim=20, num_categoricals=16, num_classes=16,
                rnn_hidden_dim=128, hidden_dim=128, mlp_cells=200, embed_dim=128,
                actor_depth=3, actor_cells=128, seq_len=32, num_bins=63,
            ),
            "debug": dict(
                max_steps=12, env_steps=36, prefill_episodes=1, train_ratio=16.0,
                pretrain_updates=1, capacity=240, batch_size=2, seq_len=8, horizon=3,
                channels=4, state_dim=4, num_categoricals=2, num_classes=4, rnn_hidden_dim=8,
                hidden_dim=8, mlp_cells=8, mlp_depth=1, embed_dim=8, actor_depth=1,
                actor_cells=8, num_bins=15, eval_every=24, eval_episodes=2,
                checkpoint_every=12, precision="fp32", device="cpu", progress=False,
            ),
        }  # fmt: skip
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def sizes(self) -> DreamerSizes:
        """The network-size fields as a :class:`~wmrl.agents.dreamer_modules.DreamerSizes`.

        >>> DreamerConfig.preset("debug").sizes().rnn_hidden_dim
        8
        """
        fields = {f.name for f in dataclasses.fields(DreamerSizes)}
        return DreamerSizes(**{k: v for k, v in dataclasses.asdict(self).items() if k in fields})

    def make_nets(
        self, action_dim: int, obs_dim: int | None = None, device: Any = None
    ) -> DreamerNets:
        """This run's networks (:func:`~wmrl.agents.dreamer_modules.make_dreamer_nets`) for
        actions of ``action_dim`` and, with vector observations, ``obs_dim`` entries per
        observation; the encoder takes ``frame_stack`` of them (``3 k`` channels of pixels or
        ``k obs_dim`` entries), the decoder all of them or the newest (``reconstruct``). The
        policy adds this run's collection noise (:meth:`collection_noise`,
        ``noise_correlation``) to the actions it samples.

        >>> cfg = DreamerConfig.preset("debug", frame_stack=2)
        >>> nets = cfg.make_nets(1, obs_dim=3)
        >>> nets.parts["decoder"](torch.zeros(8), torch.zeros(4)).shape  # two observations
        torch.Size([6])
        >>> newest = dataclasses.replace(cfg, reconstruct="newest").make_nets(1, obs_dim=3)
        >>> newest.parts["decoder"](torch.zeros(8), torch.zeros(4)).shape
        torch.Size([3])
        """
        per_obs = 3 if self.pixels else obs_dim
        nets = make_dreamer_nets(
            self.version, action_dim, "pixels" if self.pixels else "observation",
            None if obs_dim is None else obs_dim * self.frame_stack, self.sizes(),
            device=device, actor_dist=self.actor_dist, image_channels=3 * self.frame_stack,
            decoded=per_obs if self.reconstruct == "newest" else None,
            categorical_state=self.categorical_state, action_input=self.action_input,
        )  # fmt: skip
        nets.policy.action_noise = self.collection_noise()
        nets.policy.noise_correlation = self.noise_correlation
        return nets

    def collection_noise(self) -> float:
        """``σ`` of the collection noise, the version's default where ``None``.

        >>> DreamerConfig(version=1).collection_noise(), DreamerConfig(version=3).collection_noise()
        (0.3, 0.0)
        """
        if self.action_noise is not None:
            return self.action_noise
        return 0.3 if self.version == 1 else 0.0

    def entropy_weight(self) -> float:
        """``η`` of the actor's entropy bonus, the version's default where ``None``.

        >>> DreamerConfig(version=1).entropy_weight(), DreamerConfig(version=3).entropy_weight()
        (0.0, 0.0003)
        """
        if self.entropy_bonus is not None:
            return self.entropy_bonus
        return 3e-4 if self.version == 3 else 0.0

    def learning_rates(self) -> tuple[float, float, float]:
        """``(model, actor, value)`` Adam learning rates, the version's defaults where ``None``.

        >>> DreamerConfig(version=1).learning_rates()
        (0.0006, 8e-05, 8e-05)
        >>> DreamerConfig(version=3, actor_lr=1e-3).learning_rates()
        (0.0001, 0.001, 3e-05)
        """
        defaults = (6e-4, 8e-5, 8e-5) if self.version == 1 else (1e-4, 3e-5, 3e-5)
        given = (self.model_lr, self.actor_lr, self.value_lr)
        return tuple(d if g is None else g for g, d in zip(given, defaults))  # type: ignore

    def validate(self) -> None:
        """Raise ``ValueError`` on an unknown choice, a non-positive size or budget, or episodes
        shorter than ``seq_len + 1`` agent steps.

        >>> DreamerConfig.preset("debug").validate()  # consistent: returns None
        >>> DreamerConfig(precision="fp16").validate()
        Traceback (most recent call last):
            ...
        ValueError: precision must be 'auto', 'bf16' or 'fp32', got 'fp16'
        """
        if self.version not in (1, 3):
            raise ValueError(f"version must be 1 or 3, got {self.version}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        positive = ("frame_stack", "num_envs", "collector_workers", "batch_size", "seq_len",
                    "horizon", "eval_episodes", "eval_every", "env_steps")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.train_ratio < 0 or self.prefill_episodes < 0 or self.checkpoint_every < 0:
            raise ValueError("train_ratio, prefill_episodes and checkpoint_every must be >= 0")
        if self.exploration_bonus < 0 or self.ensemble_size < 2:
            raise ValueError("need exploration_bonus >= 0 and ensemble_size >= 2")
        if self.actor_gradient not in ACTOR_GRADIENTS:
            raise ValueError(
                f"actor_gradient must be one of {ACTOR_GRADIENTS}, got {self.actor_gradient!r}"
            )
        if self.actor_dist not in ACTOR_DISTS:
            raise ValueError(f"actor_dist must be one of {ACTOR_DISTS}, got {self.actor_dist!r}")
        if self.reconstruct not in ("all", "newest"):
            raise ValueError(f"reconstruct must be 'all' or 'newest', got {self.reconstruct!r}")
        if self.categorical_state not in CATEGORICAL_STATES:
            raise ValueError(f"categorical_state must be one of {CATEGORICAL_STATES}, "
                             f"got {self.categorical_state!r}")  # fmt: skip
        if self.version == 1 and self.categorical_state != "sample":
            raise ValueError("categorical_state applies to version 3 (v1's latent is Gaussian)")
        if self.action_input not in ACTION_INPUTS:
            raise ValueError(f"action_input must be one of {ACTION_INPUTS}, "
                             f"got {self.action_input!r}")  # fmt: skip
        if self.version == 1 and self.action_input != "joint":
            raise ValueError("action_input applies to version 3 (v1's Gaussian prior reads [s, a])")
        if self.entropy_bonus is not None and self.entropy_bonus < 0:
            raise ValueError(f"entropy_bonus must be >= 0, got {self.entropy_bonus}")
        if self.free_bits_dynamic is not None and self.free_bits_dynamic < 0:
            raise ValueError(f"free_bits_dynamic must be >= 0, got {self.free_bits_dynamic}")
        if self.version == 1 and self.free_bits_dynamic is not None:
            raise ValueError("free_bits_dynamic applies to version 3 (v1 has free_nats)")
        if self.overshooting < 0:
            raise ValueError(f"overshooting is a distance >= 0, got {self.overshooting}")
        if self.overshooting >= self.seq_len:
            raise ValueError(f"overshooting must be below seq_len={self.seq_len}, "
                             f"got {self.overshooting}")  # fmt: skip
        if self.free_nats < 0 or self.free_bits < 0:
            raise ValueError(f"free_nats and free_bits must be >= 0, got {self.free_nats}, "
                             f"{self.free_bits}")  # fmt: skip
        if self.entropy_lr <= 0:
            raise ValueError(f"entropy_lr must be > 0, got {self.entropy_lr}")
        if self.entropy_target is not None and not math.isfinite(self.entropy_target):
            raise ValueError(f"entropy_target must be finite, got {self.entropy_target}")
        if self.action_noise is not None and self.action_noise < 0:
            raise ValueError(f"action_noise must be >= 0, got {self.action_noise}")
        if not 0.0 <= self.noise_correlation < 1.0:
            raise ValueError(f"noise_correlation must be in [0, 1), got {self.noise_correlation}")
        if not 0.0 <= float(self.exploring_starts) <= 1.0:
            raise ValueError("exploring_starts must be a fraction in [0, 1] (True: 1), got "
                             f"{self.exploring_starts}")  # fmt: skip
        if not 0.0 <= self.replay_priority <= 1.0:
            raise ValueError(f"replay_priority must be a fraction in [0, 1], "
                             f"got {self.replay_priority}")  # fmt: skip
        if not self.priority_exponent >= 0.0:
            raise ValueError(f"priority_exponent must be >= 0, got {self.priority_exponent}")
        if self.exploring_starts and self.task.startswith("dmc:"):
            raise ValueError("exploring_starts is for the built-in tasks, not dm_control's")
        L = episode_length(self.task, self.max_steps, self.action_repeat)
        if L < self.seq_len + 1:
            raise ValueError(
                f"episodes of {L} agent steps are too short for seq_len={self.seq_len} "
                "(need seq_len + 1): raise max_steps or lower seq_len"
            )


@dataclass
class EvalRecord:
    """One evaluation: ``eval_episodes`` episodes of the deterministic policy (``policy =
    "agent"``) or of uniformly random actions (``"random"``, the baseline).

    ``eval_return`` is the mean episode return; ``eval_cost_per_step`` is ``-return`` per
    environment step (the built-in tasks' cost in ``[0, 1]``). ``train_return`` is the mean return
    of the last collected (exploring) training episodes, for reference only.

    >>> r = EvalRecord(env_steps=2000, updates=400, iteration=20, policy="agent",
    ...                eval_return=-35.0, eval_cost_per_step=0.35, train_return=-40.0, wall_s=61.5)
    >>> for part in Dreamer.describe(r).split("; "):  # the console line, in its three parts
    ...     print(part)
    step    2000 (agent): eval return  -35.00, cost/step 0.350
    train return  -40.00
    400 updates,    61.5 s
    """

    env_steps: int
    updates: int
    iteration: int
    policy: str
    eval_return: float
    eval_cost_per_step: float
    train_return: float
    wall_s: float


def _env_sizes(env: EnvBase, obs_key: str) -> tuple[int, int | None]:
    """Action entries of ``env`` and, for vector observations (``obs_key`` not ``"pixels"``),
    observation entries: the sizes the agent's networks are built for."""
    action_dim = int(env.action_spec.shape[-1])
    obs_dim = None if obs_key == "pixels" else int(env.observation_spec[obs_key].shape[-1])
    return action_dim, obs_dim


def load_trained_nets(
    run_dir: str | Path,
) -> tuple[DreamerConfig, DreamerNets, dict[str, int]]:
    """The configuration, trained networks (on the CPU) and counters (``updates``,
    ``env_steps``, ...) of a run saved under ``run_dir`` on a built-in or dm_control task,
    without its collector, replay or optimisers: for evaluating or analysing a trained agent.
    The action and observation sizes are read off the task's environment.

    Raises:
        FileNotFoundError: no ``checkpoint.pt`` in ``run_dir``.

    Example (see ``benchmarks/dreamer_actions.py``)::

        config, nets, counters = load_trained_nets("runs/pendulum")
        env = make_agent_env(config.task, pixels=config.pixels, ...)
        env.rollout(100, nets.policy)
    """
    state = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    c = DreamerConfig(**state["config"])
    probe = make_env(c.task, pixels=c.pixels, max_steps=c.max_steps,
                     action_repeat=c.action_repeat, seed=0)  # fmt: skip
    action_dim, obs_dim = _env_sizes(probe, "pixels" if c.pixels else "observation")
    probe.close()
    nets = c.make_nets(action_dim, obs_dim)
    nets.load_state_dict(state["nets"])
    return c, nets, dict(state["counters"])


def disagreement_ensemble(
    config: DreamerConfig, nets: DreamerNets, device: torch.device | str | None = None
) -> DisagreementEnsemble:
    """The exploration ensemble of an agent with ``config`` and networks ``nets`` (untrained):
    its sizes are read off the built networks (latent ``(state, belief)``, action, the encoder's
    embedding), ``config.ensemble_size`` members of width ``config.hidden_dim``. With
    :func:`load_trained_nets`, load a run's ensemble from its checkpoint's ``"exploration"``
    entry (see ``benchmarks/disagreement_map.py``)."""
    policy = nets.policy
    return DisagreementEnsemble(
        policy.state_dim + policy.belief_dim, policy.action_dim,
        nets.parts["posterior"].obs_embed_dim, members=config.ensemble_size,
        num_cells=config.hidden_dim, device=device,
    )  # fmt: skip


def make_agent_env(
    task: str,
    *,
    pixels: bool,
    batch_size: list[int],
    max_steps: int,
    action_repeat: int,
    seed: int,
    primer_sizes: tuple[int, int, int],
    device: str = "cpu",
    frame_stack: int = 1,
    uniform_start_angles: bool | float = False,
) -> TransformedEnv:
    """:func:`~wmrl.agents.envs.make_env` plus the zero-at-reset recurrent entries of the
    agent's policy (``state``, ``belief``, ``prev_action`` of sizes ``primer_sizes``), with
    the last ``frame_stack`` observations stacked (:func:`~wmrl.agents.envs.stack_observations`).

    >>> env = make_agent_env("pendulum-swingup", pixels=False, batch_size=[2], max_steps=12,
    ...                      action_repeat=1, seed=0, primer_sizes=(4, 8, 1))
    >>> td = env.reset()
    >>> td["state"].shape, td["belief"].shape, td["prev_action"].shape  # zeros at every reset
    (torch.Size([2, 4]), torch.Size([2, 8]), torch.Size([2, 1]))
    >>> bool((td["belief"] == 0).all())
    True
    """
    env = make_env(task, pixels=pixels, batch_size=batch_size, max_steps=max_steps,
                   action_repeat=action_repeat, seed=seed, device=device,
                   uniform_start_angles=uniform_start_angles)  # fmt: skip
    stack_observations(env, "pixels" if pixels else "observation", frame_stack)
    env.append_transform(_primer(primer_sizes))
    return env


def _primer(sizes: tuple[int, int, int]) -> TensorDictPrimer:
    """Zero-at-reset ``state [S]``, ``belief [H]``, ``prev_action [A]`` and the collection
    noise's carried ``noise [A]`` (:mod:`wmrl.agents.action_noise`)."""
    S, H, A = sizes
    return TensorDictPrimer(state=Unbounded(S), belief=Unbounded(H), prev_action=Unbounded(A),
                            noise=Unbounded(A), default_value=0.0, expand_specs=True)  # fmt: skip


def wrap_agent_env(
    env_fn: Callable[[list[int], int], EnvBase],
    batch_size: list[int],
    seed: int,
    *,
    episode_len: int,
    primer_sizes: tuple[int, int, int],
    obs_key: str = "observation",
    frame_stack: int = 1,
) -> TransformedEnv:
    """A user's environment ``env_fn(batch_size, seed)`` for the agent: episodes truncated at
    ``episode_len`` steps (TorchRL's ``StepCounter``), the last ``frame_stack`` observations
    ``obs_key`` stacked (:func:`~wmrl.agents.envs.stack_observations`) and the policy's
    recurrent entries.

    >>> def env_fn(batch_size, seed):  # any TorchRL env with actions in [-1, 1]
    ...     return make_env("pendulum-swingup", pixels=False, batch_size=batch_size,
    ...                     max_steps=100, seed=seed)
    >>> env = wrap_agent_env(env_fn, [2], seed=0, episode_len=5, primer_sizes=(4, 8, 1))
    >>> traj = env.rollout(100)  # truncated after 5 steps
    >>> traj.batch_size, traj["belief"].shape
    (torch.Size([2, 5]), torch.Size([2, 5, 8]))
    """
    env = env_fn(batch_size, seed)
    if not isinstance(env, TransformedEnv):
        env = TransformedEnv(env)
    env.append_transform(StepCounter(max_steps=episode_len))
    stack_observations(env, obs_key, frame_stack)
    env.append_transform(_primer(primer_sizes))
    return env


class Dreamer:
    """The Dreamer learning loop (see the module docstring).

    Args:
        config: run settings.
        out_dir: where checkpoints, the replay and logs go (``None``: a temporary directory for
            the replay; nothing else is written). Data-parallel ranks ``> 0`` write under
            ``out_dir/rank<k>``.
        logger: a TorchRL logger (``log_scalar(name, value, step)``); optional.
        env_fn: ``(batch_size, seed) -> EnvBase`` building the real environment instead of
            ``config.task`` (any TorchRL environment with actions in ``[-1, 1]`` and
            ``"pixels"`` frames — ``uint8 [*B, 64, 64, 3]`` or ``float [*B, 3, 64, 64]`` — or a
            vector ``"observation"``, as ``config.pixels`` says); its episodes are truncated at
            ``max_steps / action_repeat`` steps. With ``collector_workers > 1`` it must pickle.

    Example:
        >>> cfg = DreamerConfig.preset("debug", task="pendulum-swingup", pixels=True)
        >>> agent = Dreamer(cfg)
        >>> records = agent.run()  # doctest: +SKIP
    """

    def __init__(
        self,
        config: DreamerConfig,
        out_dir: str | Path | None = None,
        logger: Any = None,
        env_fn: Callable[[list[int], int], EnvBase] | None = None,
    ) -> None:
        config.validate()
        self.user_env_fn = env_fn
        self.config = c = config
        if c.distributed:
            self.dist = init_distributed(device=None if c.device == "auto" else c.device)
        else:
            dev = c.device
            if dev == "auto":
                dev = "cuda" if torch.cuda.is_available() else "cpu"
            self.dist = DistributedInfo(device=torch.device(dev))
        self.device = self.dist.device
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if out_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="wmrl-dreamer-")
            self.out_dir, self.run_dir = None, Path(self._tmp.name)
        else:
            self.out_dir = Path(out_dir)
            rank = self.dist.rank
            self.run_dir = self.out_dir if rank == 0 else self.out_dir / f"rank{rank}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logger = logger if self.dist.is_main else None
        self.obs_key = "pixels" if c.pixels else "observation"
        self.episode_len = episode_length(c.task, c.max_steps, c.action_repeat)

        if env_fn is not None and c.exploring_starts:
            raise ValueError("exploring_starts is for the built-in tasks; a user's env_fn sets "
                             "its own start distribution")  # fmt: skip
        if env_fn is None:
            probe = make_env(c.task, pixels=c.pixels, max_steps=c.max_steps,
                             action_repeat=c.action_repeat, seed=c.seed)  # fmt: skip
        else:
            probe = env_fn([], c.seed)
        self.action_dim, obs_dim = _env_sizes(probe, self.obs_key)
        probe.close()

        torch.manual_seed(c.seed)  # the same initial networks on every rank
        self.nets: DreamerNets = c.make_nets(self.action_dim, obs_dim, device=self.device)
        self.exploration: DisagreementEnsemble | None = None
        if c.exploration_bonus > 0:
            self.exploration = disagreement_ensemble(c, self.nets, device=self.device)
        extra = [] if self.exploration is None else [self.exploration]
        broadcast_parameters([*self.nets.parts.values(), *extra])
        self._build_losses_and_optimisers()
        self.replay = SequenceReplay(
            c.capacity, c.seq_len, c.batch_size, self.obs_key, self.run_dir / "replay-live",
            episode_length=self.episode_len, device=self.device,
            priority_fraction=c.replay_priority, priority_exponent=c.priority_exponent,
        )  # fmt: skip
        policy = self.nets.policy
        self._primer_sizes = (policy.state_dim, policy.belief_dim, policy.action_dim)
        self.eval_env = self._env_fn([c.eval_episodes], seed=self._seed(-1, salt=1))()

        self.iteration = self.agent_steps = self.env_steps = self.updates = 0
        self.train_carry, self.wall_s = 0.0, 0.0
        self.next_eval, self.next_checkpoint = c.eval_every, c.checkpoint_every
        self.pretrained = False
        self.records: list[EvalRecord] = []
        self.last_losses: dict[str, float] = {}
        self.last_train_return = math.nan
        self.last_eval_episode: TensorDictBase | None = None
        self._collector: Any = None
        self._iterator: Iterator[TensorDictBase] | None = None

    # ------------------------------------------------------------------ building blocks
    def _build_losses_and_optimisers(self) -> None:
        c, nets = self.config, self.nets
        obs = self.obs_key
        v3 = c.version == 3
        if v3:
            self.model_loss: Any = DreamerV3ModelLoss(
                nets.world_model, reco_symlog=not c.pixels, num_reward_bins=c.num_bins,
                free_bits=c.free_bits, free_bits_dynamic=c.free_bits_dynamic,
                overshooting=c.overshooting, prior=nets.parts["prior"],
                reward_head=nets.reward_read_out,
            )
            self.value_loss: Any = DreamerV3ValueLoss(
                nets.value, value_loss="two_hot", gamma=c.gamma, num_value_bins=c.num_bins
            )
        else:
            self.model_loss = DreamerModelLoss(
                nets.world_model, free_nats=c.free_nats, overshooting=c.overshooting,
                prior=nets.parts["prior"], reward_head=nets.reward_read_out,
            )
            weights = bool(c.discount_weights)
            self.value_loss = DreamerValueLoss(nets.value, discount_loss=weights, gamma=c.gamma)
        # the reconstruction's target: the observation, or its newest of the stacked ones
        self._reco_target = obs if c.reconstruct == "all" else f"newest_{obs}"
        self.model_loss.set_keys(pixels=self._reco_target, reco_pixels=f"reco_{obs}")
        discount = c.discount_weights if c.discount_weights is not None else v3
        self.objective = DreamerObjective(
            nets.value, gamma=c.gamma, lmbda=c.lmbda, discount_weights=discount,
            return_normalization=v3, entropy_bonus=c.entropy_weight(), exploration=self.exploration,
            exploration_bonus=c.exploration_bonus, actor_gradient=c.actor_gradient,
            policy_head=nets.actor[0], actor_dist=c.actor_dist, entropy_target=c.entropy_target,
            entropy_lr=c.entropy_lr,
        )  # fmt: skip
        model_lr, actor_lr, value_lr = c.learning_rates()
        self.model_params = nets.world_model_parameters()
        self.value_params = list(nets.parts["value"].parameters())
        self.model_opt = torch.optim.Adam(self.model_params, lr=model_lr)
        self.value_opt = torch.optim.Adam(self.value_params, lr=value_lr)
        self.exploration_opt = None
        if self.exploration is not None:
            self.exploration_params = list(self.exploration.parameters())
            self.exploration_opt = torch.optim.Adam(self.exploration_params, lr=model_lr)
        self.search = PolicySearch(
            nets.imagination_env, nets.actor, self.objective, c.horizon, optimizer="adam",
            lr=actor_lr, parameters=nets.parts["actor"].parameters(),
            max_grad_norm=c.grad_clip, context=self._imagination_context,
            grad_hook=average_gradients,
        )  # fmt: skip

    def _amp_dtype(self) -> torch.dtype | None:
        p = self.config.precision
        if p == "bf16" or (
            p == "auto" and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        ):
            return torch.bfloat16
        return None

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = self._amp_dtype()
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    @contextlib.contextmanager
    def _imagination_context(self) -> Iterator[None]:
        """Around each imagined rollout: model frozen, sampled actions, mixed precision."""
        with frozen(self.nets.imagination_env), self._autocast():
            with set_exploration_type(ExplorationType.RANDOM):
                yield

    def _seed(self, iteration: int, salt: int = 0) -> int:
        base = (self.config.seed * 1_000_003 + self.dist.rank) * 4 + salt
        return base * 1_000_003 + iteration + 1

    def _env_fn(self, batch_size: list[int], seed: int, collect: bool = False) -> Any:
        """A builder of the real environment; ``collect``: for training episodes, which start
        anywhere on the circle under ``exploring_starts`` (evaluation never does)."""
        c = self.config
        if self.user_env_fn is not None:
            return partial(wrap_agent_env, self.user_env_fn, batch_size, seed,
                           episode_len=self.episode_len, primer_sizes=self._primer_sizes,
                           obs_key=self.obs_key, frame_stack=c.frame_stack)  # fmt: skip
        return partial(
            make_agent_env, c.task, pixels=c.pixels, batch_size=batch_size,
            max_steps=c.max_steps, action_repeat=c.action_repeat, seed=seed,
            primer_sizes=self._primer_sizes, frame_stack=c.frame_stack,
            uniform_start_angles=float(c.exploring_starts) if collect else 0.0,
        )  # fmt: skip

    def _prefill_steps(self) -> int:
        c = self.config
        return c.prefill_episodes * c.num_envs * c.collector_workers * self.episode_len

    def _make_collector(self) -> Any:
        c = self.config
        per_batch = c.num_envs * c.collector_workers * self.episode_len
        # correlated prefill episodes are collected by _correlated_episodes, not TorchRL's
        # uniformly random frames
        prefill = 0 if c.noise_correlation > 0 else self._prefill_steps()
        random_frames = max(0, prefill - self.agent_steps) or None
        kwargs = dict(frames_per_batch=per_batch, total_frames=-1,
                      init_random_frames=random_frames, storing_device="cpu",
                      auto_register_policy_transforms=False)  # fmt: skip
        if c.collector_workers == 1:
            env = self._env_fn([c.num_envs], self._seed(-1, salt=2), collect=True)()
            return Collector(env, self.nets.policy, **kwargs)
        fns = [
            self._env_fn([c.num_envs], self._seed(-1 - i, salt=2), collect=True)
            for i in range(c.collector_workers)
        ]
        return MultiSyncCollector(fns, self.nets.policy, cat_results="stack", **kwargs)

    def close(self) -> None:
        """Shut the collector's processes down."""
        if self._collector is not None:
            self._collector.shutdown()
            self._collector, self._iterator = None, None

    # ------------------------------------------------------------------ one update
    def _step(self, opt: torch.optim.Optimizer, loss: torch.Tensor, params: list[Any]) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        opt.step()

    def _with_reco_target(self, batch: TensorDictBase) -> TensorDictBase:
        """Add the newest of the stacked observations as the reconstruction target
        (``reconstruct="newest"``; otherwise ``batch`` is returned unchanged)."""
        if self._reco_target == self.obs_key:
            return batch
        obs = batch.get(("next", self.obs_key))  # [B, T, 3 k, H, W] or [B, T, k D]
        newest = newest_observation(obs, self.obs_key, self.config.frame_stack)
        batch.set(("next", self._reco_target), newest)  # [B, T, 3, H, W] or [B, T, D]
        return batch

    def update(self) -> dict[str, torch.Tensor]:
        """One world-model, actor and critic update on a replayed batch; detached losses."""
        batch, slots = self.replay.sample_with_slots()  # [B, T], [B, T]
        B, T = batch.batch_size
        p = self.nets.policy
        batch.set("state", torch.zeros(B, 1, p.state_dim, device=self.device).expand(B, T, -1))
        batch.set("belief", torch.zeros(B, 1, p.belief_dim, device=self.device).expand(B, T, -1))
        with self._autocast():
            model_td, out = self.model_loss(self._with_reco_target(batch))
            total = sum(v for k, v in model_td.items() if k.startswith("loss_"))
        self._step(self.model_opt, total, self.model_params)
        if self.replay.prioritized:  # score the steps by how badly the prior predicted them
            burn = min(PRIORITY_BURN_IN, T - 1)
            self.replay.rescore(slots[:, burn:], self.model_loss.step_kl(out)[:, burn:])
        exploration_loss = None if self.exploration is None else self._train_exploration(out)

        start = out.get("next").select("state", "belief").reshape(-1).detach()  # [B * T]
        result = self.search.run(start, 1)
        with self._autocast():
            value_td, _ = self.value_loss(result.trajectory)
        self._step(self.value_opt, value_td["loss_value"], self.value_params)
        self.updates += 1
        losses = {k: v.detach() for k, v in model_td.items() if k.startswith("loss_")}
        losses["loss_actor"] = torch.tensor(result.history[-1])
        losses["loss_value"] = value_td["loss_value"].detach()
        # how much gradient reaches the actor through its squashed mean (near 0: saturated)
        loc = result.trajectory.get("loc").float()  # [B * T, H, A]
        losses["actor_slope"] = deterministic_action_slope(loc, self.config.actor_dist).mean()
        if self.config.entropy_target is not None:
            losses["entropy_weight"] = self.objective.log_entropy_weight.exp()
        if exploration_loss is not None:
            losses["loss_exploration"] = exploration_loss
        return losses

    def _train_exploration(self, out: TensorDictBase) -> torch.Tensor:
        """Fit the disagreement ensemble on the batch's transitions ``(s_t, h_t, a_t) ->
        e_{t+1}`` (posterior latents and embeddings of the model pass, detached); returns the
        loss, detached."""
        assert self.exploration is not None and self.exploration_opt is not None
        nxt = out.get("next")
        latent = torch.cat([nxt.get("state"), nxt.get("belief")], -1)[:, :-1]  # [B, T-1, F]
        action = out.get("action")[:, 1:]  # [B, T-1, A]: the action taken from that latent
        target = nxt.get("encoded_latents")[:, 1:]  # [B, T-1, E]
        with self._autocast():
            loss = self.exploration.loss(latent, action, target)
        self._step(self.exploration_opt, loss, self.exploration_params)
        return loss.detach()

    # ------------------------------------------------------------------ the loop
    def _correlated_episodes(self) -> TensorDictBase:
        """One collection's worth of prefill episodes ``[E, L]`` with the correlated random
        actions of :class:`~wmrl.agents.action_noise.CorrelatedRandomPolicy`, in this process."""
        c = self.config
        seed = self._seed(self.iteration)
        torch.manual_seed(seed)
        env = self._env_fn([c.num_envs * c.collector_workers], seed, collect=True)()
        policy = CorrelatedRandomPolicy(self.action_dim, c.noise_correlation)
        with torch.no_grad():
            episodes = env.rollout(self.episode_len, policy, break_when_any_done=False)
        env.close()
        return episodes  # [E, L]

    def _collect(self) -> TensorDictBase:
        if self.config.noise_correlation > 0 and self.agent_steps < self._prefill_steps():
            return self._correlated_episodes()
        if self._collector is None:
            self._collector = self._make_collector()
            self._iterator = iter(self._collector)
        seed = self._seed(self.iteration)
        torch.manual_seed(seed)
        self._collector.set_seed(seed)
        self._collector.reset()
        batch = next(self._iterator)
        return batch.reshape(-1, self.episode_len)  # [episodes, L]

    def iterate(self) -> None:
        """One iteration: collect, update, maybe evaluate and checkpoint."""
        c = self.config
        t0 = time.perf_counter()
        episodes = self._collect()
        self.replay.extend(episodes)
        steps = episodes.numel()
        self.agent_steps += steps
        self.env_steps += steps * c.action_repeat
        self.last_train_return = float(episodes.get(("next", "reward")).sum(-2).mean())
        losses: list[dict[str, torch.Tensor]] = []
        if self.agent_steps >= self._prefill_steps():
            self.train_carry += c.train_ratio * steps / (c.batch_size * c.seq_len)
            n = int(self.train_carry)
            self.train_carry -= n
            if not self.pretrained:
                n += c.pretrain_updates
                self.pretrained = True
            for _ in range(n):
                losses.append(self.update())
            if n and self._collector is not None:  # None: after a correlated prefill
                self._collector.update_policy_weights_()
        self.iteration += 1
        if losses:
            self.last_losses = {k: float(torch.stack([d[k] for d in losses]).mean())
                                for k in losses[0]}  # fmt: skip
        self.wall_s += time.perf_counter() - t0
        self._log({f"train/{k}": v for k, v in self.last_losses.items()} if losses else {})
        self._log({"train/return": self.last_train_return, "train/updates": self.updates})
        if self.env_steps >= self.next_eval or self.env_steps >= c.env_steps:
            self.evaluate()
        if c.checkpoint_every and self.env_steps >= self.next_checkpoint and self.out_dir:
            self.save()
            while self.next_checkpoint <= self.env_steps:
                self.next_checkpoint += c.checkpoint_every

    def evaluate(self, random: bool = False) -> EvalRecord | None:
        """Run the evaluation episodes (rank 0); record, log and return the result."""
        c = self.config
        t0 = time.perf_counter()
        if not random:
            while self.next_eval <= self.env_steps:
                self.next_eval += c.eval_every
        if not self.dist.is_main:
            return None
        env = self.eval_env
        env.set_seed(self._seed(len(self.records), salt=1))
        policy = RandomPolicy(env.action_spec) if random else self.nets.policy
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            episodes = env.rollout(self.episode_len, policy, break_when_any_done=False)
        returns = episodes.get(("next", "reward")).sum(-2).flatten()  # [E]
        ret = float(returns.mean())
        record = EvalRecord(
            env_steps=self.env_steps, updates=self.updates, iteration=self.iteration,
            policy="random" if random else "agent", eval_return=ret,
            eval_cost_per_step=-ret / (self.episode_len * c.action_repeat),
            train_return=self.last_train_return, wall_s=self.wall_s,
        )  # fmt: skip
        if not random:
            self.last_eval_episode = episodes[0].select(self.obs_key, "action").clone()
        self.records.append(record)
        name = "random" if random else "eval"
        self._log({f"{name}/return": ret, f"{name}/cost_per_step": record.eval_cost_per_step,
                   f"{name}/wall_s": self.wall_s})  # fmt: skip
        self.wall_s += time.perf_counter() - t0
        return record

    def _log(self, scalars: dict[str, float]) -> None:
        if self.logger is None:
            return
        for name, value in scalars.items():
            if math.isfinite(value):
                self.logger.log_scalar(name, float(value), step=self.env_steps)

    def run(self) -> list[EvalRecord]:
        """Run (or continue) until ``env_steps`` or ``max_wall_s``; returns the evaluations."""
        c = self.config
        if not self.records and self.dist.is_main:
            self.evaluate(random=True)
        bar = tqdm(total=c.env_steps, initial=self.env_steps, unit="step", desc="Dreamer",
                   disable=not (c.progress and self.dist.is_main))  # fmt: skip
        try:
            while self.env_steps < c.env_steps:
                if c.max_wall_s is not None and self.wall_s >= c.max_wall_s:
                    break
                before = self.env_steps
                self.iterate()
                bar.update(self.env_steps - before)
                post = {"ret": f"{self.last_train_return:.1f}", "upd": self.updates}
                if self.records:
                    post["eval"] = f"{self.records[-1].eval_return:.1f}"
                bar.set_postfix(post)
                if self.records and self.records[-1].env_steps == self.env_steps:
                    tqdm.write(self.describe(self.records[-1]), file=sys.stderr)
        finally:
            bar.close()
            self.close()
        last = [r for r in self.records if r.policy == "agent"]
        if self.env_steps and (not last or last[-1].env_steps != self.env_steps):
            self.evaluate()  # stopped by the wall-time budget: evaluate where it stopped
        if self.out_dir is not None:
            self.save()
        return self.records

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds except the replay: config, counters, evaluation
        records, networks, return statistics, optimisers and RNG states.

        >>> agent = Dreamer(DreamerConfig.preset("debug", task="pendulum-swingup"))
        >>> print(*sorted(agent.state_dict()))
        config counters exploration last_eval_episode nets objective optimizers records rng
        """
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        counters = dict(iteration=self.iteration, agent_steps=self.agent_steps,
                        env_steps=self.env_steps, updates=self.updates,
                        train_carry=self.train_carry, wall_s=self.wall_s,
                        next_eval=self.next_eval, next_checkpoint=self.next_checkpoint,
                        pretrained=self.pretrained,
                        last_train_return=self.last_train_return)  # fmt: skip
        assert self.search.optimizer is not None
        return {
            "config": dataclasses.asdict(self.config),
            "counters": counters,
            "records": [dataclasses.asdict(r) for r in self.records],
            "nets": self.nets.state_dict(),
            "objective": self.objective.state_dict(),
            "exploration": None if self.exploration is None else self.exploration.state_dict(),
            "optimizers": {
                "model": self.model_opt.state_dict(),
                "actor": self.search.optimizer.state_dict(),
                "value": self.value_opt.state_dict(),
                "exploration": None if self.exploration_opt is None
                else self.exploration_opt.state_dict(),
            },
            "rng": rng,
            # the last evaluation episode (observations and actions), for the open-loop figure
            "last_eval_episode": None if self.last_eval_episode is None
            else self.last_eval_episode.to_dict(),
        }

    def save(self) -> Path:
        """Write the replay copy, then the checkpoint naming it, then drop older copies."""
        assert self.out_dir is not None
        name = f"replay-{self.iteration:07d}"
        if len(self.replay):
            self.replay.save(self.run_dir / name)
        state = self.state_dict()
        state["replay"] = name if len(self.replay) else None
        path = save_checkpoint(self.run_dir / "checkpoint.pt", state)
        for old in self.run_dir.glob("replay-[0-9]*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (and the replay copy it names, if any).

        >>> cfg = DreamerConfig.preset("debug", task="pendulum-swingup")
        >>> a, b = Dreamer(cfg), Dreamer(dataclasses.replace(cfg, seed=1))
        >>> _ = a.evaluate(random=True)
        >>> b.load_state_dict(a.state_dict())
        >>> all(torch.equal(p, q) for p, q in zip(a.model_params, b.model_params)), len(b.records)
        (True, 1)
        """
        for k, v in state["counters"].items():
            setattr(self, k, v)
        self.records = [EvalRecord(**r) for r in state["records"]]
        self.nets.load_state_dict(state["nets"])
        self.objective.load_state_dict(state["objective"])
        opts = state["optimizers"]
        self.model_opt.load_state_dict(opts["model"])
        assert self.search.optimizer is not None
        self.search.optimizer.load_state_dict(opts["actor"])
        self.value_opt.load_state_dict(opts["value"])
        if self.exploration is not None and state.get("exploration") is not None:
            self.exploration.load_state_dict(state["exploration"])
            assert self.exploration_opt is not None
            self.exploration_opt.load_state_dict(opts["exploration"])
        # else: exploration switched on when resuming a run without it: a fresh ensemble
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if state.get("replay"):
            self.replay.load(self.run_dir / state["replay"])
        episode = state.get("last_eval_episode")  # absent in checkpoints of earlier versions
        if episode is not None:
            self.last_eval_episode = TensorDict(episode, batch_size=[len(episode["action"])])

    @classmethod
    def resume(
        cls,
        out_dir: str | Path,
        logger: Any = None,
        env_fn: Callable[[list[int], int], EnvBase] | None = None,
        **overrides: Any,
    ) -> Dreamer:
        """Rebuild an agent from its checkpoint (config overrides allowed, e.g. a larger
        ``env_steps``). Under ``torchrun`` every rank reads its own checkpoint.

        Raises:
            ValueError: an override changes one of :data:`FIXED_ON_RESUME` (the task, the
                observation, the version, ``frame_stack`` or a network size).
        """
        out_dir = Path(out_dir)
        state = load_checkpoint(out_dir / "checkpoint.pt")
        stored = dict(state["config"])
        stored.setdefault("action_noise", 0.0)  # runs from before the option collected noise-free
        before = DreamerConfig(**stored)  # fields newer than the checkpoint take their defaults
        changed = [k for k in FIXED_ON_RESUME
                   if k in overrides and overrides[k] != getattr(before, k)]  # fmt: skip
        if changed:
            given = ", ".join(f"{k}={getattr(before, k)!r} -> {overrides[k]!r}" for k in changed)
            raise ValueError(
                f"cannot change {given} when resuming {out_dir}: they fix the networks' shapes "
                "or what the replay holds; start a new run (another out_dir) instead"
            )
        config = DreamerConfig(**{**stored, **overrides})
        agent = cls(config, out_dir=out_dir, logger=logger, env_fn=env_fn)
        if agent.run_dir != out_dir:
            state = load_checkpoint(agent.run_dir / "checkpoint.pt")
        agent.load_state_dict(state)
        return agent

    @staticmethod
    def describe(r: EvalRecord) -> str:
        """One console line per evaluation."""
        return (
            f"step {r.env_steps:7d} ({r.policy}): eval return {r.eval_return:7.2f}, cost/step "
            f"{r.eval_cost_per_step:.3f}; train return {r.train_return:7.2f}; "
            f"{r.updates} updates, {r.wall_s:7.1f} s"
        )

    def summary(self) -> str:
        """``env steps: N, updates: U, eval return: R (random: R0), wall: W s``."""
        agent = [r for r in self.records if r.policy == "agent"]
        rand = [r for r in self.records if r.policy == "random"]
        last = f"{agent[-1].eval_return:.2f}" if agent else "n/a"
        base = f"{rand[0].eval_return:.2f}" if rand else "n/a"
        return (
            f"env steps: {self.env_steps}, updates: {self.updates}, eval return: {last} "
            f"(random: {base}), wall: {self.wall_s:.1f} s"
        )
