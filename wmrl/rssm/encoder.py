"""Convolutional observation encoder of the RSSM (Ha & Schmidhuber 2018; Hafner et al. 2019)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ObsEncoder", "resolve_depth"]


def resolve_depth(channels: int, depth: int | None) -> int:
    """Channel multiplier from ``channels`` and its alias ``depth`` (Hafner's name for it).

    >>> resolve_depth(32, None), resolve_depth(32, 16), resolve_depth(16, None)
    (32, 16, 16)
    >>> resolve_depth(8, 16)
    Traceback (most recent call last):
        ...
    ValueError: channels=8 and depth=16 disagree; give one of them
    """
    if depth is None:
        return channels
    if channels not in (32, depth):
        raise ValueError(f"channels={channels} and depth={depth} disagree; give one of them")
    return depth


class ObsEncoder(nn.Module):
    """Pixels ``[*B, C, H, W]`` to a flat embedding ``[*B, F]``: stride-2 4x4 convolutions + ReLU.

    Layer ``i`` has ``channels * 2^i`` filters (Hafner et al. 2019, "Dream to Control", App. A:
    depth 32, four layers, so a 64x64 RGB frame becomes ``256 * 2 * 2 = 1024`` features). The
    parameter layout (``encoder.{0,2,4,6}``) is TorchRL's, so state dicts are interchangeable.

    Convolutions run in the channels-last memory format, which oneDNN executes about twice as
    fast on CPU, and the ReLUs in place; the result is the same (the flattening order is
    channel, row, column).

    Args:
        channels: filters of the first layer (default 32).
        num_layers: number of convolutions (default 4).
        in_channels: channels of the input image (default 3, RGB).
        depth: alias of ``channels`` (Hafner's name).
        channels_last: run the convolutions in the channels-last memory format.
        device: where the parameters live.

    Example:
        >>> enc = ObsEncoder(channels=4)
        >>> enc(torch.rand(2, 5, 3, 64, 64)).shape
        torch.Size([2, 5, 128])
        >>> enc.output_dim(64)
        128
    """

    def __init__(
        self,
        channels: int = 32,
        num_layers: int = 4,
        in_channels: int = 3,
        depth: int | None = None,
        *,
        channels_last: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        channels = resolve_depth(channels, depth)
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        layers: list[nn.Module] = []
        c_in, c_out = in_channels, channels
        for _ in range(num_layers):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, device=device), nn.ReLU(inplace=True)]
            c_in, c_out = c_out, 2 * c_out
        self.encoder = nn.Sequential(*layers)
        self.channels, self.num_layers, self.in_channels = channels, num_layers, in_channels
        self.channels_last = channels_last

    def output_dim(self, image_size: int = 64) -> int:
        """Embedding size ``F`` for square images of side ``image_size``."""
        side = image_size
        for _ in range(self.num_layers):
            side = (side - 4) // 2 + 1
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for {self.num_layers} layers")
        return self.channels * 2 ** (self.num_layers - 1) * side * side

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        """Frames ``[*B, C, H, W]`` to embeddings ``[*B, F]`` (see the class example)."""
        if observation.dim() < 3 or observation.shape[-3] != self.in_channels:
            raise ValueError(
                f"observation must be [*B, {self.in_channels}, H, W], "
                f"got {tuple(observation.shape)}"
            )
        batch = observation.shape[:-3]
        x = observation.reshape(-1, *observation.shape[-3:])  # [N, C, H, W]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # [N, C, H, W] (NHWC strides)
        x = self.encoder(x)  # [N, C', h, w]
        return x.reshape(*batch, -1)  # [*B, F]
