"""Closed-form checks of the pure maths behind the VMBPO losses (functional_vmbpo)."""

import math

import pytest
import torch
from torch import distributions as D
from torchrl.modules import TanhNormal

from torchrl_vmbpo.objectives import functional_vmbpo as fv
from torchrl_vmbpo.objectives.functional import effective_sample_size


def test_normalised_weights_are_softmax_times_batch_size_whatever_the_offset():
    log_w = torch.tensor([0.0, 1.0, 2.0, -1.0])
    w = fv.normalise_weights(log_w + 123.0)
    expected = 4 * log_w.exp() / log_w.exp().sum()
    torch.testing.assert_close(w, expected)
    assert w.mean().item() == pytest.approx(1.0)


def test_clipping_caps_the_largest_weight_and_full_mixing_gives_uniform_weights():
    log_w = torch.tensor([0.0, 0.0, 0.0, 5.0])
    clipped = fv.normalise_weights(log_w, max_weight=2.0)
    assert clipped.max().item() == pytest.approx(2.0)
    unclipped = fv.normalise_weights(log_w)
    torch.testing.assert_close(clipped[:3], unclipped[:3])  # below the cap: untouched, not renormalised
    torch.testing.assert_close(fv.normalise_weights(log_w, mix=1.0), torch.ones(4))
    half = fv.normalise_weights(log_w, mix=0.5)
    torch.testing.assert_close(half, 0.5 * unclipped + 0.5)


def test_weights_normalise_over_the_batch_dimension_per_member():
    log_w = torch.randn(6, 3)  # [B, E]
    w = fv.normalise_weights(log_w, dim=0)
    torch.testing.assert_close(w.mean(0), torch.ones(3))
    torch.testing.assert_close(w[:, 1], fv.normalise_weights(log_w[:, 1]))


def test_ess_of_equal_weights_is_the_batch_size_and_of_one_spike_is_one():
    assert effective_sample_size(torch.ones(10)).item() == pytest.approx(10.0)
    assert effective_sample_size(torch.tensor([0.0, 0.0, 5.0])).item() == pytest.approx(1.0)


def test_dynamics_log_weight_drops_the_next_value_on_termination():
    r, v, q = torch.tensor([1.0, 1.0]), torch.tensor([3.0, 3.0]), torch.tensor([0.5, 0.5])
    done = torch.tensor([False, True])
    log_w = fv.dynamics_log_weight(r, v, done, q, eta=2.0, gamma=0.5)
    torch.testing.assert_close(log_w, torch.tensor([2.0 + 1.5 - 0.5, 2.0 - 0.5]))


def test_diag_gaussian_kl_matches_torch_distributions():
    loc_p, scale_p = torch.randn(5, 3), torch.rand(5, 3) + 0.2
    loc_q, scale_q = torch.randn(5, 3), torch.rand(5, 3) + 0.2
    expected = D.kl_divergence(D.Normal(loc_p, scale_p), D.Normal(loc_q, scale_q)).sum(-1)
    torch.testing.assert_close(fv.diag_gaussian_kl(loc_p, scale_p, loc_q, scale_q), expected)


def test_rsample_log_prob_matches_tanh_normal_inside_the_box():
    dist = TanhNormal(torch.randn(200, 2) * 0.5, torch.rand(200, 2) + 0.3, low=-2.0, high=2.0)
    _, action, log_prob = fv.rsample_with_preimage(dist)
    torch.testing.assert_close(log_prob, dist.log_prob(action), atol=2e-3, rtol=1e-4)


def test_pre_tanh_scoring_stays_exact_where_tanh_saturates():
    # loc 15: tanh(u) rounds to the same float (1 - eps after TorchRL's safe tanh) for every u.
    sampler = TanhNormal(torch.full((50, 1), 15.0), torch.full((50, 1), 0.1))
    other = TanhNormal(torch.full((50, 1), 14.0), torch.full((50, 1), 0.2))
    u, action, log_q = fv.rsample_with_preimage(sampler)
    assert action.unique().numel() == 1 and u.unique().numel() > 1
    log_pi = fv.log_prob_at(other, action, u, sampler)
    expected = D.Normal(15.0, 0.1).log_prob(u).sum(-1) - D.Normal(14.0, 0.2).log_prob(u).sum(-1)
    assert torch.isfinite(log_q - log_pi).all()
    torch.testing.assert_close(log_q - log_pi, expected, atol=1e-3, rtol=1e-4)
    naive = log_q - other.log_prob(action)  # what scoring the rounded action would give
    assert not torch.allclose(naive, expected, atol=1e-1)


