"""A small batched rasteriser: signed distances of primitives on a pixel grid, in torch.

A scene is painted back to front. Each primitive (segment with a radius, axis-aligned box,
disk) is a signed distance field ``sdf`` evaluated at every pixel centre for the whole batch at
once, turned into a coverage ``alpha = clip(1/2 - sdf / pixel, 0, 1)`` (a one-pixel linear ramp
across the edge: cheap anti-aliasing), and blended over the canvas,
``canvas <- canvas + alpha (colour - canvas)``. No GL, display or loop over the batch is involved,
so frames come out on the device of the state (Quilez, "2D distance functions", for the
segment and box distances).

World coordinates have ``y`` up; row 0 of an image is its top, as in TorchRL's pixel
convention ``uint8 [*B, H, W, 3]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "Camera",
    "segment_sdf",
    "box_sdf",
    "disk_sdf",
    "coverage",
    "paint",
    "blank_canvas",
    "to_uint8",
]


@dataclass(frozen=True)
class Camera:
    """A fixed orthographic view of the plane ``[x_min, x_max] x [y_min, y_max]``.

    Attributes:
        size: ``(height, width)`` of the image in pixels.
        x_range: ``(x_min, x_max)`` in world units.
        y_range: ``(y_min, y_max)`` in world units.

    Example: a black disk of radius ``0.75`` at the origin on a white 5 x 5 image of
    ``[-1.25, 1.25]²`` (half a world unit per pixel). Pixels whose centre is at distance
    ``≤ 0.5`` are inside (``0``); the diagonal neighbours at ``√2 / 2`` lie ``0.043`` inside the
    edge, so they are covered to ``1/2 + 0.043 / 0.5 ≈ 0.59`` (``255 · 0.41 ≈ 106``).

    >>> cam = Camera(size=(5, 5), x_range=(-1.25, 1.25), y_range=(-1.25, 1.25))
    >>> cam.pixel
    0.5
    >>> px, py = cam.grid()  # [5, 5] each
    >>> disk = coverage(disk_sdf(px, py, torch.zeros(2), 0.75), cam.pixel)  # [5, 5]
    >>> image = paint(blank_canvas([], cam, (1.0, 1.0, 1.0), None), disk, (0.0, 0.0, 0.0))
    >>> for row in to_uint8(image)[..., 0].tolist():
    ...     print(row)
    [255, 255, 255, 255, 255]
    [255, 106, 0, 106, 255]
    [255, 0, 0, 0, 255]
    [255, 106, 0, 106, 255]
    [255, 255, 255, 255, 255]
    """

    size: tuple[int, int] = (64, 64)
    x_range: tuple[float, float] = (-1.0, 1.0)
    y_range: tuple[float, float] = (-1.0, 1.0)

    @property
    def pixel(self) -> float:
        """World length of one pixel (the larger of its two sides)."""
        (h, w), (x0, x1), (y0, y1) = self.size, self.x_range, self.y_range
        return max((x1 - x0) / w, (y1 - y0) / h)

    def grid(self, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """World coordinates of the pixel centres, ``(px, py)``, each ``[H, W]`` float32.

        >>> px, py = Camera((2, 2), (0.0, 2.0), (0.0, 2.0)).grid()
        >>> px.tolist(), py.tolist()
        ([[0.5, 1.5], [0.5, 1.5]], [[1.5, 1.5], [0.5, 0.5]])
        """
        (h, w), (x0, x1), (y0, y1) = self.size, self.x_range, self.y_range
        kw = {"dtype": torch.float32, "device": device}
        xs = x0 + (torch.arange(w, **kw) + 0.5) * ((x1 - x0) / w)  # [W]
        ys = y1 - (torch.arange(h, **kw) + 0.5) * ((y1 - y0) / h)  # [H]  (row 0 at the top)
        return xs.expand(h, w), ys.unsqueeze(-1).expand(h, w)  # [H, W], [H, W]

    def to_pixel(self, xy: torch.Tensor) -> torch.Tensor:
        """Continuous ``(column, row)`` image coordinates of world points ``[*B, 2]``.

        >>> Camera((2, 2), (0.0, 2.0), (0.0, 2.0)).to_pixel(torch.tensor([0.5, 1.5])).tolist()
        [0.0, 0.0]
        """
        (h, w), (x0, x1), (y0, y1) = self.size, self.x_range, self.y_range
        col = (xy[..., 0] - x0) * (w / (x1 - x0)) - 0.5  # [*B]
        row = (y1 - xy[..., 1]) * (h / (y1 - y0)) - 0.5  # [*B]
        return torch.stack([col, row], dim=-1)  # [*B, 2]


def _split(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[*B, 2]`` points -> x and y, each ``[*B, 1, 1]`` to broadcast over an image."""
    return p[..., 0, None, None], p[..., 1, None, None]


