"""With pi uniform and nu = 0, VMBPO's critic and actor are TorchRL's SACLoss with alpha = 1 / eta.

The exact relation: VMBPO's targets are SAC's (alpha = 1/eta) multiplied by eta,
    Q_vmbpo = eta r + gamma V_vmbpo'  <->  Q_sac = r + gamma V_sac',
    V_vmbpo = Q_vmbpo - log q_c       <->  V_sac = Q_sac - alpha log q_c,
so with networks Q_vmbpo(theta) = eta Q_sac(theta), V_vmbpo(phi) = eta V_sac(phi) (same parameters):
    loss_qvalue = eta^2 SAC's, loss_value = eta^2 SAC's, loss_actor = eta SAC's,
and the gradients carry the same factors. Uniform pi over a box of volume one has log pi = 0.
"""

import copy

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import MLP, ValueOperator
from torchrl.objectives import SACLoss

from torchrl_vmbpo.models.log_ratio import make_log_ratio_network
from torchrl_vmbpo.models.networks import make_tanh_gaussian_actor
from torchrl_vmbpo.objectives.vmbpo_actor import VMBPOActorLoss
from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater:UserWarning")

ETA, GAMMA = 2.5, 0.9
SPEC = Bounded(-0.5, 0.5, shape=(2,))  # volume 1: the uniform density is 1 on the box


class Scaled(nn.Module):
    def __init__(self, mlp, factor):
        super().__init__()
        self.mlp, self.factor = mlp, factor

    def forward(self, *inputs):
        return self.factor * self.mlp(*inputs)


class _UniformOnUnitBox:
    def __init__(self, batch_shape):
        self.batch_shape = batch_shape

    def log_prob(self, action):
        return torch.zeros(action.shape[:-1])  # -log(volume) = 0


class UniformPolicy(nn.Module):
    """pi uniform on the action box: any module with in_keys and get_dist serves as a baseline policy."""

    in_keys = ["observation"]

    def get_dist(self, td):
        return _UniformOnUnitBox(td.batch_size)


def zero_log_ratio_network():
    nu = make_log_ratio_network(3, 2, hidden=(8,))
    with torch.no_grad():
        nu.module.mlp[-1].weight.zero_()
        nu.module.mlp[-1].bias.zero_()
    return nu


def build(num_qvalue_nets, *, baseline=None, uniform_prior_weight=0.0):
    q_c = make_tanh_gaussian_actor(3, SPEC, hidden=(16,))
    baseline = UniformPolicy() if baseline is None else baseline
    mlp_q, mlp_v = (
        MLP(in_features=5, out_features=1, num_cells=[16]),
        MLP(in_features=3, out_features=1, num_cells=[16]),
    )
    q_keys, v_keys = ["observation", "action"], ["observation"]
    critic = VMBPOCriticLoss(
        ValueOperator(Scaled(mlp_q, 1.0), in_keys=q_keys),
        ValueOperator(Scaled(mlp_v, 1.0), in_keys=v_keys),
        q_c,
        baseline,
        zero_log_ratio_network(),
        eta=ETA,
        gamma=GAMMA,
        num_qvalue_nets=num_qvalue_nets,
        uniform_prior_weight=uniform_prior_weight,
    )
    sac = SACLoss(
        q_c,
        ValueOperator(Scaled(copy.deepcopy(mlp_q), 1.0 / ETA), in_keys=q_keys),
        ValueOperator(Scaled(mlp_v, 1.0 / ETA), in_keys=v_keys),  # the same V parameters as the critic's
        num_qvalue_nets=num_qvalue_nets,
        loss_function="l2",
        alpha_init=1.0 / ETA,
        fixed_alpha=True,
        delay_qvalue=False,
        delay_value=True,
        action_spec=SPEC,
    )
    sac.make_value_estimator(gamma=GAMMA)
    with torch.no_grad():  # both losses re-initialise their Q copies: give SAC the critic's
        sac.qvalue_network_params.data.update_(critic.qvalue_network_params.data)
    return critic, VMBPOActorLoss(q_c, critic, baseline), sac, q_c


def batch(n=8):
    terminated = torch.zeros(n, 1, dtype=torch.bool)
    terminated[-2:] = True
    return TensorDict(
        {
            "observation": torch.randn(n, 3),
            "action": torch.rand(n, 2) - 0.5,
            ("next", "observation"): torch.randn(n, 3),
            ("next", "reward"): torch.randn(n, 1),
            ("next", "done"): terminated.clone(),
            ("next", "terminated"): terminated,
        },
        [n],
    )


