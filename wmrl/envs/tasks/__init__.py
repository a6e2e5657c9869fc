"""Built-in torch-native tasks: batched swing-up environments with optional 64x64 frames.

:class:`CartPoleSwingUp` and :class:`PendulumSwingUp` are TorchRL ``EnvBase`` subclasses that step
``batch_size`` systems at once on CPU or GPU with RK4, and expose what a PILCO agent needs (start
distribution, angle dimensions, the cost as a quadratic form on sin/cos-augmented states) as
plain attributes; see :class:`~wmrl.envs.tasks.base.TaskInfo`.
"""

from wmrl.envs.tasks.base import SwingUpTask, TaskInfo
from wmrl.envs.tasks.cartpole import CartPoleSwingUp, cartpole_dynamics, cartpole_energy
from wmrl.envs.tasks.integrate import rk4_step
from wmrl.envs.tasks.pendulum import (
    PendulumSwingUp,
    angle_from_upright,
    pendulum_dynamics,
    pendulum_energy,
    upright_feedback,
)

__all__ = [
    "CartPoleSwingUp",
    "PendulumSwingUp",
    "SwingUpTask",
    "TaskInfo",
    "angle_from_upright",
    "cartpole_dynamics",
    "cartpole_energy",
    "pendulum_dynamics",
    "pendulum_energy",
    "rk4_step",
    "upright_feedback",
]
