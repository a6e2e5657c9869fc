"""The Dreamer agent's sequence replay on disk, and its prioritised draws: the start
probabilities by brute force, the draws against them, the scores' bookkeeping and copies, and the
per-step KL that scores the steps (the agent with prioritised replay:
``tests/test_dreamer_agent.py``)."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from wmrl.agents.replay import SequenceReplay
from wmrl.agents.replay_priority import WindowPrioritySampler, window_start_probabilities
from wmrl.rssm import DreamerModelLoss, DreamerV3ModelLoss
from wmrl.rssm.functional import unimix_probs


# ---------------------------------------------------------------------- uniform draws, copies
def _episodes(first, n, L, pixels=False):
    ids = torch.arange(first, first + n, dtype=torch.float32).view(n, 1)
    t = torch.arange(L, dtype=torch.float32).view(1, L)
    code = 1000 * ids + t  # [n, L]: episode and step of each entry
    if pixels:  # a uint8-safe code of (episode, step) in every pixel
        small = (10 * t + ids).to(torch.uint8)  # [n, L]
        obs = small.view(n, L, 1, 1, 1).expand(n, L, 4, 4, 3).clone()
    else:
        obs = code.unsqueeze(-1).repeat(1, 1, 2)
    done = torch.zeros(n, L, 1, dtype=torch.bool)
    done[:, -1] = True
    return TensorDict(
        {
            ("pixels" if pixels else "observation"): obs,
            "action": code.unsqueeze(-1),
            "true_state": torch.zeros(n, L, 2),
            "next": {"reward": -code.unsqueeze(-1), "done": done},
        },
        [n, L],
    )


def test_replay_sequences_are_consecutive_within_episodes(tmp_path):
    L, T, B = 10, 4, 64
    rb = SequenceReplay(35, T, B, "observation", tmp_path / "live", episode_length=L)
    assert rb.capacity == 30  # whole episodes
    rb.extend(_episodes(0, 2, L))
    rb.extend(_episodes(2, 2, L))  # overwrites episode 0
    assert len(rb) == 30
    torch.manual_seed(0)
    batch = rb.sample()
    assert batch.batch_size == (B, T) and "true_state" not in batch.keys(True)
    a = batch["action"][..., 0]  # [B, T]
    ep, step = a // 1000, a % 1000
    assert (ep >= 1).all(), "the overwritten episode is gone"
    assert (ep == ep[:, :1]).all() and (step[:, 1:] - step[:, :-1] == 1).all()
    # next observation and reward are those of step t + 1 and t
    torch.testing.assert_close(batch["next", "observation"][..., 0], a + 1)
    torch.testing.assert_close(batch["next", "reward"][..., 0], -a)
    # a copy on disk samples the same sequences
    rb.save(tmp_path / "copy")
    rb2 = SequenceReplay(35, T, B, "observation", tmp_path / "live2", episode_length=L)
    rb2.load(tmp_path / "copy")
    torch.manual_seed(0)
    assert (rb2.sample() == batch).all()
    # the writer's cursor came back too: the next episode overwrites the same slots in both
    for r in (rb, rb2):
        r.extend(_episodes(4, 1, L))
    assert rb.buffer.writer.state_dict() == rb2.buffer.writer.state_dict()
    torch.manual_seed(1)
    batch = rb.sample()
    torch.manual_seed(1)
    assert (rb2.sample() == batch).all()
    # a copy written by TorchRL's dumps (earlier versions of save) still loads
    rb.buffer.dumps(str(tmp_path / "dumps"))
    rb3 = SequenceReplay(35, T, B, "observation", tmp_path / "live3", episode_length=L)
    rb3.load(tmp_path / "dumps")
    torch.manual_seed(1)
    assert (rb3.sample() == batch).all()
    with pytest.raises(RuntimeError, match="empty replay"):
        rb3.load(tmp_path / "copy")


def test_replay_copy_holds_only_the_filled_rows(tmp_path):
    """A checkpoint's copy grows with the data collected, not with the capacity."""
    rb = SequenceReplay(1000, 3, 2, "pixels", tmp_path / "live", episode_length=5)
    empty = tmp_path / "empty"
    rb.save(empty)
    rb.extend(_episodes(0, 1, 5, pixels=True))
    rb.save(tmp_path / "copy")
    rb.extend(_episodes(1, 1, 5, pixels=True))  # 10 steps of [3, 4, 4] uint8 frames
    rb.save(tmp_path / "copy")  # over the earlier copy
    assert (tmp_path / "copy" / "rows" / "pixels.memmap").stat().st_size == 10 * 3 * 4 * 4
    rb2 = SequenceReplay(1000, 3, 2, "pixels", tmp_path / "live2", episode_length=5)
    rb2.load(tmp_path / "copy")
    assert len(rb2) == 10 and rb2.buffer.writer.state_dict() == rb.buffer.writer.state_dict()
    assert (rb2.buffer.storage.get(slice(0, 10)) == rb.buffer.storage.get(slice(0, 10))).all()
    rb3 = SequenceReplay(1000, 3, 2, "pixels", tmp_path / "live3", episode_length=5)
    rb3.load(empty)
    assert len(rb3) == 0
    small = SequenceReplay(5, 3, 2, "pixels", tmp_path / "small", episode_length=5)
    with pytest.raises(ValueError, match="capacity"):
        small.load(tmp_path / "copy")
    (empty / "replay.pt").unlink()  # as a save cut short leaves it
    with pytest.raises(FileNotFoundError):
        rb3.load(empty)
    torch.save({"format": "other"}, empty / "replay.pt")
    with pytest.raises(ValueError, match="format"):
        rb3.load(empty)


