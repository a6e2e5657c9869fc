"""Figures of a Dreamer run: the learning curve and open-loop predictions against reality.

* :func:`plot_learning_curve`: evaluation return (deterministic policy, separate episodes)
  against environment steps, with the random policy's return as a baseline.
* :func:`open_loop_prediction`: filter the first ``context`` observations of a real episode with
  the RSSM posterior, then predict the next ``horizon`` observations with the prior alone from
  the real actions (Hafner et al. 2019, PlaNet, Fig. 9; Dream to Control, Fig. 5).
* :func:`plot_video_prediction` / :func:`plot_state_prediction`: the prediction against the real
  frames (an image strip) or states (one panel per dimension).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tensordict import TensorDict, TensorDictBase  # noqa: E402

from wmrl.agents.dreamer_modules import DreamerNets  # noqa: E402
from wmrl.plots import save_figure  # noqa: E402

__all__ = [
    "plot_learning_curve",
    "open_loop_prediction",
    "plot_video_prediction",
    "plot_state_prediction",
]


def plot_learning_curve(
    records: Sequence[Any], path: str | Path, title: str = "", cost: bool = False
) -> Path:
    """Evaluation return (or cost per step with ``cost``) against environment steps.

    Args:
        records: :class:`~wmrl.agents.dreamer.EvalRecord` s (``policy`` ``"agent"`` or
            ``"random"``).
        path: the PNG to write.
        title: the figure's title (default: ``"Dreamer: evaluation"``).
        cost: plot the cost per step, with half the random policy's cost as a target line.

    Returns:
        ``path``.

    >>> import tempfile
    >>> from wmrl.agents.dreamer import EvalRecord
    >>> records = [EvalRecord(0, 0, 0, "random", -11.0, 0.92, float("nan"), 0.0),
    ...            EvalRecord(100, 10, 5, "agent", -9.0, 0.75, -10.0, 3.0),
    ...            EvalRecord(200, 20, 10, "agent", -6.0, 0.5, -8.0, 6.0)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     png = plot_learning_curve(records, Path(tmp) / "curve.png", cost=True)
    ...     png.name, png.read_bytes()[:4]
    ('curve.png', b'\\x89PNG')
    """
    field = "eval_cost_per_step" if cost else "eval_return"
    agent = [r for r in records if r.policy == "agent"]
    rand = [r for r in records if r.policy == "random"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r.env_steps for r in agent], [getattr(r, field) for r in agent], "o-",
            label="Dreamer (deterministic policy, eval episodes)")  # fmt: skip
    if rand:
        ax.axhline(getattr(rand[0], field), color="grey", ls="--", label="random policy")
        if cost:
            ax.axhline(0.5 * getattr(rand[0], field), color="grey", ls=":",
                       label="half the random policy's cost")  # fmt: skip
    ax.set_xlabel("environment steps")
    ax.set_ylabel("cost per step" if cost else "episode return")
    ax.set_title(title or "Dreamer: evaluation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def _as_model_input(nets: DreamerNets, obs: torch.Tensor) -> torch.Tensor:
    to_image = nets.policy.to_image
    if to_image is not None and not obs.is_floating_point():
        obs = to_image._apply_transform(obs)  # [..., 3, H, W] in [0, 1]
    return obs.float()


@torch.no_grad()
def open_loop_prediction(
    nets: DreamerNets, episode: TensorDictBase, context: int = 5, horizon: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and predicted observations ``o_1 .. o_{context + horizon}``.

    The first ``context`` predictions are reconstructions of posterior (filtered) latents; the
    remaining ``horizon`` come from the prior alone, driven by the episode's actions.

    Args:
        nets: the agent's networks.
        episode: one real episode ``[L]`` with ``nets.obs_key`` and ``"action"``
            (``L > context + horizon``).
        context, horizon: filtered and open-loop steps.

    Returns:
        ``(real, predicted)``, each ``[context + horizon, *obs]`` (pixels as model input:
        ``float [3, H, W]`` in ``[0, 1]``).

    Raises:
        ValueError: ``episode`` is not one episode longer than ``context + horizon`` steps.

    Example (untrained tiny networks, vector observations):

    >>> from wmrl.agents.dreamer_modules import DreamerSizes, make_dreamer_nets
    >>> tiny = DreamerSizes(state_dim=4, rnn_hidden_dim=8, hidden_dim=8, mlp_cells=8,
    ...                     mlp_depth=1, embed_dim=8, actor_depth=1, actor_cells=8)
    >>> nets = make_dreamer_nets(1, 1, "observation", obs_dim=3, sizes=tiny)
    >>> episode = TensorDict({"observation": torch.randn(8, 3), "action": torch.zeros(8, 1)}, [8])
    >>> real, predicted = open_loop_prediction(nets, episode, context=2, horizon=3)
    >>> real.shape, predicted.shape, torch.equal(real, episode["observation"][1:6])
    (torch.Size([5, 3]), torch.Size([5, 3]), True)
    """
    n = context + horizon
    if episode.batch_dims != 1 or episode.shape[0] <= n:
        raise ValueError(f"need one episode [L] with L > {n}, got {tuple(episode.shape)}")
    param = next(nets.parts["prior"].parameters())
    obs = _as_model_input(nets, episode.get(nets.obs_key)).to(param.device)  # [L, *obs]
    action = episode.get("action").to(param.device, torch.float32)  # [L, A]
    S, H = nets.policy.state_dim, nets.policy.belief_dim
    seq = TensorDict(
        {
            "state": torch.zeros(1, context, S, device=param.device),
            "belief": torch.zeros(1, context, H, device=param.device),
            "action": action[None, :context],
            "next": {nets.obs_key: obs[None, 1 : context + 1]},
        },
        [1, context],
    )
    out = nets.world_model(seq).get("next")
    state, belief = out.get("state")[0], out.get("belief")[0]  # [context, S], [context, H]
    decoder = nets.imagination_env.obs_decoder.module  # with the agent's pixel centring
    prior = nets.parts["prior"]
    pred = [decoder(state, belief)]  # [context, *obs]
    s, h = state[-1:], belief[-1:]  # [1, S], [1, H]
    for t in range(context, n):
        step = prior(s, h, action[t : t + 1])
        s, h = step[-2], step[-1]  # [1, S], [1, H]
        pred.append(decoder(s, h))  # [1, *obs]
    return obs[1 : n + 1].cpu(), torch.cat(pred).float().cpu()


def _to_frames(x: torch.Tensor) -> torch.Tensor:
    """``float [N, 3 k, H, W]`` in ``[0, 1]`` to ``uint8 [N, H, W, 3]``: the newest of ``k``
    stacked frames."""
    x = x[:, -3:]  # [N, 3, H, W]
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)  # [N, H, W, 3]


