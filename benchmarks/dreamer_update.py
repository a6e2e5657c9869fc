"""Time one full Dreamer update: wmrl against TorchRL's losses with the same networks.

One update = world-model loss (encoder, RSSM filtering over the sequence, decoder, reward head)
+ backward + Adam step, then actor loss (15-step imagination from every posterior state,
lambda-returns) + backward + step, then value loss + backward + step. Batch 16 x 50, 64x64 RGB,
the pages' default sizes (conv depth 32, state 30, belief 200, hidden 200; reward head 2 x 400,
value 3 x 400, actor 4 x 200). Both implementations start from the *same* weights (TorchRL's
modules load wmrl's state dicts).

Timing: the two implementations alternate within one process and the median of the repeats is
reported (ratios measured side by side are robust to load from other processes; absolute times
are not). Memory: each implementation runs three updates in a fresh subprocess, which reports its
peak resident memory and the part of it above the resident memory before the first update.
``--retain-memory`` times the updates with glibc told to keep freed memory
(:mod:`wmrl.cpu_memory`), which takes the page faults of the large blocks out of both.

Usage::

    python benchmarks/dreamer_update.py [--repeats 5] [--threads 1] [--precision fp32 bf16]
        [--retain-memory] [--doc docs/benchmarks_dreamer.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torchrl
from tensordict import TensorDict
from torch.utils.flop_counter import FlopCounterMode

B, T, A, H = 16, 50, 6, 15
SIZES = dict(channels=32, state_dim=30, rnn_hidden_dim=200, hidden_dim=200, mlp_cells=400)


def make_data() -> TensorDict:
    g = torch.Generator().manual_seed(0)
    return TensorDict(
        {
            "state": torch.zeros(B, T, SIZES["state_dim"]),
            "belief": torch.zeros(B, T, SIZES["rnn_hidden_dim"]),
            "action": torch.rand(B, T, A, generator=g) * 2 - 1,
            "next": {
                "pixels": torch.rand(B, T, 3, 64, 64, generator=g),
                "reward": torch.randn(B, T, 1, generator=g),
            },
        },
        [B, T],
    )


def build_wmrl():
    from wmrl.rssm import DreamerActorLoss, DreamerModelLoss, DreamerValueLoss
    from wmrl.rssm.assemble import make_dreamer

    torch.manual_seed(0)
    m = make_dreamer(A, **SIZES)
    losses = (
        DreamerModelLoss(m.world_model),
        DreamerActorLoss(m.actor, m.value, m.model_based_env, imagination_horizon=H),
        DreamerValueLoss(m.value),
    )
    return m, losses, (m.world_model, m.actor, m.value)


def build_torchrl(wm):
    """TorchRL's modules and losses, wired as its Dreamer example, with ``wm``'s weights."""
    from tensordict.nn import (
        InteractionType,
        ProbabilisticTensorDictModule,
        ProbabilisticTensorDictSequential,
        TensorDictModule,
        TensorDictSequential,
    )
    from torchrl.data import Bounded, Composite, Unbounded
    from torchrl.envs.model_based import DreamerEnv
    from torchrl.modules import (
        MLP,
        DreamerActor,
        ObsDecoder,
        ObsEncoder,
        RSSMPosterior,
        RSSMPrior,
        RSSMRollout,
        TanhNormal,
        WorldModelWrapper,
    )
    from torchrl.objectives import DreamerActorLoss, DreamerModelLoss, DreamerValueLoss

    S, Hb, latent = SIZES["state_dim"], SIZES["rnn_hidden_dim"], 230
    spec = Bounded(-1, 1, (A,))
    enc, dec = ObsEncoder(in_channels=3), ObsDecoder(latent_dim=latent)
    prior = RSSMPrior(spec, SIZES["hidden_dim"], Hb, S, action_dim=A)
    post = RSSMPosterior(SIZES["hidden_dim"], S, rnn_hidden_dim=Hb, obs_embed_dim=1024)
    cells = SIZES["mlp_cells"]
    rew = MLP(
        in_features=latent, out_features=1, depth=2, num_cells=cells, activation_class=torch.nn.ELU
    )
    val = MLP(
        in_features=latent, out_features=1, depth=3, num_cells=cells, activation_class=torch.nn.ELU
    )
    act = DreamerActor(A, depth=4, num_cells=200)
    act.backbone[0] = torch.nn.Linear(latent, 200)  # explicit first layer (TorchRL's is lazy)
    for mine, theirs in (
        (wm.encoder, enc), (wm.decoder, dec), (wm.prior, prior), (wm.posterior, post),
        (wm.reward.net, rew), (wm.value.module.net, val),
        (wm.actor[0].module.backbone, act.backbone),
    ):  # fmt: skip
        theirs.load_state_dict(mine.state_dict())
    rollout = RSSMRollout(
        TensorDictModule(
            prior,
            ["state", "belief", "action"],
            [("next", "prior_mean"), ("next", "prior_std"), "_", ("next", "belief")],
        ),
        TensorDictModule(
            post,
            [("next", "belief"), ("next", "encoded_latents")],
            [("next", "posterior_mean"), ("next", "posterior_std"), ("next", "state")],
        ),
    )
    nxt = [("next", "state"), ("next", "belief")]
    world_model = WorldModelWrapper(
        TensorDictSequential(
            TensorDictModule(enc, [("next", "pixels")], [("next", "encoded_latents")]),
            rollout,
            TensorDictModule(dec, nxt, [("next", "reco_pixels")]),
        ),
        TensorDictModule(rew, nxt, [("next", "reward")]),
    )
    env = DreamerEnv(
        WorldModelWrapper(
            TensorDictModule(prior, ["state", "belief", "action"], ["_", "_", "state", "belief"]),
            TensorDictModule(rew, ["state", "belief"], ["reward"]),
        ),
        prior_shape=(S,),
        belief_shape=(Hb,),
    )
    env.observation_spec = Composite(state=Unbounded(S), belief=Unbounded(Hb))
    env.state_spec = env.observation_spec.clone()
    env.action_spec = spec
    env.reward_spec = Unbounded((1,))
    actor = ProbabilisticTensorDictSequential(
        TensorDictModule(act, ["state", "belief"], ["loc", "scale"]),
        ProbabilisticTensorDictModule(
            ["loc", "scale"],
            ["action"],
            distribution_class=TanhNormal,
            distribution_kwargs={"tanh_loc": True},
            default_interaction_type=InteractionType.RANDOM,
        ),
    )
    value = TensorDictModule(val, ["state", "belief"], ["state_value"])
    losses = (
        DreamerModelLoss(world_model),
        DreamerActorLoss(actor, value, env, imagination_horizon=H, discount_loss=False),
        DreamerValueLoss(value),
    )
    return losses, (world_model, actor, value)


def make_update(losses, nets, precision: str) -> Callable[[TensorDict], list[float]]:
    """One full update; returns the CPU seconds of its model, actor and value phases."""
    model_loss, actor_loss, value_loss = losses
    opts = [torch.optim.Adam(n.parameters(), lr) for n, lr in zip(nets, (6e-4, 8e-5, 8e-5))]
    bf16 = precision == "bf16"

    def step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def update(data: TensorDict) -> list[float]:
        t = [time.process_time()]
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            lt, sampled = model_loss(data)
            total = lt["loss_model_kl"] + lt["loss_model_reco"] + lt["loss_model_reward"]
        step(opts[0], total.sum())
        t.append(time.process_time())
        start = sampled.get("next").select("state", "belief").reshape(-1)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            lt, fake = actor_loss(start)
        step(opts[1], lt["loss_actor"])
        t.append(time.process_time())
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            lt, _ = value_loss(fake)
        step(opts[2], lt["loss_value"])
        t.append(time.process_time())
        return [b - a for a, b in zip(t[:-1], t[1:])]

    return update


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(impl: str, precision: str, threads: int) -> None:
    """Peak resident memory of three updates in this (fresh) process, in MiB.

    The high-water mark is reset first (``/proc/self/clear_refs``): a forked child inherits its
    parent's, which would hide the child's own peak.
    """
    torch.set_num_threads(threads)
    m, losses, nets = build_wmrl()
    if impl == "torchrl":
        losses, nets = build_torchrl(m)
    data = make_data()
    update = make_update(losses, nets, precision)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_mb("VmRSS")
    for _ in range(3):
        update(data)
    print(json.dumps({"peak_mb": _status_mb("VmHWM"), "base_mb": base}))


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


def measure(precision: str, repeats: int, threads: int, data, wm_parts, trl_parts) -> dict:
    updates = {
        "wmrl": make_update(*wm_parts, precision),
        "torchrl": make_update(*trl_parts, precision),
    }
    wall: dict[str, list[float]] = {k: [] for k in updates}
    cpu: dict[str, list[float]] = {k: [] for k in updates}
    phases: dict[str, list[list[float]]] = {k: [] for k in updates}
    system: dict[str, list[float]] = {k: [] for k in updates}
    load_before = os.getloadavg()[0]
    for fn in updates.values():  # warm-up
        fn(data)
    gflop = {}
    for name, fn in updates.items():  # the arithmetic of one update (matmuls and convolutions)
        counter = FlopCounterMode(display=False)
        with counter:
            fn(data)
        gflop[name] = counter.get_total_flops() / 1e9
    for _ in range(repeats):
        for name, fn in updates.items():  # alternate the implementations
            t0, s0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_stime
            ph = fn(data)
            wall[name].append(time.perf_counter() - t0)
            system[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - s0)
            cpu[name].append(sum(ph))
            phases[name].append(ph)
    mem = {}
    for name in updates:
        cmd = [sys.executable, __file__, "--memory-child", name, precision]
        cmd += ["--threads", str(threads)]
        # glibc: blocks above 64 KiB are mapped and unmapped one by one, so the resident set
        # follows the live tensors instead of the allocator's free lists
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
        mem[name] = json.loads(out.strip().splitlines()[-1])
    med = statistics.median
    return {
        "wall": {k: med(v) for k, v in wall.items()},
        "cpu": {k: med(v) for k, v in cpu.items()},
        "system": {k: med(v) for k, v in system.items()},
        "phases": {k: [med(p[i] for p in v) for i in range(3)] for k, v in phases.items()},
        "cpu_ratios": [t / w for t, w in zip(cpu["torchrl"], cpu["wmrl"])],
        "wall_ratios": [t / w for t, w in zip(wall["torchrl"], wall["wmrl"])],
        "mem": mem,
        "gflop": gflop,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def report(results: dict, args: argparse.Namespace) -> str:
    med = statistics.median
    retain = " --retain-memory" if args.retain_memory else ""
    allocator = (
        "glibc told to keep freed memory (`--retain-memory`, `wmrl.cpu_memory`): large blocks "
        "come from the heap and are reused by the next update"
        if args.retain_memory
        else "glibc's default allocator: every block above its mmap threshold (at most 32 MiB) "
        "is mapped afresh and faulted in page by page"
    )
    lines = [
        "## Dreamer: one full update (`benchmarks/dreamer_update.py`)",
        "",
        f"Command: `.venv/bin/python benchmarks/dreamer_update.py --repeats {args.repeats} "
        f"--threads {args.threads}{retain}` · {datetime.date.today()} · {machine()} · "
        f"torch {torch.__version__}, torchrl {torchrl.__version__} · {args.threads} thread(s).",
        "",
        f"One update = world-model loss, backward and Adam step; actor loss ({H}-step imagination "
        f"from all {B * T} posterior states, lambda-returns), backward, step; value loss, "
        f"backward, step. Batch {B} x {T}, 64x64 RGB, conv depth 32, state 30, belief 200, "
        "hidden 200, reward head 2 x 400, value 3 x 400, actor 4 x 200 (the pages' sizes), "
        "TorchRL's modules loaded with wmrl's initial weights. The two implementations alternate "
        f"in one process; times are medians of {args.repeats} updates, CPU time (user + system of "
        "the process: one thread, so the compute time, less disturbed by other work on the "
        "machine) with wall time in parentheses; speed-ups are medians of the per-pair ratios. "
        "Peak memory: resident-set high-water mark of a fresh process running three updates, "
        "and in parentheses its part above the resident set before the first update (glibc "
        "told to map every block above 64 KiB separately, so that the resident set follows the "
        "live tensors rather than the allocator's free lists). Memory for the timed updates: "
        f"{allocator}.",
        "",
        "| precision | TorchRL | wmrl | speed-up (CPU) | speed-up (wall) | peak memory TorchRL | "
        "peak memory wmrl |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for precision, r in results.items():
        mem = {
            k: f"{v['peak_mb']:.0f} MiB (+{v['peak_mb'] - v['base_mb']:.0f})"
            for k, v in r["mem"].items()
        }
        lines.append(
            f"| {precision} | {r['cpu']['torchrl']:.2f} s ({r['wall']['torchrl']:.2f} s) "
            f"| {r['cpu']['wmrl']:.2f} s ({r['wall']['wmrl']:.2f} s) "
            f"| {med(r['cpu_ratios']):.2f}x | {med(r['wall_ratios']):.2f}x "
            f"| {mem['torchrl']} | {mem['wmrl']} |"
        )
    if "fp32" in results and "bf16" in results:
        ratio = results["fp32"]["cpu"]["torchrl"] / results["bf16"]["cpu"]["wmrl"]
        lines += [
            "",
            f"wmrl under bf16 autocast against TorchRL in fp32: **{ratio:.2f}x** (CPU time).",
        ]
    same = ", ".join(f"{p} {med(r['cpu_ratios']):.2f}x" for p, r in results.items())
    memory = ", ".join(
        f"{p} {'yes' if r['mem']['wmrl']['peak_mb'] <= r['mem']['torchrl']['peak_mb'] else 'no'}"
        for p, r in results.items()
    )
    lines += [
        "",
        "Target: wmrl at least 1.5x faster than TorchRL with no higher peak memory. Speed-up "
        f"with the same precision on both sides (CPU time): {same}. wmrl's peak memory no "
        f"higher: {memory}.",
    ]
    lines += [
        "",
        "Arithmetic per update (multiply-adds of the matrix products and convolutions counted "
        "twice, by `torch.utils.flop_counter.FlopCounterMode`; elementwise work not counted) "
        "and the rate it runs at (per CPU-second):",
        "",
        "| precision | TorchRL | wmrl |",
        "|---|---|---|",
    ]
    for precision, r in results.items():
        rate = {k: f"{r['gflop'][k]:.0f} GFLOP, {r['gflop'][k] / r['cpu'][k]:.0f} GFLOP/s"
                for k in ("torchrl", "wmrl")}  # fmt: skip
        lines.append(f"| {precision} | {rate['torchrl']} | {rate['wmrl']} |")
    lines += [
        "",
        "System time (page faults, mostly) within the CPU time of one update, medians: "
        + ", ".join(
            f"{p} TorchRL {r['system']['torchrl']:.2f} s, wmrl {r['system']['wmrl']:.2f} s"
            for p, r in results.items()
        )
        + ".",
    ]
    lines += [
        "",
        "CPU time per phase (model / actor / value), medians:",
        "",
        "| precision | TorchRL | wmrl |",
        "|---|---|---|",
    ]
    for precision, r in results.items():
        ph = {k: " / ".join(f"{x:.2f}" for x in v) for k, v in r["phases"].items()}
        lines.append(f"| {precision} | {ph['torchrl']} s | {ph['wmrl']} s |")
    load = ", ".join(f"{x:.1f}" for x in results_load(results))
    lines += [
        "",
        "Notes.",
        "",
        f"- Load average of the machine before / after the runs: {load} (2 cores). Absolute "
        "times taken on a shared machine are inflated (wall time most); re-measure on a quiet "
        "machine. The ratios, measured side by side, are the meaningful figures.",
        "- Where the time goes: the world-model phase is dominated by the 800-frame "
        "convolutions. TorchRL runs the decoder's first transposed convolution on a 1x1 image "
        "as a convolution, whose backward pass is slow on CPU; wmrl computes it as the matrix "
        "product it is, runs the other convolutions in the channels-last memory format with "
        "in-place ReLUs, computes the output layer's forward pass as four phase convolutions "
        "and a pixel shuffle (`wmrl.rssm.subpixel`, twice as fast as the transposed "
        "convolution with 3 output channels), and filters the sequence with the fused RSSM "
        "step (action and embedding projections for the whole sequence, prior head after the "
        "loop, no TensorDict per step). The actor and value phases are dense layers on 800 x 15 "
        "imagined states and cost about the same in both libraries.",
        "- bf16: `torch.autocast('cpu', torch.bfloat16)` around the three losses (the GRU "
        "recurrence stays in float32, the losses are computed in float32).",
        "- The losses agree with TorchRL's on identical weights (tests/test_dreamer_losses.py), "
        "except that TorchRL's actor targets are one-step TD targets rather than "
        "lambda-returns (see `DreamerActorLoss`); the work per update is the same.",
    ]
    return "\n".join(lines) + "\n"


def results_load(results: dict) -> list[float]:
    return [
        results[next(iter(results))]["load_before"],
        results[next(reversed(results))]["load_after"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--doc", help="write the report (markdown) to this file")
    parser.add_argument("--retain-memory", action="store_true",
                        help="time the updates with freed memory kept (wmrl.cpu_memory)")
    parser.add_argument("--memory-child", nargs=2, metavar=("IMPL", "PRECISION"))
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child, args.threads)
        return
    if args.retain_memory:
        from wmrl.cpu_memory import retain_freed_memory

        if not retain_freed_memory():
            raise SystemExit("--retain-memory needs glibc's malloc")
    torch.set_num_threads(args.threads)
    data = make_data()
    wm, wm_losses, wm_nets = build_wmrl()
    trl_parts = build_torchrl(wm)
    results = {
        p: measure(p, args.repeats, args.threads, data, (wm_losses, wm_nets), trl_parts)
        for p in args.precision
    }
    text = report(results, args)
    print(text)
    if args.doc:
        with open(args.doc, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
