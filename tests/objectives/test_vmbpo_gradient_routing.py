"""The five VMBPO losses wired together: each loss_* reaches its own network only, each network has one owner."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded
from torchrl.objectives import SoftUpdate

from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.models.log_ratio import make_log_ratio_network
from torchrl_vmbpo.models.networks import make_q_value, make_state_value, make_tanh_gaussian_actor
from torchrl_vmbpo.objectives.log_ratio import LogRatioLoss
from torchrl_vmbpo.objectives.m_step import MStepLoss
from torchrl_vmbpo.objectives.vmbpo_actor import VMBPOActorLoss
from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss
from torchrl_vmbpo.objectives.vmbpo_dynamics import VMBPODynamicsLoss

OBS, ACT = 3, 2


def wire():
    spec = Bounded(-1.0, 1.0, shape=(ACT,))
    q_c, pi = make_tanh_gaussian_actor(OBS, spec, hidden=(8,)), make_tanh_gaussian_actor(OBS, spec, hidden=(8,))
    model = DynamicsModel(OBS, ACT, num_members=3, num_elites=2, hidden=(8,))
    nu = make_log_ratio_network(OBS, ACT, hidden=(8,))
    critic = VMBPOCriticLoss(
        make_q_value(OBS, ACT, hidden=(8,)), make_state_value(OBS, hidden=(8,)), q_c, pi, nu, eta=2.0, gamma=0.95
    )
    losses = {
        "dynamics": VMBPODynamicsLoss(model, critic, max_weight=5.0, mix=0.1),
        "log_ratio": LogRatioLoss(nu, model),
        "critic": critic,
        "actor": VMBPOActorLoss(q_c, critic, pi),
        "m_step": MStepLoss(pi, q_c, kl_coef=0.5),
    }
    networks = {
        "dynamics": list(model.parameters()),
        "log_ratio": list(nu.parameters()),
        "qvalue": list(critic.qvalue_network_params.values(True, True)),
        "value": list(critic.value_network_params.values(True, True)),
        "q_c": list(q_c.parameters()),
        "pi": list(pi.parameters()),
    }
    return losses, networks, SoftUpdate(critic, tau=0.01)


def batch(n=12):
    return TensorDict(
        {
            "observation": torch.randn(n, OBS),
            "action": torch.rand(n, ACT) * 2 - 1,
            ("next", "observation"): torch.randn(n, OBS),
            ("next", "reward"): torch.randn(n, 1),
            ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
        },
        [n],
    )


OWNER = {
    "loss_dynamics": "dynamics",
    "loss_log_ratio": "log_ratio",
    "loss_qvalue": "qvalue",
    "loss_value": "value",
    "loss_actor": "q_c",
    "loss_policy": "pi",
}


def test_every_loss_term_sends_gradients_to_its_own_network_only():
    losses, networks, _ = wire()
    with torch.no_grad():  # move pi off its snapshot so the M-step's KL term is live
        for p in networks["pi"]:
            p.add_(0.05)
    td = batch()
    seen = set()
    for loss in losses.values():
        out = loss(td)
        for key in [k for k in out.keys() if k.startswith("loss")]:
            seen.add(key)
            for name, params in networks.items():
                grads = torch.autograd.grad(out[key], params, allow_unused=True, retain_graph=True)
                if name == OWNER[key]:
                    assert all(g is not None for g in grads), f"{key} misses part of {name}"
                    assert sum(g.abs().sum() for g in grads) > 0, f"{key} has zero gradient on {name}"
                else:
                    assert all(g is None for g in grads), f"{key} leaks gradient into {name}"
        for key, value in out.items():
            if not key.startswith("loss"):
                assert not value.requires_grad, f"diagnostic {key} is not detached"
    assert seen == set(OWNER)


def test_each_network_has_exactly_one_owning_loss():
    losses, networks, _ = wire()
    owned = {name: {id(p) for p in loss.parameters()} for name, loss in losses.items()}
    expected = {
        "dynamics": networks["dynamics"],
        "log_ratio": networks["log_ratio"],
        "critic": networks["qvalue"] + networks["value"],
        "actor": networks["q_c"],
        "m_step": networks["pi"],
    }
    for name, params in expected.items():
        assert owned[name] == {id(p) for p in params}, name
    all_ids = [i for ids in owned.values() for i in ids]
    assert len(all_ids) == len(set(all_ids))  # disjoint: one optimizer per loss never double-steps


def test_one_soft_update_of_the_critic_moves_the_targets_the_dynamics_loss_reads():
    losses, networks, updater = wire()
    td = batch()
    before = losses["dynamics"].log_weight(td)
    with torch.no_grad():
        for p in networks["value"] + networks["qvalue"]:
            p.add_(0.5)
    torch.testing.assert_close(losses["dynamics"].log_weight(td), before)  # targets, not online nets
    updater.step()
    assert not torch.allclose(losses["dynamics"].log_weight(td), before)


@pytest.mark.filterwarnings("error::UserWarning")
def test_losses_run_without_warnings_once_the_critic_has_its_updater():
    losses, _, _ = wire()
    td = batch()
    for loss in losses.values():
        loss(td)