def grads(loss, params):
    return torch.autograd.grad(loss, list(params), allow_unused=False)


def assert_scaled(mine, theirs, factor):
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, factor * b, rtol=1e-4, atol=1e-6)


def test_q_loss_is_eta_squared_times_sacs():
    critic, _, sac, _ = build(num_qvalue_nets=1)
    td = batch()
    mine, _ = critic.qvalue_loss(td.clone())
    theirs, _ = sac.qvalue_v1_loss(td.clone())
    torch.testing.assert_close(mine, ETA**2 * theirs, rtol=1e-5, atol=1e-6)
    assert_scaled(
        grads(mine, critic.qvalue_network_params.values(True, True)),
        grads(theirs, sac.qvalue_network_params.values(True, True)),
        ETA**2,
    )


@pytest.mark.parametrize("num_qvalue_nets", [1, 2])
def test_value_loss_is_eta_squared_times_sacs(num_qvalue_nets):
    critic, _, sac, _ = build(num_qvalue_nets)
    td = batch()
    torch.manual_seed(5)
    mine, _ = critic.value_loss(td.clone())
    torch.manual_seed(5)  # the same fresh action a~ for both
    theirs, _ = sac.value_loss(td.clone())
    torch.testing.assert_close(mine, ETA**2 * theirs, rtol=1e-5, atol=1e-6)
    v_params = list(critic.value_network_params.values(True, True))
    assert {id(p) for p in v_params} == {id(p) for p in sac.value_network_params.values(True, True)}
    assert_scaled(grads(mine, v_params), grads(theirs, v_params), ETA**2)


@pytest.mark.parametrize("num_qvalue_nets", [1, 2])
def test_actor_loss_is_eta_times_sacs(num_qvalue_nets):
    _, actor, sac, q_c = build(num_qvalue_nets)
    td = batch()
    torch.manual_seed(9)
    mine = actor(td.clone())["loss_actor"]
    torch.manual_seed(9)  # the same reparameterised action for both
    theirs, _ = sac.actor_loss(td.clone())
    torch.testing.assert_close(mine, ETA * theirs, rtol=1e-5, atol=1e-6)
    assert_scaled(grads(mine, q_c.parameters()), grads(theirs, q_c.parameters()), ETA)


def test_the_relation_needs_the_eta_scaling():
    # A guard on the test itself: with alpha = 1 (not 1 / eta) the actor losses are not proportional.
    _, actor, _, q_c = build(1)
    td = batch()
    sac = SACLoss(
        q_c,
        ValueOperator(MLP(in_features=5, out_features=1, num_cells=[16]), in_keys=["observation", "action"]),
        num_qvalue_nets=1,
        alpha_init=1.0,
        fixed_alpha=True,
        action_spec=SPEC,
    )
    torch.manual_seed(9)
    mine = actor(td.clone())["loss_actor"]
    torch.manual_seed(9)
    theirs, _ = sac.actor_loss(td.clone())
    assert not torch.allclose(mine, ETA * theirs, rtol=1e-3)


def test_full_uniform_prior_weight_gives_sacs_losses_whatever_pi():
    # beta = 1: the regulariser is KL(q_c || U) alone (log U = 0 on this unit box), SAC's entropy.
    pi = make_tanh_gaussian_actor(3, SPEC, hidden=(16,))
    critic, actor, sac, q_c = build(2, baseline=pi, uniform_prior_weight=1.0)
    td = batch()
    torch.manual_seed(5)
    mine, _ = critic.value_loss(td.clone())
    torch.manual_seed(5)
    theirs, _ = sac.value_loss(td.clone())
    torch.testing.assert_close(mine, ETA**2 * theirs, rtol=1e-5, atol=1e-6)
    torch.manual_seed(9)
    mine = actor(td.clone())["loss_actor"]
    torch.manual_seed(9)
    theirs, _ = sac.actor_loss(td.clone())
    torch.testing.assert_close(mine, ETA * theirs, rtol=1e-5, atol=1e-6)
    assert_scaled(grads(mine, q_c.parameters()), grads(theirs, q_c.parameters()), ETA)
    # beta = 0 with the same networks and sample is not SAC (a guard on the test itself)
    critic.uniform_prior_weight = 0.0
    torch.manual_seed(9)
    assert not torch.allclose(actor(td.clone())["loss_actor"], ETA * theirs, rtol=1e-3)
