"""Figures a person would rather look at than read: learning curves, predictions, frame strips.

Every function writes a PNG with matplotlib's non-interactive backend and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

__all__ = ["plot_trial_costs", "plot_prediction", "plot_frame_strip", "save_figure"]


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it as a PNG to ``path``, close it and return the path.

    >>> import tempfile
    >>> fig, ax = plt.subplots(figsize=(2, 2))
    >>> _ = ax.plot([0, 1], [1, 0])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     png = save_figure(fig, Path(tmp) / "line.png", dpi=50)
    ...     png.read_bytes()[:4], plt.fignum_exists(fig.number)  # written, and closed
    (b'\\x89PNG', False)
    """
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_trial_costs(records: Sequence[Any], path: str | Path, title: str = "") -> Path:
    """Cost per trial: predicted (sum of expected costs) vs real (episode and test mean).

    Args:
        records: :class:`~wmrl.agents.pilco.TrialRecord` s; solved trials get a green line.
        path: the PNG to write.
        title: the figure's title (default ``"PILCO: cost per trial"``).

    >>> import tempfile
    >>> from wmrl.agents.pilco import TrialRecord
    >>> def record(k, real, predicted, test, solved):
    ...     return TrialRecord(k, k == 0, 40 * (k + 1), predicted, real, test, 2 * solved,
    ...                        solved, 4.0 * (k + 1), 0.1, 1.0, 1.2)
    >>> nan = float("nan")
    >>> records = [record(0, 39.0, nan, nan, False), record(1, 30.0, 25.0, 31.0, False),
    ...            record(2, 12.0, 11.0, 12.5, True)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     plot_trial_costs(records, Path(tmp) / "costs.png").is_file()
    True
    """
    trials = [r.trial for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(trials, [r.real_cost for r in records], "o-", label="real (training episode)")
    learn = [r for r in records if not r.random]
    ax.plot(
        [r.trial for r in learn],
        [r.predicted_cost for r in learn],
        "s--",
        label="predicted (GP, moment matching)",
    )
    ax.plot(
        [r.trial for r in learn],
        [r.test_cost for r in learn],
        "^:",
        label="real (mean of test episodes)",
    )
    for r in learn:
        if r.solved:
            ax.axvline(r.trial, color="green", alpha=0.3)
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("episode cost (sum)")
    ax.set_title(title or "PILCO: cost per trial")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=120)


def plot_prediction(
    mean: torch.Tensor,
    var: torch.Tensor,
    real: torch.Tensor,
    path: str | Path,
    dt: float = 1.0,
    names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Predicted state trajectory with ±2σ bands over the real one.

    Args:
        mean: ``[T, D]`` predicted means.
        var: ``[T, D, D]`` predicted covariances.
        real: ``[T', D]`` real states (observations).
        path: the PNG to write.
        dt: time step (x axis in seconds).
        names: a title per state dimension (default ``"state d"``).
        title: the figure's title.

    >>> import tempfile
    >>> T, D = 10, 2
    >>> mean = torch.linspace(0, 1, T).unsqueeze(-1).expand(T, D)  # [T, D]
    >>> var = 0.01 * torch.eye(D).expand(T, D, D)  # [T, D, D]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     png = plot_prediction(mean, var, mean + 0.05, Path(tmp) / "pred.png", dt=0.1,
    ...                           names=["x", "v"])
    ...     png.is_file()
    True
    """
    mean, var, real = mean.detach().cpu(), var.detach().cpu(), real.detach().cpu()
    T, D = mean.shape
    std = torch.diagonal(var, dim1=-2, dim2=-1).clamp_min(0).sqrt()
    t = torch.arange(1, T + 1) * dt
    tr = torch.arange(1, real.shape[0] + 1) * dt
    cols = min(D, 2)
    rows = math.ceil(D / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 2.4 * rows), squeeze=False)
    for d in range(D):
        ax = axes[d // cols][d % cols]
        ax.fill_between(
            t,
            mean[:, d] - 2 * std[:, d],
            mean[:, d] + 2 * std[:, d],
            alpha=0.3,
            label="predicted ±2σ",
        )
        ax.plot(t, mean[:, d], label="predicted mean")
        ax.plot(tr, real[:, d], "k.-", ms=3, label="real")
        ax.set_title(names[d] if names else f"state {d}", fontsize=9)
        ax.set_xlabel("time [s]")
        ax.grid(alpha=0.3)
    for d in range(D, rows * cols):
        axes[d // cols][d % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=110)


def plot_frame_strip(
    frames: torch.Tensor, path: str | Path, times: Sequence[float] | None = None, title: str = ""
) -> Path:
    """A row of frames ``[N, H, W, 3]`` (uint8) with optional time labels.

    >>> import tempfile
    >>> frames = torch.zeros(3, 16, 16, 3, dtype=torch.uint8)
    >>> frames[:, 4:12, 4:12, 0] = 255  # a red square
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     plot_frame_strip(frames, Path(tmp) / "strip.png", times=[0.0, 0.1, 0.2]).is_file()
    True
    """
    frames = frames.detach().cpu()
    n = frames.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(1.4 * n, 1.7), squeeze=False)
    for i in range(n):
        ax = axes[0][i]
        ax.imshow(frames[i].numpy())
        ax.set_xticks([])
        ax.set_yticks([])
        if times is not None:
            ax.set_title(f"{times[i]:.1f} s", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=110)
