import torch
from tensordict import TensorDict

from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.objectives.ensemble_nll import GaussianEnsembleNLLLoss
from torchrl_vmbpo.training.model_fit import fit_dynamics, holdout_mse, make_model_optimizer


def _linear_system(n=600):
    obs, act = torch.randn(n, 2), torch.randn(n, 1)
    next_obs = obs + 0.1 * torch.cat([obs[:, 1:], act], -1)
    reward = obs.sum(-1, keepdim=True) - 0.5 * act
    return TensorDict(
        {"observation": obs, "action": act, ("next", "observation"): next_obs, ("next", "reward"): reward}, [n]
    )


def test_fit_reduces_holdout_error_and_picks_elites_by_holdout_loss():
    data = _linear_system()
    model = DynamicsModel(2, 1, num_members=4, num_elites=2, hidden=(32, 32))
    optim = make_model_optimizer(model, lr=3e-3, weight_decay=1e-5)
    before = holdout_mse(model, data).mean()
    stats = fit_dynamics(model, GaussianEnsembleNLLLoss(model), optim, data, batch_size=64, max_epochs=30)
    after = holdout_mse(model, data)
    assert after.mean() < 0.2 * before
    assert 1 <= stats["model_epochs"] <= 30
    # Elites are the members with the lowest error (on the holdout split, here checked on all data).
    assert stats["model_holdout_mse"] <= after.max()


def test_early_stopping_and_elite_selection_by_holdout_error():
    data = _linear_system(200)
    model = DynamicsModel(2, 1, num_members=2, num_elites=1, hidden=(8,))
    model.ensemble.output_layer.bias.data[0] += 10.0  # member 0 is far off, member 1 is not
    optim = make_model_optimizer(model, lr=0.0, weight_decay=0.0)  # lr 0: holdout never improves
    stats = fit_dynamics(model, GaussianEnsembleNLLLoss(model), optim, data, batch_size=64, patience=2, max_epochs=50)
    assert stats["model_epochs"] == 3
    assert model.elites.tolist() == [1]  # the elite is the member with the lower holdout error


def test_weight_decay_applies_to_weight_matrices_only():
    model = DynamicsModel(2, 1, hidden=(8,))
    groups = make_model_optimizer(model, lr=1e-3, weight_decay=1e-4).param_groups
    weights = {id(layer.weight) for layer in [*model.ensemble.hidden_layers, model.ensemble.output_layer]}
    assert groups[0]["weight_decay"] == 1e-4 and {id(p) for p in groups[0]["params"]} == weights
    assert groups[1]["weight_decay"] == 0.0 and not weights & {id(p) for p in groups[1]["params"]}


def test_elites_and_early_stopping_follow_the_given_holdout_score():
    data = _linear_system(200)
    model = DynamicsModel(2, 1, num_members=4, num_elites=2, hidden=(8,))
    optim = make_model_optimizer(model, lr=1e-3, weight_decay=0.0)
    calls = []

    def score(rows):  # a fixed ranking (members 3 and 1 best), negative like an NLL; never improves
        calls.append(rows.shape[0])
        return torch.tensor([-1.0, -3.0, -2.0, -4.0])

    stats = fit_dynamics(
        model,
        GaussianEnsembleNLLLoss(model),
        optim,
        data,
        batch_size=64,
        patience=1,
        max_epochs=20,
        holdout_score=score,
    )
    assert stats["model_epochs"] == 2  # no improvement for more than 1 epoch
    assert sorted(model.elites.tolist()) == [1, 3]
    assert calls and all(n == 40 for n in calls)  # scored on the 20% holdout


