"""Fitting q_d: holdout split, per-member bootstrap, early stopping, elites by holdout loss (MBPO)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDictBase
from torchrl.objectives import LossModule

from torchrl_vmbpo import keys
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.training.optim import optimize


def make_dynamics(cfg, obs_dim: int, act_dim: int) -> DynamicsModel:
    """The ensemble q_d of a run config (``num_members``, ``num_elites``, ``model_hidden``)."""
    return DynamicsModel(
        obs_dim, act_dim, num_members=cfg.num_members, num_elites=cfg.num_elites, hidden=cfg.model_hidden
    )


def make_model_optimizer(model: DynamicsModel, *, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with L2 decay on the ensemble's weight matrices only (not biases or log-variance bounds);
    fused (one kernel per group instead of ~10 tensor ops per parameter tensor)."""
    decay = [m.weight for m in model.ensemble.modules() if hasattr(m, "weight") and m.weight.ndim == 3]
    decay_ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in decay_ids]
    return torch.optim.Adam(
        [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=lr, fused=True
    )


@torch.no_grad()
def holdout_mse(model: DynamicsModel, data: TensorDictBase) -> torch.Tensor:
    """Per-member mean squared error of the predicted mean on ``data``: ``[E]``."""
    obs, action = data[keys.OBSERVATION], data[keys.ACTION]
    mean, _ = model.predict(obs, action)
    target = model.model_targets(obs, data[keys.REWARD], data[keys.NEXT_OBSERVATION]).unsqueeze(-2)
    return (mean - target).pow(2).mean(dim=(0, 2))


def with_fit_weights(objective, data: TensorDictBase) -> TensorDictBase:
    """``data`` with eq. 19's log-weights scored once for a whole fit when ``objective`` has them
    (``VMBPODynamicsLoss.with_log_weights``: V', Q' are fixed during a fit) and ``data`` does not hold
    them yet; otherwise ``data`` itself."""
    if hasattr(objective, "with_log_weights") and objective.tensor_keys.log_weight not in data.keys(True):
        return objective.with_log_weights(data)
    return data


def fit_dynamics(
    model: DynamicsModel,
    loss_module: LossModule,
    optimizer: torch.optim.Optimizer,
    data: TensorDictBase,
    *,
    batch_size: int = 256,
    holdout: float = 0.2,
    max_holdout: int = 5000,
    patience: int = 5,
    max_epochs: int = 200,
    improvement: float = 0.01,
    fit_normalizer: bool = True,
    on_epoch: Callable[[int, torch.Tensor], None] | None = None,
    holdout_score: Callable[[TensorDictBase], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Train ``model`` through ``loss_module`` on all real transitions ``data`` (batch ``[N]``).

    Each member trains on its own bootstrap of the training split (batches of layout ``[b, E]``);
    training stops once no member improved its holdout MSE by more than ``improvement`` (relative)
    for more than ``patience`` epochs; the ``num_elites`` members with the lowest holdout MSE become
    the elites used for rollouts. The loss module decides the objective: plain NLL for MBPO, the
    twisted (weighted) NLL of eq. 19 for VMBPO.

    ``fit_normalizer`` (default True): first refit ``model.input_normalizer`` to the mean and spread of
    all of ``data``'s (x, a), so a hand-fitted normaliser is replaced; False keeps the current one.
    ``holdout_score(holdout) -> [E]``: what early stopping and the elite choice rank members by (lower
    is better); default: ``loss_module.holdout_loss`` where the loss module has one, else
    :func:`holdout_mse`, MBPO's. With VMBPO's twist on, that is the weighted NLL of eq. 19
    (``VMBPODynamicsLoss.holdout_loss``): the fit's own objective, which may be negative, so an
    improvement is relative to ``|best|``. A loss module with ``with_log_weights`` (eq. 19's) first
    scores every row's log-weight once for the whole fit, unless ``data`` already holds them (a caller
    passing a compiled step function scores them itself: ``training.phases.fit_model``).
    ``on_epoch(epoch, score)``: called after each epoch with the per-member holdout score ``[E]``
    (benchmarks/model_fit_epochs.py records what each epoch buys).

    Speed: one gather of the epoch's bootstrapped rows, then full ``[batch_size, E]`` batches, each one
    batched matmul per layer for all members (``GaussianEnsemble``); ``loss_module`` may be a compiled
    function of the batch (``Agent.dynamics_step_loss``); the holdout is scored in one batched pass.
    """
    n = data.shape[0]
    if n < 2:
        raise ValueError(f"fit_dynamics needs at least 2 transitions, got {n}")
    data = with_fit_weights(loss_module, data)
    if fit_normalizer:
        model.input_normalizer.fit(model.model_inputs(data[keys.OBSERVATION], data[keys.ACTION]))
    perm = torch.randperm(n)
    n_hold = min(int(n * holdout), max_holdout)
    hold, train = data[perm[:n_hold]], data[perm[n_hold:]]
    if n_hold == 0:
        hold = train
    n_train, members = train.shape[0], model.num_members
    device = train.device if train.device is not None else torch.device("cpu")
    bootstrap = torch.randint(n_train, (members, n_train), device=device)  # [E, N]: each member its own resample
    # Every step a full [batch_size, E] batch (one compiled shape): the epoch's order wraps around to
    # fill the last batch, so each member sees its N resampled rows plus at most batch_size - 1 again.
    steps = -(-n_train // batch_size)
    wrap = torch.arange(steps * batch_size, device=device) % n_train
    if holdout_score is None:
        holdout_score = getattr(loss_module, "holdout_loss", None) or (lambda rows: holdout_mse(model, rows))
    score = torch.no_grad()(holdout_score)
    best = score(hold)
    stale, epoch = 0, 0
    for epoch in range(1, max_epochs + 1):  # noqa: B007 (the last epoch is reported after the loop)
        order = bootstrap[:, torch.randperm(n_train, device=device)][:, wrap]  # [E, steps * b]
        # [steps * b, E]: one gather per epoch, a view per step. The index is made contiguous because a
        # gather's output takes its index's layout: order.T's would give each step's rows strides that
        # grow with N, and a compiled step's backward asserts the strides it was traced with.
        epoch_rows = train[order.T.contiguous()]
        for start in range(0, steps * batch_size, batch_size):
            losses = loss_module(epoch_rows[start : start + batch_size])
            optimize(losses["loss_dynamics"], optimizer)
        current = score(hold)
        if on_epoch is not None:
            on_epoch(epoch, current)
        improved = (best - current) > improvement * best.abs().clamp_min(1e-12)
        best = torch.where(improved, current, best)
        stale = 0 if bool(improved.any()) else stale + 1
        if stale > patience:
            break
    last_loss = float(losses["loss_dynamics"].detach()) if epoch else float("nan")
    model.set_elites(torch.argsort(score(hold))[: model.num_elites])
    elite_mse = holdout_mse(model, hold)[model.elites]
    return {
        "model_epochs": float(epoch),
        "model_train_loss": last_loss,
        "model_holdout_mse": float(elite_mse.mean()),
        "model_fit_transitions": float(n),
    }
