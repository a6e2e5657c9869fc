"""PILCO: data-efficient policy search with a GP world model (Deisenroth & Rasmussen 2011).

One run is: ``random_trials`` episodes with uniformly random actions, then per trial

1. fit :class:`~wmrl.gp.GPWorldModel` (one GP per state dimension on the state change, sparse
   FITC once the data outgrow ``sparse_threshold``) to every transition seen so far;
2. optimise the policy (an RBF controller squashed into the action bounds) from the start
   distribution by analytic policy search: the sum of expected costs of ``H`` moment-matched
   Gaussian state predictions, minimised with L-BFGS through :class:`~wmrl.search.PolicySearch`;
3. run the policy once on the real environment (its transitions join the data) and on
   ``test_episodes`` separate evaluation episodes, which decide whether the task is solved.

A checkpoint (data, GP, policy, history) is written atomically after every trial; each trial's
randomness is seeded from ``(seed, trial)``, so :meth:`PILCO.resume` continues an interrupted run
exactly as if it had not stopped.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tqdm.auto import tqdm

from wmrl.agents.checkpoint import load_checkpoint, save_checkpoint
from wmrl.control import RBFController, SquashedController
from wmrl.costs import ExponentialQuadraticCost
from wmrl.envs.model_based import ImaginedEnv
from wmrl.gaussian import check_gaussian
from wmrl.gp import GPWorldModel
from wmrl.search import PolicySearch, expected_cost_objective, imagine

__all__ = ["PILCOConfig", "PILCO", "TrialRecord"]


@dataclass
class PILCOConfig:
    """Settings of a PILCO run.

    Attributes:
        task: a built-in task name (``"cartpole-swingup"``, ``"pendulum-swingup"``).
        seed: seeds the environment, the policy initialisation and every trial.
        random_trials: episodes with uniformly random actions before learning starts.
        max_trials: learning trials after the random ones.
        horizon: prediction horizon ``H`` in steps (default: the task's episode length).
        num_basis: RBF controller basis functions.
        policy_steps: L-BFGS iterations per policy optimisation.
        policy_restarts: L-BFGS memory resets per optimisation (each from the best so far).
        gp_restarts: GP hyper-parameter fits from perturbed initialisations (best kept).
        sparse_threshold: data size above which the GP becomes sparse (FITC).
        num_inducing: FITC inducing inputs.
        test_episodes: real evaluation episodes per trial (not used for learning).
        success_threshold: solved episodes among ``test_episodes`` needed to call a trial solved.
        stop_when_solved: end the run at the first solved trial.
        progress: show progress bars.

    Example: the ``"debug"`` preset shrinks the budgets (one learning trial, 10-step horizon,
    5 basis functions, 3 L-BFGS steps); keyword arguments override it.

    >>> cfg = PILCOConfig.preset("debug", task="pendulum-swingup", seed=3)
    >>> cfg.task, cfg.seed, cfg.max_trials, cfg.horizon, cfg.num_basis, cfg.policy_steps
    ('pendulum-swingup', 3, 1, 10, 5, 3)
    >>> PILCOConfig.preset("tiny")
    Traceback (most recent call last):
        ...
    ValueError: unknown preset 'tiny'; choose from ['debug', 'default']
    """

    task: str = "cartpole-swingup"
    seed: int = 0
    random_trials: int = 1
    max_trials: int = 10
    horizon: int | None = None
    num_basis: int = 50
    policy_steps: int = 75
    policy_restarts: int = 2
    gp_restarts: int = 2
    sparse_threshold: int = 400
    num_inducing: int = 300
    test_episodes: int = 10
    success_threshold: int = 9
    stop_when_solved: bool = True
    progress: bool = True

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PILCOConfig:
        """``"default"`` or ``"debug"`` (tiny budgets for smoke tests), then ``overrides``."""
        presets: dict[str, dict[str, Any]] = {
            "default": {},
            "debug": dict(
                max_trials=1,
                horizon=10,
                num_basis=5,
                policy_steps=3,
                policy_restarts=1,
                gp_restarts=1,
                test_episodes=2,
                success_threshold=2,
                progress=False,
            ),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


@dataclass
class TrialRecord:
    """What one trial measured (costs are sums over the episode, lower is better).

    Attributes:
        trial: index from 0 (random trials first).
        random: the trial acted with uniformly random actions (no model, no search).
        data_size: transitions in the GP's data after the trial.
        predicted_cost: the policy search's expected cost (``nan`` for random trials).
        real_cost: cost of the trial's real episode.
        test_cost: mean cost of the evaluation episodes (``nan`` for random trials).
        solved_episodes, solved: evaluation episodes solved, and whether enough were.
        interaction_s: real interaction time so far, in simulated seconds.
        fit_s, search_s, wall_s, cpu_s: seconds spent fitting, searching, in all (wall clock)
            and on the CPU.
        evaluations: objective evaluations of the policy search.

    Example: the record of a random trial (one 4 s pendulum episode, no learning).

    >>> agent = PILCO(PILCOConfig.preset("debug", task="pendulum-swingup"))
    >>> r = agent.trial()
    >>> r.trial, r.random, r.data_size, r.interaction_s, r.solved, math.isnan(r.predicted_cost)
    (0, True, 40, 4.0, False, True)
    """

    trial: int
    random: bool
    data_size: int
    predicted_cost: float
    real_cost: float
    test_cost: float
    solved_episodes: int
    solved: bool
    interaction_s: float
    fit_s: float
    search_s: float
    wall_s: float
    evaluations: int = 0
    cpu_s: float = 0.0


def make_task(name: str, **kwargs: Any) -> Any:
    """Construct a built-in task by name."""
    from wmrl.envs.tasks import CartPoleSwingUp, PendulumSwingUp

    tasks: dict[str, Callable[..., Any]] = {
        "cartpole-swingup": CartPoleSwingUp,
        "pendulum-swingup": PendulumSwingUp,
    }
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(tasks)}")
    return tasks[name](**kwargs)


class PILCO:
    """The PILCO learning loop on a task with a low-dimensional observation.

    Args:
        config: run settings.
        out_dir: where checkpoints, logs and figures go (``None``: nothing is written).
        env_fn: ``batch_size -> env`` building the real environment (default: the built-in task
            ``config.task``). The environment must expose the task attributes used here
            (``start_mean``, ``start_cov``, ``angle_dims``, ``cost_spec()``, ``is_solved``,
            ``action_low``/``action_high``, ``max_steps``, ``dt``).
        logger: a TorchRL logger (``log_scalar(name, value, step)``); optional.

    Example:
        >>> cfg = PILCOConfig.preset("debug", task="pendulum-swingup")
        >>> agent = PILCO(cfg)
        >>> records = agent.run()  # doctest: +SKIP
    """

    def __init__(
        self,
        config: PILCOConfig,
        out_dir: str | Path | None = None,
        env_fn: Callable[[list[int]], Any] | None = None,
        logger: Any = None,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.env_fn = env_fn or (lambda batch_size: make_task(config.task, batch_size=batch_size))
        self.logger = logger
        self.env = self.env_fn([])
        self.test_env = self.env_fn([config.test_episodes])
        task = self.env
        self.obs_dim = int(task.start_mean.shape[-1])
        self.action_dim = int(task.action_spec.shape[-1])
        self.horizon = config.horizon or int(task.max_steps)
        self.angle_dims = tuple(task.angle_dims)
        self.dtype = torch.float64
        target, weights = task.cost_spec()
        self.cost = ExponentialQuadraticCost(
            target=target.to(self.dtype),
            weights=weights.to(self.dtype),
            reduction="none",
            angle_dims=self.angle_dims,
            validate=False,
        )
        self.u_max = torch.as_tensor(task.action_high, dtype=self.dtype).reshape(self.action_dim)
        self.start_mean = task.start_mean.to(self.dtype)
        self.start_cov = task.start_cov.to(self.dtype)
        self.policy = self._new_policy()
        self.model: GPWorldModel | None = None
        self.data: TensorDict | None = None
        self.records: list[TrialRecord] = []
        self.last_prediction: TensorDict | None = None
        self.last_episode: TensorDict | None = None

    # ------------------------------------------------------------------ building blocks
    def _seed(self, trial: int) -> int:
        return self.config.seed * 10_007 + trial

    def _new_policy(self) -> SquashedController:
        g = torch.Generator().manual_seed(self._seed(-1))
        rbf = RBFController(
            self.obs_dim,
            self.action_dim,
            num_basis=self.config.num_basis,
            angle_dims=self.angle_dims,
            validate=False,  # the hot path of policy search; the start belief is checked once
        ).to(self.dtype)
        rbf.reset_parameters(self.start_mean, self.start_cov, generator=g)
        return SquashedController(rbf, self.u_max)

    def _new_model(self) -> GPWorldModel:
        c = self.config
        return GPWorldModel(
            self.obs_dim,
            self.action_dim,
            angle_dims=self.angle_dims,
            sparse_threshold=c.sparse_threshold,
            num_inducing=c.num_inducing,
            restarts=c.gp_restarts,
            validate_args=False,
        )

    def start_belief(self) -> TensorDict:
        """The start distribution as a belief ``[1]``: mean ``[1, D]``, covariance ``[1, D, D]``."""
        check_gaussian(self.start_mean, self.start_cov, self.obs_dim, name="start distribution")
        return TensorDict(
            {"observation": {"mean": self.start_mean[None], "var": self.start_cov[None]}}, [1]
        )

    def _random_policy(self, generator: torch.Generator) -> Callable[[TensorDictBase], Any]:
        spec = self.env.action_spec
        low = torch.as_tensor(self.env.action_low, dtype=spec.dtype)
        high = torch.as_tensor(self.env.action_high, dtype=spec.dtype)

        def act(td: TensorDictBase) -> TensorDictBase:
            u = torch.rand(*td.batch_size, self.action_dim, generator=generator, dtype=spec.dtype)
            td.set("action", low + (high - low) * u)
            return td

        return act

    def _episode(self, env: Any, policy: Any, seed: int) -> TensorDict:
        env.set_seed(seed)
        with torch.no_grad():
            return env.rollout(self.env.max_steps, policy, break_when_any_done=False)

    @staticmethod
    def _transitions(episode: TensorDictBase) -> TensorDict:
        return TensorDict(
            {
                "observation": episode["observation"].to(torch.float64),
                "action": episode["action"].to(torch.float64),
                ("next", "observation"): episode["next", "observation"].to(torch.float64),
            },
            batch_size=episode.batch_size,
        ).reshape(-1)

    def _imagined_env(self, model: GPWorldModel) -> ImaginedEnv:
        return ImaginedEnv(
            model,
            obs_dim=self.obs_dim,
            action_dim=self.action_dim,
            dtype=self.dtype,
            reward_module=self.cost,
        )

    # ------------------------------------------------------------------ the loop
    @property
    def trials_done(self) -> int:
        """Trials run so far, random ones included."""
        return len(self.records)

    @property
    def solved(self) -> bool:
        """Whether the last trial solved the task."""
        return bool(self.records) and self.records[-1].solved

    def run(self) -> list[TrialRecord]:
        """Run (or continue) until solved or out of trials; returns every trial's record."""
        c = self.config
        total = c.random_trials + c.max_trials
        bar = tqdm(
            total=total, initial=self.trials_done, desc="PILCO trials", disable=not c.progress
        )
        while self.trials_done < total and not (c.stop_when_solved and self.solved):
            record = self.trial()
            tqdm.write(self.describe(record), file=sys.stderr)
            bar.update(1)
            bar.set_postfix(cost=f"{record.real_cost:.2f}", solved=record.solved_episodes)
        bar.close()
        return self.records

    def trial(self) -> TrialRecord:
        """One trial: (fit, search) then a real episode and the evaluation episodes."""
        c = self.config
        k = self.trials_done
        t0, c0 = time.perf_counter(), time.process_time()
        torch.manual_seed(self._seed(k))
        is_random = k < c.random_trials
        fit_s = search_s = 0.0
        evaluations = 0
        predicted = math.nan
        if is_random:
            policy = self._random_policy(torch.Generator().manual_seed(self._seed(k)))
        else:
            t1 = time.perf_counter()
            self.model = self._new_model()
            self.model.fit(self.data)
            fit_s = time.perf_counter() - t1
            t1 = time.perf_counter()
            env = self._imagined_env(self.model)
            search = PolicySearch(
                env,
                self.policy,
                expected_cost_objective,
                self.horizon,
                optimizer="lbfgs",
                progress=c.progress,
            )
            result = search.run(
                self.start_belief(),
                c.policy_steps,
                restarts=c.policy_restarts,
                desc=f"policy search (trial {k})",
            )
            predicted = result.best_loss
            evaluations = result.evaluations
            search_s = time.perf_counter() - t1
            with torch.no_grad():
                self.last_prediction = imagine(env, self.policy, self.start_belief(), self.horizon)
            policy = self.policy.as_policy()

        episode = self._episode(self.env, policy, self._seed(k))
        self.last_episode = episode
        new = self._transitions(episode)
        self.data = new if self.data is None else torch.cat([self.data, new])
        real_cost = float(-episode["next", "reward"].sum())

        if is_random:
            test_cost, n_solved = math.nan, 0
        else:
            test = self._episode(self.test_env, policy, self._seed(k) + 1_000_000)
            test_cost = float(-test["next", "reward"].sum((-2, -1)).mean())
            # the criterion is on the true (noise-free) states when the task exposes them
            key = ("next", "true_state")
            states = test[key] if key in test.keys(True) else test["next", "observation"]
            n_solved = int(self.test_env.is_solved(states).sum())
        record = TrialRecord(
            trial=k,
            random=is_random,
            data_size=self.data.shape[0],
            predicted_cost=predicted,
            real_cost=real_cost,
            test_cost=test_cost,
            solved_episodes=n_solved,
            solved=(not is_random) and n_solved >= c.success_threshold,
            interaction_s=(k + 1) * self.env.max_steps * float(self.env.dt),
            fit_s=fit_s,
            search_s=search_s,
            wall_s=time.perf_counter() - t0,
            evaluations=evaluations,
            cpu_s=time.process_time() - c0,
        )
        self.records.append(record)
        self._log(record)
        if self.out_dir is not None:
            self.save(self.out_dir / "checkpoint.pt")
        return record

    def _log(self, record: TrialRecord) -> None:
        if self.logger is None:
            return
        for name, value in dataclasses.asdict(record).items():
            if name != "trial" and isinstance(value, int | float) and math.isfinite(value):
                self.logger.log_scalar(name, float(value), step=record.trial)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Config, trial records, data, policy, GP and RNG state (what a checkpoint holds).

        >>> agent = PILCO(PILCOConfig.preset("debug", task="pendulum-swingup"))
        >>> sorted(agent.state_dict())
        ['config', 'data', 'model', 'policy', 'records', 'torch_rng']
        """
        return {
            "config": dataclasses.asdict(self.config),
            "records": [dataclasses.asdict(r) for r in self.records],
            "data": None if self.data is None else self.data.to_dict(),
            "policy": self.policy.state_dict(),
            "model": None if self.model is None else self.model.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint atomically."""
        return save_checkpoint(path, self.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` into an agent built with the same config.

        >>> cfg = PILCOConfig.preset("debug", task="pendulum-swingup")
        >>> a, b = PILCO(cfg), PILCO(cfg)
        >>> _ = a.trial()  # a random trial: 40 transitions
        >>> b.load_state_dict(a.state_dict())
        >>> b.trials_done, b.data.shape, torch.equal(b.data["action"], a.data["action"])
        (1, torch.Size([40]), True)
        """
        self.records = [TrialRecord(**r) for r in state["records"]]
        self.data = (
            None if state["data"] is None else TensorDict.from_dict(state["data"], batch_dims=1)
        )
        self.policy.load_state_dict(state["policy"])
        if state["model"] is not None:
            self.model = self._new_model()
            self.model.load_state_dict(state["model"])
        torch.set_rng_state(state["torch_rng"])

    @classmethod
    def resume(
        cls,
        out_dir: str | Path,
        env_fn: Callable[[list[int]], Any] | None = None,
        logger: Any = None,
        **overrides: Any,
    ) -> PILCO:
        """Rebuild an agent from ``out_dir/checkpoint.pt`` (config overrides allowed, e.g. a
        larger ``max_trials``)."""
        state = load_checkpoint(Path(out_dir) / "checkpoint.pt")
        config = PILCOConfig(**{**state["config"], **overrides})
        agent = cls(config, out_dir=out_dir, env_fn=env_fn, logger=logger)
        agent.load_state_dict(state)
        return agent

    @staticmethod
    def describe(r: TrialRecord) -> str:
        """One line per trial for the console."""
        kind = "random" if r.random else f"solved {r.solved_episodes}"
        return (
            f"trial {r.trial:2d} ({kind}): real cost {r.real_cost:6.2f}, predicted "
            f"{r.predicted_cost:6.2f}, test {r.test_cost:6.2f}; fit {r.fit_s:5.1f} s, "
            f"search {r.search_s:6.1f} s ({r.evaluations} evaluations), data {r.data_size}"
        )

    def summary(self) -> str:
        """``solved: yes|no, trials: K, interaction: S s, wall: W s`` (K counts every trial).

        ``wall`` sums the trials' wall-clock times (across resumed invocations).
        """
        k = self.trials_done
        inter = self.records[-1].interaction_s if self.records else 0.0
        wall = sum(r.wall_s for r in self.records)
        return (
            f"solved: {'yes' if self.solved else 'no'}, trials: {k}, "
            f"interaction: {inter:.1f} s, wall: {wall:.1f} s"
        )
