import math

import pytest
import torch
from tensordict import TensorDict

from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.objectives.ensemble_nll import GaussianEnsembleNLLLoss


def _batch(b=4, obs_dim=2, weight=None):
    td = TensorDict(
        {
            "observation": torch.randn(b, obs_dim),
            "action": torch.randn(b, 1),
            ("next", "observation"): torch.randn(b, obs_dim),
            ("next", "reward"): torch.randn(b, 1),
        },
        [b],
    )
    if weight is not None:
        td["model", "weight"] = weight
    return td


def _fixed_model(mean, logvar):
    """A model whose every member predicts the given constant mean / logvar."""
    model = DynamicsModel(2, 1, num_members=2, num_elites=1, hidden=(4,))
    for layer in model.ensemble.hidden_layers:
        layer.weight.data.zero_()
        layer.bias.data.zero_()
    out = model.ensemble.output_layer
    out.weight.data.zero_()
    out.bias.data[:] = torch.cat([mean, logvar]).view(1, 1, -1)
    # Wide soft bounds so the softplus bounding changes the logvar negligibly.
    model.ensemble.max_logvar.data.fill_(20.0)
    model.ensemble.min_logvar.data.fill_(-20.0)
    return model


def test_nll_matches_hand_computed_value():
    mean, logvar = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.0, math.log(4.0), math.log(0.25)])
    model = _fixed_model(mean, logvar)
    loss = GaussianEnsembleNLLLoss(model, logvar_penalty=0.0)
    td = TensorDict(
        {
            "observation": torch.tensor([[1.0, 1.0]]),
            "action": torch.zeros(1, 1),
            ("next", "observation"): torch.tensor([[2.0, 1.0]]),  # delta (1, 0)
            ("next", "reward"): torch.tensor([[3.0]]),
        },
        [1],
    )
    # Per dim: (y - mu)^2 / var + log var, averaged over the 3 dims, summed over 2 members.
    by_hand = ((1 - 0.5) ** 2 / 1 + 0.0 + (0 + 1.0) ** 2 / 4 + math.log(4) + (3 - 2) ** 2 / 0.25 + math.log(0.25)) / 3
    torch.testing.assert_close(loss(td)["loss_dynamics"], torch.tensor(2 * by_hand), atol=1e-4, rtol=1e-4)


def test_logvar_penalty_is_added():
    model = DynamicsModel(2, 1, hidden=(4,))
    td = _batch()
    plain = GaussianEnsembleNLLLoss(model, logvar_penalty=0.0)(td)["loss_dynamics"]
    penalised = GaussianEnsembleNLLLoss(model, logvar_penalty=0.01)(td)["loss_dynamics"]
    # At initialisation sum(max_logvar) - sum(min_logvar) = 3 * 0.5 - 3 * (-10) = 31.5.
    torch.testing.assert_close(penalised - plain, torch.tensor(0.01 * 31.5))


def test_unit_weights_equal_no_weights_and_zero_weight_removes_sample():
    torch.manual_seed(1)
    model = DynamicsModel(2, 1, hidden=(8,))
    td = _batch(b=4)
    loss = GaussianEnsembleNLLLoss(model, logvar_penalty=0.0)
    plain = loss(td)["loss_dynamics"]
    torch.testing.assert_close(loss(td.clone().set(("model", "weight"), torch.ones(4)))["loss_dynamics"], plain)

    # Weight 0 on sample 3 leaves only its (unweighted) reward term: the state part's gradient
    # equals that of the 3-sample batch rescaled by 3/4.
    w = torch.tensor([1.0, 1.0, 1.0, 0.0])
    weighted = loss(td.clone().set(("model", "weight"), w))
    state_nll, reward_nll, _ = loss.per_sample_nll(td)
    d = model.obs_dim
    expected = ((d * state_nll * w[:, None] + reward_nll) / (d + 1)).mean(0).sum()
    torch.testing.assert_close(weighted["loss_dynamics"], expected)


def test_weights_scale_the_gradient_of_each_sample():
    torch.manual_seed(2)
    model = DynamicsModel(2, 1, hidden=(8,))
    loss = GaussianEnsembleNLLLoss(model, logvar_penalty=0.0)
    td = _batch(b=1)
    params = [model.ensemble.output_layer.weight]
    # Isolate the next-state part: a reward target equal to nothing would still count, so compare
    # weight 3 against weight 1 through the difference (the reward term cancels).
    g = {}
    for w in (0.0, 1.0, 3.0):
        out = loss(td.clone().set(("model", "weight"), torch.tensor([w])))["loss_dynamics"]
        g[w] = torch.autograd.grad(out, params)[0]
    torch.testing.assert_close(g[3.0] - g[0.0], 3 * (g[1.0] - g[0.0]), rtol=1e-4, atol=1e-6)
    assert (g[1.0] - g[0.0]).abs().sum() > 0


def test_per_member_layout_is_accepted():
    model = DynamicsModel(2, 1, num_members=3, num_elites=2, hidden=(8,))
    td = _batch(b=12).reshape(4, 3)
    out = GaussianEnsembleNLLLoss(model)(td)
    assert out["loss_dynamics"].shape == ()


def test_missing_keys_and_nan_raise_clear_errors():
    loss = GaussianEnsembleNLLLoss(DynamicsModel(2, 1, hidden=(4,)))
    td = _batch()
    with pytest.raises(KeyError, match="needs the keys"):
        loss(td.exclude(("next", "reward")))
    td["observation"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="observation.*NaN"):
        loss(td)
    with pytest.raises(TypeError, match="DynamicsModel"):
        GaussianEnsembleNLLLoss(torch.nn.Linear(2, 2))


def test_only_the_dynamics_model_receives_gradients():
    model = DynamicsModel(2, 1, hidden=(8,))
    other = torch.nn.Linear(2, 2)
    out = GaussianEnsembleNLLLoss(model)(_batch())["loss_dynamics"]
    grads = torch.autograd.grad(out, list(model.parameters()) + list(other.parameters()), allow_unused=True)
    assert all(g is not None for g in grads[: len(list(model.parameters()))])
    assert all(g is None for g in grads[len(list(model.parameters())) :])
