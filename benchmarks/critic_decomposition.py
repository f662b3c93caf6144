"""Where a VMBPO critic's value comes from: read a run's checkpoint and split eq. 23's Q target into its parts.

    .venv/bin/python benchmarks/critic_decomposition.py RUN_DIR/checkpoint.pt [--rows 4000] [--seed 0]

On ``rows`` states drawn from the run's real data D it prints, in reward units (values / eta):

- the model's predicted reward at q_c's actions against the env's known reward at the model's own next
  state (where the env has one, ``KNOWN_REWARD_FNS``) and against D's rewards at D's actions: is the
  reward head exploited?
- how saturated q_c's actions are (fraction of components within 5% of the box edge);
- the pre-tanh spreads of q_c and of the E-step's prior pi and the closed-form KL(q_c || pi) between
  them (nats, and reward units at eta): what the E-step pays each step for q_c's distance from pi;
- the target critic Q' at real states (at q_c's, D's and zero actions) and at the model's next states:
  a shift everywhere (a drifting critic) or only off D (extrapolation)?
- the parts of the Q target ``eta r + gamma soft_value(x') - nu`` (``soft_value = min Q' - log q_c +
  log pi - alpha_H log q_c`` at a fresh ``a' ~ q_c(x')``) against ``Q(x, a)``: which part exceeds the
  rewards.

A diagnosis tool for runs whose ``critic_divergence_ratio`` grows (benchmarks/tuning/vmbpo-reacher7dof).
Nothing from the checkpoint is executed (``read_checkpoint`` loads tensors only).
"""

from __future__ import annotations

import argparse

import torch

from torchrl_vmbpo.algorithms import build_agent
from torchrl_vmbpo.algorithms.pets import KNOWN_REWARD_FNS
from torchrl_vmbpo.algorithms.run import _current_fields
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.models.log_ratio import log_ratio_of
from torchrl_vmbpo.objectives import functional_vmbpo as fv
from torchrl_vmbpo.training.checkpoint import read_checkpoint, restore_checkpoint
from torchrl_vmbpo.training.config import TrainConfig
from torchrl_vmbpo.training.loop_state import LoopState


def open_checkpoint(argv: list[str] | None, description: str, *, rows: int):
    """The command line both checkpoint tools take (``checkpoint``, ``--rows``, ``--seed``), parsed, torch
    seeded, and the run opened: ``(args, cfg, agent, state, real)`` with the loop's state and D's real
    transitions (a TensorDict) as the checkpoint holds them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("checkpoint")
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    payload, cfg, agent = load(args.checkpoint)
    state, real, _ = LoopState.from_checkpoint(payload["loop_state"])
    return args, cfg, agent, state, real


def load(path: str):
    payload = read_checkpoint(path)
    cfg = TrainConfig(**_current_fields(payload["config"])).with_overrides(["compile=off", "device=cpu"])
    if not cfg.algo.startswith("vmbpo") or cfg.algo == "vmbpo-mfe":
        raise SystemExit(
            f"{path} is a {cfg.algo} run; this tool reads VMBPO's critic (vmbpo, vmbpo-paper, vmbpo-twist-off)"
        )
    agent = build_agent(cfg, make_env(cfg.env))
    restore_checkpoint(payload, agent, source=path)
    return payload, cfg, agent


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    args, cfg, agent, state, data = open_checkpoint(argv, __doc__.splitlines()[0], rows=4000)
    loss = agent.loss
    critic, eta, gamma = loss.objectives()["critic"], loss.eta, loss.gamma
    obs, act = data["observation"].float(), data["action"].float()
    real_reward = data["next", "reward"].float().reshape(-1)
    rows = torch.randint(len(obs), (args.rows,))
    x, a_data, r_data = obs[rows], act[rows], real_reward[rows]
    print(f"{cfg.algo} on {cfg.env}, env step {state.env_steps}, eta {eta}, {len(obs)} real rows")

    dist = loss.q_c.get_dist(fv.module_input(loss.q_c, x))
    a = dist.sample()
    x_next, r_model = loss.q_d.sample(x, a)
    r_model = r_model.reshape(-1)
    high = torch.as_tensor(dist.high if hasattr(dist, "high") else 1.0)
    low = torch.as_tensor(dist.low if hasattr(dist, "low") else -1.0)
    saturated = ((a - low) < 0.05 * (high - low)) | ((high - a) < 0.05 * (high - low))
    print(f"q_c actions: {saturated.float().mean():.2f} of components within 5% of the box edge")
    loc_c, scale_c = fv.pre_tanh_gaussian(dist)
    loc_pi, scale_pi = fv.pre_tanh_gaussian(loss.pi.get_dist(fv.module_input(loss.pi, x)))
    kl = fv.diag_gaussian_kl(loc_c, scale_c, loc_pi, scale_pi)
    spreads = ", ".join(f"{c:.3f}/{p:.3f}" for c, p in zip(scale_c.median(0).values, scale_pi.median(0).values))
    print(
        f"pre-tanh spread per action dimension, median over states (q_c/pi): {spreads}; "
        f"KL(q_c || pi) {kl.mean():.2f} nats a step ({kl.mean() / eta:.3f} reward units)"
    )
    _, r_model_at_data = loss.q_d.sample(x, a_data)
    print(
        f"model reward at D's actions {r_model_at_data.mean():.2f} (D: {r_data.mean():.2f}); at q_c's actions "
        f"mean {r_model.mean():.2f}, max {r_model.max():.2f}",
        end="",
    )
    known = KNOWN_REWARD_FNS.get(cfg.env)
    if known is not None:
        print(f"; known reward at the model's x' {known(x, a, x_next).reshape(-1).mean():.2f}", end="")
    print()

    for name, states in (("real x", x), ("model x' (q_c's action)", x_next)):
        at = {
            "q_c": loss.q_c.get_dist(fv.module_input(loss.q_c, states)).sample(),
            "D": a_data,
            "zero": torch.zeros_like(a),
        }
        values = ", ".join(f"{k} {critic.action_value(states, v, target=True).mean() / eta:.1f}" for k, v in at.items())
        print(f"Q'/eta at {name}, by action: {values}")

    dist_next = loss.q_c.get_dist(fv.module_input(loss.q_c, x_next))
    preimage, a_next, log_q_c = fv.rsample_with_preimage(dist_next)
    log_pi = fv.log_prob_at(loss.pi.get_dist(fv.module_input(loss.pi, x_next)), a_next, preimage, dist_next)
    q_next = critic.action_value(x_next, a_next, target=True)
    alpha_h = critic.entropy_weight
    entropy_part = torch.zeros(()) if alpha_h is None else (-alpha_h * log_q_c).mean()
    nu = (
        log_ratio_of(critic.log_ratio_network, x, a, x_next)
        if critic.log_ratio_network is not None
        else torch.zeros(())
    )
    q_now = critic.action_value(x, a)
    print("Q target parts, reward units per step (eta r + gamma soft value - nu):")
    print(
        f"  r {r_model.mean():.2f}; gamma min Q'(x', a') {gamma * q_next.mean() / eta:.1f}; "
        f"gamma (log pi - log q_c) {gamma * (log_pi - log_q_c).mean() / eta:.3f}; "
        f"gamma (-alpha_H log q_c) {gamma * entropy_part / eta:.3f}; -nu {-nu.mean() / eta:.4f}"
    )
    print(
        f"  against Q(x, a) {q_now.mean() / eta:.1f}: bootstrap minus Q {(gamma * q_next.mean() - q_now.mean()) / eta:.1f}"
    )


if __name__ == "__main__":
    main()
