import pytest
import torch

from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.models.ensemble import GaussianEnsemble


def test_forward_shapes_and_logvar_within_soft_bounds():
    ens = GaussianEnsemble(5, 4, num_members=7, hidden=(16, 16))
    mean, logvar = ens(torch.randn(3, 2, 7, 5) * 100)
    assert mean.shape == logvar.shape == (3, 2, 7, 4)
    # Soft bounds: exceeded by at most softplus(max - min) - (max - min) ~ exp(-10.5).
    assert (logvar <= ens.max_logvar + 1e-3).all() and (logvar >= ens.min_logvar - 1e-3).all()


def test_batched_members_equal_independent_mlps():
    ens = GaussianEnsemble(3, 2, num_members=4, hidden=(8,))
    x = torch.randn(6, 4, 3)
    mean, _ = ens(x)
    for e in range(4):  # member e is an ordinary MLP with its own weights
        h = torch.nn.functional.silu(x[:, e] @ ens.hidden_layers[0].weight[e] + ens.hidden_layers[0].bias[e])
        out = h @ ens.output_layer.weight[e] + ens.output_layer.bias[e]
        torch.testing.assert_close(mean[:, e], out[:, :2])


def test_no_grad_forward_with_in_place_activation_equals_the_autograd_forward():
    ens = GaussianEnsemble(3, 2, num_members=4, hidden=(8, 8))
    x = torch.randn(6, 4, 3)
    mean, logvar = ens(x)
    with torch.no_grad():
        mean_ng, logvar_ng = ens(x)
    assert mean.requires_grad and not mean_ng.requires_grad
    torch.testing.assert_close(mean_ng, mean.detach())
    torch.testing.assert_close(logvar_ng, logvar.detach())


def test_member_subset_forward_equals_the_members_rows_of_the_full_pass_and_gathers_once():
    ens = GaussianEnsemble(3, 2, num_members=5, hidden=(8, 8))
    members = torch.tensor([4, 1, 3])
    x = torch.randn(3, 6, 3)  # [M, N, in]: member members[i] on rows x[i]
    mean, logvar = ens.forward_members_first(x, members)
    gathered = ens.member_weights(members)
    mean_w, logvar_w = ens.forward_members_first(x, weights=gathered)
    torch.testing.assert_close(mean_w, mean)
    torch.testing.assert_close(logvar_w, logvar)
    for i, e in enumerate(members.tolist()):  # row block i is member e's ordinary MLP
        x_all = x[i].expand(5, 6, 3)
        ref_mean, ref_logvar = ens.forward_members_first(x_all)
        torch.testing.assert_close(mean[i], ref_mean[e])
        torch.testing.assert_close(logvar[i], ref_logvar[e])
    assert len(gathered) == 3 and gathered[0][0].shape == (3, 3, 8)  # two hidden layers and the output


def test_member_gradients_are_independent():
    ens = GaussianEnsemble(3, 2, num_members=4, hidden=(8,))
    mean, _ = ens(torch.randn(6, 4, 3))
    mean[:, 1].sum().backward()
    grad = ens.hidden_layers[0].weight.grad
    assert grad[1].abs().sum() > 0
    assert grad[[0, 2, 3]].abs().sum() == 0


def test_rejects_wrong_input_shape():
    ens = GaussianEnsemble(3, 2, num_members=4, hidden=(8,))
    with pytest.raises(ValueError, match=r"\[\*batch, 4, 3\]"):
        ens(torch.randn(6, 3))


def test_dynamics_predicts_deltas_and_samples_from_elites_only():
    model = DynamicsModel(2, 1, num_members=3, num_elites=1, hidden=(8,))
    model.set_elites(torch.tensor([2]))
    obs, act = torch.randn(50, 2), torch.randn(50, 1)
    mean, _ = model.predict(obs, act)
    next_obs, reward = model.sample(obs, act, deterministic=True)
    # With one elite and no noise, the sample is exactly x + mean of member 2.
    torch.testing.assert_close(next_obs, obs + mean[:, 2, :2])
    torch.testing.assert_close(reward, mean[:, 2, 2:])


def test_sample_keeps_row_order_with_several_elites():
    model = DynamicsModel(2, 1, num_members=5, num_elites=5, hidden=(8,))
    obs, act = torch.randn(37, 2), torch.randn(37, 1)  # 37 rows: not a multiple of 5 (padding path)
    mean, _ = model.predict(obs, act)
    next_obs, _ = model.sample(obs, act, deterministic=True)
    delta = next_obs - obs  # each row must equal SOME member's prediction for that same row
    match = (delta.unsqueeze(1) - mean[..., :2]).abs().amax(-1).min(-1).values
    assert (match < 1e-5).all()


def test_set_elites_validates():
    model = DynamicsModel(2, 1, num_members=3, num_elites=2, hidden=(8,))
    with pytest.raises(ValueError, match="elites"):
        model.set_elites(torch.tensor([0, 3]))
