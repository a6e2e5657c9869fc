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

from wmrl.rssm.functional import gaussian_rsample
from wmrl.rssm.posterior import RSSMPosterior
from wmrl.rssm.prior import RSSMPrior, check_inputs

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
    categorical uniforms of all steps are drawn before the loop (prior noise, then posterior
    noise), so the three execution modes give the same outputs and gradients. With the Gaussian
    :class:`~wmrl.rssm.prior.RSSMPrior` and :class:`~wmrl.rssm.posterior.RSSMPosterior` wired
    as usual, the step is fused: the action's and the embedding's shares of the first layers are
    computed for the whole sequence before the loop, and the prior head runs once on all beliefs
    after it (same values as the step-by-step modules). The modes:

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
        self._fused = self._fusable(prior_in, post_in, written)
        self._compiled: Step | None = None

    def _fusable(self, prior_in: list, post_in: list, written: list) -> bool:
        """Gaussian prior and posterior wired as usual: the fused path applies."""
        if not (
            type(self.rssm_prior.module) is RSSMPrior
            and type(self.rssm_posterior.module) is RSSMPosterior
        ):
            return False
        p_out = written[: len(self.rssm_prior.out_keys)]
        q_out = written[len(p_out) :]
        return (
            len(prior_in) == 3
            and len(p_out) == 4
            and len(post_in) == 2
            and len(q_out) == 3
            and post_in[0] == p_out[3]  # the posterior reads the new belief
            and unravel_key(("next", prior_in[0])) == q_out[2]  # the state is carried
            and unravel_key(("next", prior_in[1])) == p_out[3]  # the belief is carried
            and prior_in[2] not in written
            and post_in[1] not in written
        )

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

    def _fused_step(
        self, carry: tuple[torch.Tensor, ...], inputs: tuple[torch.Tensor, ...]
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """The step of the fused path: belief update and posterior only.

        The action and embedding shares of the first layers come precomputed for the whole
        sequence; the prior head runs once on all beliefs after the loop.
        """
        prior, post = self.rssm_prior.module, self.rssm_posterior.module
        action_projection, embedding_projection, noise = inputs
        belief = prior.advance(carry[0], carry[1], action_projection)  # [*B, H]
        mean, std, state = post.sample_from(belief, embedding_projection, noise)  # [*B, S] x 3
        return (state, belief), (*carry, belief, mean, std, state)

    def _step_fn(self) -> Step:
        step = self._fused_step if self._fused else self._step
        if not self.compile_step:
            return step
        if self._compiled is None:
            self._compiled = torch.compile(
                step, backend=self.compile_backend, mode=self.compile_mode
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

        step = self._fused_step if self._fused else self._step

        def combine(c: list[torch.Tensor], x: list[torch.Tensor]) -> Any:
            nxt, out = step(tuple(c), tuple(x))
            # scan forbids outputs that alias its inputs or each other
            return [n.clone() for n in nxt], [o.clone() for o in out]

        _, ys = scan(combine, [c.contiguous() for c in carry], [x.contiguous() for x in xs])
        return list(ys)  # each [T, *B, ...]

    def _run(self, carry: tuple[torch.Tensor, ...], xs: list[torch.Tensor], T: int) -> list:
        return self._scan(carry, tuple(xs)) if self.use_scan else self._loop(carry, tuple(xs), T)

    def _forward_fused(
        self, tensordict: TensorDictBase, carry: tuple[torch.Tensor, ...], nb: int
    ) -> dict[NestedKey, torch.Tensor]:
        prior, post = self.rssm_prior.module, self.rssm_posterior.module
        p_in = [unravel_key(k) for k in self.rssm_prior.in_keys]
        p_out = [unravel_key(k) for k in self.rssm_prior.out_keys]
        q_in = [unravel_key(k) for k in self.rssm_posterior.in_keys]
        q_out = [unravel_key(k) for k in self.rssm_posterior.out_keys]
        action = tensordict.get(p_in[2]).movedim(nb, 0)  # [T, *B, A]
        embedding = tensordict.get(q_in[1]).movedim(nb, 0)  # [T, *B, E]
        check_inputs(
            state=(carry[0], prior.state_dim),
            belief=(carry[1], prior.rnn_hidden_dim),
            action=(action[0], prior.action_dim),
            obs_embedding=(embedding[0], post.obs_embed_dim),
        )
        T, batch = action.shape[0], carry[0].shape[:-1]
        noise_p = prior.sample_noise((T, *batch), carry[0])  # [T, *B, S]
        noise_q = post.sample_noise((T, *batch), carry[0])  # [T, *B, S]
        xs = [prior.project_action(action), post.project_embedding(embedding), noise_q]
        s_in, h_in, h, q_mean, q_std, s = self._run(carry, xs, T)  # each [T, *B, D]
        p_mean, p_std = prior.distribution(h)  # [T, *B, S] x 2
        p_sample = gaussian_rsample(p_mean, p_std, noise_p)  # [T, *B, S]
        values = dict(zip(p_in[:2], (s_in, h_in)))
        values.update(zip(p_out, (p_mean, p_std, p_sample, h)))
        values.update(zip(q_out, (q_mean, q_std, s)))
        return values

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Filter a sequence ``[*B, T]``; returns a copy with the per-step outputs written."""
        if tensordict.batch_dims < 1:
            raise ValueError("RSSMRollout needs a TensorDict with a time dimension (batch [*B, T])")
        nb = tensordict.batch_dims - 1  # index of the time dimension
        T = tensordict.batch_size[-1]
        batch = tensordict.batch_size[:-1]
        carry = tuple(tensordict.get(k).select(nb, 0) for k in self._carry_keys)  # each [*B, D]
        if self._fused:
            values = self._forward_fused(tensordict, carry, nb)
        else:
            xs = [tensordict.get(k).movedim(nb, 0) for k in self._input_keys]  # each [T, *B, D]
            like = carry[0] if carry else xs[0]
            for td_module, has_noise in (
                (self.rssm_prior, self._prior_noise),
                (self.rssm_posterior, self._post_noise),
            ):
                if has_noise:
                    xs.append(td_module.module.sample_noise((T, *batch), like))  # [T, *B, S]
            ys = self._run(carry, xs, T)
            values = dict(zip([*self._carry_keys, *self._written_keys], ys))
        out = tensordict.copy()
        for key, y in values.items():
            if key != "_":
                out.set(key, y.movedim(0, nb))  # [*B, T, D]
        return out