def test_the_twisted_fit_ranks_members_by_its_own_objective(monkeypatch):
    from torchrl_vmbpo.algorithms import build_agent, default_config
    from torchrl_vmbpo.data.buffers import TRANSITION_KEYS, make_buffer
    from torchrl_vmbpo.envs.real import make_env
    from torchrl_vmbpo.training.phases import fit_model

    cfg = default_config(
        "vmbpo",
        "Pendulum-v1",
        overrides=["hidden=[8]", "model_hidden=[8]", "model_max_epochs=1", "compile=off", "extra.weighted_fit_after=0"],
    )
    env = make_env("Pendulum-v1", seed=0)
    real = make_buffer(1000)
    real.extend(env.rollout(64).reshape(-1).select(*TRANSITION_KEYS))
    agent = build_agent(cfg, env)
    objective = agent.dynamics_loss()
    assert objective is agent.loss.dynamics  # eq. 19 from the first update (weighted_fit_after=0)
    ranking = torch.arange(cfg.num_members, dtype=torch.float32).flip(0)  # the last members best
    monkeypatch.setattr(type(objective), "holdout_loss", lambda self, td: ranking)
    fit_model(cfg, agent, real)
    assert sorted(agent.dynamics.elites.tolist()) == list(range(cfg.num_members - cfg.num_elites, cfg.num_members))


def test_fit_dynamics_given_eq19s_loss_scores_log_weights_once_and_ranks_by_its_holdout_loss(monkeypatch):
    # A user's own loop passing VMBPODynamicsLoss to fit_dynamics gets what the agents' fit does.
    from torchrl.data import Bounded

    from torchrl_vmbpo.models.networks import make_q_value, make_state_value, make_tanh_gaussian_actor
    from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss
    from torchrl_vmbpo.objectives.vmbpo_dynamics import VMBPODynamicsLoss

    spec = Bounded(-1.0, 1.0, shape=(1,))
    q_c, pi = make_tanh_gaussian_actor(2, spec, hidden=(8,)), make_tanh_gaussian_actor(2, spec, hidden=(8,))
    critic = VMBPOCriticLoss(
        make_q_value(2, 1, hidden=(8,)), make_state_value(2, hidden=(8,)), q_c, pi, eta=1.0, gamma=0.9
    )
    model = DynamicsModel(2, 1, num_members=4, num_elites=2, hidden=(16,))
    loss = VMBPODynamicsLoss(model, critic, min_ess=0.5)
    data = _linear_system(200)
    data.set(("next", "terminated"), torch.zeros(200, 1, dtype=torch.bool))
    scored, ranked = [], []
    log_weight, holdout_loss = loss.log_weight, loss.holdout_loss
    monkeypatch.setattr(loss, "log_weight", lambda td: scored.append(td.shape) or log_weight(td))
    monkeypatch.setattr(loss, "holdout_loss", lambda td: ranked.append(td.shape) or holdout_loss(td))
    stats = fit_dynamics(
        model, loss, make_model_optimizer(model, lr=1e-3, weight_decay=0.0), data, batch_size=32, max_epochs=3
    )
    assert scored == [torch.Size([200])]  # once for the fit, not at each of its steps
    assert len(ranked) == stats["model_epochs"] + 2  # before, after each epoch, and the elite choice


def test_every_fit_step_gets_contiguous_rows_whatever_the_data_size():
    # A compiled step is traced with its batch's strides and its backward asserts them: the rows of a
    # step must not be a view whose strides depend on N (the transposed bootstrap index gave strides
    # (1, steps * batch_size), and vmbpo-paper's compiled twisted fit failed at the second model fit).
    layouts = []

    class Recording(GaussianEnsembleNLLLoss):
        def forward(self, td):
            layouts.extend((tuple(t.shape), t.stride()) for t in td.values(include_nested=True, leaves_only=True))
            assert all(t.is_contiguous() for t in td.values(include_nested=True, leaves_only=True))
            return super().forward(td)

    model = DynamicsModel(2, 1, num_members=3, num_elites=2, hidden=(8,))
    for n in (200, 300):
        optim = make_model_optimizer(model, lr=1e-3, weight_decay=0.0)
        fit_dynamics(model, Recording(model), optim, _linear_system(n), batch_size=32, max_epochs=1)
    strides = {}
    for shape, stride in layouts:
        strides.setdefault(shape, set()).add(stride)
    assert strides and all(len(s) == 1 for s in strides.values()), strides  # one layout per shape, any N
