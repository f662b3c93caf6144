"""Command line: ``vmbpo train --algo ALGO --env ENV_ID --steps N --seed S --out DIR [--set name=value ...]``.

``vmbpo train --resume --out DIR [--steps N] [--set device=cuda ...]`` continues a killed run from
its latest checkpoint (or extends a finished one to N steps) with the config it was started with; --set
may change only where and how fast it computes (``RESUME_SETTINGS``).

Exit codes: 0 done; 2 bad input (one line naming what is wrong and what is accepted: the library's
own errors, ``torchrl_vmbpo.errors``); 130 / 143 stopped by SIGINT / SIGTERM after writing a checkpoint
(``--resume`` continues). Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path

from torchrl_vmbpo.algorithms import PRESETS, default_config, resume, run
from torchrl_vmbpo.algorithms.presets import ALGORITHMS
from torchrl_vmbpo.algorithms.run import RESUME_SETTINGS
from torchrl_vmbpo.errors import ConfigError, RunInterrupted, VMBPOError
from torchrl_vmbpo.sweeps import available_suites, default_out, load_suite, run_sweep, write_suite_report
from torchrl_vmbpo.training.checkpoint import convert_checkpoint, read_checkpoint
from torchrl_vmbpo.training.config import settings_class
from torchrl_vmbpo.training.divergence import CriticDivergenceWarning
from torchrl_vmbpo.training.results import new_run_id, read_run_id, write_run_manifest
from torchrl_vmbpo.training.validation import describe_fields


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmbpo", description="VMBPO and its baselines on TorchRL")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one algorithm on one env")
    train.add_argument("--algo", default=None, choices=PRESETS, help="preset (default: mbpo)")
    train.add_argument("--env", default=None, help="Gymnasium env id or module:EnvId (default: Pendulum-v1)")
    train.add_argument("--steps", type=int, default=None, help="real env steps (default: the preset's)")
    train.add_argument("--seed", type=int, default=None, help="(default: 0)")
    train.add_argument("--out", default="runs/default", help="output directory (default: runs/default)")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override any TrainConfig field, e.g. --set utd=10 --set hidden=[64,64] (repeatable)",
    )
    train.add_argument("--overwrite", action="store_true", help="allow writing over an existing run in --out")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint.pt with its own config (--steps N extends it; "
        "--set may change only " + ", ".join(RESUME_SETTINGS) + ")",
    )
    convert = sub.add_parser(
        "convert-checkpoint", help="rewrite a checkpoint of an earlier version in the safe format (trusted files only)"
    )
    convert.add_argument("path", help="checkpoint.pt written by an earlier torchrl_vmbpo; kept as PATH.v1")
    sweep = sub.add_parser("sweep", help="run a suite's trials (algos x envs x configurations x seeds) on Ray Tune")
    sweep.add_argument("suite", help="suite name (" + ", ".join(available_suites()) + ") or path to a .toml suite file")
    sweep.add_argument("--out", default=None, help="sweep folder (default: results/SUITE)")
    sweep.add_argument(
        "--scale", type=float, default=None, help="multiply every budget of the suite (default: its own)"
    )
    sweep.add_argument(
        "--address",
        default=None,
        help="an existing Ray cluster (ray://HOST:10001, HOST:6379 or auto); default: start a local Ray",
    )
    sweep.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray (default: every core)")
    sweep.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: as resources allow)")
    report = sub.add_parser("report", help="Table 1 and Table 2 forms and learning curves of a suite's finished trials")
    report.add_argument("suite", help="suite name or path to a .toml suite file")
    report.add_argument("--out", default=None, help="sweep folder (default: results/SUITE)")
    report.add_argument("--scale", type=float, default=None, help="the scale the sweep ran at (default: the suite's)")
    show = sub.add_parser(
        "config", help="print every setting of the preset with its value, what it accepts and what it does"
    )
    show.add_argument("--algo", default="mbpo", choices=PRESETS)
    show.add_argument("--env", default="Pendulum-v1")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    show.add_argument("--json", action="store_true", help="print the config as JSON instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.formatwarning = _one_line_for_ours(warnings.formatwarning)
    try:
        return _command(args)
    except RunInterrupted as stop:
        print(f"vmbpo: {stop}", file=sys.stderr)
        return stop.exit_code
    except VMBPOError as err:
        print(f"vmbpo: error: {err}", file=sys.stderr)
        return 2


def _one_line_for_ours(formatwarning):
    """The library's run warnings (a diverged critic) as one ``vmbpo: warning:`` line; others unchanged."""
    if getattr(formatwarning, "ours", False):
        return formatwarning

    def format_(message, category, filename, lineno, line=None):
        if issubclass(category, CriticDivergenceWarning):
            return f"vmbpo: warning: {message}\n"
        return formatwarning(message, category, filename, lineno, line)

    format_.ours = True
    return format_


