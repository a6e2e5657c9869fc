"""RSSMRollout: a hand loop over TorchRL's prior/posterior, and the three execution modes agree."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from wmrl.rssm import RSSMPosterior, RSSMPosteriorV3, RSSMPrior, RSSMPriorV3, RSSMRollout

torch.set_num_threads(1)

S, H, E, A, B, T = 4, 8, 5, 2, 3, 7  # TorchRL's prior needs hidden_dim == H
PRIOR_OUT = [("next", "prior_mean"), ("next", "prior_std"), "_", ("next", "belief")]
POST_IN = [("next", "belief"), ("next", "encoded_latents")]
POST_OUT = [("next", "posterior_mean"), ("next", "posterior_std"), ("next", "state")]


def make_rollout(**kwargs):
    torch.manual_seed(0)
    prior = RSSMPrior(None, hidden_dim=8, rnn_hidden_dim=H, state_dim=S, action_dim=A)
    post = RSSMPosterior(hidden_dim=8, state_dim=S, rnn_hidden_dim=H, obs_embed_dim=E)
    rollout = RSSMRollout(
        TensorDictModule(prior, ["state", "belief", "action"], PRIOR_OUT),
        TensorDictModule(post, POST_IN, POST_OUT),
        **kwargs,
    )
    return rollout, prior, post


def make_data(requires_grad=False):
    g = torch.Generator().manual_seed(1)
    enc = torch.randn(B, T, E, generator=g).requires_grad_(requires_grad)
    return TensorDict(
        {
            "state": torch.randn(B, T, S, generator=g),
            "belief": torch.randn(B, T, H, generator=g),
            "action": torch.rand(B, T, A, generator=g) * 2 - 1,
            "next": {"encoded_latents": enc},
        },
        [B, T],
    )


def test_matches_a_hand_loop_over_torchrl_modules():
    from torchrl.data import Bounded
    from torchrl.modules import RSSMPosterior as TorchRLPosterior
    from torchrl.modules import RSSMPrior as TorchRLPrior

    rollout, prior, post = make_rollout()
    t_prior = TorchRLPrior(Bounded(-1, 1, (A,)), 8, H, S, action_dim=A)
    t_post = TorchRLPosterior(8, S, rnn_hidden_dim=H, obs_embed_dim=E)
    t_prior.load_state_dict(prior.state_dict())
    t_post.load_state_dict(post.state_dict())
    data = make_data()
    torch.manual_seed(5)
    out = rollout(data)
    torch.manual_seed(5)  # the rollout draws all prior noise, then all posterior noise
    noise_p, noise_q = torch.randn(T, B, S), torch.randn(T, B, S)
    s, h = data["state"][:, 0], data["belief"][:, 0]
    for t in range(T):
        pm, ps, _, h = t_prior(s, h, data["action"][:, t], noise=noise_p[t])
        qm, qs, s = t_post(h, data["next", "encoded_latents"][:, t], noise=noise_q[t])
        for key, ref in (("prior_mean", pm), ("prior_std", ps), ("belief", h),
                         ("posterior_mean", qm), ("posterior_std", qs), ("state", s)):  # fmt: skip
            torch.testing.assert_close(out["next", key][:, t], ref, msg=f"{key} at {t}")
    # the root holds the state/belief each step started from
    torch.testing.assert_close(out["state"][:, 0], data["state"][:, 0])
    torch.testing.assert_close(out["state"][:, 1:], out["next", "state"][:, :-1])
    torch.testing.assert_close(out["belief"][:, 1:], out["next", "belief"][:, :-1])
    assert "_" not in out.keys()
    assert out.batch_size == data.batch_size
    assert not torch.equal(data["state"][:, 1:], out["state"][:, 1:])  # input left unchanged


def _outputs_and_grads(rollout, data):
    torch.manual_seed(11)
    out = rollout(data)
    loss = sum(out["next", k].pow(2).sum() for k in ("state", "belief", "prior_mean", "prior_std"))
    params = [data["next", "encoded_latents"], *rollout.parameters()]
    grads = torch.autograd.grad(loss, params)
    return out, grads


def test_scan_matches_loop_outputs_and_gradients():
    loop, _, _ = make_rollout()
    scan, _, _ = make_rollout(use_scan=True)
    out_a, grads_a = _outputs_and_grads(loop, make_data(True))
    out_b, grads_b = _outputs_and_grads(scan, make_data(True))
    for key in out_a.keys(True, True):
        torch.testing.assert_close(out_a[key], out_b[key], msg=str(key))
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)


def test_fused_and_generic_paths_agree():
    """Our Gaussian modules take the fused path; subclasses (unknown forward) the generic one."""

    class Prior(RSSMPrior):
        pass

    class Posterior(RSSMPosterior):
        pass

    fused, prior, post = make_rollout()
    prior2 = Prior(None, hidden_dim=8, rnn_hidden_dim=H, state_dim=S, action_dim=A)
    post2 = Posterior(hidden_dim=8, state_dim=S, rnn_hidden_dim=H, obs_embed_dim=E)
    prior2.load_state_dict(prior.state_dict())
    post2.load_state_dict(post.state_dict())
    out_keys = [("next", "prior_mean"), ("next", "prior_std"), ("next", "prior_state"),
                ("next", "belief")]  # fmt: skip
    fused.rssm_prior.out_keys = out_keys
    generic = RSSMRollout(
        TensorDictModule(prior2, ["state", "belief", "action"], out_keys),
        TensorDictModule(post2, POST_IN, POST_OUT),
    )
    fused = RSSMRollout(fused.rssm_prior, fused.rssm_posterior)
    assert fused._fused and not generic._fused
    out_a, grads_a = _outputs_and_grads(fused, make_data(True))
    out_b, grads_b = _outputs_and_grads(generic, make_data(True))
    assert set(out_a.keys(True, True)) == set(out_b.keys(True, True))
    for key in out_a.keys(True, True):
        torch.testing.assert_close(out_a[key], out_b[key], msg=str(key))
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)


def test_categorical_modules_in_a_scan():
    torch.manual_seed(0)
    kw = dict(hidden_dim=8, rnn_hidden_dim=H, num_categoricals=2, num_classes=3)
    prior = TensorDictModule(
        RSSMPriorV3(None, **kw, action_dim=A),
        ["state", "belief", "action"],
        [("next", "prior_logits"), "_", ("next", "belief")],
    )
    post = TensorDictModule(
        RSSMPosteriorV3(8, 2, 3, rnn_hidden_dim=H, obs_embed_dim=E),
        POST_IN,
        [("next", "posterior_logits"), ("next", "state")],
    )
    data = make_data(True)
    data["state"] = torch.zeros(B, T, 6)
    outs = []
    for use_scan in (False, True):
        torch.manual_seed(3)
        outs.append(RSSMRollout(prior, post, use_scan=use_scan)(data))
    for key in outs[0].keys(True, True):
        torch.testing.assert_close(outs[0][key], outs[1][key], msg=str(key))
    z = outs[0]["next", "state"].view(B, T, 2, 3)
    assert bool((z.sum(-1) == 1).all())


def test_compiled_step_matches_loop():
    # dynamo + AOTAutograd without code generation: fast, and checks the gradients
    loop, _, _ = make_rollout()
    compiled, _, _ = make_rollout(compile_step=True, compile_backend="aot_eager")
    out_a, grads_a = _outputs_and_grads(loop, make_data(True))
    out_b, grads_b = _outputs_and_grads(compiled, make_data(True))
    for key in out_a.keys(True, True):
        torch.testing.assert_close(out_a[key], out_b[key], rtol=1e-5, atol=1e-5, msg=str(key))
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_inductor_compiled_step_matches_loop():
    # Inductor generates C++ for the step: ~20 s on two busy cores, forward only
    loop, _, _ = make_rollout()
    compiled, _, _ = make_rollout(compile_step=True)
    with torch.no_grad():
        torch.manual_seed(2)
        out_a = loop(make_data())
        torch.manual_seed(2)
        out_b = compiled(make_data())
    for key in out_a.keys(True, True):
        torch.testing.assert_close(out_a[key], out_b[key], rtol=1e-5, atol=1e-5, msg=str(key))


def test_errors():
    rollout, prior, _ = make_rollout()
    with pytest.raises(ValueError, match="time dimension"):
        rollout(TensorDict({}, []))
    with pytest.raises(TypeError, match="TensorDictModule"):
        RSSMRollout(prior, prior)
