"""PILCO's torque-limited pendulum swing-up: a uniform rod on a fixed frictional hinge.

State ``s = [θ̇, θ]`` with ``θ = 0`` hanging down; the action is the torque ``u`` at the hinge.
With rod mass ``m`` and length ``l`` (moment of inertia ``m l²/3`` about the hinge, centre of mass
at ``l/2``), viscous friction ``b`` and gravity ``g``,

.. math::
    \\tfrac13 m l^2 \\ddot\\theta = u - b\\dot\\theta - \\tfrac12 m g l \\sin\\theta,

PILCO's ``dynamics_pendulum.m`` (Deisenroth 2010, App. C.1; Deisenroth, Fox & Rasmussen 2015,
Sec. 6.1).
"""

from __future__ import annotations

import torch

from wmrl.envs.tasks.base import SwingUpTask
from wmrl.envs.tasks.render import Camera, coverage, disk_sdf, paint, segment_sdf

__all__ = ["PendulumSwingUp", "angle_from_upright", "pendulum_dynamics", "pendulum_energy",
           "upright_feedback"]  # fmt: skip


def pendulum_dynamics(
    state: torch.Tensor,
    torque: torch.Tensor,
    *,
    mass: float = 1.0,
    length: float = 1.0,
    friction: float = 0.01,
    gravity: float = 9.81,
) -> torch.Tensor:
    """Time derivative of the pendulum state, ``θ̈ = (u - b θ̇ - ½ m g l sin θ) / (⅓ m l²)``.

    Args:
        state: ``[θ̇, θ]`` ``[*B, 2]``, ``θ = 0`` hanging down.
        torque: hinge torque ``[*B, 1]`` (N m).
        mass, length, friction, gravity: ``m``, ``l``, ``b``, ``g``.

    Returns:
        ``[θ̈, θ̇]`` ``[*B, 2]``.

    Example:
        >>> s = torch.tensor([0.0, torch.pi / 2], dtype=torch.float64)  # horizontal, at rest
        >>> ds = pendulum_dynamics(s, torch.zeros(1, dtype=torch.float64))
        >>> [round(v, 6) for v in ds.tolist()]  # θ̈ = -3g / (2l)
        [-14.715, 0.0]
    """
    theta_dot, theta = state[..., 0], state[..., 1]  # [*B], [*B]
    m, l = mass, length
    torque_net = torque[..., 0] - friction * theta_dot - 0.5 * m * gravity * l * torch.sin(theta)
    theta_acc = torque_net / (m * l * l / 3.0)  # [*B]
    return torch.stack([theta_acc, theta_dot], dim=-1)  # [*B, 2]


def pendulum_energy(
    state: torch.Tensor, *, mass: float = 1.0, length: float = 1.0, gravity: float = 9.81
) -> torch.Tensor:
    """Total mechanical energy ``⅙ m l² θ̇² - ½ m g l cos θ``, ``[*B, 2] -> [*B]``.

    >>> pendulum_energy(torch.zeros(2, dtype=torch.float64)).item()  # hanging at rest: -m g l / 2
    -4.905
    """
    theta_dot, theta = state[..., 0], state[..., 1]  # [*B], [*B]
    m, l = mass, length
    return m * l * l * theta_dot**2 / 6.0 - 0.5 * m * gravity * l * torch.cos(theta)  # [*B]


def angle_from_upright(theta: torch.Tensor) -> torch.Tensor:
    """``φ = θ - π`` wrapped to ``[-π, π)``: the angle from upright (``θ = 0`` hangs down), same
    shape as ``theta``.

    >>> angle_from_upright(torch.tensor([torch.pi, 0.0, 3 * torch.pi + 0.5]))
    tensor([ 0.0000, -3.1416,  0.5000])
    """
    return torch.remainder(theta, 2 * torch.pi) - torch.pi


def upright_feedback(
    state: torch.Tensor, *, kp: float = 10.0, kd: float = 2.0, torque_bound: float = 2.5
) -> torch.Tensor:
    """Proportional-derivative feedback that holds the rod upright, in units of the torque bound:
    ``u = -(kp φ + kd θ̇) / torque_bound`` with ``φ = θ - π`` wrapped to ``[-π, π)``,
    ``[*B, 2] -> [*B, 1]``, not clipped (an agent's action in ``[-1, 1]`` once clipped).

    With the default rod (``m l²/3 = 1/3``, ``m g l/2 = 4.905``) the linearised closed loop is
    ``φ̈ ≈ -15 φ - 6 φ̇`` (gravity's ``+14.7 φ`` against the ``-30 φ`` of the gains), stable,
    saturating beyond ``|φ| ≈ 0.25`` rad. A reference for diagnostics: it holds the real pendulum
    from near the top (``benchmarks/dreamer_actions.py``, ``dreamer_diagnose.py --hold``).

    >>> s = torch.tensor([[0.0, torch.pi + 0.1]], dtype=torch.float64)  # 0.1 rad past upright
    >>> upright_feedback(s)  # pushes back: -10 * 0.1 / 2.5
    tensor([[-0.4000]], dtype=torch.float64)
    """
    theta_dot, phi = state[..., :1], angle_from_upright(state[..., 1:])  # [*B, 1] each
    return -(kp * phi + kd * theta_dot) / torque_bound  # [*B, 1]


