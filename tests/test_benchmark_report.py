"""benchmarks/report.py: the NaN/inf scan of logged values that issues 4 and 6 bar on, the best mean over seeds;
benchmarks/sac_update_speed.py's table from a recorded result."""

import importlib.util
import json
from pathlib import Path

_BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
_REPORT = _BENCHMARKS / "report.py"


def _benchmark_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report_module():
    return _benchmark_module(_REPORT)


def test_sac_update_speed_renders_its_recorded_result_and_older_machine_records():
    # A renamed machine_info() field once broke the table after a 3-minute measurement: render the
    # recorded JSON (cpu_count) and one written before the rename (cpus).
    speed = _benchmark_module(_BENCHMARKS / "sac_update_speed.py")
    result = json.loads((_BENCHMARKS / "results" / "sac_update_speed.json").read_text())
    table = speed.render(result)
    assert f"{result['machine']['cpu_count']} CPUs" in table and "vs SB3: **" in table
    older = {**result, "machine": {k: v for k, v in result["machine"].items() if k != "cpu_count"} | {"cpus": 7}}
    assert "7 CPUs" in speed.render(older)


def test_non_finite_scan_counts_values_and_names_bad_ones(tmp_path):
    report = _report_module()
    from torchrl_vmbpo.training.results import pack_scalars, read_scalars

    (tmp_path / "logs" / "scalars").mkdir(parents=True)
    (tmp_path / "metrics.csv").write_text("env_steps,eval_return_mean\n1,-10.0\n500,-5.5\n")
    (tmp_path / "logs" / "scalars" / "q_value.csv").write_text("250,1.0\n500,nan\n")
    (tmp_path / "logs" / "scalars" / "exp_td.csv").write_text("250,inf\n")
    count, bad = report._non_finite(tmp_path, read_scalars(tmp_path))
    assert count == 4 + 2 + 1 and bad == ["exp_td@250", "q_value@500"]
    # The packed form of committed records holds the same rows and gives the same answer.
    assert pack_scalars(tmp_path) and not (tmp_path / "logs").exists()
    assert report._non_finite(tmp_path, read_scalars(tmp_path)) == (count, bad)
    (tmp_path / "scalars.csv").write_text("name,step,value\nq_value,250,1.0\nexp_td,250,3.0\n")
    assert report._non_finite(tmp_path, read_scalars(tmp_path)) == (6, [])


def _row(step, ret, updates=None):
    """One metrics.csv row; by default updated from the second evaluation on."""
    return {
        "env_steps": step,
        "eval_return_mean": ret,
        "updates": (0 if step <= 1 else step) if updates is None else updates,
    }


def test_a_run_being_extended_is_not_counted_as_finished_at_its_earlier_summary(tmp_path):
    # A 10k run resumed towards 20k keeps its 10k summary.json until it ends; its curve runs past it.
    report = _report_module()
    for seed, last in ((0, 10000), (1, 12000)):
        run = tmp_path / "vmbpo" / "Hopper-v5" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"env_steps": 10000, "seed": seed}))
        rows = "".join(f"{step},{step / 100}\n" for step in range(1000, last + 1, 1000))
        (run / "metrics.csv").write_text("env_steps,eval_return_mean\n" + rows)
    assert [run["summary"]["seed"] for run in report._load_runs(tmp_path)] == [0]


def test_best_mean_is_over_steps_every_seed_reached():
    report = _report_module()
    row = _row
    a = [row(1, 0.0), row(1000, 100.0), row(2000, 1000.0), row(3000, 73.0)]
    b = [row(1, 0.0), row(1000, 50.0), row(2000, 900.0), row(3000, 1000.0), row(4000, 2000.0)]
    assert report._best_mean([a, b]) == "950.0 @2000"  # 4000 is b's alone
    c = [row(1, 0.0), row(1500, 1000.0)]  # evaluated between a's steps: a's 1000-step value counts at 1500
    assert report._best_mean([a, c]) == "550.0 @1500"
    assert report._best_mean([[]]) == "—"


def test_every_committed_record_still_renders(tmp_path):
    import shutil

    report = _report_module()
    results = tmp_path / "results"
    shutil.copytree(_BENCHMARKS / "results", results)
    written = report.write_report(results)
    assert written.read_text() == (_BENCHMARKS / "results" / "RESULTS.md").read_text()
    # Committed records are packed, except runs to be continued (a checkpoint.pt beside them; pack_records
    # leaves those as they are, and their summary.json, if any, is an earlier segment's: not counted).
    unpacked = {p.parents[2] for p in (_BENCHMARKS / "results").rglob("logs/scalars/*.csv")}
    assert all((run / "checkpoint.pt").exists() for run in unpacked), sorted(unpacked)


