"""Distillation loss over vocab-parallel logits: alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE.

With tensor parallelism each rank holds a slice of the vocabulary, so softmax normalisers and the KL
sum are reduced over the tensor-parallel group (megatron's autograd-aware all-reduce keeps gradients
exact), and the result equals the TP=1 loss.
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.tensor_parallel.mappings import reduce_from_tensor_model_parallel_region

from bitcpm.training.steps import mean_loss, model_inputs


def _log_softmax_parallel(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over a vocabulary split across tensor-parallel ranks (last dimension)."""
    group = parallel_state.get_tensor_model_parallel_group()
    local_max = logits.detach().amax(dim=-1, keepdim=True)
    if torch.distributed.get_world_size(group) > 1:
        torch.distributed.all_reduce(local_max, op=torch.distributed.ReduceOp.MAX, group=group)
    shifted = logits - local_max
    sum_exp = reduce_from_tensor_model_parallel_region(shifted.exp().sum(dim=-1, keepdim=True))
    return shifted - sum_exp.log()


def parallel_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-token KL(teacher || student) at temperature T, summed over the full (split) vocabulary."""
    log_p_student = _log_softmax_parallel(student_logits.float() / temperature)
    log_p_teacher = _log_softmax_parallel(teacher_logits.float() / temperature).detach()
    local = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    return reduce_from_tensor_model_parallel_region(local)


def make_distill_loss(teacher: torch.nn.Module, alpha: float, temperature: float):
    """A megatron forward_step for the student: the teacher runs frozen, in its own precision, without gradients."""

    def loss_of(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # megatron's cross-entropy shifts its input in place: give it a copy.
        ce = tensor_parallel.vocab_parallel_cross_entropy(student_logits.float().clone(), labels)
        kl = parallel_kl(student_logits, teacher_logits, temperature)
        return alpha * temperature**2 * kl + (1.0 - alpha) * ce

    def forward_step(data_iterator, student: torch.nn.Module):
        tokens = next(data_iterator)
        inputs, labels = model_inputs(tokens), tokens[:, 1:]
        with torch.no_grad():
            teacher_logits = teacher(**inputs)
        student_logits = student(**inputs)
        per_token = loss_of(student_logits, teacher_logits, labels)  # logits [b, s, v/tp], labels [b, s]
        return per_token, mean_loss

    return forward_step
