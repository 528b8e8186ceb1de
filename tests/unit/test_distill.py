"""Distillation loss against torch's own softmax/KL/cross-entropy at TP=1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.quick


def test_parallel_kl_matches_torch(dist_cpu) -> None:
    from bitcpm.training.distill import parallel_kl

    torch.manual_seed(0)
    student = torch.randn(2, 5, 50, requires_grad=True)
    teacher = torch.randn(2, 5, 50)
    for temperature in (1.0, 2.0):
        got = parallel_kl(student, teacher, temperature)
        want = F.kl_div(
            F.log_softmax(student / temperature, -1),
            F.log_softmax(teacher / temperature, -1),
            log_target=True,
            reduction="none",
        ).sum(-1)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (g_got,) = torch.autograd.grad(parallel_kl(student, teacher, 2.0).sum(), student)
    ref = F.kl_div(F.log_softmax(student / 2, -1), F.log_softmax(teacher / 2, -1), log_target=True, reduction="sum")
    (g_want,) = torch.autograd.grad(ref, student)
    torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-6)


def test_distill_loss_blends_kl_and_ce(dist_cpu) -> None:
    from bitcpm.training.distill import make_distill_loss

    torch.manual_seed(1)
    vocab = 40
    student_logits = torch.randn(1, 6, vocab, requires_grad=True)
    teacher_logits = torch.randn(1, 6, vocab)

    class Fixed(torch.nn.Module):
        def __init__(self, logits: torch.Tensor) -> None:
            super().__init__()
            self.logits = logits

        def forward(self, input_ids, position_ids, attention_mask):
            return self.logits

    tokens = torch.randint(0, vocab, (1, 7))
    alpha, temp = 0.3, 2.0
    forward_step = make_distill_loss(Fixed(teacher_logits), alpha, temp)
    per_token, loss_func = forward_step(iter([tokens]), Fixed(student_logits))  # megatron's forward_step contract
    loss, reported = loss_func(per_token)
    assert reported["loss"] == loss
    ce = F.cross_entropy(student_logits[0], tokens[0, 1:])
    kl = (
        F.kl_div(
            F.log_softmax(student_logits / temp, -1),
            F.log_softmax(teacher_logits / temp, -1),
            log_target=True,
            reduction="none",
        )
        .sum(-1)
        .mean()
    )
    assert loss.item() == pytest.approx((alpha * temp**2 * kl + (1 - alpha) * ce).item(), rel=1e-5)
