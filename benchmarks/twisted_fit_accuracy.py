"""What does eq. 19's twist cost q_d's accuracy at equal data? Fit fresh ensembles on a VMBPO run's D.

    .venv/bin/python benchmarks/twisted_fit_accuracy.py RUN_DIR/checkpoint.pt [--test-rows 1000]
        [--variants mle twist twist:0.9] [--max-epochs 200] [--seed 0]

The run's q_d is fitted, fit after fit, to eq. 19's twisted dynamics: real transitions weighted by
``exp(eta r + gamma V'(x') - Q'(x, a))``, tempered to an effective sample size of ``weight_min_ess``
of each batch. On deterministic dynamics the exact weight is one on every row, so whatever spread the
weights have is the critic's error, and the fit spends less of its data where Q' errs upward. This
tool measures what that does to the model: from the checkpoint's critic and D, it fits a fresh
ensemble (the run's sizes, optimiser, holdout rule and early stopping) on D without its newest
``test_rows`` transitions, once per variant, and scores each on those newest rows, the states the
current policy reaches, which the fit never saw:

- ``mle``: plain maximum likelihood (MBPO's fit, ``vmbpo-twist-off``'s);
- ``twist``: eq. 19's fit as the run configures it (its normaliser, ESS floor, clip);
- ``twist:F``: the same with the ESS floor ``weight_min_ess=F``.

Each row of the printed table: the fit's epochs, the elites' MSE on the fit's own random holdout
split (what the run logs as ``model_holdout_mse``), and the MSE of the predicted mean on the newest
rows, the elites' and all members'. Every variant starts from the same seed. Nothing from the
checkpoint is executed (``read_checkpoint`` loads tensors only). Measurements:
benchmarks/tuning/vmbpo-twist-halfcheetah.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from torchrl_vmbpo.training.loop_state import LoopState
from torchrl_vmbpo.training.model_fit import (
    fit_dynamics,
    holdout_mse,
    make_dynamics,
    make_model_optimizer,
    with_fit_weights,
)
from torchrl_vmbpo.training.phases import model_fit_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a script folder, not a package
from critic_decomposition import load  # noqa: E402  (a VMBPO run's agent; refuses others)


def parse_variant(name: str) -> tuple[bool, float | None]:
    """(twisted, ESS floor): ``"mle"`` -> (False, None); ``"twist"`` -> (True, None), the run's own
    floor; ``"twist:F"`` -> (True, F)."""
    if name in ("mle", "twist"):
        return name == "twist", None
    head, _, floor = name.partition(":")
    try:
        value = float(floor)
    except ValueError:
        value = -1.0
    if head != "twist" or not 0 < value <= 1:
        raise SystemExit(f"variant {name!r}: expected 'mle', 'twist' or 'twist:F' with an ESS floor F in (0, 1]")
    return True, value


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--test-rows", type=int, default=1000, help="D's newest transitions, held out to score")
    parser.add_argument("--variants", nargs="+", default=["mle", "twist", "twist:0.9"])
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the run's model_max_epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    variants = {name: parse_variant(name) for name in args.variants}
    payload, cfg, agent = load(args.checkpoint)
    state, real, _ = LoopState.from_checkpoint(payload["loop_state"])
    n = real.shape[0]
    if not 0 < args.test_rows < n - cfg.model_batch_size:
        raise SystemExit(f"--test-rows must be in (0, {n - cfg.model_batch_size}) for this run's {n} real rows")
    train, test = real[: n - args.test_rows], real[n - args.test_rows :]
    twisted, plain = agent.model_loss, agent.plain_model_loss
    run_floor = twisted.min_ess
    print(
        f"{cfg.algo} on {cfg.env}, env step {state.env_steps}: fitted on {n - args.test_rows} real rows, scored "
        f"on the newest {args.test_rows}; the run's twist: normaliser {twisted.normaliser}, min_ess {run_floor}"
    )
    print(
        "| variant | epochs | holdout MSE (fit's split, elites) | newest rows MSE, elites | newest rows MSE, all | seconds |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    settings = model_fit_settings(cfg) | ({"max_epochs": args.max_epochs} if args.max_epochs else {})
    rows = []
    for name, (is_twisted, floor) in variants.items():
        objective = twisted if is_twisted else plain
        twisted.min_ess = run_floor if floor is None else floor
        torch.manual_seed(args.seed)
        agent.q_d.load_state_dict(make_dynamics(cfg, agent.q_d.obs_dim, agent.q_d.action_dim).state_dict())
        optimizer = make_model_optimizer(agent.q_d, lr=cfg.model_lr, weight_decay=cfg.model_weight_decay)
        start = time.perf_counter()
        fit = fit_dynamics(
            agent.q_d,
            objective,
            optimizer,
            with_fit_weights(objective, train),
            holdout_score=getattr(objective, "holdout_loss", None),
            **settings,
        )
        with torch.no_grad():
            mse = holdout_mse(agent.q_d, test)
        row = {
            "variant": name,
            "epochs": int(fit["model_epochs"]),
            "holdout_mse": float(fit["model_holdout_mse"]),
            "newest_mse_elites": float(mse[agent.q_d.elites].mean()),
            "newest_mse_all": float(mse.mean()),
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        print(
            f"| {name} | {row['epochs']} | {row['holdout_mse']:.4f} | {row['newest_mse_elites']:.4f} | "
            f"{row['newest_mse_all']:.4f} | {row['seconds']:.0f} |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
