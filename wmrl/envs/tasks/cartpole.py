"""PILCO's cart-pole swing-up: a cart on a track with a uniform rod hinged on it.

State ``s = [x, ẋ, θ̇, θ]`` with ``θ = 0`` hanging down; the action is the horizontal force ``u``
on the cart. With cart mass ``M``, rod mass ``m`` and length ``l`` (pivot at one end, so the
centre of mass is at ``l/2`` and the moment of inertia about it ``m l²/12``), cart friction ``b``
and gravity ``g``, the Lagrangian

.. math::
    L = \\tfrac12 (M+m)\\dot x^2 + \\tfrac12 m l \\cos\\theta\\,\\dot x\\dot\\theta
        + \\tfrac16 m l^2 \\dot\\theta^2 + \\tfrac12 m g l \\cos\\theta

with generalised forces ``(u - b ẋ, 0)`` gives

.. math::
    (M+m)\\ddot x + \\tfrac12 m l(\\cos\\theta\\,\\ddot\\theta - \\sin\\theta\\,\\dot\\theta^2)
        = u - b\\dot x, \\qquad
    2l\\ddot\\theta + 3\\cos\\theta\\,\\ddot x + 3g\\sin\\theta = 0,

solved for the accelerations in :func:`cartpole_dynamics`. These are the equations of PILCO's
``dynamics_cp.m`` (Deisenroth & Rasmussen 2011, Sec. 5; Deisenroth 2010, App. C.2).
"""

from __future__ import annotations

import torch

from wmrl.envs.tasks.base import SwingUpTask
from wmrl.envs.tasks.render import Camera, box_sdf, coverage, disk_sdf, paint, segment_sdf

__all__ = ["CartPoleSwingUp", "cartpole_dynamics", "cartpole_energy"]


def cartpole_dynamics(
    state: torch.Tensor,
    force: torch.Tensor,
    *,
    cart_mass: float = 0.5,
    pole_mass: float = 0.5,
    pole_length: float = 0.5,
    friction: float = 0.1,
    gravity: float = 9.82,
) -> torch.Tensor:
    """Time derivative of the cart-pole state (PILCO's ``dynamics_cp.m``).

    .. math::
        \\ddot x = \\frac{2 m l \\dot\\theta^2 \\sin\\theta + 3 m g \\sin\\theta\\cos\\theta
                   + 4(u - b\\dot x)}{4(M+m) - 3m\\cos^2\\theta},\\quad
        \\ddot\\theta = -\\frac{3 m l \\dot\\theta^2 \\sin\\theta\\cos\\theta
                   + 6(M+m) g \\sin\\theta + 6(u - b\\dot x)\\cos\\theta}
                  {l\\,(4(M+m) - 3m\\cos^2\\theta)}.

    Args:
        state: ``[x, ẋ, θ̇, θ]`` ``[*B, 4]``, ``θ = 0`` hanging down.
        force: horizontal force on the cart ``[*B, 1]`` (N).
        cart_mass, pole_mass, pole_length, friction, gravity: ``M``, ``m``, ``l``, ``b``, ``g``.

    Returns:
        ``[ẋ, ẍ, θ̈, θ̇]`` ``[*B, 4]``.

    Example:
        >>> s = torch.tensor([0.0, 0.0, 0.0, torch.pi / 2], dtype=torch.float64)  # horizontal
        >>> ds = cartpole_dynamics(s, torch.zeros(1, dtype=torch.float64))
        >>> [round(v, 6) for v in ds.tolist()]  # θ̈ = -6(M+m)g / (4(M+m) l) = -1.5 g / l
        [0.0, 0.0, -29.46, 0.0]
    """
    x_dot, theta_dot, theta = state[..., 1], state[..., 2], state[..., 3]  # [*B] each
    M, m, l, g = cart_mass, pole_mass, pole_length, gravity
    s, c = torch.sin(theta), torch.cos(theta)  # [*B], [*B]
    f = force[..., 0] - friction * x_dot  # net horizontal force on the cart  [*B]
    denom = 4.0 * (M + m) - 3.0 * m * c * c  # [*B]
    x_acc = (2.0 * m * l * theta_dot**2 * s + 3.0 * m * g * s * c + 4.0 * f) / denom  # [*B]
    theta_acc = -(
        3.0 * m * l * theta_dot**2 * s * c + 6.0 * (M + m) * g * s + 6.0 * f * c
    ) / (l * denom)  # [*B]
    return torch.stack([x_dot, x_acc, theta_acc, theta_dot], dim=-1)  # [*B, 4]


