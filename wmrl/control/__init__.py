"""Moment-matching controllers (PILCO's policies) and the angle augmentation they build on.

A controller maps a Gaussian state belief to the moments of its action — mean, covariance and
``V = S⁻¹ cov[x, u]`` — exactly or by moment matching (Deisenroth & Rasmussen 2011, Sec. 3;
Deisenroth, Fox & Rasmussen, TPAMI 2015, Sec. 5), and a point state to an action:

* :class:`LinearController` ``u = W z + b`` (``conlin``);
* :class:`RBFController`, the mean of a deterministic GP (``congp``);
* :class:`SquashedController`, bounded actions through the saturation
  ``u_max (9 sin u + sin 3u) / 8`` (``gSat``, composed as ``conCat``);
* :class:`PointPolicy` runs a controller on real observations.

``z`` are the state features: angles replaced by their ``(sin, cos)`` pairs
(:mod:`wmrl.control.angle`, PILCO's ``gTrig``).
"""

from wmrl.control.angle import angle_feature_indices, augment_angles, trig_moments
from wmrl.control.base import (
    FeatureController,
    MomentController,
    PointPolicy,
    gaussian_features,
    point_features,
)
from wmrl.control.linear import LinearController, linear_moments
from wmrl.control.rbf import RBFController, rbf_weights
from wmrl.control.squash import SquashedController, saturate, saturating_squash_moments

__all__ = [
    "MomentController",
    "FeatureController",
    "LinearController",
    "RBFController",
    "SquashedController",
    "PointPolicy",
    "linear_moments",
    "rbf_weights",
    "saturate",
    "saturating_squash_moments",
    "point_features",
    "gaussian_features",
    "trig_moments",
    "augment_angles",
    "angle_feature_indices",
]
