"""The distillation loss against hand-computed numbers (S = [0.5, 0.5], T = [0.9, 0.1])."""

import math

import pytest
import torch

from rosd.method.losses import (
    add_tail,
    clipped_policy_gradient,
    generalized_jsd,
    importance_weights,
    masked_token_mean,
    sampled_token_reverse_kl,
)

S = torch.log(torch.tensor([[0.5, 0.5]]))
T = torch.log(torch.tensor([[0.9, 0.1]]))


def test_alpha_zero_is_forward_kl_teacher_to_student():
    # KL(T||S) = 0.9 ln(0.9/0.5) + 0.1 ln(0.1/0.5) = 0.529008 - 0.160944
    assert generalized_jsd(S, T, 0.0).item() == pytest.approx(0.368064, abs=1e-5)


def test_alpha_one_is_reverse_kl_student_to_teacher():
    # KL(S||T) = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = -0.293893 + 0.804719
    assert generalized_jsd(S, T, 1.0).item() == pytest.approx(0.510826, abs=1e-5)


def test_alpha_half_is_symmetric_jsd_through_the_mixture():
    # M = [0.7, 0.3]; KL(S||M) = 0.087177, KL(T||M) = 0.116322; 0.5 * (sum)
    assert generalized_jsd(S, T, 0.5).item() == pytest.approx(0.101749, abs=1e-5)
    assert generalized_jsd(T, S, 0.5).item() == pytest.approx(0.101749, abs=1e-5)


def test_alpha_quarter_weights_the_mixture_towards_the_student():
    # M = 0.75 S + 0.25 T = [0.6, 0.4]; KL(S||M) = 0.020411, KL(T||M) = 0.226289
    # loss = 0.75 * 0.020411 + 0.25 * 0.226289
    assert generalized_jsd(S, T, 0.25).item() == pytest.approx(0.071881, abs=1e-5)


def test_divergence_is_per_position_and_zero_for_equal_distributions():
    s = torch.log_softmax(torch.randn(3, 4, 7), dim=-1)
    out = generalized_jsd(s, s, 0.5)
    assert out.shape == (3, 4)
    assert torch.allclose(out, torch.zeros(3, 4), atol=1e-6)


def test_alpha_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError, match="alpha"):
        generalized_jsd(S, T, 1.5)


def test_add_tail_appends_the_missing_mass():
    topk = torch.log(torch.tensor([0.2, 0.3]))
    out = add_tail(topk)
    assert torch.allclose(out.exp(), torch.tensor([0.2, 0.3, 0.5]), atol=1e-6)


def test_add_tail_is_finite_with_finite_gradients_when_support_holds_all_mass():
    topk = torch.log(torch.tensor([0.5, 0.5 - 1e-10])).requires_grad_()
    out = add_tail(topk)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert out[-1].item() == pytest.approx(math.log(1e-7), abs=1e-2)
    assert torch.isfinite(topk.grad).all()


def test_importance_weight_is_truncated_and_detached():
    train = torch.tensor([0.0, -1.0], requires_grad=True)
    sampler = torch.tensor([-2.0, -1.0])
    weights = importance_weights(train, sampler, 2.0)
    assert weights.tolist() == pytest.approx([2.0, 1.0])  # e^2 is capped at 2
    assert not weights.requires_grad
    assert importance_weights(train, sampler, None).tolist() == [1.0, 1.0]


def test_masked_token_mean_divides_by_tokens_carrying_loss():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    weights = torch.tensor([[1.0, 1.0, 0.5], [1.0, 1.0, 1.0]])
    # (2*1 + 3*0.5 + 4*1) / 3
    assert masked_token_mean(per_token, weights, mask).item() == pytest.approx(7.5 / 3)


def test_entry_clip_caps_each_pointwise_term():
    # KL(T||S) terms: 0.9 ln(1.8) = 0.529008 and 0.1 ln(0.2) = -0.160944; cap 0.3 -> 0.3 - 0.160944
    assert generalized_jsd(S, T, 0.0, entry_clip=0.3).item() == pytest.approx(0.139056, abs=1e-5)


def test_sampled_token_estimator_value_and_gradient():
    student = torch.log(torch.tensor([0.5])).requires_grad_()
    teacher = torch.log(torch.tensor([0.25]))
    loss = sampled_token_reverse_kl(student, teacher)
    loss.backward()
    # value: ln 2 * ln 0.5; gradient: the detached ln(0.5/0.25) = ln 2
    assert loss.item() == pytest.approx(math.log(2) * math.log(0.5), abs=1e-6)
    assert student.grad.item() == pytest.approx(math.log(2), abs=1e-6)


def test_clipped_policy_gradient_clips_ratio_asymmetrically():
    old = torch.zeros(3)
    logp = torch.log(torch.tensor([1.5, 0.5, 1.1]))
    # A=+1: ratio 1.5 clipped at 1.28; A=-1: ratio 0.5 clipped at 0.8 -> max(-0.5, -0.8) ... min of negatives
    advantages = torch.tensor([1.0, -1.0, 1.0])
    out = clipped_policy_gradient(logp, old, advantages, 0.2, 0.28)
    assert out.tolist() == pytest.approx([-1.28, 0.8, -1.1], abs=1e-6)
