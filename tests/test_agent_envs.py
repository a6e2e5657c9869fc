"""The agent's real environments: action repeat on stateless tasks and dm_control."""

import os

import pytest
import torch
from torchrl.envs import TransformedEnv

from wmrl.agents.envs import RepeatAction, make_env
from wmrl.agents.replay import SequenceReplay
from wmrl.envs.tasks import CartPoleSwingUp, PendulumSwingUp

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "name, task_cls", [("pendulum-swingup", PendulumSwingUp), ("cartpole-swingup", CartPoleSwingUp)]
)
def test_repeat_action_moves_a_stateless_task_on(name, task_cls):
    base = task_cls(batch_size=[3], max_steps=12, seed=0, observation_noise_std=0.0)
    bound = float(base.action_high)
    actions = torch.rand(6, 3, 1, generator=torch.Generator().manual_seed(0)) * 2 - 1  # [T, B, 1]
    env = make_env(name, pixels=False, batch_size=[3], max_steps=12, action_repeat=2, seed=0)
    td = env.reset()
    ref = base.reset(td.select("true_state", "elapsed_steps").clone(), set_state=True)
    steps = 0
    while True:
        a = actions[steps]
        td = env.step(td.set("action", a))
        nxt = td["next"]
        reward = torch.zeros(3, 1)
        for _ in range(2):  # the same action twice, in the base task's units
            ref = base.step(ref.set("action", a * bound))["next"].clone()
            reward = reward + ref["reward"]
        torch.testing.assert_close(nxt["true_state"], ref["true_state"])
        torch.testing.assert_close(nxt["reward"], reward)
        steps += 1
        if nxt["done"].all():
            break
        td = nxt.clone()
    assert steps == 6  # 12 task steps, 2 per action


def test_repeat_action_stops_entries_that_are_done():
    env = TransformedEnv(PendulumSwingUp(batch_size=[2], max_steps=5, seed=0), RepeatAction(3))
    td = env.reset()
    td["elapsed_steps"][0] = 4  # entry 0 ends after one more task step
    td.set("action", torch.ones(2, 1))
    out = env.step(td.clone())["next"]
    once = PendulumSwingUp(batch_size=[2], max_steps=5, seed=0)
    ref = td.select("true_state", "elapsed_steps", "action").clone()
    first = once.step(ref.clone())["next"]
    assert out["elapsed_steps"].flatten().tolist() == [5, 3]
    assert out["done"].flatten().tolist() == [True, False]
    torch.testing.assert_close(out["true_state"][0], first["true_state"][0])
    torch.testing.assert_close(out["reward"][0], first["reward"][0])


def test_repeat_action_rejects_bad_input():
    with pytest.raises(ValueError, match="repeat"):
        RepeatAction(0)
    with pytest.raises(ValueError, match="divide the episode"):
        make_env("pendulum-swingup", pixels=False, max_steps=10, action_repeat=3)


def test_replay_capacity_below_one_episode_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no whole episode"):
        SequenceReplay(50, 8, 2, "observation", tmp_path, episode_length=100)


dm_control = pytest.importorskip("dm_control", reason="dm_control is optional")


def test_dm_control_task_batched_with_action_repeat():
    env = make_env("dmc:cartpole-swingup", pixels=False, batch_size=[2], action_repeat=4, seed=3)
    td = env.rollout(5)
    assert td.batch_size == torch.Size([2, 5])
    assert td["next", "observation"].shape == (2, 5, 5)  # position, cos, sin, 2 velocities
    assert not torch.equal(td["next", "observation"][0], td["next", "observation"][1])  # seeds
    rewards = td["next", "reward"]
    assert bool(((rewards >= 0) & (rewards <= 4)).all())  # 4 repeats of rewards in [0, 1]


@pytest.mark.skipif(os.environ.get("MUJOCO_GL") is None, reason="needs MUJOCO_GL (e.g. egl)")
def test_dm_control_pixels_render_at_64():
    td = make_env("dmc:pendulum-swingup", pixels=True, action_repeat=2, seed=0).rollout(3)
    assert td["next", "pixels"].shape == (3, 64, 64, 3)
    assert td["next", "pixels"].dtype == torch.uint8


def test_dreamer_agent_runs_on_a_dm_control_task(tmp_path):
    from wmrl.agents.dreamer import Dreamer, DreamerConfig

    config = DreamerConfig.preset(
        "debug", task="dmc:cartpole-swingup", version=3, action_repeat=8, capacity=1000,
        env_steps=2000, eval_every=2000, eval_episodes=1, checkpoint_every=2000,
    )  # fmt: skip
    agent = Dreamer(config, out_dir=tmp_path)
    try:
        agent.run()
    finally:
        agent.close()
    assert agent.env_steps == 2000 and agent.updates > 0
    final = [r for r in agent.records if r.policy == "agent"][-1]
    assert 0 <= final.eval_return <= 1000  # dm_control rewards are in [0, 1] per step
    assert (tmp_path / "checkpoint.pt").exists()


def test_uniform_start_angles_reach_the_built_in_task_and_not_dm_control():
    env = make_env("pendulum-swingup", pixels=False, batch_size=[2000], seed=0,
                   uniform_start_angles=True)  # fmt: skip
    cos = env.reset()["observation"][:, 2]  # [θ̇, sin θ, cos θ]
    assert cos.min() < -0.99 and cos.max() > 0.99  # upright and hanging starts
    plain = make_env("pendulum-swingup", pixels=False, batch_size=[2000], seed=0)
    assert plain.reset()["observation"][:, 2].min() > 0.9
    with pytest.raises(ValueError, match="built-in"):
        make_env("dmc:pendulum-swingup", pixels=False, uniform_start_angles=True)
