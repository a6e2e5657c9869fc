"""Gaussian-process dynamics (PILCO): fitting, sparse FITC GPs, exact moment matching and the
:class:`GPWorldModel`."""

from wmrl.gp.fit import (
    FitResult,
    GPHyperparameters,
    exact_log_likelihood,
    fit_hyperparameters,
    posterior_weights,
    se_ard_kernel,
)
from wmrl.gp.model import GPWorldModel
from wmrl.gp.moment_matching import gp_moment_match, gp_predict
from wmrl.gp.sparse import fit_inducing_inputs, fitc_log_likelihood, fitc_posterior

__all__ = [
    "GPWorldModel",
    "GPHyperparameters",
    "FitResult",
    "fit_hyperparameters",
    "exact_log_likelihood",
    "posterior_weights",
    "se_ard_kernel",
    "fitc_log_likelihood",
    "fitc_posterior",
    "fit_inducing_inputs",
    "gp_moment_match",
    "gp_predict",
]
