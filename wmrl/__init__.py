"""wmrl: model-based reinforcement learning with world models.

One :class:`~wmrl.protocol.WorldModel` protocol with two backends — Gaussian-process dynamics with
exact moment matching (PILCO) and recurrent state-space models (Dreamer) — and imagined TorchRL
environments so the same policy-search code runs on either.
"""

from wmrl.protocol import WorldModel

__version__ = "0.1.0"

__all__ = ["WorldModel", "__version__"]
