"""The paper's experiments as sweeps on Ray Tune: suite files, the sweep driver, the report.

Layer 5.5 (tests/test_layering.py): above ``algorithms`` (it runs their presets), below ``cli`` (which
calls it). Ray is an optional dependency (``pip install 'torchrl_vmbpo[sweep]'``), imported only when a
sweep runs.
"""

from __future__ import annotations

from pathlib import Path

from torchrl_vmbpo.errors import ConfigError
from torchrl_vmbpo.sweeps.report import write_suite_report
from torchrl_vmbpo.sweeps.suite import SUITES_DIR, Suite, Trial, available_suites, execute_trial, load_suite


def default_out(suite: Suite) -> Path:
    """Where a suite's trials go unless told: ``results/NAME`` under the current directory, ``results/NAME-scaleF``
    at a scale other than 1 (runs of other lengths never share folders)."""
    return Path("results") / (suite.name if suite.scale == 1.0 else f"{suite.name}-scale{suite.scale:g}")


def run_sweep(suite: Suite | str | Path, out: str | Path | None = None, **kwargs) -> dict:
    """Run ``suite`` (a :class:`Suite`, a suite name or a .toml path) through Ray Tune; see
    :func:`torchrl_vmbpo.sweeps.runner.run_sweep` for ``address``, ``num_cpus``, ``max_concurrent``, ``echo``."""
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    try:
        from torchrl_vmbpo.sweeps import runner
    except ImportError as err:
        raise ConfigError(
            f"sweeps run on Ray, which is not installed ({err}); pip install 'torchrl_vmbpo[sweep]' (or 'ray[tune]')"
        ) from None
    return runner.run_sweep(suite, out if out is not None else default_out(suite), **kwargs)


__all__ = [
    "SUITES_DIR",
    "Suite",
    "Trial",
    "available_suites",
    "default_out",
    "execute_trial",
    "load_suite",
    "run_sweep",
    "write_suite_report",
]
