"""benchmarks/report.py: the NaN/inf scan of logged values that issues 4 and 6 bar on."""

import importlib.util
from pathlib import Path

_REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"


def _report_module():
    spec = importlib.util.spec_from_file_location("benchmark_report", _REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_non_finite_scan_counts_values_and_names_bad_ones(tmp_path):
    report = _report_module()
    (tmp_path / "logs" / "scalars").mkdir(parents=True)
    (tmp_path / "metrics.csv").write_text("env_steps,eval_return_mean\n1,-10.0\n500,-5.5\n")
    (tmp_path / "logs" / "scalars" / "q_value.csv").write_text("250,1.0\n500,nan\n")
    (tmp_path / "logs" / "scalars" / "exp_td.csv").write_text("250,inf\n")
    count, bad = report._non_finite(tmp_path)
    assert count == 4 + 2 + 1 and bad == ["exp_td.csv@250", "q_value.csv@500"]
    (tmp_path / "logs" / "scalars" / "q_value.csv").write_text("250,1.0\n")
    (tmp_path / "logs" / "scalars" / "exp_td.csv").write_text("250,3.0\n")
    assert report._non_finite(tmp_path) == (6, [])
