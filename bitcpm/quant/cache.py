"""Once-per-step ternary weights: W_q is computed on the first forward after a weight changes and reused by
every later micro-batch, activation-recompute pass and evaluation until the weight changes again.

Staleness is ruled out by the key, not by discipline: an entry is valid only for the exact
(`_version`, storage address, dtype, device, shape) of the latent weight it was computed from. PyTorch
bumps a tensor's `_version` on every in-place write through it, so an optimizer step (plain, foreach or
fused), `load_state_dict`, `copy_` or `.to()` each invalidate the entry without anyone calling anything.

One hole remains, by PyTorch's design: a write through `param.data` (or through another tensor aliasing
the same storage, such as megatron's distributed-optimizer parameter buffer) does not bump `_version`.
Code that updates weights that way must call `refresh_quantized_weights(model)`; the training step calls
it after every optimizer step anyway, which also frees the old W_q before the next forward.

Under torch.inference_mode nothing is stored: inference tensors cannot be saved for a later backward.
With tensor parallelism every rank's weights change at the same points, so ranks hit or miss together
and the per-channel all-reduce inside a miss stays matched across ranks.
"""

from __future__ import annotations

import torch

CacheKey = tuple[int, int, torch.dtype, torch.device, tuple[int, ...]]


def weight_key(weight: torch.Tensor) -> CacheKey:
    """Identity and write count of a weight: read from tensor metadata, never from device memory."""
    return (weight._version, weight.data_ptr(), weight.dtype, weight.device, tuple(weight.shape))


class QuantizedWeightCache:
    """One cached W_q for one module's weight."""

    __slots__ = ("_key", "_value")

    def __init__(self) -> None:
        self._key: CacheKey | None = None
        self._value: torch.Tensor | None = None

    def lookup(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The cached W_q if it was computed from this very version of `weight`, else None."""
        if self._value is not None and self._key == weight_key(weight):
            return self._value
        return None

    def store(self, weight: torch.Tensor, quantized: torch.Tensor) -> None:
        """Remember W_q of the current version of `weight` (skipped under inference mode)."""
        if torch.is_inference_mode_enabled():
            return
        self._key, self._value = weight_key(weight), quantized.detach()

    def clear(self) -> None:
        """Drop the entry (and its memory)."""
        self._key, self._value = None, None

    @property
    def filled(self) -> bool:
        """Whether an entry is held."""
        return self._value is not None