def test_log_prob_at_falls_back_to_the_distribution_for_other_boxes_and_families():
    sampler = TanhNormal(torch.zeros(4, 1), torch.ones(4, 1))
    other_box = TanhNormal(torch.zeros(4, 1), torch.ones(4, 1), low=-2.0, high=2.0)
    u, action, _ = fv.rsample_with_preimage(sampler)
    torch.testing.assert_close(fv.log_prob_at(other_box, action, u, sampler), other_box.log_prob(action))
    gaussian = D.Independent(D.Normal(torch.zeros(4, 1), torch.ones(4, 1)), 1)
    torch.testing.assert_close(fv.log_prob_at(gaussian, action, u, sampler), gaussian.log_prob(action))


def test_log_ratio_dual_peaks_at_the_true_log_ratio_with_value_kl_minus_one():
    # q = N(1, 1), p = N(0, 1): log q/p (x) = x - 1/2, KL(q || p) = 1/2.
    torch.manual_seed(0)
    x_q, x_p = torch.randn(400_000) + 1.0, torch.randn(400_000)
    true_nu = lambda x: x - 0.5  # noqa: E731
    best = fv.log_ratio_dual(true_nu(x_q), true_nu(x_p)).item()
    assert best + 1.0 == pytest.approx(0.5, abs=0.02)
    for shift in (-0.3, 0.3):  # any other nu scores lower (strict concavity)
        assert fv.log_ratio_dual(true_nu(x_q) + shift, true_nu(x_p) + shift).item() < best - 0.03
    assert fv.log_ratio_dual(0.8 * true_nu(x_q), 0.8 * true_nu(x_p)).item() < best - 0.005


def test_targets_follow_equations_22_and_24():
    y_q = fv.q_target(
        torch.tensor([1.0]), torch.tensor([4.0]), torch.tensor([0.0]), torch.tensor([0.3]), eta=3.0, gamma=0.5
    )
    assert y_q.item() == pytest.approx(3.0 + 2.0 - 0.3)
    y_v = fv.value_target(torch.tensor([2.0]), torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]))
    assert y_v.item() == pytest.approx(2.0 - math.log(2.0))


def test_tempering_exponent_hits_the_ess_target_exactly_and_leaves_healthy_weights_alone():
    log_w = torch.tensor([0.0, 0.0, 0.0, 10.0])
    beta = fv.tempering_exponent(log_w, min_ess=0.5)
    # ESS of [1, 1, 1, x] is (3 + x)^2 / (3 + x^2) = 2 at x = 3 + sqrt(12): beta = log(x) / 10
    assert beta.item() == pytest.approx(math.log(3 + math.sqrt(12)) / 10, abs=1e-6)
    assert fv.tempering_exponent(torch.tensor([0.0, 0.1, -0.1, 0.05]), min_ess=0.5).item() == 1.0
    per_member = torch.stack([log_w, torch.zeros(4), 3 * log_w], -1)  # [B, E]: one beta per member
    betas = fv.tempering_exponent(per_member, min_ess=0.5, dim=0)
    torch.testing.assert_close(betas, torch.stack([beta, torch.tensor(1.0), beta / 3]), atol=1e-6, rtol=0.0)
    with pytest.raises(ValueError, match="min_ess"):
        fv.tempering_exponent(log_w, min_ess=0.0)


def test_tempered_weights_keep_the_ess_and_the_order_of_the_raw_weights():
    torch.manual_seed(0)
    log_w = 20 * torch.randn(256)  # heavy-tailed, as eq. 19 early in training
    assert effective_sample_size(fv.normalise_weights(log_w)).item() < 5
    beta = fv.tempering_exponent(log_w, min_ess=0.3)
    w = fv.normalise_weights(beta * log_w)
    assert effective_sample_size(w).item() / 256 == pytest.approx(0.3, abs=1e-3)
    assert torch.equal(torch.argsort(w), torch.argsort(log_w))
