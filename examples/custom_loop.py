"""VMBPO in a user's own TorchRL loop: a Collector on the real env, two replay buffers (D real, E model),
the library's dynamics model and WorldModelEnv producing rollouts through a second Collector, and
VMBPOLoss's objectives each with its optimizer. No library loop, no presets.

    python examples/custom_loop.py --steps 3000      # VMBPO on Pendulum-v1

It shows the plumbing, not tuned training: at one update per env step, 2,000 steps (seed 0) ended at
a return of -1589 (the preset trains at 10 updates per step; see VMBPOSettings and TrainConfig).

Switching to MBPO or MPO replaces the 7-line block between ">>> algorithm" and "<<< algorithm" with one
of the blocks at the end of this file (at most 10 changed lines; tests/test_custom_loop.py runs all
three).
"""

from __future__ import annotations

import argparse

import torch
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SACLoss, SoftUpdate  # noqa: F401 (SACLoss: the MBPO block)

from torchrl_vmbpo.envs import WorldModelEnv, make_env
from torchrl_vmbpo.envs.termination import never_done
from torchrl_vmbpo.envs.world_model import buffer_start_states
from torchrl_vmbpo.models import (
    DynamicsModel,
    make_log_ratio_network,
    make_q_value,
    make_state_value,
    make_tanh_gaussian_actor,
)
from torchrl_vmbpo.objectives import GaussianEnsembleNLLLoss, MPOLoss, VMBPOLoss  # noqa: F401 (MPOLoss: MPO)
from torchrl_vmbpo.training.model_fit import fit_dynamics


def minimise(loss, optimizer, batch):
    """One gradient step on the sum of a loss's ``loss_*`` entries; returns its output."""
    out = loss(batch)
    optimizer.zero_grad(set_to_none=True)
    sum(value for key, value in out.items() if key.startswith("loss_")).backward()
    optimizer.step()
    return out


def train(steps=3000, seed=0, hidden=(64, 64), init_random=500, frames_per_batch=10, batch_size=256,
          rollouts=100, horizon=1, model_every=250, model_epochs=20, ratio_steps=50, eval_steps=200):
    torch.manual_seed(seed)
    env = make_env("Pendulum-v1", seed=seed)
    obs_dim, act_dim, spec = 3, 1, env.action_spec
    pi = make_tanh_gaussian_actor(obs_dim, spec, hidden=hidden)  # acts in the real env
    q_d = DynamicsModel(obs_dim, act_dim, hidden=hidden)
    nll = GaussianEnsembleNLLLoss(q_d)  # noqa: F841 (MBPO's and MPO's model loss, in their blocks)
    # >>> algorithm: VMBPO
    q_c = make_tanh_gaussian_actor(obs_dim, spec, hidden=hidden)
    q_c.load_state_dict(pi.state_dict())  # the EM starts from q_c = pi
    loss = VMBPOLoss(pi, q_c, make_q_value(obs_dim, act_dim, hidden=hidden), make_state_value(obs_dim, hidden=hidden),
                     q_d, make_log_ratio_network(obs_dim, act_dim, hidden=hidden, bound=0.5), eta=3.0, gamma=0.99,
                     mix=1.0, m_step_mode="weighted_map", kl_coef=0.1, kl_coef_std=100.0, m_step_period=100)
    update_losses, targets, rollout_policy = [loss.critic, loss.actor, loss.m_step], SoftUpdate(loss.critic, tau=0.005), q_c
    model_objective, after_fit, after_update = loss.dynamics_objective, [loss.log_ratio], loss.m_step_schedule
    # <<< algorithm
    real_buffer = ReplayBuffer(storage=LazyTensorStorage(steps))  # D
    model_buffer = ReplayBuffer(storage=LazyTensorStorage(rollouts * horizon * 20))  # E
    # Built before D has data: the world model draws its start states from D at each reset.
    world = WorldModelEnv(q_d, env, start_state_sampler=buffer_start_states(real_buffer), termination_fn=never_done,
                          batch_size=[rollouts])
    imagination = iter(Collector(world, rollout_policy, frames_per_batch=rollouts * horizon, total_frames=-1,
                                 max_frames_per_traj=horizon, reset_at_each_iter=True, trust_policy=True))
    collector = Collector(env, pi, frames_per_batch=frames_per_batch, total_frames=steps,
                          init_random_frames=init_random, trust_policy=True)
    optimizers = {loss_: torch.optim.Adam(loss_.parameters(), lr=3e-4) for loss_ in [*update_losses, *after_fit]}
    model_optimizer = torch.optim.Adam(q_d.parameters(), lr=1e-3)
    updates, metrics = 0, {}
    for frames, data in enumerate(collector, start=1):
        real_buffer.extend(data.reshape(-1))
        if len(real_buffer) < init_random:
            continue
        if (frames * frames_per_batch) % model_every == 0 or not len(model_buffer):
            # fit_dynamics refits q_d's input normaliser on D, then trains on bootstrapped [B, E] batches.
            fit_dynamics(q_d, model_objective(updates), model_optimizer, real_buffer[:], max_epochs=model_epochs)
            for loss_ in after_fit:  # VMBPO: nu against the fitted q_d (eq. 21)
                for _ in range(ratio_steps):
                    minimise(loss_, optimizers[loss_], real_buffer.sample(batch_size))
        model_buffer.extend(next(imagination).reshape(-1))  # x ~ D, a ~ rollout policy, x' ~ q_d
        for _ in range(frames_per_batch):
            batch = model_buffer.sample(batch_size)
            for loss_ in update_losses:
                metrics.update(minimise(loss_, optimizers[loss_], batch).items())
            targets.step()
            updates += 1
            after_update(updates)
    collector.shutdown()
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        episode_return = env.rollout(eval_steps, pi)["next", "reward"].sum().item()
    return {"return": episode_return, "updates": updates,
            **{key: float(value.detach()) for key, value in metrics.items() if key.startswith("loss_")}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(train(steps=args.steps, seed=args.seed))


if __name__ == "__main__":
    main()

# >>> algorithm: MBPO
#     loss = SACLoss(pi, make_q_value(obs_dim, act_dim, hidden=hidden), num_qvalue_nets=2, action_spec=spec)
#     loss.make_value_estimator(gamma=0.99)
#     update_losses, targets, rollout_policy = [loss], SoftUpdate(loss, tau=0.005), pi
#     model_objective, after_fit, after_update = (lambda n: nll), [], (lambda n: None)
# <<< algorithm

# >>> algorithm: MPO
#     loss = MPOLoss(pi, [make_q_value(obs_dim, act_dim, hidden=hidden) for _ in range(2)], gamma=0.99)
#     update_losses, targets, rollout_policy = [loss], SoftUpdate(loss, tau=0.005), pi
#     model_objective, after_fit, after_update = (lambda n: nll), [], (lambda n: None)
# <<< algorithm