class PendulumSwingUp(SwingUpTask):
    """Pendulum swing-up, batched and torch-native (PILCO's settings).

    Uniform rod of 1 kg and 1 m, hinge friction 0.01 N m s, g = 9.81 m/s², torque in
    ``[-2.5, 2.5]`` N m held for ``dt = 0.1`` s, 40 steps (4 s). State ``[θ̇, θ]``, ``θ = 0``
    hanging down, start ``N(0, 0.1² I)``. Cost ``1 - exp(-d² / (2·0.5²))`` with ``d`` the distance
    from the tip ``(l sin θ, -l cos θ)`` to ``(0, l)``; reward ``-cost``. Solved when the tip stays
    within 0.1 m of the target for the last second. Frames show the target (green), the rod (red)
    and the hinge (dark) over ``x, y ∈ [-1.25, 1.25]`` m. Keyword arguments beyond the physical
    constants are those of :class:`~wmrl.envs.tasks.base.SwingUpTask`.

    Example:
        >>> env = PendulumSwingUp(from_pixels=True, seed=0)
        >>> td = env.reset()
        >>> td["pixels"].shape, td["pixels"].dtype
        (torch.Size([64, 64, 3]), torch.uint8)
    """

    state_names = ("theta_dot", "theta")
    angle_dims = (1,)
    action_bound = 2.5
    cost_width = 0.5
    camera = Camera((64, 64), (-1.25, 1.25), (-1.25, 1.25))
    target_colour = (0.55, 0.8, 0.55)
    pole_colour = (0.85, 0.25, 0.1)
    hinge_colour = (0.15, 0.15, 0.2)

    def __init__(
        self,
        *,
        mass: float = 1.0,
        length: float = 1.0,
        friction: float = 0.01,
        gravity: float = 9.81,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.mass, self.length, self.friction, self.gravity = mass, length, friction, gravity
        self.tip_target = (0.0, float(length))

    def dynamics(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """:func:`pendulum_dynamics` with this task's constants, ``[*B, 2], [*B, 1] -> [*B, 2]``."""
        return pendulum_dynamics(state, action, mass=self.mass, length=self.length,
                                 friction=self.friction, gravity=self.gravity)

    def energy(self, state: torch.Tensor) -> torch.Tensor:
        """:func:`pendulum_energy` with this task's constants, ``[*B, 2] -> [*B]``."""
        return pendulum_energy(state, mass=self.mass, length=self.length, gravity=self.gravity)

    def tip_position(self, state: torch.Tensor) -> torch.Tensor:
        """``(l sin θ, -l cos θ)``, ``[*B, 2] -> [*B, 2]``."""
        theta, l = state[..., 1], self.length  # [*B]
        return torch.stack([l * torch.sin(theta), -l * torch.cos(theta)], dim=-1)  # [*B, 2]

    def cost_spec(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Target and weights of the cost on ``z = [θ̇, θ, sin θ, cos θ]``.

        ``d² = (l sin θ)² + (l cos θ + l)² = |C (z - target)|²`` with
        ``C = [[0,0,l,0], [0,0,0,l]]`` and ``target = [0,0,0,-1]``, so
        ``cost = 1 - exp(-½ (z - target)ᵀ W (z - target))`` with ``W = CᵀC / a²``.

        Returns:
            ``target`` ``[4]`` and ``W`` ``[4, 4]`` in the environment's dtype and device.

        >>> target, W = PendulumSwingUp().cost_spec()
        >>> target.tolist(), torch.diagonal(W).tolist()
        ([0.0, 0.0, 0.0, -1.0], [0.0, 0.0, 4.0, 4.0])
        """
        kw = {"dtype": self.dtype, "device": self.device}
        l = self.length
        C = torch.tensor([[0.0, 0, l, 0], [0, 0, 0, l]], **kw)  # [2, 4]
        target = torch.tensor([0.0, 0, 0, -1.0], **kw)  # [4]
        return target, C.T @ C / self.cost_width**2  # [4], [4, 4]

    def _draw_static(
        self, canvas: torch.Tensor, px: torch.Tensor, py: torch.Tensor
    ) -> torch.Tensor:
        pix = self.camera.pixel
        target = torch.tensor(self.tip_target, device=canvas.device)  # [2]
        return paint(canvas, coverage(disk_sdf(px, py, target, 0.08), pix), self.target_colour)

    def _draw(self, state: torch.Tensor, canvas: torch.Tensor, px: torch.Tensor,
              py: torch.Tensor) -> torch.Tensor:
        pix = self.camera.pixel
        hinge = torch.zeros_like(state[..., :2])  # [*B, 2]
        rod = coverage(segment_sdf(px, py, hinge, self.tip_position(state), 0.06), pix)
        canvas = paint(canvas, rod, self.pole_colour)  # [*B, H, W, 3]
        dot = coverage(disk_sdf(px, py, hinge.new_zeros(2), 0.05), pix)  # [H, W]
        return paint(canvas, dot, self.hinge_colour)  # [*B, H, W, 3]
