"""The test suite every :class:`~wmrl.protocol.WorldModel` backend must pass.

Subclass :class:`WorldModelTestCase` in a test module and implement its factories; pytest
collects the inherited ``test_*`` methods. The suite checks the protocol's attributes, the shapes
of one imagined step over several batch shapes, that batch elements do not interact, that dtype
and device are preserved, that an initial state can be made from a real observation, and that
gradients of an objective of an imagined rollout reach the policy's parameters.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tensordict import TensorDictBase

from wmrl.protocol import WorldModel, next_key

__all__ = ["WorldModelTestCase"]


class WorldModelTestCase:
    """Base class of the per-backend world-model tests.

    Factories to implement:

    * :meth:`make_model` ``(dtype, device)`` -> a fitted world model;
    * :meth:`make_state` ``(model, batch)`` -> a state TensorDict (``model.state_keys`` set);
    * :meth:`make_policy` ``(model)`` -> a ``TensorDictModuleBase`` with trainable parameters
      that writes ``model.action_keys`` from the state;
    * :meth:`make_env` ``(model)`` -> an imagined environment stepping ``model``;
    * :meth:`make_observation` ``(model, batch)`` -> a real-observation TensorDict that
      ``model.initial_state`` accepts.

    Attributes:
        dtypes: dtypes the backend supports (each is tested).
        batch_shapes: batch shapes of the one-step shape test.

    Example: a toy backend, the deterministic model ``x' = x + u`` with reward ``-|x'|²``, and
    its test class (put it in a ``tests/test_*.py`` module and pytest runs the suite; here two of
    the inherited tests are called directly).

    >>> import torch
    >>> from tensordict import TensorDict
    >>> from tensordict.nn import TensorDictModule
    >>> from torchrl.data import Unbounded
    >>> from wmrl.envs.model_based import WorldModelEnv
    >>> class ShiftModel(torch.nn.Module):
    ...     state_keys, action_keys, predicts_reward = ("x",), ("action",), True
    ...     def fit(self, dataset):
    ...         return self
    ...     def initial_state(self, observation):
    ...         return TensorDict({"x": observation["observation"]}, observation.batch_size)
    ...     def forward(self, td):
    ...         td["next", "x"] = td["x"] + td["action"]
    ...         td["next", "reward"] = -(td["next", "x"] ** 2).sum(-1, keepdim=True)
    ...         return td
    >>> class TestShiftModel(WorldModelTestCase):
    ...     dtypes = (torch.float32, torch.float64)
    ...     def make_model(self, dtype, device):
    ...         model = ShiftModel()
    ...         model.dtype, model.device = dtype, device
    ...         return model
    ...     def make_state(self, model, batch):
    ...         x = torch.randn(*batch, 2, dtype=model.dtype, device=model.device)
    ...         return TensorDict({"x": x}, batch)
    ...     def make_policy(self, model):  # u = K x
    ...         net = torch.nn.Linear(2, 2, dtype=model.dtype, device=model.device)
    ...         return TensorDictModule(net, ["x"], ["action"])
    ...     def make_env(self, model):
    ...         return WorldModelEnv(model, Unbounded((2,)), Unbounded((2,)), state_key="x")
    ...     def make_observation(self, model, batch):
    ...         return TensorDict({"observation": torch.randn(*batch, 2)}, batch)
    >>> sorted(name for name in dir(TestShiftModel) if name.startswith("test_"))
    ... # doctest: +NORMALIZE_WHITESPACE
    ['test_batch_elements_are_independent', 'test_dtype_and_device_preserved',
     'test_gradients_reach_the_policy_through_an_imagined_rollout',
     'test_initial_state_from_observation', 'test_protocol_attributes',
     'test_step_shapes_over_batch_shapes']
    >>> suite = TestShiftModel()
    >>> suite.test_step_shapes_over_batch_shapes()  # passes: returns None
    >>> suite.test_gradients_reach_the_policy_through_an_imagined_rollout()
    """

    dtypes: tuple[torch.dtype, ...] = (torch.float32,)
    batch_shapes: tuple[tuple[int, ...], ...] = ((3,), (2, 3))

    # ---------------------------------------------------------------- factories
    def make_model(self, dtype: torch.dtype, device: torch.device) -> Any:
        """A fitted world model in ``dtype`` on ``device``."""
        raise NotImplementedError

    def make_state(self, model: Any, batch: tuple[int, ...]) -> TensorDictBase:
        """A state TensorDict of batch shape ``batch`` holding ``model.state_keys``."""
        raise NotImplementedError

    def make_policy(self, model: Any) -> Any:
        """A policy with trainable parameters that writes ``model.action_keys``."""
        raise NotImplementedError

    def make_env(self, model: Any) -> Any:
        """An imagined environment stepping ``model``."""
        raise NotImplementedError

    def make_observation(self, model: Any, batch: tuple[int, ...]) -> TensorDictBase:
        """A real-observation TensorDict of batch shape ``batch`` for ``model.initial_state``."""
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers
    def _step(self, model: Any, policy: Any, state: TensorDictBase) -> TensorDictBase:
        td = state.copy()
        td = policy(td)
        return model(td)

    def _devices(self) -> list[torch.device]:
        devs = [torch.device("cpu")]
        if torch.cuda.is_available():
            devs.append(torch.device("cuda"))
        return devs

    # ---------------------------------------------------------------- the suite
    def test_protocol_attributes(self) -> None:
        """The model satisfies :class:`~wmrl.protocol.WorldModel` with non-empty keys."""
        model = self.make_model(self.dtypes[0], torch.device("cpu"))
        assert isinstance(model, WorldModel)
        assert len(model.state_keys) >= 1
        assert len(model.action_keys) >= 1
        assert isinstance(model.predicts_reward, bool)

    def test_step_shapes_over_batch_shapes(self) -> None:
        """One step keeps each state entry's shape (and gives ``[*B, 1]`` rewards), finite."""
        model = self.make_model(self.dtypes[0], torch.device("cpu"))
        policy = self.make_policy(model)
        for batch in self.batch_shapes:
            state = self.make_state(model, batch)
            out = self._step(model, policy, state)
            for key in model.state_keys:
                nxt = out.get(next_key(key))
                assert nxt.shape == state.get(key).shape, (key, batch)
                assert torch.isfinite(nxt).all()
            if model.predicts_reward:
                assert out.get(("next", "reward")).shape == (*batch, 1)

    def test_batch_elements_are_independent(self) -> None:
        """Changing element 0 of a batch leaves the other elements' next states unchanged
        (with the same random seed, so stochastic models are covered too)."""
        model = self.make_model(self.dtypes[0], torch.device("cpu"))
        policy = self.make_policy(model)
        state = self.make_state(model, (4,))
        torch.manual_seed(0)
        a = self._step(model, policy, state.clone())
        other = state.clone()
        other[0] = self.make_state(model, (1,))[0]
        torch.manual_seed(0)
        b = self._step(model, policy, other)
        for key in model.state_keys:
            torch.testing.assert_close(a.get(next_key(key))[1:], b.get(next_key(key))[1:])

    @pytest.mark.parametrize("device_index", [0, 1])
    def test_dtype_and_device_preserved(self, device_index: int) -> None:
        """Next states keep every supported dtype, on the CPU and (if present) on CUDA."""
        devices = self._devices()
        if device_index >= len(devices):
            pytest.skip("needs a CUDA device")
        device = devices[device_index]
        for dtype in self.dtypes:
            model = self.make_model(dtype, device)
            policy = self.make_policy(model)
            out = self._step(model, policy, self.make_state(model, (2,)))
            for key in model.state_keys:
                nxt = out.get(next_key(key))
                assert nxt.dtype == dtype, (key, dtype)
                assert nxt.device.type == device.type, (key, device)

    def test_initial_state_from_observation(self) -> None:
        """``initial_state`` of a real observation batch is a state the model can step."""
        model = self.make_model(self.dtypes[0], torch.device("cpu"))
        start = model.initial_state(self.make_observation(model, (3,)))
        for key in model.state_keys:
            assert start.get(key).shape[0] == 3, key
        out = self._step(model, self.make_policy(model), start)
        for key in model.state_keys:
            assert torch.isfinite(out.get(next_key(key))).all()

    def test_gradients_reach_the_policy_through_an_imagined_rollout(self) -> None:
        """An objective of a 4-step imagined rollout has finite, non-zero policy gradients."""
        from wmrl.search import imagine

        model = self.make_model(self.dtypes[0], torch.device("cpu"))
        policy = self.make_policy(model)
        env = self.make_env(model)
        traj = imagine(env, policy, self.make_state(model, (2,)), horizon=4)
        assert traj.shape == (2, 4)
        objective = traj.get(("next", "reward")).sum()
        if not model.predicts_reward:  # a belief-dependent objective instead
            last = traj.get("next")[..., -1]
            objective = objective + sum(last.get(k).sum() for k in model.state_keys)
        objective.backward()
        grads = [p.grad for p in policy.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads)
        assert all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
