"""Transposed-convolution observation decoder of the RSSM (Hafner et al. 2019, App. A)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wmrl.rssm.encoder import resolve_depth
from wmrl.rssm.subpixel import conv_transpose2d_subpixel

__all__ = ["ObsDecoder"]


class ObsDecoder(nn.Module):
    """Latent ``(state [*B, S], belief [*B, H])`` to pixels ``[*B, C, 64, 64]``.

    A dense layer to ``32 * channels`` features, seen as a 1x1 image, then stride-2 transposed
    convolutions (kernels 5, 5, 6, 6 for four layers: 1 -> 5 -> 13 -> 30 -> 64 pixels) with ReLU
    between them (Hafner et al. 2019, "Dream to Control", App. A). The output is the mean of the
    pixel distribution (unit variance), as in the paper. The parameter layout
    (``state_to_latent.0``, ``decoder.{0,2,4,6}``) is TorchRL's.

    Exact rewrites make it fast on CPU: the first transposed convolution sees a 1x1 input,
    so it is a matrix product (TorchRL runs it as a convolution, whose backward pass dominates
    the whole Dreamer update on CPU); the other layers run in the channels-last memory format
    with in-place ReLUs; and the forward pass of the output layer (few channels) runs as four
    phase convolutions and a pixel shuffle (:mod:`wmrl.rssm.subpixel`), about twice as fast.

    Args:
        channels: filters of the last hidden layer (default 32).
        num_layers: number of transposed convolutions (at least 2, default 4).
        kernel_sizes: kernel of each layer (default ``[5, 5, 6, 6]`` for 4 layers, else 5).
        latent_dim: ``S + H`` (default ``30 + 200``).
        out_channels: image channels (default 3).
        depth: alias of ``channels``.
        channels_last: run the convolutions in the channels-last memory format.
        subpixel_output: on CPU, compute the output layer's forward pass as phase convolutions.
        device: where the parameters live.

    Example:
        >>> dec = ObsDecoder(channels=4, latent_dim=12)
        >>> dec(torch.zeros(2, 5, 4), torch.zeros(2, 5, 8)).shape
        torch.Size([2, 5, 3, 64, 64])
    """

    def __init__(
        self,
        channels: int = 32,
        num_layers: int = 4,
        kernel_sizes: int | Sequence[int] | None = None,
        latent_dim: int = 230,
        out_channels: int = 3,
        depth: int | None = None,
        *,
        channels_last: bool = True,
        subpixel_output: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        channels = resolve_depth(channels, depth)
        if num_layers < 2:
            raise ValueError(f"num_layers must be at least 2, got {num_layers}")
        if kernel_sizes is None:
            kernel_sizes = [5, 5, 6, 6] if num_layers == 4 else 5
        if isinstance(kernel_sizes, int):
            kernel_sizes = [kernel_sizes] * num_layers
        if len(kernel_sizes) != num_layers:
            raise ValueError(f"need {num_layers} kernel sizes, got {list(kernel_sizes)}")
        width = 32 * channels
        self.state_to_latent = nn.Sequential(
            nn.Linear(latent_dim, width, device=device), nn.ReLU(inplace=True)
        )
        # filters: width -> channels * 2^(L-2) -> ... -> channels -> out_channels
        sizes = [width] + [channels * 2**i for i in range(num_layers - 2, -1, -1)] + [out_channels]
        layers: list[nn.Module] = []
        for i, k in enumerate(kernel_sizes):
            if i:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.ConvTranspose2d(sizes[i], sizes[i + 1], k, stride=2, device=device))
        self.decoder = nn.Sequential(*layers)
        self.latent_dim, self.channels_last = latent_dim, channels_last
        self.subpixel_output = subpixel_output

    def forward(self, state: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        """``state [*B, S]`` and ``belief [*B, H]`` to the mean frame ``[*B, C, 64, 64]``."""
        latent = torch.cat([state, belief], dim=-1)  # [*B, S + H]
        if latent.shape[-1] != self.latent_dim:
            raise ValueError(
                f"state and belief have {latent.shape[-1]} features, expected {self.latent_dim}"
            )
        batch = latent.shape[:-1]
        x = self.state_to_latent(latent.reshape(-1, self.latent_dim))  # [N, D]
        first: nn.ConvTranspose2d = self.decoder[0]
        c_out, k = first.out_channels, first.kernel_size[0]
        # a transposed convolution of a 1x1 image is a matrix product
        w = first.weight.to(x.dtype).reshape(first.in_channels, c_out * k * k)  # [D, C*k*k]
        x = (x @ w).view(-1, c_out, k, k)  # [N, C, k, k]
        x = x + first.bias.to(x.dtype).view(1, c_out, 1, 1)  # [N, C, k, k]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # [N, C, k, k] (NHWC strides)
        *hidden, last = self.decoder[1:]
        for layer in hidden:
            x = layer(x)  # [N, C', h', w']
        if self.subpixel_output and x.device.type == "cpu":
            x = conv_transpose2d_subpixel(x, last.weight, last.bias)  # [N, C, H, W]
        else:
            x = last(x)  # [N, C, H, W]
        return x.unflatten(0, batch) if batch else x.squeeze(0)  # [*B, C, H, W]