def segment_sdf(
    px: torch.Tensor, py: torch.Tensor, a: torch.Tensor, b: torch.Tensor, radius: float
) -> torch.Tensor:
    """Signed distance to a capsule: the segment ``a``-``b`` thickened by ``radius``.

    Args:
        px, py: pixel centres ``[H, W]``.
        a, b: end points ``[*B, 2]``.
        radius: half the thickness.

    Returns:
        ``[*B, H, W]``, negative inside.

    >>> px, py = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    >>> segment_sdf(px, py, torch.zeros(2), torch.tensor([0.0, 3.0]), 0.5).tolist()
    [[-0.5, 1.5]]
    """
    ax, ay = _split(a)  # [*B, 1, 1]
    ex, ey = _split(b - a)  # [*B, 1, 1]
    dx, dy = px - ax, py - ay  # [*B, H, W]
    t = ((dx * ex + dy * ey) / (ex * ex + ey * ey).clamp_min(1e-12)).clamp(0.0, 1.0)  # [*B, H, W]
    return torch.hypot(dx - t * ex, dy - t * ey) - radius  # [*B, H, W]


def box_sdf(
    px: torch.Tensor, py: torch.Tensor, centre: torch.Tensor, half_size: Sequence[float]
) -> torch.Tensor:
    """Signed distance to an axis-aligned box.

    Args:
        px, py: pixel centres ``[H, W]``.
        centre: ``[*B, 2]``.
        half_size: ``(half_width, half_height)``.

    Returns:
        ``[*B, H, W]``, negative inside.

    >>> px, py = torch.tensor([[0.0, 3.0, 2.0]]), torch.tensor([[0.0, 0.0, 2.0]])
    >>> box_sdf(px, py, torch.zeros(2), (1.0, 1.0)).tolist()
    [[-1.0, 2.0, 1.4142135381698608]]
    """
    cx, cy = _split(centre)  # [*B, 1, 1]
    qx = (px - cx).abs() - half_size[0]  # [*B, H, W]
    qy = (py - cy).abs() - half_size[1]  # [*B, H, W]
    outside = torch.hypot(qx.clamp_min(0.0), qy.clamp_min(0.0))  # [*B, H, W]
    inside = torch.maximum(qx, qy).clamp_max(0.0)  # [*B, H, W]
    return outside + inside  # [*B, H, W]


def disk_sdf(
    px: torch.Tensor, py: torch.Tensor, centre: torch.Tensor, radius: float
) -> torch.Tensor:
    """Signed distance to a disk; ``px, py`` ``[H, W]``, ``centre`` ``[*B, 2]`` -> ``[*B, H, W]``.

    >>> disk_sdf(torch.tensor([[3.0]]), torch.tensor([[4.0]]), torch.zeros(2), 1.0).tolist()
    [[4.0]]
    """
    cx, cy = _split(centre)  # [*B, 1, 1]
    return torch.hypot(px - cx, py - cy) - radius  # [*B, H, W]


def coverage(sdf: torch.Tensor, pixel: float) -> torch.Tensor:
    """Fraction of a pixel covered, ``clip(1/2 - sdf / pixel, 0, 1)`` ``[*B, H, W]``.

    >>> coverage(torch.tensor([-1.0, 0.0, 1.0]), 1.0).tolist()
    [1.0, 0.5, 0.0]
    """
    return (0.5 - sdf / pixel).clamp(0.0, 1.0)  # [*B, H, W]


def blank_canvas(
    batch_shape: Sequence[int], camera: Camera, colour: Sequence[float], device: torch.device | None
) -> torch.Tensor:
    """A float32 canvas ``[*B, H, W, 3]`` filled with ``colour`` (RGB in ``[0, 1]``).

    >>> canvas = blank_canvas([2], Camera(size=(3, 4)), (0.0, 0.5, 1.0), None)
    >>> canvas.shape, canvas.dtype, canvas[1, 2, 3].tolist()
    (torch.Size([2, 3, 4, 3]), torch.float32, [0.0, 0.5, 1.0])
    """
    c = torch.tensor(colour, dtype=torch.float32, device=device)  # [3]
    return c.expand(*batch_shape, *camera.size, 3).clone()  # [*B, H, W, 3]


def paint(canvas: torch.Tensor, alpha: torch.Tensor, colour: Sequence[float]) -> torch.Tensor:
    """Blend ``colour`` over ``canvas`` ``[*B, H, W, 3]`` with coverage ``alpha`` ``[*B', H, W]``.

    ``alpha`` broadcasts against the canvas (a layer shared by the batch may be ``[H, W]``).

    >>> canvas = torch.zeros(1, 1, 3)
    >>> paint(canvas, torch.tensor([[0.5]]), (1.0, 0.0, 0.0)).tolist()
    [[[0.5, 0.0, 0.0]]]
    """
    c = torch.tensor(colour, dtype=canvas.dtype, device=canvas.device)  # [3]
    return torch.lerp(canvas, c.expand_as(canvas), alpha.unsqueeze(-1))  # [*B, H, W, 3]


def to_uint8(canvas: torch.Tensor) -> torch.Tensor:
    """Float RGB in ``[0, 1]`` -> uint8 in ``[0, 255]``, same shape ``[*B, H, W, 3]``.

    >>> to_uint8(torch.tensor([0.0, 0.5, 1.0])).tolist()
    [0, 128, 255]
    """
    return (canvas * 255.0 + 0.5).clamp(0.0, 255.0).to(torch.uint8)  # [*B, H, W, 3]