def _command(args: argparse.Namespace) -> int:
    if args.command == "convert-checkpoint":
        return _convert(Path(args.path))
    if args.command in ("sweep", "report"):
        return _sweep(args)
    if args.command == "train" and args.resume:
        given = [f"--{name}" for name in ("algo", "env", "seed") if getattr(args, name) is not None]
        if given or args.overwrite:
            raise ConfigError(
                f"--resume continues the run with the config it was started with; drop "
                f"{', '.join(given + ['--overwrite'] * args.overwrite)} (--steps extends it; "
                f"--set may change only {', '.join(RESUME_SETTINGS)})"
            )
        summary = resume(args.out, steps=args.steps, progress=not args.no_progress, overrides=args.overrides)
    else:
        # --seed, --steps and --set change the preset together: one check of the result (steps=300 with
        # init_random_steps=100 is fine even where the preset waits 1,000 random steps).
        changes = {"seed": args.seed or 0} if args.command == "train" else {}
        if args.command == "train" and args.steps is not None:
            changes["steps"] = args.steps
        cfg = default_config(args.algo or "mbpo", args.env or "Pendulum-v1", overrides=args.overrides, **changes)
        if args.command == "config":
            print(json.dumps(cfg.to_dict(), indent=2) if args.json else _settings_table(cfg))
            return 0
        summary = run(cfg, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    keys = ["algo", "env", "seed", "env_steps", "final_return", "best_return", "wall_seconds", "updates_per_second"]
    print(json.dumps({k: summary[k] for k in keys}, indent=2))
    written = [
        name
        for name in ("run.json", "metrics.csv", "summary.json", "learning_curve.png", "checkpoint.pt", "logs")
        if (Path(args.out) / name).exists()
    ]
    print(f"wrote {args.out}/: {', '.join(written)}")
    return 0


def _settings_table(cfg) -> str:
    """Every run field and algorithm setting: ``name = value`` then what it accepts and what it does."""
    settings = settings_class(cfg.algo).from_extra(cfg.extra)
    rows = [r for r in describe_fields(cfg) if r[0] != "extra"] + describe_fields(settings, prefix="extra.")
    lines = [f"# {cfg.algo} on {cfg.env} (chosen with --algo, --env); change any other line with --set NAME=VALUE"]
    if description := ALGORITHMS[cfg.algo].description:
        lines.append(f"# {cfg.algo}: {description}")
    for name, value, accepted, doc in rows:
        lines.append(f"{name} = {json.dumps(value)}")
        lines.append(f"    {accepted}. {doc}" if doc else f"    {accepted}.")
    return "\n".join(lines)


def _sweep(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    if args.scale is not None:
        if not args.scale > 0:
            raise ConfigError(f"--scale must be > 0, got {args.scale}")
        suite = dataclasses.replace(suite, scale=args.scale)
    out = Path(args.out) if args.out else default_out(suite)
    if args.command == "report":
        print(f"wrote {write_suite_report(suite, out)}")
        return 0
    result = run_sweep(suite, out, address=args.address, num_cpus=args.cpus, max_concurrent=args.max_concurrent)
    print(f"wrote {write_suite_report(suite, out)}")
    return 1 if result["failed"] else 0


def _convert(path: Path) -> int:
    """Convert a trusted v1 checkpoint; its folder's run.json (written now for an earlier version's
    folder) names the run the converted file belongs to, so ``--resume`` accepts it."""
    run_id = read_run_id(path.parent)
    new_id = run_id or new_run_id()
    backup = convert_checkpoint(path, run_id=new_id)
    if run_id is None:
        payload = read_checkpoint(path)
        write_run_manifest(path.parent, new_id, payload["config"])
    print(f"converted {path} to the safe format (run {new_id}); the original is kept as {backup}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
