"""The PILCO agent end to end with a tiny budget, and resume after an interruption."""

import json

import torch

from wmrl.agents.pilco import PILCO, PILCOConfig
from wmrl.cli import main

torch.set_num_threads(1)


def _config(**kw):
    kw = {"task": "pendulum-swingup", "max_trials": 2, "stop_when_solved": False, **kw}
    return PILCOConfig.preset("debug", **kw)


def test_resume_continues_with_identical_data(tmp_path):
    full = PILCO(_config(), out_dir=tmp_path / "full")
    full.run()
    assert full.trials_done == 3  # random trial + 2 learning trials

    # the same run, interrupted after its second trial and resumed from the checkpoint
    part = PILCO(_config(), out_dir=tmp_path / "part")
    part.trial()
    part.trial()
    del part
    resumed = PILCO.resume(tmp_path / "part")
    assert resumed.trials_done == 2
    resumed.run()
    assert resumed.trials_done == 3
    torch.testing.assert_close(resumed.data["observation"], full.data["observation"])
    torch.testing.assert_close(resumed.data["action"], full.data["action"])
    torch.testing.assert_close(
        resumed.data["next", "observation"], full.data["next", "observation"]
    )
    for p, q in zip(resumed.policy.parameters(), full.policy.parameters()):
        torch.testing.assert_close(p, q)
    assert [r.real_cost for r in resumed.records] == [r.real_cost for r in full.records]


def test_agent_learning_trial_records_and_checkpoint(tmp_path):
    agent = PILCO(_config(max_trials=1), out_dir=tmp_path)
    records = agent.run()
    assert [r.random for r in records] == [True, False]
    learn = records[-1]
    assert learn.data_size == 2 * agent.env.max_steps
    assert torch.isfinite(torch.tensor(learn.predicted_cost))
    assert 0 <= learn.solved_episodes <= agent.config.test_episodes
    assert (tmp_path / "checkpoint.pt").is_file()
    assert agent.summary().startswith("solved: ")


def test_cli_runs_writes_figures_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "pilco",
        "--task",
        "pendulum-swingup",
        "--preset",
        "debug",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("solved: ") and "trials: 2" in line and "interaction: 8.0 s" in line
    for name in ("costs.png", "prediction.png", "frames.png", "checkpoint.pt", "records.json"):
        assert (out / name).is_file(), name
    assert main(args) == 2  # refuses to overwrite a run
    assert (
        main(
            [
                "pilco",
                "--out",
                str(out),
                "--resume",
                "--max-trials",
                "2",
                "--no-progress",
                "--no-plots",
            ]
        )
        == 0
    )
    records = json.loads((out / "records.json").read_text())
    assert len(records) == 3
