"""Dense heads on the latent state: reward, value and vector encoders/decoders.

* :class:`DenseHead` (Dreamer): an ELU MLP on ``[state, belief]`` (Hafner et al. 2019, "Dream to
  Control", App. A: reward and value models are dense networks with ELU activations).
* :class:`DreamerV3MLP` (DreamerV3): normalised SiLU layers, optional ``symlog`` of the inputs
  (vector observations, Hafner et al. 2023, Sec. 3, "Robust predictions") and an optionally
  zero-initialised output layer (reward and critic heads start predicting zero, Sec. 3).

Both take any number of inputs and concatenate them along the last dimension, so a
``TensorDictModule(head, in_keys=["state", "belief"], ...)`` works directly.
"""

from __future__ import annotations

import torch
from torch import nn

from wmrl.rssm.twohot import symlog

__all__ = ["DenseHead", "DreamerV3MLP", "make_norm", "concat_inputs", "NORMS"]

#: normalisations accepted by :func:`make_norm`
NORMS = ("layer", "rms", None)


def make_norm(
    norm: str | None, features: int, device: torch.device | str | None = None
) -> nn.Module:
    """``nn.LayerNorm`` (``"layer"``), ``nn.RMSNorm`` (``"rms"``) or the identity (``None``).

    >>> [type(make_norm(norm, 4)).__name__ for norm in NORMS]
    ['LayerNorm', 'RMSNorm', 'Identity']
    >>> make_norm("batch", 4)
    Traceback (most recent call last):
        ...
    ValueError: unknown norm 'batch'; expected one of ('layer', 'rms', None)
    """
    if norm == "layer":
        return nn.LayerNorm(features, device=device)
    if norm == "rms":
        return nn.RMSNorm(features, device=device)
    if norm is None:
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def concat_inputs(inputs: tuple[torch.Tensor, ...], in_features: int) -> torch.Tensor:
    """The inputs concatenated on the last dimension, ``[*B, in_features]``, or a ValueError.

    >>> concat_inputs((torch.zeros(2, 3), torch.ones(2, 1)), 4)
    tensor([[0., 0., 0., 1.],
            [0., 0., 0., 1.]])
    >>> concat_inputs((torch.zeros(2, 3),), 4)
    Traceback (most recent call last):
        ...
    ValueError: inputs have 3 features, expected 4
    """
    x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=-1)  # [*B, in]
    if x.shape[-1] != in_features:
        raise ValueError(f"inputs have {x.shape[-1]} features, expected {in_features}")
    return x


class DenseHead(nn.Module):
    """``depth`` hidden layers of ``num_cells`` units (``activation_class``), then a linear output.

    Args:
        in_features: total size of the concatenated inputs (default ``30 + 200``).
        out_features: output size (default 1).
        depth: number of hidden layers (default 2).
        num_cells: hidden width (default 400).
        activation_class: hidden activation (default ``nn.ELU``).
        device: where the parameters live.

    Example:
        >>> head = DenseHead(in_features=6, out_features=1, depth=2, num_cells=8)
        >>> head(torch.zeros(5, 2), torch.zeros(5, 4)).shape
        torch.Size([5, 1])
    """

    def __init__(
        self,
        in_features: int = 230,
        out_features: int = 1,
        depth: int = 2,
        num_cells: int = 400,
        activation_class: type[nn.Module] = nn.ELU,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, num_cells, device=device), activation_class()]
            width = num_cells
        layers.append(nn.Linear(width, out_features, device=device))
        self.net = nn.Sequential(*layers)
        self.in_features = in_features

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The head on the concatenated ``inputs`` (``[*B, in_features]`` in all): ``[*B, out]``."""
        return self.net(concat_inputs(inputs, self.in_features))  # [*B, out]


class DreamerV3MLP(nn.Module):
    """DreamerV3 MLP: ``depth`` x (Linear -> norm -> SiLU), then a linear output.

    Args:
        in_features: total size of the concatenated inputs.
        out_features: output size (e.g. 255 logits for a two-hot reward or critic head).
        depth: number of hidden layers (default 2).
        num_cells: hidden width (default 512).
        norm: ``"layer"`` (default, as in the paper), ``"rms"`` or ``None``.
        symlog_inputs: apply :func:`~wmrl.rssm.twohot.symlog` to the inputs (vector encoders).
        zero_init_output: zero the output layer's weights and bias (reward and critic heads).
        device: where the parameters live.

    Example:
        >>> head = DreamerV3MLP(6, 255, depth=1, num_cells=8, zero_init_output=True)
        >>> head(torch.randn(4, 6)).abs().max().item()
        0.0
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        depth: int = 2,
        num_cells: int = 512,
        norm: str | None = "layer",
        symlog_inputs: bool = False,
        zero_init_output: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [
                nn.Linear(width, num_cells, device=device),
                make_norm(norm, num_cells, device),
                nn.SiLU(),
            ]
            width = num_cells
        out = nn.Linear(width, out_features, device=device)
        if zero_init_output:
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
        layers.append(out)
        self.net = nn.Sequential(*layers)
        self.in_features, self.symlog_inputs = in_features, symlog_inputs

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The MLP on the concatenated (optionally symlog-ed) ``inputs``: ``[*B, out]``."""
        x = concat_inputs(inputs, self.in_features)  # [*B, in]
        if self.symlog_inputs:
            x = symlog(x)  # [*B, in]
        return self.net(x)  # [*B, out]
