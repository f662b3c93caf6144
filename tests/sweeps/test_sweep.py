"""Sweeps on Ray Tune: a 2 algorithms x 2 configurations x 2 seeds suite at 100 steps runs through Ray;
killing its driver midway and rerunning runs only the unfinished trials; the report renders both table
forms; a failed trial is reported and does not stop the others; bad suites are one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torchrl_vmbpo.cli import main
from torchrl_vmbpo.errors import SuiteError
from torchrl_vmbpo.sweeps import available_suites, load_suite, run_sweep, write_suite_report

ROOT = Path(__file__).resolve().parents[2]
SUITE = """
name = "tiny"
seeds = [0, 1]
set = ["init_random_steps=50", "eval_every=100", "eval_episodes=1", "hidden=[32,32]", "model_hidden=[32,32]",
       "num_members=2", "num_elites=1", "rollouts_per_step=4", "model_max_epochs=3", "model_retrain_every=50",
       "batch_size=32", "model_batch_size=64", "checkpoint_every=25"]

[envs]
"Pendulum-v1" = 100

[algos.sac]
grid = { tau = [0.005, 0.01] }

[algos.mbpo]
grid = { utd = [1, 2] }
"""


def _summaries(out: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime_ns for p in out.glob("*/*/*/seed*/summary.json")}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (its start-up takes seconds): the in-process sweeps use it, the
    drivers run as subprocesses connect to it with --address."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _sweep(suite: Path, out: Path, address: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "torchrl_vmbpo.cli", "sweep", str(suite), "--out", str(out), "--address", address],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory, local_ray):
    """The sweep's driver killed (SIGKILL) once 2 trials finished, then rerun: Ray kills a dead driver's
    trial actors, so the trials it was running stop where they were."""
    tmp = tmp_path_factory.mktemp("sweep")
    suite = tmp / "tiny.toml"
    suite.write_text(SUITE)
    out = tmp / "results"
    first = _sweep(suite, out, local_ray)
    deadline = time.time() + 600  # generous: on a loaded 2-core machine 2 trials took over 240 s
    while len(_summaries(out)) < 2 and first.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(1)
    before = {p: (m, json.loads(p.read_text())["run_id"]) for p, m in _summaries(out).items()}
    second = _sweep(suite, out, local_ray)
    try:
        log, _ = second.communicate(timeout=600)
    finally:  # a driver left running would hold the module's Ray CPUs and stall the next tests
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()
    return suite, out, before, second.returncode, log


def test_killed_sweep_reruns_only_unfinished_trials(killed_and_rerun):
    suite, out, before, code, log = killed_and_rerun
    assert code == 0, log
    assert 2 <= len(before) < 8, f"the driver was killed after {len(before)} finished trials"
    assert f"{len(before)} finished before (skipped)" in log
    after = _summaries(out)
    assert len(after) == 8  # every trial of the suite, each a run folder as `vmbpo train` writes it
    for path, (mtime, run_id) in before.items():
        assert after[path] == mtime and json.loads(path.read_text())["run_id"] == run_id, f"{path} was rewritten"
    for path in after:
        summary = json.loads(path.read_text())
        assert summary["env_steps"] == 100
        assert {"run.json", "metrics.csv", "learning_curve.png", "checkpoint.pt", "logs"} <= {
            p.name for p in path.parent.iterdir()
        }
    assert (out / "_ray").is_dir()  # Ray Tune's own records stay in the sweep folder
    assert "best so far: " in log and "8/8 done" in log


def test_report_renders_both_table_forms(killed_and_rerun):
    suite, out, _, _, _ = killed_and_rerun
    assert main(["report", str(suite), "--out", str(out)]) == 0
    report = (out / "REPORT.md").read_text()
    assert "## Table 1 form" in report and "## Table 2 form" in report
    table2 = report.split("## Table 2 form")[1].split("##")[0]
    assert "| Pendulum-v1 | sac | 2 | 4 |" in table2 and "| Pendulum-v1 | mbpo | 2 | 4 |" in table2
    assert "-146.8 ± 272.6" in table2  # the paper's Table 2 cell for MBPO on Pendulum, beside ours
    table1 = report.split("## Table 1 form")[1].split("##")[0]
    assert "| Pendulum-v1 | sac | 100 | tau=" in table1 and "| 0,1 |" in table1
    assert (out / "curves_best_Pendulum-v1.png").is_file() and (out / "curves_all_Pendulum-v1.png").is_file()


def test_failed_trial_is_reported_and_does_not_stop_the_others(local_ray, tmp_path):
    suite_file = tmp_path / "one.toml"
    suite_file.write_text(SUITE.replace("seeds = [0, 1]", "seeds = [0]").split("[algos.mbpo]")[0])
    suite = load_suite(suite_file)
    broken = Path(suite.trials(tmp_path / "out")[0].folder)  # a "killed" trial whose checkpoint is unreadable
    broken.mkdir(parents=True)
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    lines = []
    result = run_sweep(suite, tmp_path / "out", echo=lines.append, status_every=0.5)
    assert result["finished"] == 1 and len(result["failed"]) == 1
    name, error = result["failed"][0]
    assert name == "sac/Pendulum-v1/tau=0.005/seed0" and "checkpoint" in error.lower()
    assert any("FAILED sac/Pendulum-v1/tau=0.005/seed0" in line for line in lines)
    assert any("running sac/Pendulum-v1/tau=0.01/seed0 " in line for line in lines)  # live status of running trials
    assert write_suite_report(suite, tmp_path / "out").is_file()  # the finished one still reports


def test_shipped_suites_load_and_expand_to_deterministic_folders(tmp_path):
    assert {"smoke", "paper-table1", "paper-table2", "paper-ablation"} <= set(available_suites())
    table1 = load_suite("paper-table1")
    assert len(table1.algos) == 7 and len(table1.envs) == 6
    trials = table1.trials(tmp_path)
    assert {(t.env, t.steps) for t in trials} >= {
        ("Hopper-v5", 150_000),
        ("HalfCheetah-v5", 400_000),
        ("Pendulum-v1", 50_000),
    }
    assert trials == table1.trials(tmp_path)  # a rerun finds the same folders
    assert trials[0].folder == str(tmp_path.resolve() / "vmbpo" / "Pendulum-v1" / "preset" / "seed0")
    ablation = load_suite("paper-ablation")
    assert [tag for tag, _ in ablation.configurations("vmbpo")] == [f"batch_size={n}" for n in (128, 256, 512)]


def test_scale_multiplies_every_budget(tmp_path):
    import dataclasses

    suite = dataclasses.replace(load_suite("paper-ablation"), scale=0.01)
    trial = suite.trials(tmp_path)[0]
    cfg = trial.config()
    assert (cfg.steps, cfg.init_random_steps, cfg.eval_every) == (1000, 50, 10)


@pytest.mark.parametrize(
    "text, message",
    [
        ("seeds = [0]\n[algos.sac]\n", "missing field 'envs'"),
        ('[envs]\n"Pendulum-v1" = 100\n[algos.nope]\n', "unknown algorithm 'nope'"),
        ('[envs]\n"Pendulum-v1" = -5\n[algos.sac]\n', "envs must be"),
        ('seed = [1]\n[envs]\n"Pendulum-v1" = 100\n[algos.sac]\n', "unknown field(s) ['seed']"),
        ('[envs]\n"Pendulum-v1" = 2000\n[algos.sac]\ngrid = { utd = [-1] }\n', "utd must be"),
        ('[envs]\n"Pendulum-v1" = 2000\n[algos.sac]\ngrid = { utd = 1 }\n', "algos.sac.grid must be"),
        ('[envs]\n"Pendulum-v1" = 2000\n[algos.sac]\nset = ["steps=3"]\n', "algos.sac.set must be"),
        ("[envs\n", "is not valid TOML"),
        (
            'folder = "{algo}/seed{seed}"\n[envs]\n"Pendulum-v1" = 2000\n[algos.sac]\ngrid = { utd = [1, 2] }\n',
            "gives two trials the same folder",
        ),
        ('folder = "{algo}/{nope}"\n[envs]\n"Pendulum-v1" = 2000\n[algos.sac]\n', "folder must be a path template"),
    ],
)
def test_malformed_suite_is_one_line_error_naming_the_field(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SuiteError) as err:
        load_suite(path).trials(tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_suite_is_exit_code_2_with_one_line(capsys):
    assert main(["sweep", "no-such-suite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown suite 'no-such-suite'" in err and "paper-table1" in err


def test_trial_state_and_a_finished_run_of_another_length_is_never_overwritten(tmp_path):
    import dataclasses

    from torchrl_vmbpo.errors import RunFolderError
    from torchrl_vmbpo.sweeps import default_out, execute_trial

    suite_file = tmp_path / "tiny.toml"
    suite_file.write_text(SUITE)
    suite = load_suite(suite_file)
    assert default_out(suite) == Path("results/tiny")
    assert default_out(dataclasses.replace(suite, scale=0.5)) == Path("results/tiny-scale0.5")
    trial = suite.trials(tmp_path / "out")[0]
    folder = Path(trial.folder)
    assert trial.state() == "new"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"env_steps": 100, "final_return": -1.0}))
    assert trial.state() == "finished" and execute_trial(trial)[0] == "skipped"
    (folder / "summary.json").write_text(json.dumps({"env_steps": 50}))
    with pytest.raises(RunFolderError, match="finished run of another length"):
        execute_trial(trial)


def test_killed_trial_resumes_from_its_checkpoint_without_ray(tmp_path):
    """A trial's folder holding a shorter run of its own config with a checkpoint (a killed trial, or a
    budget raised since) is resumed from it; one killed between its last checkpoint and its summary restarts."""
    from torchrl_vmbpo.algorithms import run
    from torchrl_vmbpo.sweeps import execute_trial

    suite_file = tmp_path / "tiny.toml"
    suite_file.write_text(SUITE)
    trial = load_suite(suite_file).trials(tmp_path / "out")[0]
    run(trial.config().replace(steps=75), trial.folder, progress=False)
    first = json.loads((Path(trial.folder) / "summary.json").read_text())
    assert trial.state() == "killed"
    action, summary = execute_trial(trial)
    assert action == "resumed" and summary["env_steps"] == 100 and summary["run_id"] == first["run_id"]
    assert summary["resumed_at"] == [75]
    (Path(trial.folder) / "summary.json").unlink()  # killed after its final checkpoint, before its summary
    action, summary = execute_trial(trial)
    assert action == "started" and summary["env_steps"] == 100 and summary["run_id"] != first["run_id"]


def test_a_trial_on_a_gpu_asks_ray_for_its_gpu_fraction(tmp_path):
    import dataclasses

    suite = dataclasses.replace(load_suite("paper-ablation"), gpus_per_trial=0.125)
    on_gpu = dataclasses.replace(suite, set=[*suite.set, "device=cuda"]).trials(tmp_path)
    assert on_gpu and all(trial.gpus == 0.125 for trial in on_gpu)  # 8 runs share one GPU
    on_cpu = dataclasses.replace(suite, set=[*suite.set, "device=cpu"]).trials(tmp_path)
    assert all(trial.gpus == 0.0 for trial in on_cpu)
