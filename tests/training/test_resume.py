"""Resuming a run from its checkpoint: a killed run continues, a finished run extends, bad resumes fail clearly."""

import csv
import json
import shutil
import warnings

import pytest
import torch
from tiny_configs import SMALL_RUN

from torchrl_vmbpo.algorithms.run import ResumeDefaultsWarning
from torchrl_vmbpo.cli import main
from torchrl_vmbpo.training import loop

TINY = [*SMALL_RUN, "eval_every=100", "checkpoint_every=200", "utd=2"]


def _train(out, *extra):
    sets = [arg for item in TINY for arg in ("--set", item)]
    return main(
        [
            "train",
            "--algo",
            "mbpo",
            "--env",
            "Pendulum-v1",
            "--seed",
            "5",
            "--out",
            str(out),
            "--no-progress",
            *sets,
            *extra,
        ]
    )


def _steps(path):
    with open(path) as f:
        return [float(row[0]) for row in csv.reader(f) if row and row[0] != "env_steps"]


def test_killed_run_resumes_from_its_latest_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    kept = tmp_path / "checkpoint_at_200.pt"
    save = loop.save_checkpoint

    def save_and_keep_the_first(path, agent, **kwargs):  # the file as a run killed after step 200 left it
        save(path, agent, **kwargs)
        if not kept.exists():
            shutil.copy(path, kept)

    monkeypatch.setattr(loop, "save_checkpoint", save_and_keep_the_first)
    assert _train(out, "--steps", "400") == 0
    full = json.loads((out / "summary.json").read_text())
    monkeypatch.undo()
    state = torch.load(kept, weights_only=True)["loop_state"]  # tensors and plain containers only
    assert state["env_steps"] == 200 and state["updates"] == 2 * 101 and len(state["real_data"]["observation"]) == 200
    # The 200 transitions, not the buffer's 1e6-row storage behind them (a view saves its whole storage).
    assert kept.stat().st_size < 5e6

    # Kill: the run's last checkpoint is the one at 200; summary and checkpoint of the end are gone,
    # its metrics.csv and scalar logs go on past 200.
    shutil.copy(kept, out / "checkpoint.pt")
    (out / "summary.json").unlink()
    assert _steps(out / "metrics.csv")[-1] == 400
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 400 and summary["resumed_at"] == [200] and len(summary["commits"]) == 2
    assert summary["updates"] == full["updates"] == 2 * 301  # the update schedule continues exactly
    assert summary["config"] == full["config"]
    assert _steps(out / "metrics.csv") == [1, 100, 200, 300, 400]  # no row twice
    for scalar in (out / "logs" / "scalars").glob("*.csv"):
        steps = _steps(scalar)
        assert steps == sorted(set(steps)), scalar.name  # rows after 200 were dropped, then logged anew
    after = torch.load(out / "checkpoint.pt", weights_only=True)["loop_state"]
    assert after["env_steps"] == 400 and len(after["real_data"]["observation"]) == 400


def test_finished_run_extends_with_more_steps(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--steps", "200") == 0
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 2
    assert "already has 200 env steps" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--steps", "300", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 300 and summary["config"]["steps"] == 300 and summary["resumed_at"] == [200]
    assert _steps(out / "metrics.csv") == [1, 100, 200, 300]


def test_bad_resumes_name_the_problem_and_touch_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"garbage")
    (out / "metrics.csv").write_text("keep\n")
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert (out / "metrics.csv").read_text() == "keep\n" and (out / "checkpoint.pt").read_bytes() == b"garbage"
    assert main(["train", "--resume", "--algo", "sac", "--out", str(out), "--no-progress"]) == 2
    assert "drop --algo" in capsys.readouterr().err
    torch.save(
        {
            "format": "torchrl_vmbpo.checkpoint.v2",
            "run_id": None,
            "agent": {},
            "optimizers": {},
            "config_json": "{}",
            "env_steps": 10,
            "loop_state": None,
        },
        out / "checkpoint.pt",
    )  # no loop state
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 2
    assert "holds no loop state" in capsys.readouterr().err


def test_resume_may_change_where_a_run_computes_but_not_what(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--steps", "200") == 0
    before = (out / "metrics.csv").read_text()
    resume = ["train", "--resume", "--out", str(out), "--steps", "300", "--no-progress"]
    # What the run computes: refused, naming the setting, its values and what may change; nothing touched.
    assert main([*resume, "--set", "utd=3", "--set", "gamma=0.9", "--set", "precision=bf16"]) == 2
    err = capsys.readouterr().err
    assert "cannot change gamma (0.99 -> 0.9), precision ('fp32' -> 'bf16'), utd (2.0 -> 3.0)" in err
    assert "device, compile" in err
    assert (out / "metrics.csv").read_text() == before
    # Where and how fast it computes, plus restated settings (a sweep's same --set list): accepted.
    assert (
        main(
            [
                *resume,
                "--set",
                "checkpoint_every=50",
                "--set",
                "num_threads=1",
                "--set",
                "utd=2",
                "--set",
                "device=cpu",
                "--set",
                "compile=off",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["checkpoint_every"] == 50 and summary["config"]["utd"] == 2
    assert summary["config"]["device"] == "cpu" and summary["device"] == "cpu"
    assert summary["env_steps"] == 300


def _forget_setting(checkpoint, name):
    """The checkpoint as an earlier version (one without the setting ``name``) would have written it."""
    payload = torch.load(checkpoint, weights_only=True)
    config = json.loads(payload["config_json"])
    del config[name]
    payload["config_json"] = json.dumps(config)
    torch.save(payload, checkpoint)


def test_resume_names_the_defaults_it_takes_for_settings_its_checkpoint_predates(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--steps", "200", "--set", "max_grad_norm=7") == 0
    resume = ["train", "--resume", "--out", str(out), "--no-progress"]

    # Taken at this version's default (None: no clipping), and said so, naming the setting and its value.
    _forget_setting(out / "checkpoint.pt", "max_grad_norm")
    with pytest.warns(ResumeDefaultsWarning, match=r"predates setting\(s\) max_grad_norm: .*max_grad_norm=None"):
        assert main([*resume, "--steps", "300"]) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["max_grad_norm"] is None

    # A setting the checkpoint predates may be chosen on resume (the run never chose it): no warning.
    _forget_setting(out / "checkpoint.pt", "max_grad_norm")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeDefaultsWarning)
        assert main([*resume, "--steps", "400", "--set", "max_grad_norm=7"]) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["max_grad_norm"] == 7

    # Settings the checkpoint names stay refused, and the error says which ones a resume may set.
    _forget_setting(out / "checkpoint.pt", "max_grad_norm")
    assert main([*resume, "--steps", "500", "--set", "gamma=0.9"]) == 2
    err = capsys.readouterr().err
    assert "cannot change gamma (0.99 -> 0.9)" in err and "settings its checkpoint predates (max_grad_norm)" in err