def cartpole_energy(
    state: torch.Tensor,
    *,
    cart_mass: float = 0.5,
    pole_mass: float = 0.5,
    pole_length: float = 0.5,
    gravity: float = 9.82,
) -> torch.Tensor:
    """Total mechanical energy ``T + V`` of the cart-pole, ``[*B, 4] -> [*B]``.

    ``T = ½(M+m)ẋ² + ½ m l cos θ ẋ θ̇ + ⅙ m l² θ̇²`` and ``V = -½ m g l cos θ``; it is conserved
    by :func:`cartpole_dynamics` with zero force and zero friction.

    >>> cartpole_energy(torch.zeros(4, dtype=torch.float64)).item()  # hanging at rest: -m g l / 2
    -1.2275
    """
    x_dot, theta_dot, theta = state[..., 1], state[..., 2], state[..., 3]  # [*B] each
    M, m, l = cart_mass, pole_mass, pole_length
    c = torch.cos(theta)  # [*B]
    kinetic = (0.5 * (M + m) * x_dot**2 + 0.5 * m * l * c * x_dot * theta_dot
               + m * l * l * theta_dot**2 / 6.0)  # [*B]
    return kinetic - 0.5 * m * gravity * l * c  # [*B]


class CartPoleSwingUp(SwingUpTask):
    """Cart-pole swing-up, batched and torch-native (PILCO's task, Deisenroth & Rasmussen 2011).

    Cart 0.5 kg, rod 0.5 kg and 0.5 m, cart friction 0.1 N/m/s, g = 9.82 m/s², force in
    ``[-10, 10]`` N held for ``dt = 0.1`` s (``substeps`` RK4 steps), 40 steps (4 s). State
    ``[x, ẋ, θ̇, θ]``, ``θ = 0`` hanging down, start ``N(0, 0.1² I)``. Cost
    ``1 - exp(-d² / (2·0.25²))`` with ``d`` the distance from the tip ``(x + l sin θ, -l cos θ)``
    to ``(0, l)``; reward ``-cost``. Solved when the tip stays within 0.1 m of the target for the
    last second. Frames show the track, the target (green), the cart (blue) and the rod (red)
    over ``x, y ∈ [-1.25, 1.25]`` m. Keyword arguments beyond the physical constants are those of
    :class:`~wmrl.envs.tasks.base.SwingUpTask`.

    Example:
        >>> env = CartPoleSwingUp(batch_size=[8], seed=0)
        >>> td = env.rollout(40)
        >>> td["next", "observation"].shape, bool(td["next", "truncated"][:, -1].all())
        (torch.Size([8, 40, 4]), True)
        >>> env.is_solved(td["next", "true_state"]).shape
        torch.Size([8])
    """

    state_names = ("x", "x_dot", "theta_dot", "theta")
    angle_dims = (3,)
    action_bound = 10.0
    cost_width = 0.25
    camera = Camera((64, 64), (-1.25, 1.25), (-1.25, 1.25))
    track_colour = (0.55, 0.55, 0.55)
    target_colour = (0.55, 0.8, 0.55)
    cart_colour = (0.2, 0.3, 0.65)
    pole_colour = (0.85, 0.25, 0.1)

    def __init__(
        self,
        *,
        cart_mass: float = 0.5,
        pole_mass: float = 0.5,
        pole_length: float = 0.5,
        friction: float = 0.1,
        gravity: float = 9.82,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.cart_mass, self.pole_mass, self.pole_length = cart_mass, pole_mass, pole_length
        self.friction, self.gravity = friction, gravity
        self.tip_target = (0.0, float(pole_length))

    def dynamics(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """:func:`cartpole_dynamics` with this task's constants, ``[*B, 4], [*B, 1] -> [*B, 4]``."""
        return cartpole_dynamics(
            state, action, cart_mass=self.cart_mass, pole_mass=self.pole_mass,
            pole_length=self.pole_length, friction=self.friction, gravity=self.gravity,
        )

    def energy(self, state: torch.Tensor) -> torch.Tensor:
        """:func:`cartpole_energy` with this task's constants, ``[*B, 4] -> [*B]``."""
        return cartpole_energy(state, cart_mass=self.cart_mass, pole_mass=self.pole_mass,
                               pole_length=self.pole_length, gravity=self.gravity)

    def tip_position(self, state: torch.Tensor) -> torch.Tensor:
        """``(x + l sin θ, -l cos θ)``, ``[*B, 4] -> [*B, 2]``."""
        x, theta, l = state[..., 0], state[..., 3], self.pole_length  # [*B], [*B]
        return torch.stack([x + l * torch.sin(theta), -l * torch.cos(theta)], dim=-1)  # [*B, 2]

    def cost_spec(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Target and weights of the cost on ``z = [x, ẋ, θ̇, θ, sin θ, cos θ]``.

        ``d² = (x + l sin θ)² + (l cos θ + l)² = |C (z - target)|²`` with
        ``C = [[1,0,0,0,l,0], [0,0,0,0,0,l]]`` and ``target = [0,0,0,0,0,-1]``, so
        ``cost = 1 - exp(-½ (z - target)ᵀ W (z - target))`` with ``W = CᵀC / a²``.

        Returns:
            ``target`` ``[6]`` and ``W`` ``[6, 6]`` in the environment's dtype and device.

        >>> target, W = CartPoleSwingUp().cost_spec()
        >>> target.tolist(), W[0].tolist()
        ([0.0, 0.0, 0.0, 0.0, 0.0, -1.0], [16.0, 0.0, 0.0, 0.0, 8.0, 0.0])
        """
        kw = {"dtype": self.dtype, "device": self.device}
        l = self.pole_length
        C = torch.tensor([[1.0, 0, 0, 0, l, 0], [0, 0, 0, 0, 0, l]], **kw)  # [2, 6]
        target = torch.tensor([0.0, 0, 0, 0, 0, -1.0], **kw)  # [6]
        return target, C.T @ C / self.cost_width**2  # [6], [6, 6]

    def _draw_static(
        self, canvas: torch.Tensor, px: torch.Tensor, py: torch.Tensor
    ) -> torch.Tensor:
        pix, dev = self.camera.pixel, canvas.device
        origin = torch.zeros(2, device=dev)  # [2]
        canvas = paint(canvas, coverage(box_sdf(px, py, origin, (10.0, 0.25 * pix)), pix),
                       self.track_colour)  # [H, W, 3]
        canvas = paint(canvas, coverage(box_sdf(px, py, origin, (0.25 * pix, 1.5 * pix)), pix),
                       self.track_colour)  # tick at x = 0  [H, W, 3]
        target = torch.tensor(self.tip_target, device=dev)  # [2]
        return paint(canvas, coverage(disk_sdf(px, py, target, 0.06), pix), self.target_colour)

    def _draw(self, state: torch.Tensor, canvas: torch.Tensor, px: torch.Tensor,
              py: torch.Tensor) -> torch.Tensor:
        pix = self.camera.pixel
        pivot = torch.stack([state[..., 0], torch.zeros_like(state[..., 0])], dim=-1)  # [*B, 2]
        tip = self.tip_position(state)  # [*B, 2]
        cart = coverage(box_sdf(px, py, pivot, (0.18, 0.08)), pix)  # [*B, H, W]
        canvas = paint(canvas, cart, self.cart_colour)  # [*B, H, W, 3]
        pole = coverage(segment_sdf(px, py, pivot, tip, 0.045), pix)  # [*B, H, W]
        return paint(canvas, pole, self.pole_colour)  # [*B, H, W, 3]
