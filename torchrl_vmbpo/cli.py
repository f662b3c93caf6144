"""Command line: ``vmbpo train --algo ALGO --env ENV_ID --steps N --seed S --out DIR [--set name=value ...]``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from torchrl_vmbpo.algorithms import PRESETS, default_config, run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmbpo", description="VMBPO and its baselines on TorchRL")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one algorithm on one env")
    train.add_argument("--algo", default="mbpo", choices=PRESETS, help="preset (default: mbpo)")
    train.add_argument("--env", default="Pendulum-v1", help="Gymnasium env id (default: Pendulum-v1)")
    train.add_argument("--steps", type=int, default=None, help="real env steps (default: the preset's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="runs/default", help="output directory (default: runs/default)")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
        help="override any TrainConfig field, e.g. --set utd=10 --set hidden=[64,64] (repeatable)",
    )
    train.add_argument("--overwrite", action="store_true", help="allow writing over an existing run in --out")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    show = sub.add_parser("config", help="print the preset's full config as JSON")
    show.add_argument("--algo", default="mbpo", choices=PRESETS)
    show.add_argument("--env", default="Pendulum-v1")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        changes = {"seed": args.seed} if args.command == "train" else {}
        if args.command == "train" and args.steps is not None:
            changes["steps"] = args.steps
        cfg = default_config(args.algo, args.env, **changes).with_overrides(args.overrides)
        if args.command == "config":
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        summary = run(cfg, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    except (ValueError, KeyError, FileExistsError, TypeError) as err:
        print(f"vmbpo: error: {err}", file=sys.stderr)
        return 2
    keys = ["algo", "env", "seed", "env_steps", "final_return", "best_return", "wall_seconds", "updates_per_second"]
    print(json.dumps({k: summary[k] for k in keys}, indent=2))
    print(f"wrote {args.out}/metrics.csv, summary.json, learning_curve.png, checkpoint.pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
