"""Sequence replay for the Dreamer agent on TorchRL's replay buffers, stored on disk.

Whole episodes are appended to a ``LazyMemmapStorage`` (memory-mapped files in a scratch
directory, a ring buffer of ``capacity`` steps) and training sequences are drawn with TorchRL's
``SliceSampler``, which never crosses an episode end (``("next", "done")``, also set at the end
of every appended row). Each step is stored
once: its observation ``o_t``, action ``a_t``, reward ``r_{t+1}`` and done flag; a slice of
``T + 1`` steps gives the ``T`` transitions ``(a_t, r_{t+1}, o_{t+1})`` of a training sequence
(the next observation is the following step's), so frames are not stored twice. ``uint8`` frames
stay ``uint8`` on disk and become ``float [3, 64, 64]`` in ``[0, 1]`` at sampling (TorchRL's
``ToTensorImage``).

:meth:`SequenceReplay.save` / :meth:`load` copy the buffer to and from a directory: the filled
rows only (memory-mapped files, as TorchRL's ``TensorDict.memmap`` writes them) and the writer's
cursor. The live storage's files are sparse, but a copy of all of them (TorchRL's ``dumps``) would
be dense: with three stacked ``64 x 64`` frames and a capacity of 100,000 steps that is 3.5 GB per
checkpoint however little has been collected; the filled rows are 37 KB per step collected.
Copies written by ``dumps`` (earlier versions) still load.

With ``priority_fraction > 0`` the slices are drawn by
:class:`~wmrl.agents.replay_priority.WindowPrioritySampler` instead: partly in proportion to
per-step scores summed over the slice (the agent scores each step by its world model's KL at it,
:meth:`SequenceReplay.rescore`), partly uniformly. The scores are saved with the copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyMemmapStorage, SliceSampler, TensorDictReplayBuffer
from torchrl.envs import ToTensorImage

from wmrl.agents.checkpoint import load_checkpoint, save_checkpoint
from wmrl.agents.replay_priority import WindowPrioritySampler

__all__ = ["SequenceReplay"]

_FORMAT = "wmrl-replay-1"  # the layout written by SequenceReplay.save


class SequenceReplay:
    """Episodes on disk, sampled as ``[B, T]`` training sequences.

    Args:
        capacity: steps kept (oldest overwritten first); rounded down to whole episodes when
            ``episode_length`` is given.
        seq_len: ``T``, transitions per training sequence.
        batch_size: ``B``, sequences per batch.
        obs_key: the observation entry (``"pixels"`` frames are converted at sampling).
        scratch_dir: directory of the memory-mapped storage (emptied first: it is scratch space;
            checkpoints hold copies, see :meth:`save`).
        episode_length: steps per episode, if fixed.
        device: where sampled batches go.
        priority_fraction: ``f``, the part of each draw made in proportion to the steps' scores
            (0: TorchRL's uniform ``SliceSampler``; see
            :class:`~wmrl.agents.replay_priority.WindowPrioritySampler`).
        priority_exponent: ``alpha``, the exponent on the scores.

    Sampled batches hold ``"action"`` ``[B, T, A]``, ``("next", obs_key)`` ``[B, T, ...]``,
    ``("next", "reward")`` ``[B, T, 1]`` and zero ``"state"`` / ``"belief"`` start entries are
    added by the agent (the RSSM filters each sequence from a zero latent).

    Example: three episodes of 10 steps whose observation counts ``100 * episode + t``; every
    sampled sequence is 4 consecutive steps of one episode.

    >>> import tempfile
    >>> N, L = 3, 10
    >>> count = 100 * torch.arange(N).view(N, 1) + torch.arange(L)  # [N, L]
    >>> episodes = TensorDict({
    ...     "observation": count.unsqueeze(-1).float(),  # [N, L, 1]
    ...     "action": torch.zeros(N, L, 2),
    ...     "next": {"reward": torch.ones(N, L, 1), "done": torch.zeros(N, L, 1, dtype=torch.bool)},
    ... }, batch_size=[N, L])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     replay = SequenceReplay(capacity=100, seq_len=4, batch_size=2, obs_key="observation",
    ...                             scratch_dir=f"{tmp}/replay", episode_length=L)
    ...     replay.extend(episodes)
    ...     batch = replay.sample()
    >>> len(replay), batch.batch_size, batch["action"].shape, batch["next", "reward"].shape
    (30, torch.Size([2, 4]), torch.Size([2, 4, 2]), torch.Size([2, 4, 1]))
    >>> bool((batch["next", "observation"].diff(dim=1) == 1).all())  # never across episodes
    True
    """

    def __init__(
        self,
        capacity: int,
        seq_len: int,
        batch_size: int,
        obs_key: str,
        scratch_dir: str | Path,
        episode_length: int | None = None,
        device: torch.device | str = "cpu",
        priority_fraction: float = 0.0,
        priority_exponent: float = 1.0,
    ) -> None:
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be >= 1, got {seq_len}, {batch_size}")
        if episode_length is not None:
            if episode_length < seq_len + 1:
                raise ValueError(
                    f"episodes of {episode_length} steps are too short for sequences of "
                    f"{seq_len} transitions (need at least seq_len + 1 steps)"
                )
            if capacity < episode_length:
                raise ValueError(
                    f"capacity {capacity} holds no whole episode of {episode_length} steps: "
                    "raise capacity"
                )
            capacity = capacity // episode_length * episode_length
        if capacity < seq_len + 1:
            raise ValueError(f"capacity {capacity} is below one sequence ({seq_len + 1} steps)")
        self.capacity, self.seq_len, self.batch_size = capacity, seq_len, batch_size
        self.obs_key, self.device = obs_key, torch.device(device)
        self.keys = [obs_key, "action", ("next", "reward"), ("next", "done")]
        self.scratch_dir = Path(scratch_dir)
        shutil.rmtree(self.scratch_dir, ignore_errors=True)
        self.to_image = ToTensorImage(in_keys=[obs_key]) if obs_key == "pixels" else None
        self.buffer = TensorDictReplayBuffer(
            storage=LazyMemmapStorage(capacity, scratch_dir=self.scratch_dir),
            sampler=self._sampler(priority_fraction, priority_exponent),
            batch_size=batch_size * (seq_len + 1),
        )

    def _sampler(self, fraction: float, exponent: float) -> SliceSampler | WindowPrioritySampler:
        if fraction > 0:
            return WindowPrioritySampler(self.capacity, self.seq_len + 1, fraction, exponent)
        if not 0.0 <= fraction or not exponent >= 0.0:  # validated alike for both samplers
            raise ValueError(f"need priority_fraction >= 0 and priority_exponent >= 0, got "
                             f"{fraction}, {exponent}")  # fmt: skip
        return SliceSampler(
            slice_len=self.seq_len + 1,
            end_key=("next", "done"),
            strict_length=True,
            truncated_key=None,
            init_key=None,
        )

    @property
    def prioritized(self) -> bool:
        """Whether slices are drawn by their scores (``priority_fraction > 0``)."""
        return isinstance(self.buffer.sampler, WindowPrioritySampler)

    def __len__(self) -> int:
        return len(self.buffer)

    def extend(self, episodes: TensorDictBase) -> None:
        """Append trajectories ``[N, L]``, one per row (episodes, or pieces of episodes whose
        last step is then marked ``done``: a sequence never runs past the end of a row)."""
        if episodes.batch_dims != 2:
            raise ValueError(f"expected trajectories [N, L], got batch size {episodes.batch_size}")
        data = episodes.select(*self.keys).to("cpu").clone()
        done = data.get(("next", "done"))  # [N, L, 1]
        done[:, -1] = True
        data.set(("next", "reward"), data.get(("next", "reward")).float())
        self.buffer.extend(data.reshape(-1))

    def sample(self) -> TensorDict:
        """``B`` sequences of ``T`` transitions, on ``device`` (see the class docstring)."""
        return self.sample_with_slots()[0]

    def sample_with_slots(self) -> tuple[TensorDict, torch.Tensor]:
        """:meth:`sample`, and the storage slots ``[B, T]`` of the steps whose observations
        the transitions lead to (``("next", obs_key)[:, t]`` is slot ``slots[:, t]``), as
        :meth:`rescore` takes them."""
        B, T = self.batch_size, self.seq_len
        flat = self.buffer.sample()  # [B * (T + 1)]
        seq = flat.reshape(B, T + 1)
        slots = seq.get("index")[:, 1:].reshape(B, T)  # [B, T]
        obs = seq.get(self.obs_key)  # [B, T + 1, ...]
        if self.to_image is not None and not obs.is_floating_point():
            obs = self.to_image._apply_transform(obs)  # [B, T + 1, 3, H, W] in [0, 1]
        out = TensorDict(
            {
                "action": seq.get("action")[:, :T],  # [B, T, A]
                "next": {
                    self.obs_key: obs[:, 1:],  # [B, T, ...]
                    "reward": seq.get(("next", "reward"))[:, :T],  # [B, T, 1]
                },
            },
            batch_size=[B, T],
        )
        return out.to(self.device), slots

    def rescore(self, slots: torch.Tensor, scores: torch.Tensor) -> None:
        """Set the priority scores of the steps ``slots`` (``[...]``, from
        :meth:`sample_with_slots`) to ``scores`` (same shape, finite, ``>= 0``)."""
        if not self.prioritized:
            raise RuntimeError("rescore needs a prioritised replay (priority_fraction > 0)")
        if slots.shape != scores.shape:
            raise ValueError(f"slots {tuple(slots.shape)} and scores {tuple(scores.shape)} differ")
        self.buffer.sampler.update_priority(slots.reshape(-1).cpu(), scores.detach().reshape(-1))

    def save(self, path: str | Path) -> None:
        """Copy the filled rows and the writer's state to the directory ``path``.

        The ring buffer fills slots ``0, 1, ...`` before it wraps, so the filled rows are always
        the first ``len(self)``. ``replay.pt`` is removed first and written last, atomically:
        a copy cut short by an interruption has none and is refused by :meth:`load`.
        """
        path = Path(path)
        (path / "replay.pt").unlink(missing_ok=True)
        n = len(self.buffer)
        if n:
            rows = self.buffer.storage.get(slice(0, n))  # [n] memory-mapped views
            rows.memmap(path / "rows", copy_existing=True)
        state = {"format": _FORMAT, "len": n, "writer": self.buffer.writer.state_dict()}
        if self.prioritized:
            state["scores"] = self.buffer.sampler.state_dict()
        save_checkpoint(path / "replay.pt", state)

    def load(self, path: str | Path) -> None:
        """Fill this (empty) buffer from a :meth:`save` directory."""
        path = Path(path)
        if len(self.buffer):
            raise RuntimeError(f"load fills an empty replay; this one holds {len(self)} steps")
        if (path / "buffer_metadata.json").exists():  # a copy written by TorchRL's dumps
            self.buffer.loads(str(path))
            return
        state = load_checkpoint(path / "replay.pt")
        if state.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a replay copy of format {_FORMAT!r}")
        n = state["len"]
        if n > self.capacity:
            raise ValueError(
                f"the copy at {path} holds {n} steps, more than this replay's capacity "
                f"{self.capacity}"
            )
        if n:
            rows = TensorDict.load_memmap(path / "rows")  # [n]
            self.buffer.extend(rows.exclude("index"))
        self.buffer.writer.load_state_dict(state["writer"])
        if self.prioritized and "scores" in state:  # a copy without scores starts them afresh
            self.buffer.sampler.load_state_dict(state["scores"])
