"""Filtering an observed sequence through the RSSM: prior step, then posterior step, over time.

For ``t = 1..T`` (Hafner et al. 2019, "Learning Latent Dynamics for Planning from Pixels", Eq. 1
and Fig. 2c): the prior advances the belief ``h_t = f(h_{t-1}, s_{t-1}, a_{t-1})`` and gives
``p(s_t | h_t)``; the posterior ``q(s_t | h_t, e_t)`` sees the encoded observation and its sample
``s_t`` is carried to the next step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey, unravel_key

__all__ = ["RSSMRollout"]

Step = Callable[[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]], Any]


def _takes_noise(module: torch.nn.Module) -> bool:
    return (
        hasattr(module, "sample_noise") and "noise" in inspect.signature(module.forward).parameters
    )


class RSSMRollout(TensorDictModuleBase):
    """Run the RSSM prior and posterior over the time dimension of a TensorDict.

    ``rssm_prior`` and ``rssm_posterior`` are ``TensorDictModule`` s around
    :class:`~wmrl.rssm.prior.RSSMPrior` / :class:`~wmrl.rssm.posterior.RSSMPosterior` (or the
    categorical :mod:`~wmrl.rssm.categorical` versions, or any modules with positional
    tensor inputs). The input TensorDict has batch ``[*B, T]`` (time last); the initial state and
    belief are read at ``t = 0``. Every key ``k`` that the prior reads and that a module writes as
    ``("next", k)`` is carried from one step to the next (``"state"`` and ``"belief"`` with the
    usual keys). The result holds the module outputs stacked over time and, at the root, the
    carried values each step started from (as TorchRL's ``RSSMRollout``).

    The per-step work is done on plain tensors (no TensorDict per step), and the Gaussian noise or
    categorical uniforms of all steps are drawn before the loop, so the three execution modes
    give the same outputs and gradients:

    * ``use_scan=False`` (default): a Python loop;
    * ``use_scan=True``: ``torch._higher_order_ops.scan`` (traceable by ``torch.compile``);
    * ``compile_step=True``: the loop, with the step compiled by ``torch.compile`` (first call
      compiles; best on GPUs, where it fuses the small per-step kernels).

    Args:
        rssm_prior: prior module (in_keys e.g. ``["state", "belief", "action"]``).
        rssm_posterior: posterior module (in_keys e.g. ``[("next", "belief"),
            ("next", "encoded_latents")]``).
        use_scan: run the time loop with ``scan``.
        compile_step: compile the step function (ignored with ``use_scan``).
        compile_backend: ``torch.compile`` backend (default ``"inductor"``).
        compile_mode: ``torch.compile`` mode.

    Example:
        >>> from tensordict import TensorDict
        >>> from wmrl.rssm import RSSMPrior, RSSMPosterior
        >>> prior = TensorDictModule(
        ...     RSSMPrior(None, 8, 6, 4, action_dim=2), in_keys=["state", "belief", "action"],
        ...     out_keys=[("next", "prior_mean"), ("next", "prior_std"), "_", ("next", "belief")])
        >>> post = TensorDictModule(
        ...     RSSMPosterior(8, 4, rnn_hidden_dim=6, obs_embed_dim=5),
        ...     in_keys=[("next", "belief"), ("next", "encoded_latents")],
        ...     out_keys=[("next", "posterior_mean"), ("next", "posterior_std"), ("next", "state")])
        >>> td = TensorDict({"state": torch.zeros(3, 7, 4), "belief": torch.zeros(3, 7, 6),
        ...                  "action": torch.zeros(3, 7, 2),
        ...                  "next": {"encoded_latents": torch.zeros(3, 7, 5)}}, [3, 7])
        >>> out = RSSMRollout(prior, post)(td)
        >>> out["next", "state"].shape, out["next", "prior_mean"].shape
        (torch.Size([3, 7, 4]), torch.Size([3, 7, 4]))
    """

    def __init__(
        self,
        rssm_prior: TensorDictModule,
        rssm_posterior: TensorDictModule,
        use_scan: bool = False,
        compile_step: bool = False,
        compile_backend: str = "inductor",
        compile_mode: str | None = None,
    ) -> None:
        super().__init__()
        for name, m in (("rssm_prior", rssm_prior), ("rssm_posterior", rssm_posterior)):
            if not isinstance(getattr(m, "module", None), torch.nn.Module):
                raise TypeError(f"{name} must be a TensorDictModule around an nn.Module")
        self.rssm_prior, self.rssm_posterior = rssm_prior, rssm_posterior
        self.use_scan, self.compile_step = use_scan, compile_step
        self.compile_backend, self.compile_mode = compile_backend, compile_mode
        prior_in = [unravel_key(k) for k in rssm_prior.in_keys]
        post_in = [unravel_key(k) for k in rssm_posterior.in_keys]
        written = [unravel_key(k) for k in (*rssm_prior.out_keys, *rssm_posterior.out_keys)]
        written_set = set(written)
        self._carry_keys: list[NestedKey] = [
            k for k in prior_in if unravel_key(("next", k)) in written_set
        ]
        self._input_keys: list[NestedKey] = [
            k
            for k in dict.fromkeys(prior_in + post_in)
            if k not in written_set and k not in self._carry_keys
        ]
        self._written_keys: list[NestedKey] = [k for k in dict.fromkeys(written) if k != "_"]
        self.in_keys = list(dict.fromkeys(prior_in + [k for k in post_in if k not in written_set]))
        self.out_keys = list(dict.fromkeys(written))
        self._prior_noise = _takes_noise(rssm_prior.module)
        self._post_noise = _takes_noise(rssm_posterior.module)
        self._compiled: Step | None = None

    # ------------------------------------------------------------------ one step on tensors
    def _step(
        self, carry: tuple[torch.Tensor, ...], inputs: tuple[torch.Tensor, ...]
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """``(carry, inputs_t) -> (next carry, outputs_t)``: prior then posterior, on tensors."""
        n_in = len(self._input_keys)
        values: dict[NestedKey, torch.Tensor] = dict(zip(self._carry_keys, carry))
        values.update(zip(self._input_keys, inputs[:n_in]))
        noises = list(inputs[n_in:])
        for td_module, has_noise in (
            (self.rssm_prior, self._prior_noise),
            (self.rssm_posterior, self._post_noise),
        ):
            args = [values[unravel_key(k)] for k in td_module.in_keys]
            kwargs = {"noise": noises.pop(0)} if has_noise else {}
            outs = td_module.module(*args, **kwargs)
            if isinstance(outs, torch.Tensor):
                outs = (outs,)
            values.update(zip((unravel_key(k) for k in td_module.out_keys), outs))
        next_carry = tuple(values[unravel_key(("next", k))] for k in self._carry_keys)
        outputs = carry + tuple(values[k] for k in self._written_keys)
        return next_carry, outputs

    def _step_fn(self) -> Step:
        if not self.compile_step:
            return self._step
        if self._compiled is None:
            self._compiled = torch.compile(
                self._step, backend=self.compile_backend, mode=self.compile_mode
            )
        return self._compiled

    # ------------------------------------------------------------------ time loops
    def _loop(
        self, carry: tuple[torch.Tensor, ...], xs: tuple[torch.Tensor, ...], T: int
    ) -> list[torch.Tensor]:
        step = self._step_fn()
        per_step = []
        for t in range(T):
            carry, out = step(carry, tuple(x[t] for x in xs))
            per_step.append(out)
        return [torch.stack(ys) for ys in zip(*per_step)]  # each [T, *B, ...]

    def _scan(
        self, carry: tuple[torch.Tensor, ...], xs: tuple[torch.Tensor, ...]
    ) -> list[torch.Tensor]:
        from torch._higher_order_ops.scan import scan

        def combine(c: list[torch.Tensor], x: list[torch.Tensor]) -> Any:
            nxt, out = self._step(tuple(c), tuple(x))
            # scan forbids outputs that alias its inputs or each other
            return [n.clone() for n in nxt], [o.clone() for o in out]

        _, ys = scan(combine, [c.contiguous() for c in carry], [x.contiguous() for x in xs])
        return list(ys)  # each [T, *B, ...]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if tensordict.batch_dims < 1:
            raise ValueError("RSSMRollout needs a TensorDict with a time dimension (batch [*B, T])")
        nb = tensordict.batch_dims - 1  # index of the time dimension
        T = tensordict.batch_size[-1]
        batch = tensordict.batch_size[:-1]
        carry = tuple(tensordict.get(k).select(nb, 0) for k in self._carry_keys)  # each [*B, D]
        xs = [tensordict.get(k).movedim(nb, 0) for k in self._input_keys]  # each [T, *B, D]
        like = carry[0] if carry else xs[0]
        for td_module, has_noise in (
            (self.rssm_prior, self._prior_noise),
            (self.rssm_posterior, self._post_noise),
        ):
            if has_noise:
                xs.append(td_module.module.sample_noise((T, *batch), like))  # [T, *B, S]
        ys = self._scan(carry, tuple(xs)) if self.use_scan else self._loop(carry, tuple(xs), T)
        out = tensordict.copy()
        for key, y in zip([*self._carry_keys, *self._written_keys], ys):
            out.set(key, y.movedim(0, nb))  # [*B, T, D]
        return out
