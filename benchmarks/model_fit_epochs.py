"""How many epochs a q_d fit runs under MBPO's early-stopping rule, and what the epochs buy.

Hopper-v5 sizes (MBPO's 7 x 4 x 200 ensemble, batch 256, lr 1e-3, holdout 20%): ``--transitions``
real transitions of a uniformly random policy (as MBPO's first fit sees at 5,000 steps), plus a
separate test set of ``--test`` transitions from other episodes (another seed) the fit never sees. One fit with the run config's rule
(stop once no member improved its holdout MSE by more than 1% for more than 5 epochs: MBPO's
``_save_best``), continued past the stop to ``--epochs`` epochs so the same fit shows what later
epochs would have bought: per epoch, the elites' holdout MSE and test MSE, and the epoch the rule
stops at. The holdout is drawn from the training episodes (as MBPO's), so it shares their states;
the test set shows how the model generalises to new episodes.

Usage: ``.venv/bin/python benchmarks/model_fit_epochs.py`` (one thread, ~5 min on a 2-core machine);
writes benchmarks/results/model_fit_epochs.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch

from torchrl_vmbpo.algorithms.presets import build_agent, default_config
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.training.model_fit import fit_dynamics, holdout_mse
from torchrl_vmbpo.training.results import git_commit, machine_info

RESULTS = Path(__file__).resolve().parent / "results"


def random_transitions(env_id: str, n: int, seed: int):
    env = make_env(env_id, seed=seed)
    data = env.rollout(n, break_when_any_done=False)  # random actions; resets inside at episode ends
    env.close()
    flat = data.reshape(-1)
    return flat.select(
        "observation", "action", ("next", "observation"), ("next", "reward"), ("next", "done"), ("next", "terminated")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--transitions", type=int, default=5000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", default="off", choices=["on", "off"])
    parser.add_argument("--out", default=str(RESULTS / "model_fit_epochs"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    cfg = default_config("mbpo", args.env, device="cpu", compile=args.compile)
    env = make_env(args.env)
    agent = build_agent(cfg, env)
    train = random_transitions(args.env, args.transitions, args.seed)
    test = random_transitions(args.env, args.test, args.seed + 1)
    curve: list[torch.Tensor] = []
    test_curve: list[float] = []
    test_seconds = 0.0

    def on_epoch(epoch, mse):
        nonlocal test_seconds
        t = time.perf_counter()
        curve.append(mse)
        test_curve.append(float(holdout_mse(agent.dynamics, test).sort().values[:5].mean()))
        test_seconds += time.perf_counter() - t

    start = time.perf_counter()
    # The rule's stop, then the same fit on to --epochs (patience = epochs: it never stops early).
    fit_dynamics(
        agent.dynamics,
        agent.dynamics_step_loss(),
        agent.model_optimizer,
        train,
        batch_size=cfg.model_batch_size,
        patience=args.epochs,
        max_epochs=args.epochs,
        on_epoch=on_epoch,
    )
    seconds = time.perf_counter() - start - test_seconds
    best, stale, stop = None, 0, None
    rows = []
    for epoch, mse in enumerate(curve, 1):
        if best is None:
            best = mse.clone()
            improved = torch.ones_like(mse, dtype=torch.bool)
        else:
            improved = (best - mse) / best.clamp_min(1e-12) > 0.01
            best = torch.where(improved, mse, best)
        stale = 0 if bool(improved.any()) else stale + 1
        if stop is None and stale > cfg.model_patience:
            stop = epoch
        rows.append(
            {
                "epoch": epoch,
                "holdout_mse_best5": float(mse.sort().values[:5].mean()),
                "holdout_mse_all": float(mse.mean()),
                "test_mse_best5": test_curve[epoch - 1],
            }
        )
    record = {
        "env": args.env,
        "transitions": args.transitions,
        "seed": args.seed,
        "epochs_run": len(curve),
        "rule_stop_epoch": stop,
        "fit_seconds": round(seconds, 1),
        "curve": rows,
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(),
        "machine": machine_info(1),
        "config": {
            "model_hidden": cfg.model_hidden,
            "lr": cfg.model_lr,
            "weight_decay": cfg.model_weight_decay,
            "batch": cfg.model_batch_size,
            "patience": cfg.model_patience,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    out.with_suffix(".md").write_text(render([record]))
    print(json.dumps({k: v for k, v in record.items() if k != "curve"}, indent=1))
    for row in rows:
        if row["epoch"] in (1, 5, 10, 20, 21, 30, 40, 60, 80, 100, 150, 200) or row["epoch"] == stop:
            print(row)


def render(records: list[dict]) -> str:
    """Markdown: per record, its provenance and the holdout / test MSE at selected epochs."""
    lines = [
        "# Model-fit epochs under MBPO's early-stopping rule",
        "",
        "Generated by `benchmarks/model_fit_epochs.py` (the module docstring says what is measured). "
        "MSE: mean over the 5 members with the lowest holdout MSE; holdout: 20% of the fit's transitions "
        "(MBPO's random split); test: transitions of other episodes (another seed).",
        "",
    ]
    for r in records:
        m = r["machine"]
        lines += [
            f"## {r['env']}, {r['transitions']} random transitions, seed {r['seed']}",
            "",
            f"- date {r['date']}, commit `{r['commit']}`, {m.get('cpu_model')} ({m.get('torch_threads')} thread)",
            f"- epochs run {r['epochs_run']}, MBPO's rule stops at: {r['rule_stop_epoch'] or 'never'}; "
            f"fit time {r['fit_seconds']} s (test scoring excluded)",
            "",
            "| epoch | holdout MSE | test MSE |",
            "| ---: | ---: | ---: |",
        ]
        for row in r["curve"]:
            if row["epoch"] in (1, 5, 10, 20, 30, 40, 60, 80, 100, 120, 150, 200):
                lines.append(f"| {row['epoch']} | {row['holdout_mse_best5']:.4f} | {row['test_mse_best5']:.4f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
