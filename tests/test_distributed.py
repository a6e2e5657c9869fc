"""Beyond one process: data-parallel training over gloo, and multi-process collection."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

torch.set_num_threads(1)

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this build of torch",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    from wmrl.agents.distributed import all_reduce_mean, average_gradients, init_distributed
    from wmrl.agents.dreamer import Dreamer, DreamerConfig

    _join(rank, world, port)
    # the gradient averaging on its own
    info = init_distributed(device="cpu")
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    a.grad = torch.full((3,), float(rank + 1))
    if rank == 0:  # rank 1 has no gradient for b: it counts as zero
        b.grad = torch.ones(2, 2, dtype=torch.float64) * 4
    average_gradients([a, b])
    mean = all_reduce_mean(torch.tensor([float(rank)]))
    grads = {"a": a.grad, "b": b.grad, "mean": mean, "rank": info.rank}
    # the agent, data parallel in the same process group
    cfg = DreamerConfig.preset("debug", task="pendulum-swingup", version=3, env_steps=24,
                               distributed=True, device="cpu")  # fmt: skip
    agent = Dreamer(cfg, out_dir=f"{out}/run")
    before = torch.cat([p.detach().flatten().clone() for p in agent.nets.world_model_parameters()])
    agent.run()
    sd = agent.state_dict()
    torch.save(
        {
            "before": before,
            "nets": sd["nets"],
            "objective": sd["objective"],
            "actions": agent.replay.buffer.storage[: len(agent.replay)]["action"].clone(),
            "updates": agent.updates,
            "records": len(agent.records),
            "grads": grads,
        },
        f"{out}/{rank}.pt",
    )
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Two CPU processes (gloo) that average test gradients, then train a tiny Dreamer
    data-parallel for two iterations; each saves what it ended with."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


@needs_gloo
def test_average_gradients_over_two_gloo_processes(two_processes):
    for rank in range(2):
        r = torch.load(two_processes / f"{rank}.pt")["grads"]
        assert r["rank"] == rank
        torch.testing.assert_close(r["a"], torch.full((3,), 1.5))
        torch.testing.assert_close(r["b"], torch.full((2, 2), 2.0, dtype=torch.float64))
        torch.testing.assert_close(r["mean"], torch.tensor([0.5]))


@needs_gloo
def test_data_parallel_dreamer_keeps_parameters_identical(two_processes):
    tmp_path = two_processes
    r0, r1 = (torch.load(tmp_path / f"{k}.pt") for k in range(2))
    assert r0["updates"] == r1["updates"] > 0
    # each process collected its own experience ...
    assert not torch.equal(r0["actions"], r1["actions"])
    # ... yet the averaged gradients keep every parameter and statistic identical
    for part in r0["nets"]:
        for name, t in r0["nets"][part].items():
            assert torch.equal(t, r1["nets"][part][name]), f"{part}.{name}"
    for name, t in r0["objective"].items():
        assert torch.equal(t, r1["objective"][name]), name
    after = torch.cat([r0["nets"][k][n].flatten() for k in ("encoder", "decoder", "prior",
                       "posterior", "reward") for n in r0["nets"][k]])  # fmt: skip
    assert after.shape == r0["before"].shape and not torch.equal(after, r0["before"])
    # rank 0 evaluates and checkpoints into the run directory, rank 1 into its own
    assert r0["records"] == 2 and r1["records"] == 0
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert (tmp_path / "run" / "rank1" / "checkpoint.pt").is_file()


def test_multi_process_collection_acts_with_the_updated_policy():
    from wmrl.agents.dreamer import Dreamer, DreamerConfig

    # noise-free collection (v1 adds noise 0.3 by default), so the actions are the actor's own
    cfg = DreamerConfig.preset("debug", task="pendulum-swingup", collector_workers=2,
                               prefill_episodes=0, action_noise=0.0)  # fmt: skip
    agent = Dreamer(cfg)
    try:
        first = agent._collect()
        assert first.shape == (2, agent.episode_len)  # one episode from each worker
        # make the actor deterministic and constant: loc = 2, scale = its minimum
        last = agent.nets.parts["actor"].backbone[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.copy_(torch.tensor([2.0, -100.0]))
        agent._collector.update_policy_weights_()
        episodes = agent._collect()
        expected = torch.tanh(5 * torch.tanh(torch.tensor(2.0 / 5)))
        torch.testing.assert_close(episodes["action"], torch.full_like(episodes["action"],
                                   float(expected)), atol=1e-3, rtol=0)  # fmt: skip
        assert not torch.allclose(first["action"], episodes["action"], atol=1e-3)
    finally:
        agent.close()
