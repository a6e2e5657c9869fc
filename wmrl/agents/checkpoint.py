"""Checkpoints written atomically and loaded safely.

A checkpoint is a nested dict of tensors, numbers, strings, lists and dicts. It is written to a
temporary file in the target's directory, flushed to disk, then renamed over the target, so an
interruption leaves either the old or the new checkpoint, never a torn one; it is read with
``torch.load(..., weights_only=True)``, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename).

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> p = save_checkpoint(os.path.join(d, "ckpt.pt"), {"step": 3, "x": torch.ones(2)})
    >>> load_checkpoint(p)["step"]
    3
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Tensors come back on the CPU; a missing file raises ``FileNotFoundError``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = save_checkpoint(Path(tmp) / "agent.pt", {"step": 7, "net": {"w": torch.eye(2)}})
    ...     state = load_checkpoint(p)
    >>> state["step"], state["net"]["w"].tolist()
    (7, [[1.0, 0.0], [0.0, 1.0]])
    >>> load_checkpoint(Path(tmp) / "agent.pt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    FileNotFoundError: no checkpoint at ...agent.pt
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=True)
