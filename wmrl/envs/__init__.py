"""TorchRL environments: imagined (model-based) environments and the built-in tasks."""

from wmrl.envs.dreamer import DreamerDecoder, DreamerEnv
from wmrl.envs.model_based import ImaginedEnv, ModelBasedEnvBase, WorldModelEnv
from wmrl.envs.tasks import CartPoleSwingUp, PendulumSwingUp

__all__ = [
    "ModelBasedEnvBase",
    "WorldModelEnv",
    "ImaginedEnv",
    "DreamerEnv",
    "DreamerDecoder",
    "CartPoleSwingUp",
    "PendulumSwingUp",
]