def test_replay_pixels_become_float_images_and_bad_input_is_rejected(tmp_path):
    rb = SequenceReplay(40, 3, 2, "pixels", tmp_path / "live", episode_length=5)
    rb.extend(_episodes(0, 2, 5, pixels=True))
    batch = rb.sample()
    px = batch["next", "pixels"]
    assert px.shape == (2, 3, 3, 4, 4) and px.dtype == torch.float32
    a = batch["action"][..., 0]
    expected = (10 * (a % 1000 + 1) + a // 1000) / 255  # the code of the next step
    torch.testing.assert_close(px[:, :, 1, 2, 3], expected)
    # a row that is a piece of an episode ends there: no sequence runs into the next row
    rb2 = SequenceReplay(40, 3, 64, "observation", tmp_path / "rows", episode_length=5)
    rb2.extend(_episodes(0, 1, 5)[:, :4])
    rb2.extend(_episodes(1, 1, 5))
    a = rb2.sample()["action"][..., 0]  # [64, 3]
    assert (a // 1000 == a[:, :1] // 1000).all()
    with pytest.raises(ValueError, match="trajectories"):
        rb2.extend(_episodes(0, 1, 5)[0])
    with pytest.raises(ValueError, match="too short"):
        SequenceReplay(40, 5, 2, "pixels", tmp_path / "x", episode_length=5)


# ---------------------------------------------------------------------- prioritised draws
def _brute_probabilities(scores, done, L, f, alpha):
    """``P(t)`` written out start by start, in float64."""
    n = len(scores)
    valid = [t for t in range(n - L + 1) if not any(bool(done[t + j]) for j in range(L - 1))]
    weight = {t: sum(float(scores[t + j]) ** alpha for j in range(1, L)) for t in valid}
    total = sum(weight.values())
    probs = torch.zeros(n, dtype=torch.float64)
    for t in valid:
        prioritised = weight[t] / total if (total > 0 and L > 1) else 1.0 / len(valid)
        probs[t] = f * prioritised + (1 - f) / len(valid)
    return probs


@pytest.mark.parametrize("L,f,alpha", [(1, 0.5, 1.0), (2, 1.0, 1.0), (4, 0.5, 0.6), (6, 0.3, 2.0)])
def test_start_probabilities_match_a_start_by_start_computation(L, f, alpha):
    g = torch.Generator().manual_seed(L)
    n = 40
    scores = torch.rand(n, generator=g, dtype=torch.float64) * 5
    done = torch.rand(n, generator=g) < 0.15
    done[-1] = True
    probs = window_start_probabilities(scores, done, L, f, alpha)
    torch.testing.assert_close(probs, _brute_probabilities(scores, done, L, f, alpha))
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-12)


def test_start_probabilities_without_room_or_scores():
    done = torch.tensor([False, True, False, True])  # rows of 2 steps
    assert (window_start_probabilities(torch.ones(4), done, 3, 0.5, 1.0) == 0).all()
    assert (window_start_probabilities(torch.ones(2), done[:2], 3, 0.5, 1.0) == 0).all()
    # all scores zero: uniform over the valid starts 0 and 2
    probs = window_start_probabilities(torch.zeros(4), done, 2, 1.0, 1.0)
    torch.testing.assert_close(probs, torch.tensor([0.5, 0.0, 0.5, 0.0]))
    with pytest.raises(ValueError, match=r"\[n\]"):
        window_start_probabilities(torch.ones(4), done[:3], 2, 0.5, 1.0)


def _replay(tmp_path, name="live", capacity=60, T=3, B=8, f=1.0, alpha=1.0):
    return SequenceReplay(capacity, T, B, "observation", tmp_path / name, episode_length=10,
                          priority_fraction=f, priority_exponent=alpha)  # fmt: skip


def test_draws_follow_the_probabilities_and_stay_within_episodes(tmp_path):
    """Start frequencies over 40,000 slices lie within 5 binomial standard deviations of P(t)."""
    rb = _replay(tmp_path, B=2000, f=0.7)
    rb.extend(_episodes(0, 4, 10))  # slots 0..39, rows of 10 steps
    sampler = rb.buffer.sampler
    scores = torch.rand(40, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4
    sampler.update_priority(torch.arange(40), scores)
    probs = sampler.probabilities(rb.buffer.storage)  # [40]
    torch.manual_seed(0)
    counts = torch.zeros(40, dtype=torch.float64)
    for _ in range(20):
        batch, slots = rb.sample_with_slots()  # [B, T]
        a = batch["action"][..., 0]
        assert ((a // 1000) == (a[:, :1] // 1000)).all(), "a slice crosses an episode end"
        assert (a.diff(dim=1) == 1).all()
        # the slots are those of the next observations
        torch.testing.assert_close(batch["next", "observation"][..., 0], a + 1)
        assert (slots.diff(dim=1) == 1).all()
        counts += torch.bincount(slots[:, 0] - 1, minlength=40).double()
    M = counts.sum()
    tol = 5 * (probs * (1 - probs) / M).sqrt() + 1e-12
    assert ((counts / M - probs).abs() <= tol).all()
    assert (counts[probs == 0] == 0).all()


def test_a_badly_predicted_step_draws_every_slice_that_holds_it(tmp_path):
    rb = _replay(tmp_path, T=3, f=1.0)
    rb.extend(_episodes(0, 2, 10))
    sampler = rb.buffer.sampler
    scores = torch.zeros(20, dtype=torch.float64)
    scores[15] = 1.0  # the only scored step
    sampler.update_priority(torch.arange(20), scores)
    probs = sampler.probabilities(rb.buffer.storage)
    # slices of 4 steps hold slot 15 among their scored steps from the starts 12, 13 and 14
    torch.testing.assert_close(probs[12:15], torch.full((3,), 1 / 3, dtype=torch.float64))
    assert probs.sum() == pytest.approx(1.0) and probs[[*range(12), *range(15, 20)]].sum() == 0


def test_new_steps_get_the_mean_score_of_the_kept_ones(tmp_path):
    rb = _replay(tmp_path, capacity=20)  # two episodes of 10
    sampler = rb.buffer.sampler
    rb.extend(_episodes(0, 1, 10))
    assert (sampler.scores[:10] == 1).all() and sampler.filled == 10
    sampler.update_priority(torch.arange(10), torch.arange(10.0))  # mean 4.5
    rb.extend(_episodes(1, 1, 10))
    assert (sampler.scores[10:20] == 4.5).all() and sampler.filled == 20
    sampler.update_priority(torch.arange(10, 20), torch.full((10,), 2.0))
    rb.extend(_episodes(2, 1, 10))  # overwrites slots 0..9: the mean is the kept slots' 2.0
    assert (sampler.scores[:10] == 2.0).all() and sampler.filled == 20


def test_scores_are_validated(tmp_path):
    rb = _replay(tmp_path)
    rb.extend(_episodes(0, 1, 10))
    sampler = rb.buffer.sampler
    with pytest.raises(ValueError, match="finite and non-negative"):
        sampler.update_priority(torch.arange(2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="finite and non-negative"):
        sampler.update_priority(torch.arange(2), torch.tensor([1.0, float("nan")]))
    with pytest.raises(IndexError, match="filled storage"):
        sampler.update_priority(torch.tensor([10]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="2 slots but 3 scores"):
        sampler.update_priority(torch.arange(2), torch.ones(3))
    with pytest.raises(ValueError, match="differ"):
        rb.rescore(torch.arange(2), torch.ones(3))
    with pytest.raises(ValueError):
        WindowPrioritySampler(10, 3, fraction=1.5)
    with pytest.raises(ValueError):
        WindowPrioritySampler(10, 3, fraction=0.5, exponent=-1.0)
    with pytest.raises(ValueError):
        SequenceReplay(60, 3, 2, "observation", tmp_path / "bad", priority_fraction=-0.1)
    uniform = _replay(tmp_path, name="uniform", f=0.0)
    assert not uniform.prioritized
    with pytest.raises(RuntimeError, match="prioritised replay"):
        uniform.rescore(torch.arange(2), torch.ones(2))


def test_a_replay_copy_keeps_the_scores_and_samples_the_same(tmp_path):
    rb = _replay(tmp_path)
    rb.extend(_episodes(0, 3, 10))
    rb.rescore(torch.arange(30), torch.linspace(0, 3, 30))
    rb.save(tmp_path / "copy")
    rb2 = _replay(tmp_path, name="live2")
    rb2.load(tmp_path / "copy")
    assert torch.equal(rb2.buffer.sampler.scores, rb.buffer.sampler.scores)
    torch.manual_seed(3)
    batch, slots = rb.sample_with_slots()
    torch.manual_seed(3)
    batch2, slots2 = rb2.sample_with_slots()
    assert (batch == batch2).all() and torch.equal(slots, slots2)
    # a copy of a uniform replay loads into a prioritised one with fresh scores
    plain = _replay(tmp_path, name="plain", f=0.0)
    plain.extend(_episodes(0, 2, 10))
    plain.save(tmp_path / "plain-copy")
    rb3 = _replay(tmp_path, name="live3")
    rb3.load(tmp_path / "plain-copy")
    assert rb3.buffer.sampler.filled == 20 and (rb3.buffer.sampler.scores == 1).all()
    # and the sampler's own TorchRL dumps / loads round trip
    rb.buffer.sampler.dumps(tmp_path)
    other = WindowPrioritySampler(60, 4, fraction=1.0)
    other.loads(tmp_path)
    assert torch.equal(other.scores, rb.buffer.sampler.scores) and other.filled == 30


# ---------------------------------------------------------------------- the score: per-step KL
class _Passthrough(torch.nn.Module):
    """A 'world model' that leaves the given distribution parameters and predictions as they
    are and predicts a zero reward (``TensorDictModule``-like: reads and returns the
    tensordict)."""

    def forward(self, td):
        td.set(("next", "reward"), torch.zeros_like(td.get(("next", "true_reward"))))
        return td


def test_v1_step_kl_is_the_unclamped_per_step_kl_the_loss_averages():
    B, T, S = 2, 5, 3
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(B, T, S, generator=g), torch.randn(B, T, S, generator=g)
    sq, sp = torch.rand(B, T, S, generator=g) + 0.5, torch.rand(B, T, S, generator=g) + 0.5
    td = TensorDict({"next": {"posterior_mean": mq, "posterior_std": sq, "prior_mean": mp,
                              "prior_std": sp, "pixels": torch.zeros(B, T, 2),
                              "reco_pixels": torch.zeros(B, T, 2), "reward": torch.zeros(B, T, 1)}},
                    [B, T])  # fmt: skip
    loss = DreamerModelLoss(_Passthrough(), free_nats=0.0)
    loss_td, out = loss(td)
    step = loss.step_kl(out)  # [B, T]
    by_hand = (torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).sum(-1)
    torch.testing.assert_close(step, by_hand)
    torch.testing.assert_close(loss_td["loss_model_kl"], step.mean())


def test_v3_step_kl_is_the_unclamped_per_step_kl_the_loss_averages():
    B, T, C, K = 2, 5, 3, 4
    g = torch.Generator().manual_seed(1)
    post, prior = torch.randn(B, T, C, K, generator=g), torch.randn(B, T, C, K, generator=g)
    td = TensorDict({"next": {"posterior_logits": post, "prior_logits": prior,
                              "pixels": torch.zeros(B, T, 2), "reco_pixels": torch.zeros(B, T, 2),
                              "reward_logits": torch.zeros(B, T, 255),
                              "reward": torch.zeros(B, T, 1)}}, [B, T])  # fmt: skip
    loss = DreamerV3ModelLoss(_Passthrough(), free_bits=0.0)
    loss_td, out = loss(td)
    step = loss.step_kl(out)  # [B, T]
    q, p = unimix_probs(post, 0.01), unimix_probs(prior, 0.01)
    torch.testing.assert_close(step, (q * (q / p).log()).sum((-2, -1)))
    torch.testing.assert_close(loss_td["kl_dynamic"], step.mean())
    assert (step >= 0).all()
