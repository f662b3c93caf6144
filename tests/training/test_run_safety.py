"""Runs lose nothing and load nothing unsafe (issue 19): run folders, checkpoints, interrupts, messages."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from tiny_configs import SMALL_RUN, train_argv

from torchrl_vmbpo.algorithms import build_agent, default_config, run
from torchrl_vmbpo.cli import main
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.errors import CheckpointError, EnvError, RunFolderError, RunInterrupted
from torchrl_vmbpo.training import checkpoint as checkpoint_module
from torchrl_vmbpo.training import phases
from torchrl_vmbpo.training.checkpoint import load_checkpoint, read_checkpoint

TINY = [*SMALL_RUN, "eval_every=100", "utd=2"]


def _train(out, *extra, algo="sac", steps="200", sets=()):
    return main([*train_argv(algo, out, steps=steps, seed=1, sets=[*TINY, *sets]), *extra])


def _run_id(out):
    return json.loads((out / "run.json").read_text())["run_id"]


# --- 1. A run folder belongs to one run ------------------------------------------------------------


def test_overwrite_removes_the_previous_runs_files_so_resume_cannot_continue_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0
    old_id = _run_id(out)
    (out / "notes.txt").write_text("mine")  # not a run file: stays
    # The new run writes no checkpoint: the old one must not survive to be resumed.
    assert _train(out, "--overwrite", sets=["checkpoint=false"]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint.pt" not in printed.splitlines()[-1]  # it says what it wrote, and it wrote none
    assert not (out / "checkpoint.pt").exists() and (out / "notes.txt").read_text() == "mine"
    new_id = _run_id(out)
    assert new_id != old_id
    assert json.loads((out / "summary.json").read_text())["run_id"] == new_id
    assert (out / "logs" / "run_id").read_text().strip() == new_id
    assert {line.rsplit(",", 1)[1] for line in (out / "metrics.csv").read_text().splitlines()[1:]} == {new_id}
    before = (out / "metrics.csv").read_text()
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"run {new_id} stopped before its first checkpoint" in err and err.count("\n") == 1
    assert (out / "metrics.csv").read_text() == before


def test_resume_refuses_a_checkpoint_of_another_run_naming_both(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert _train(first) == 0 and _train(second) == 0
    (second / "checkpoint.pt").write_bytes((first / "checkpoint.pt").read_bytes())
    before = {p.name: p.read_bytes() for p in second.iterdir() if p.is_file()}
    assert main(["train", "--resume", "--out", str(second), "--steps", "300", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"belongs to run {_run_id(first)}" in err and f"holds run {_run_id(second)}" in err
    assert {p.name: p.read_bytes() for p in second.iterdir() if p.is_file()} == before


# --- 2. Safe checkpoints ----------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs code: it creates the file named by ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_crafted_checkpoint_executes_nothing_and_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0
    marker = tmp_path / "PWNED"
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    payload["loop_state"]["evil"] = _Payload(marker)
    torch.save(payload, out / "checkpoint.pt")
    agent = build_agent(default_config("sac", "Pendulum-v1", overrides=TINY), make_env("Pendulum-v1"))
    with pytest.raises(CheckpointError, match="needs arbitrary code to load.*nothing from it was executed"):
        load_checkpoint(out / "checkpoint.pt", agent)
    assert main(["train", "--resume", "--out", str(out), "--steps", "300", "--no-progress"]) == 2
    assert "needs arbitrary code" in capsys.readouterr().err
    assert not marker.exists()


def test_an_old_format_checkpoint_is_refused_then_converted_on_request(tmp_path, capsys):
    from tensordict import TensorDict

    out = tmp_path / "run"
    assert _train(out) == 0
    new = read_checkpoint(out / "checkpoint.pt")
    state = dict(new["loop_state"])
    state["real_data"] = TensorDict(state["real_data"], batch_size=[200])  # v1 pickled the TensorDict
    kind, key, pos, has_gauss, cached = state["rng"]["numpy"]
    state["rng"] = {**state["rng"], "numpy": (kind, key.numpy().astype(np.uint32), pos, has_gauss, cached)}
    v1 = {
        "format": "torchrl_vmbpo.checkpoint.v1",
        "agent": new["agent"],
        "optimizers": new["optimizers"],
        "config": new["config"],
        "env_steps": new["env_steps"],
        "loop_state": state,
    }
    torch.save(v1, out / "checkpoint.pt")
    (out / "run.json").unlink()  # a folder of an earlier version has no run ids
    (out / "logs" / "run_id").unlink()
    assert main(["train", "--resume", "--out", str(out), "--steps", "300", "--no-progress"]) == 2
    assert "vmbpo convert-checkpoint" in capsys.readouterr().err
    assert main(["convert-checkpoint", str(out / "checkpoint.pt")]) == 0
    assert (out / "checkpoint.pt.v1").exists()  # the original is kept
    assert main(["train", "--resume", "--out", str(out), "--steps", "300", "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["env_steps"] == 300


# --- 3. Atomic load ----------------------------------------------------------------------------------


def _snapshot(agent):
    return {k: v.clone() for k, v in agent.state_dict().items()}, {
        name: json.dumps(opt.state_dict()["param_groups"]) for name, opt in agent.optimizers().items()
    }


@pytest.mark.parametrize("other", [("mbpo", []), ("sac", ["hidden=[16,16]"])], ids=["other-algo", "other-size"])
def test_a_mismatched_checkpoint_leaves_the_agent_unchanged_with_a_short_message(tmp_path, other):
    out = tmp_path / "run"
    assert _train(out) == 0
    algo, sets = other
    agent = build_agent(default_config(algo, "Pendulum-v1", overrides=TINY + sets), make_env("Pendulum-v1"))
    before, groups = _snapshot(agent)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(out / "checkpoint.pt", agent)
    message = str(err.value)
    assert len(message) < 800 and "\n" not in message and "the agent is unchanged" in message
    assert (
        ("holds sac on Pendulum-v1, the agent is mbpo" in message) if algo == "mbpo" else ("shape(s) differ" in message)
    )
    after, groups_after = _snapshot(agent)
    assert after.keys() == before.keys() and groups_after == groups
    for key in before:
        torch.testing.assert_close(after[key], before[key])


def test_a_load_that_fails_midway_is_rolled_back(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert _train(out) == 0
    agent = build_agent(default_config("sac", "Pendulum-v1", overrides=TINY), make_env("Pendulum-v1"))
    before, _ = _snapshot(agent)

    load, calls = torch.optim.Adam.load_state_dict, []

    def fail_once(self, state):  # the modules are loaded by then; the rollback's own load works
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated failure in the optimizer's state")
        return load(self, state)

    monkeypatch.setattr(torch.optim.Adam, "load_state_dict", fail_once)
    with pytest.raises(CheckpointError, match="does not load into this agent.*unchanged"):
        checkpoint_module.restore_checkpoint(read_checkpoint(out / "checkpoint.pt"), agent)
    monkeypatch.undo()
    for key, value in _snapshot(agent)[0].items():
        torch.testing.assert_close(value, before[key])


# --- 4. No silent no-op; 5. resuming a run with utd < 1 ---------------------------------------------


def test_a_run_with_utd_below_one_resumes(tmp_path):
    out = tmp_path / "run"
    assert _train(out, sets=["utd=0.5"]) == 0
    assert main(["train", "--resume", "--out", str(out), "--steps", "300", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 300 and summary["updates"] == 100  # half an update per step from 100


# --- 6. Messages instead of tracebacks; interrupts ---------------------------------------------------


def test_out_under_a_regular_file_or_unwritable_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert _train(tmp_path / "file" / "run") == 2
    err = capsys.readouterr().err
    assert err.startswith("vmbpo: error: cannot use") and err.count("\n") == 1
    if Path("/proc/self").is_dir():  # a folder nobody may create in, even root
        assert _train(Path("/proc/self/vmbpo-run")) == 2
        assert "cannot use /proc/self/vmbpo-run" in capsys.readouterr().err


def test_an_env_whose_optional_package_is_missing_is_one_line(tmp_path, capsys, monkeypatch):
    def missing(*args, **kwargs):
        raise gym.error.DependencyNotInstalled('Box2D is not installed, run `pip install "gymnasium[box2d]"`')

    monkeypatch.setattr("torchrl_vmbpo.envs.real.GymEnv", missing)
    with pytest.raises(EnvError, match="needs an optional package that is not installed: Box2D"):
        make_env("Pendulum-v1")
    assert _train(tmp_path / "run") == 2
    assert "needs an optional package" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


class _DictObservations(gym.Env):
    observation_space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,)), "b": gym.spaces.Box(-1, 1, (1,))})
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, **kwargs):
        super().__init__()

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


class _ImageObservations(_DictObservations):
    observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)


@pytest.mark.parametrize("entry_point", [_DictObservations, _ImageObservations], ids=["dict", "image"])
def test_dict_or_image_observations_are_refused_by_name(entry_point):
    gym.register("Observations-v0", entry_point=entry_point, max_episode_steps=10)
    try:
        with pytest.raises(EnvError, match="one flat Box observation vector"):
            make_env("Observations-v0")
    finally:
        gym.registry.pop("Observations-v0")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_writes_a_checkpoint_at_the_current_step_and_resume_continues(tmp_path, monkeypatch, signum):
    out = tmp_path / "run"
    cfg = default_config("sac", "Pendulum-v1", steps=300, seed=1, overrides=TINY + ["checkpoint_every=0"])
    evaluate = phases.evaluate

    def evaluate_then_signal(env, policy, **kwargs):  # a signal arriving during the evaluation at step 200
        result = evaluate(env, policy, **kwargs)
        if len(list((out / "metrics.csv").read_text().splitlines())) == 3:
            os.kill(os.getpid(), signum)
        return result

    monkeypatch.setattr(phases, "evaluate", evaluate_then_signal)
    previous = signal.getsignal(signum)
    with pytest.raises(RunInterrupted) as stop:
        run(cfg, out, progress=False)
    monkeypatch.undo()
    assert stop.value.env_steps == 200 and stop.value.exit_code == 128 + signum
    assert signal.getsignal(signum) == previous  # the run's handler is gone
    assert read_checkpoint(out / "checkpoint.pt")["env_steps"] == 200
    assert not (out / "summary.json").exists()
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 300 and summary["resumed_at"] == [200]


def test_ctrl_c_on_the_command_line_exits_130_with_one_line_and_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    sets = [arg for item in TINY for arg in ("--set", item)]
    command = [
        sys.executable,
        "-m",
        "torchrl_vmbpo.cli",
        "train",
        "--algo",
        "sac",
        "--env",
        "Pendulum-v1",
        "--steps",
        "100000",
        "--out",
        str(out),
        "--no-progress",
        *sets,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.csv").exists() or len((out / "metrics.csv").read_text().splitlines()) < 3:
        assert time.time() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("vmbpo")]
    assert len(lines) == 1 and "interrupted by SIGINT at env step" in lines[0], err
    assert "Traceback" not in err and f"vmbpo train --resume --out {out}" in lines[0]
    assert read_checkpoint(out / "checkpoint.pt")["env_steps"] >= 100


# --- 7. Errors: the CLI keeps the traceback of a bug; durable writes ---------------------------------


def test_an_unexpected_exception_keeps_its_traceback(tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise TypeError("a bug in the library")

    monkeypatch.setattr("torchrl_vmbpo.cli.run", bug)
    with pytest.raises(TypeError, match="a bug in the library"):
        _train(tmp_path / "run")


def test_a_failed_validation_leaves_no_folder(tmp_path, capsys):
    assert _train(tmp_path / "run", sets=["batch_size=32.5"]) == 2
    assert "batch_size must be an integer >= 1, got 32.5" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(RunFolderError):  # a folder holding a run is refused before anything is written
        (tmp_path / "held").mkdir()
        (tmp_path / "held" / "summary.json").write_text("{}")
        run(default_config("sac", "Pendulum-v1", overrides=TINY), tmp_path / "held", progress=False)
    assert (tmp_path / "held" / "summary.json").read_text() == "{}"


def test_checkpoint_summary_and_metrics_are_written_through_a_synced_temporary_file(tmp_path, monkeypatch):
    synced, renamed = [], []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append((Path(a).name, Path(b).name)), replace(a, b))[1])
    assert _train(tmp_path / "run") == 0
    names = {target for _, target in renamed}
    assert {"checkpoint.pt", "summary.json", "metrics.csv", "run.json"} <= names
    assert all(source == target + ".tmp" for source, target in renamed)
    assert len(synced) >= len(renamed)
    assert not list((tmp_path / "run").glob("*.tmp"))