def plot_video_prediction(
    real: torch.Tensor, predicted: torch.Tensor, path: str | Path, context: int, title: str = ""
) -> Path:
    """Two rows of frames, real (top) and model (bottom), from :func:`open_loop_prediction`.

    Args:
        real, predicted: ``float [N, 3, H, W]`` in ``[0, 1]`` (or ``[N, 3 k, H, W]``, ``k``
            stacked frames, of which the newest is drawn).
        path: the PNG to write.
        context: filtered frames; the open-loop ones after them are framed in red.
        title: the figure's title.

    Returns:
        ``path``.

    >>> import tempfile
    >>> real, predicted = torch.rand(2, 4, 3, 16, 16)  # 4 frames each
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     png = plot_video_prediction(real, predicted, Path(tmp) / "video.png", context=2)
    ...     png.is_file()
    True
    """
    real_f, pred_f = _to_frames(real), _to_frames(predicted)
    n = real_f.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.6), squeeze=False)
    for i in range(n):
        for row, frames in enumerate((real_f, pred_f)):
            ax = axes[row][i]
            ax.imshow(frames[i].numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][i].set_title(f"t={i + 1}", fontsize=7)
        if i >= context:
            for spine in axes[1][i].spines.values():
                spine.set_edgecolor("tab:red")
                spine.set_linewidth(1.5)
    axes[0][0].set_ylabel("real", fontsize=8)
    axes[1][0].set_ylabel("model", fontsize=8)
    fig.suptitle(title or f"open-loop prediction: {context} filtered frames, then the prior "
                 "alone (red)", fontsize=9)  # fmt: skip
    return save_figure(fig, path, dpi=110)


def plot_state_prediction(
    real: torch.Tensor,
    predicted: torch.Tensor,
    path: str | Path,
    context: int,
    names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Real and predicted vector observations ``[N, D]``, one panel per dimension.

    Args:
        real, predicted: ``[N, D]``, from :func:`open_loop_prediction`.
        path: the PNG to write.
        context: filtered steps; the open-loop ones after them are shaded.
        names: a title per dimension (default ``"feature d"``).
        title: the figure's title.

    Returns:
        ``path``.

    >>> import tempfile
    >>> t = torch.linspace(0, 1, 6).unsqueeze(-1)  # [6, 1]
    >>> real = torch.cat([t, t.sin()], dim=-1)  # [6, 2]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     png = plot_state_prediction(real, real + 0.1, Path(tmp) / "states.png", context=3,
    ...                                 names=["x", "sin x"])
    ...     png.is_file()
    True
    """
    N, D = real.shape
    cols = min(D, 3)
    rows = -(-D // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.2 * rows), squeeze=False)
    t = torch.arange(1, N + 1)
    for d in range(D):
        ax = axes[d // cols][d % cols]
        ax.plot(t, real[:, d], "k.-", ms=3, label="real")
        ax.plot(t, predicted[:, d], "-", color="tab:blue", label="model")
        ax.axvspan(context + 0.5, N + 0.5, color="tab:red", alpha=0.08, label="open loop")
        ax.set_title(names[d] if names else f"feature {d}", fontsize=8)
        ax.grid(alpha=0.3)
    for d in range(D, rows * cols):
        axes[d // cols][d % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title or "open-loop prediction of the observation", fontsize=9)
    return save_figure(fig, path, dpi=110)
