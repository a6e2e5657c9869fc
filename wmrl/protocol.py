"""The ``WorldModel`` protocol both backends implement, and the state-key conventions.

A world model turns a *state* and an *action* into a next *state* (and, if it predicts one, a
*reward*), and can be fit to real transitions. Its state lives in a TensorDict:

=========  =================================================  ==================================
backend    state entries (defaults)                           one step
=========  =================================================  ==================================
GP         ``("observation", "mean")`` ``[*B, D]``,           exact moment matching of the GP
           ``("observation", "var")`` ``[*B, D, D]``          posterior under a Gaussian input
RSSM       ``"state"`` ``[*B, S]``, ``"belief"`` ``[*B, H]``  GRU belief update, then a sample
                                                              of the stochastic state (prior)
=========  =================================================  ==================================

``forward(td)`` reads ``state_keys`` and the action entries from ``td`` and writes the next state
under ``("next", key)`` for each state key (and ``("next", "reward")`` when the model predicts
rewards); it returns ``td``. Model-based environments (:mod:`wmrl.envs.model_based`) step any
object satisfying this protocol, so policy search runs unchanged on either backend.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from tensordict import TensorDictBase
from tensordict.utils import NestedKey

__all__ = [
    "WorldModel",
    "GAUSSIAN_STATE_KEYS",
    "GAUSSIAN_ACTION_KEYS",
    "RSSM_STATE_KEYS",
    "next_key",
]

#: state entries of a Gaussian belief (GP backend): mean ``[*B, D]`` and covariance ``[*B, D, D]``
GAUSSIAN_STATE_KEYS: tuple[NestedKey, NestedKey] = (("observation", "mean"), ("observation", "var"))
#: action entries written by moment-matching controllers: mean ``[*B, F]``, covariance
#: ``[*B, F, F]`` and the true state-action cross-covariance ``cov[x, u]`` ``[*B, D, F]``
GAUSSIAN_ACTION_KEYS: tuple[NestedKey, NestedKey, NestedKey] = (
    ("action", "mean"),
    ("action", "var"),
    ("action", "cross_covariance"),
)
#: state entries of an RSSM: stochastic state ``[*B, S]`` and deterministic belief ``[*B, H]``
RSSM_STATE_KEYS: tuple[str, str] = ("state", "belief")


def next_key(key: NestedKey) -> tuple[str, ...]:
    """``("next", *key)`` for a nested or plain key.

    >>> next_key(("observation", "mean"))
    ('next', 'observation', 'mean')
    >>> next_key("state")
    ('next', 'state')
    """
    return ("next", *((key,) if isinstance(key, str) else tuple(key)))


@runtime_checkable
class WorldModel(Protocol):
    """A learned model of the environment that an imagined environment can step.

    Attributes:
        state_keys: the TensorDict entries that make up the model's state.
        action_keys: the entries of the action it reads.
        predicts_reward: whether ``forward`` writes ``("next", "reward")``.

    Example: the protocol is structural (``runtime_checkable``): a toy model ``x' = x + u``
    satisfies it, as does :class:`~wmrl.gp.model.GPWorldModel`.

    >>> import torch
    >>> from tensordict import TensorDict
    >>> class Drift:
    ...     state_keys, action_keys, predicts_reward = ("x",), ("action",), False
    ...     def fit(self, dataset, **kwargs):
    ...         return None
    ...     def initial_state(self, observation):
    ...         return TensorDict(x=observation["observation"], batch_size=observation.batch_size)
    ...     def forward(self, td):
    ...         td[next_key("x")] = td["x"] + td["action"]
    ...         return td
    ...     __call__ = forward
    >>> model = Drift()
    >>> isinstance(model, WorldModel), isinstance(object(), WorldModel)
    (True, False)
    >>> td = model.initial_state(TensorDict(observation=torch.ones(2), batch_size=[]))
    >>> td["action"] = torch.tensor([0.5, -1.0])
    >>> model(td)["next", "x"]
    tensor([1.5000, 0.0000])
    >>> from wmrl.gp.model import GPWorldModel
    >>> isinstance(GPWorldModel(obs_dim=2, action_dim=1), WorldModel)
    True
    """

    state_keys: tuple[NestedKey, ...]
    action_keys: tuple[NestedKey, ...]
    predicts_reward: bool

    def fit(self, dataset: TensorDictBase, **kwargs: Any) -> Any:
        """Fit the model to real transitions.

        ``dataset`` holds ``"observation"``, ``"action"`` and ``("next", "observation")`` (and
        ``("next", "reward")`` for models that learn rewards) with batch dimensions flattened or
        as ``[N, T]`` sequences, depending on the backend.
        """
        ...

    def initial_state(self, observation: TensorDictBase) -> TensorDictBase:
        """Return a state TensorDict (``state_keys`` set) from a real observation TensorDict."""
        ...

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """One imagined step: read the state and action, write ``("next", *state_key)``."""
        ...

    def __call__(self, tensordict: TensorDictBase) -> TensorDictBase: ...