def test_vmbpo_against_mbpo_compares_means_over_seeds_at_the_last_common_step_and_over_the_curve():
    report = _report_module()
    row = _row

    def runs(*curves):
        return [{"curve": c, "summary": {"seed": i}} for i, c in enumerate(curves)]

    groups = {
        ("Env-v0", "vmbpo"): runs(
            [row(1, 0.0), row(1000, 10.0), row(2000, 30.0)], [row(1, 0.0), row(1000, 20.0), row(2000, 10.0)]
        ),
        ("Env-v0", "mbpo"): runs([row(1, 0.0), row(1000, 0.0), row(2000, 19.0), row(3000, 99.0)]),  # 3000: mbpo's alone
        ("Other-v0", "vmbpo"): runs([row(1, 0.0), row(500, -5.0)]),
        ("Other-v0", "mbpo"): runs([row(1, 0.0), row(500, -1.0)]),
        ("Random-v0", "vmbpo"): runs([row(1, 0.0), row(500, 1.0, 0)]),  # still acting at random
        ("Random-v0", "mbpo"): runs([row(1, 0.0), row(500, 0.0, 0)]),
        ("Sac-only-v0", "sac"): runs([row(1, 0.0)]),
        # Behind over the whole curve only through its initial weights; MBPO's first update comes later.
        ("Init-v0", "vmbpo"): runs([row(1, -100.0), row(1000, 5.0, 10), row(2000, 7.0, 60)]),
        ("Init-v0", "mbpo"): runs([row(1, 0.0), row(1000, 4.0, 0), row(2000, 6.0, 50)]),
    }
    curves = [m["curve"] for key in [("Env-v0", "vmbpo"), ("Env-v0", "mbpo")] for m in groups[key]]
    assert report._compared_steps(curves) == [1, 1000, 2000]
    assert report._final_and_curve_mean([m["curve"] for m in groups[("Env-v0", "vmbpo")]], [1, 1000, 2000]) == (
        20.0,
        35 / 3,
    )
    lines = report._comparison(groups)
    env_row = next(line for line in lines if line.startswith("| Env-v0"))
    assert "| 2000 | 20.0 / 11.7 (0,1) | 19.0 / 6.3 (0) | — | — | — | yes | +8.0 (1000) |" in env_row
    other = next(line for line in lines if line.startswith("| Other-v0"))
    assert other.endswith("| no (-4.0, -2.0) | -4.0 (500) |")
    assert report._learning_steps([m["curve"] for m in groups[("Init-v0", "mbpo")]], [1, 1000, 2000]) == [2000]
    init = next(line for line in lines if line.startswith("| Init-v0"))
    assert init.endswith("| no (+1.0, -32.7) | +1.0 (2000) |")
    assert next(line for line in lines if line.startswith("| Random-v0")).endswith("| yes | — |")
    assert lines[-1] == (
        "VMBPO at least MBPO on both measures: 2 of 4 envs with both; 2 of 4 with the curve averaged after learning starts."
    )
    assert report._comparison({("Env-v0", "mbpo"): groups[("Env-v0", "mbpo")]}) == []


def test_divergence_verdicts_read_the_summary_and_the_logged_ratio(tmp_path):
    report = _report_module()
    (tmp_path / "scalars.csv").write_text(
        "name,step,value\ncritic_divergence_ratio,250,0.5\ncritic_divergence_ratio,500,12.0\n"
    )
    from torchrl_vmbpo.training.results import read_scalars

    crossing = {"env_step": 500, "value": 1200.0, "bound": 100.0, "ratio": 12.0}
    run = {"dir": tmp_path, "scalars": read_scalars(tmp_path)}
    assert report._divergence(run | {"summary": {"diverged": crossing}}) == ("diverged", 12.0)
    assert report._divergence(run | {"summary": {"diverged": None}}) == ("ok", 12.0)
    (tmp_path / "scalars.csv").write_text("name,step,value\nq_value,250,1.0\n")
    run = {"dir": tmp_path, "scalars": read_scalars(tmp_path)}
    assert report._divergence(run | {"summary": {}}) == ("unguarded", None)
