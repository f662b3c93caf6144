"""Do eq. 19's weights favour the rows the model already fits? Read a VMBPO checkpoint and compare normalisers.

    .venv/bin/python benchmarks/weight_normalisers.py RUN_DIR/checkpoint.pt [--rows 4096] [--seed 0]

Eq. 19 fits q_d to real transitions weighted by ``w = exp(eta r + gamma V'(x') - Q'(x, a))``, whose
normaliser ``Q'(x, a) - eta r`` stands for ``log E_p[exp(gamma V'(x'))]``. The loss can read it from
the critic (``weight_normaliser="critic"``, eq. 19 as written) or estimate it from the model's own next
states (``"model"``: ``log mean_k exp(gamma V'(x~_k))``). In a deterministic environment the exact
weight is one on every row (the twist of a point mass is itself). A normaliser that errs by an amount
tied to the model's own uncertainty makes the weighted fit move its capacity away from the rows the
model is unsure of, and the next fit's model is less sure of them still.

On ``rows`` transitions of the run's real data D, in 256-row batches as the fit normalises and tempers
them (``weight_min_ess``), for each normaliser it prints: the raw ``log w`` (mean, sd), its correlation
with the model's uncertainty there (the spread of ``gamma V'`` over the model's sampled next states,
nats), the tempering exponent, and the mean final weight of the quarter of rows the model is surest of
against the quarter it is least sure of (1 and 1 when the weights do not depend on the model's
uncertainty). Nothing from the checkpoint is executed (``read_checkpoint`` loads tensors only).
Measurements: benchmarks/tuning/vmbpo-weight-normaliser.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from torchrl_vmbpo.objectives import functional_vmbpo as fv
from torchrl_vmbpo.objectives.vmbpo_dynamics import NORMALISERS

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a script folder, not a package
from critic_decomposition import open_checkpoint  # noqa: E402  (a VMBPO run's agent and D; refuses others)


@torch.no_grad()
def model_value_spread(loss, rows) -> torch.Tensor:
    """Per row, the sd of ``gamma (1 - terminated) V'(x~)`` over the next states ``x~`` the model
    normaliser draws (every member's Gaussian at ``(x, a)``): how unsure the model is of the next
    state's value, in nats."""
    b = fv.fetch(rows, loss._read_keys(), "weight_normalisers")
    alive = 1.0 - b["terminated"].reshape(-1).float()
    values = loss.sampled_next_values(b["observation"], b["action"])  # [K E, N]
    return (loss.critic.gamma * alive * values).std(0)


@torch.no_grad()
def final_weights(log_w: torch.Tensor, *, batch: int, min_ess: float | None, max_weight, mix: float):
    """The fit's weights of consecutive ``batch``-row batches (tempered, normalised, clipped, mixed as
    :class:`VMBPODynamicsLoss` does) and each batch's tempering exponent."""
    weights, betas = [], []
    for start in range(0, log_w.shape[0] - batch + 1, batch):
        chunk = log_w[start : start + batch]
        beta = torch.ones(()) if min_ess is None else fv.tempering_exponent(chunk, min_ess=min_ess)
        weights.append(fv.normalise_weights(beta * chunk, max_weight=max_weight, mix=mix))
        betas.append(beta)
    return torch.cat(weights), torch.stack(betas)


def main(argv: list[str] | None = None) -> None:
    args, cfg, agent, state, real = open_checkpoint(argv, __doc__.splitlines()[0], rows=4096)
    loss = agent.model_loss  # the eq.-19 fit (VMBPODynamicsLoss), with its model and the critic's V', Q'
    rows = real[torch.randperm(real.shape[0])[: args.rows]]
    n = rows.shape[0] - rows.shape[0] % cfg.batch_size
    rows = rows[:n]
    spread = model_value_spread(loss, rows)
    low, high = spread.quantile(torch.tensor([0.25, 0.75]))
    surest, least_sure = spread <= low, spread >= high
    print(
        f"{cfg.algo} on {cfg.env}, env step {state.env_steps}, {n} real rows; model's spread of gamma V'(x'): "
        f"median {spread.median():.2f} nats, 90th percentile {spread.quantile(0.9):.2f}; the run's "
        f"normaliser: {loss.normaliser}, min_ess {loss.min_ess}"
    )
    print(
        "| normaliser | log w mean | log w sd | corr(log w, -spread) | beta (median) | mean w, surest quarter | mean w, least sure quarter |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    chosen = loss.normaliser
    try:
        for normaliser in NORMALISERS:
            loss.normaliser = normaliser
            torch.manual_seed(args.seed)
            log_w = torch.cat([loss.log_weight(rows[i : i + 1024]) for i in range(0, n, 1024)])
            w, beta = final_weights(
                log_w, batch=cfg.batch_size, min_ess=loss.min_ess, max_weight=loss.max_weight, mix=loss.mix
            )
            corr = torch.corrcoef(torch.stack([log_w, -spread]))[0, 1]
            print(
                f"| {normaliser} | {log_w.mean():.2f} | {log_w.std():.2f} | {corr:.3f} | {beta.median():.4f} | "
                f"{w[surest].mean():.3f} | {w[least_sure].mean():.3f} |"
            )
    finally:
        loss.normaliser = chosen


if __name__ == "__main__":
    main()
