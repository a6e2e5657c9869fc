"""Recurrent state-space models (RSSM) and the Dreamer / DreamerV3 losses.

Networks: :class:`ObsEncoder`, :class:`ObsDecoder`, :class:`RSSMPrior`, :class:`RSSMPosterior`
(Gaussian latents, Dreamer), :class:`RSSMPriorV3`, :class:`RSSMPosteriorV3` (categorical latents,
DreamerV3), :class:`RSSMRollout`, :class:`DreamerActor`, :class:`DenseHead`,
:class:`DreamerV3MLP`. Losses: :mod:`wmrl.rssm.dreamer` (Dreamer) and
:mod:`wmrl.rssm.dreamer_v3` (DreamerV3).
"""

from wmrl.rssm.actor import (
    BoundedNormalSample,
    DreamerActor,
    TanhNormalSample,
    bounded_normal_rsample,
    tanh_normal_rsample,
)
from wmrl.rssm.categorical import RSSMPosteriorV3, RSSMPriorV3
from wmrl.rssm.decoder import ObsDecoder
from wmrl.rssm.dreamer import DreamerActorLoss, DreamerModelLoss, DreamerValueLoss
from wmrl.rssm.dreamer_v3 import DreamerV3ActorLoss, DreamerV3ModelLoss, DreamerV3ValueLoss
from wmrl.rssm.encoder import ObsEncoder
from wmrl.rssm.heads import DenseHead, DreamerV3MLP
from wmrl.rssm.posterior import RSSMPosterior
from wmrl.rssm.prior import RSSMPrior
from wmrl.rssm.rollout import RSSMRollout
from wmrl.rssm.twohot import (
    default_bins,
    symexp,
    symlog,
    two_hot_cross_entropy,
    two_hot_decode,
    two_hot_encode,
)

__all__ = [
    "DenseHead",
    "DreamerActor",
    "DreamerActorLoss",
    "DreamerModelLoss",
    "DreamerV3ActorLoss",
    "DreamerV3MLP",
    "DreamerV3ModelLoss",
    "DreamerV3ValueLoss",
    "DreamerValueLoss",
    "ObsDecoder",
    "ObsEncoder",
    "RSSMPosterior",
    "RSSMPosteriorV3",
    "RSSMPrior",
    "RSSMPriorV3",
    "RSSMRollout",
    "TanhNormalSample",
    "BoundedNormalSample",
    "bounded_normal_rsample",
    "default_bins",
    "symexp",
    "symlog",
    "tanh_normal_rsample",
    "two_hot_cross_entropy",
    "two_hot_decode",
    "two_hot_encode",
]
