"""wmrl: model-based reinforcement learning with world models.

One :class:`~wmrl.protocol.WorldModel` protocol with two backends — Gaussian-process dynamics with
exact moment matching (PILCO) and recurrent state-space models (Dreamer) — and imagined TorchRL
environments so the same policy-search code runs on either.

The names of TorchRL's model-based pages are importable from here (``from wmrl import
GPWorldModel, DreamerModelLoss, ImaginedEnv, ...``).
"""

from wmrl.agents.dreamer import Dreamer, DreamerConfig
from wmrl.agents.pilco import PILCO, PILCOConfig
from wmrl.control import LinearController, PointPolicy, RBFController, SquashedController
from wmrl.costs import ExponentialQuadraticCost
from wmrl.envs import (
    CartPoleSwingUp,
    DreamerDecoder,
    DreamerEnv,
    ImaginedEnv,
    ModelBasedEnvBase,
    PendulumSwingUp,
    WorldModelEnv,
)
from wmrl.gp import GPWorldModel
from wmrl.protocol import WorldModel
from wmrl.rssm import (
    DreamerActor,
    DreamerActorLoss,
    DreamerModelLoss,
    DreamerV3ActorLoss,
    DreamerV3ModelLoss,
    DreamerV3ValueLoss,
    DreamerValueLoss,
    ObsDecoder,
    ObsEncoder,
    RSSMPosterior,
    RSSMPrior,
    RSSMRollout,
    symexp,
    symlog,
    two_hot_decode,
    two_hot_encode,
)
from wmrl.search import PolicySearch, expected_cost_objective, lambda_return_objective

__version__ = "0.1.0"

__all__ = [
    # protocol and search
    "WorldModel",
    "PolicySearch",
    "expected_cost_objective",
    "lambda_return_objective",
    # GP backend
    "GPWorldModel",
    "ExponentialQuadraticCost",
    "LinearController",
    "RBFController",
    "SquashedController",
    "PointPolicy",
    # RSSM backend
    "ObsEncoder",
    "ObsDecoder",
    "RSSMPrior",
    "RSSMPosterior",
    "RSSMRollout",
    "DreamerActor",
    "DreamerModelLoss",
    "DreamerActorLoss",
    "DreamerValueLoss",
    "DreamerV3ModelLoss",
    "DreamerV3ActorLoss",
    "DreamerV3ValueLoss",
    "symlog",
    "symexp",
    "two_hot_encode",
    "two_hot_decode",
    # agents
    "PILCO",
    "PILCOConfig",
    "Dreamer",
    "DreamerConfig",
    # environments
    "ModelBasedEnvBase",
    "WorldModelEnv",
    "ImaginedEnv",
    "DreamerEnv",
    "DreamerDecoder",
    "CartPoleSwingUp",
    "PendulumSwingUp",
    "__version__",
]
