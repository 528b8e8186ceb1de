"""Coordinate check, the measurement: do activation and update sizes stay constant as the model widens?

Under muP every coordinate of the embedding output, each attention / MLP branch output and the logits
stays Θ(1) in width during training, and so does the effect of each weight's update on its module's
output (Tensor Programs V). The check trains the same model at several widths (same depth and head
size) for a few steps on the same batch, measures mean |x| with forward hooks on the megatron
modules, repeats that for several seeds (model init and batch; every width sees the same seeds), fits
log(mean over seeds) against log(width) and names every tensor whose slope leaves the tolerance. The
slope's interval is the standard deviation of the per-seed slopes (each seed's values fitted on their own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from bitcpm.config.root import JobConfig


@dataclass
class WidthRecord:
    """What one width and seed measured: name -> one value per step (index 0 is the initial model)."""

    width: int
    seed: int = 0
    activations: dict[str, list[float]] = field(default_factory=dict)
    updates: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Drift:
    """One measured quantity's fitted exponent: (mean over seeds of its size) ∝ width**slope at the last step."""

    name: str
    kind: str  # "activation" | "update"
    slope: float
    values: list[float]  # per width: the mean over seeds at the last step (what the slope is fitted to)
    interval: float | None = None  # standard deviation of seed_slopes (None with one seed)
    seed_slopes: list[float] = field(default_factory=list)  # per seed: the slope of that seed's values alone
    seed_values: list[list[float]] = field(default_factory=list)  # per seed, per width, at the last step


LOGITS_CHANGE = "logits change"
# Sizes that may shrink with width: muP's output at init goes to 0 as the model widens (Tensor Programs V).
MAY_SHRINK = ("logits",)


def _first(output):
    return output[0] if isinstance(output, tuple) else output


class Probe:
    """Forward hooks recording mean |x| of the tracked modules and the inputs of every weight's module."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.outputs: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}
        self.handles = []
        self._watch("embedding", model.embedding)
        for i, layer in enumerate(model.decoder.layers):
            self._watch(f"layers.{i}.attention", layer.self_attention.linear_proj)
            self._watch(f"layers.{i}.mlp", layer.mlp.linear_fc2)
        self._watch("logits", model.output_layer)
        # Registered after muP's hooks, so they see what the module really consumes (scaled inputs).
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.nn.Parameter) and weight.dim() == 2 and name != "embedding.word_embeddings":
                self.handles.append(module.register_forward_pre_hook(self._keep_input(name)))
        self.handles.append(
            model.output_layer.register_forward_pre_hook(self._keep_input("output_layer"), with_kwargs=False)
        )

    def _watch(self, name: str, module: torch.nn.Module) -> None:
        def hook(_m, _i, out):
            self.outputs[name] = _first(out).detach().float()

        self.handles.append(module.register_forward_hook(hook))

    def _keep_input(self, name: str):
        def hook(_m, args):
            self.inputs[name] = args[0].detach().float()

        return hook

    def remove(self) -> None:
        """Detach every hook."""
        for h in self.handles:
            h.remove()


def _module_of(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0]


def update_sizes(
    model: torch.nn.Module, start: dict[str, torch.Tensor], probe: Probe, tokens: torch.Tensor, tied: bool
) -> dict[str, float]:
    """Mean |ΔW x| of every 2-D weight on its module's probe input (ΔW: change since the start)."""
    sizes: dict[str, float] = {}
    for name, param in model.named_parameters():
        if param.dim() != 2:
            continue
        delta = param.detach().float() - start[name]
        module = _module_of(name)
        if module == "embedding.word_embeddings":
            sizes[name] = delta[tokens].abs().mean().item()
            if tied:  # the same matrix also produces the logits
                sizes["output_layer (tied)"] = F.linear(probe.inputs["output_layer"], delta).abs().mean().item()
        elif module in probe.inputs:
            sizes[name] = F.linear(probe.inputs[module], delta).abs().mean().item()
    return sizes


def _tokens(vocab: int, batch: int, seq: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq + 1), generator=gen)


def _forward(model: torch.nn.Module, tokens: torch.Tensor) -> None:
    from bitcpm.training.steps import causal_mask

    inputs = tokens[:, :-1]
    positions = torch.arange(inputs.shape[1]).unsqueeze(0).expand_as(inputs)
    with torch.no_grad():
        model(input_ids=inputs, position_ids=positions, attention_mask=causal_mask(inputs.shape[1], inputs.device))


def measure_width(job: JobConfig, width: int, steps: int, lr: float, batch: int, seed: int) -> WidthRecord:
    """Train `job` (already at `width`) for `steps` constant-lr steps; record sizes after each.

    `seed` picks the model's init (train.seed) and the batch, so seeds differ in both.
    """
    from bitcpm.training.build import build_engine
    from bitcpm.training.steps import train_step

    job = replace(job, train=replace(job.train, seed=seed))
    torch.manual_seed(seed)
    seq = job.train.seq_length
    # The training stack itself: megatron DDP + optimizer with the muP lr overrides, ternary converter.
    engine = build_engine(job, world_size=1, base_lr=lr)
    model = engine.raw_chunks()[0]
    probe = Probe(model)
    tokens = _tokens(job.model.vocab_size, batch, seq, seed)
    start = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.dim() == 2}
    record = WidthRecord(width, seed)

    initial_logits: list[torch.Tensor] = []

    def measure(with_updates: bool) -> None:
        model.eval()
        _forward(model, tokens)
        for name, out in probe.outputs.items():
            record.activations.setdefault(name, []).append(out.abs().mean().item())
        # muP's logits vanish at init (~1/sqrt(width)); what training adds to them must stay Θ(1).
        if not initial_logits:
            initial_logits.append(probe.outputs["logits"])
        change = (probe.outputs["logits"] - initial_logits[0]).abs().mean().item()
        record.activations.setdefault(LOGITS_CHANGE, []).append(change)
        if with_updates:
            for name, size in update_sizes(model, start, probe, tokens[:, :-1], job.model.tie_embeddings).items():
                record.updates.setdefault(name, []).append(size)

    measure(with_updates=False)
    for step in range(steps):
        # One fixed batch, trained on and measured: an update's effect is Θ(1) on the inputs it was
        # computed from (on unrelated random tokens it is mostly noise, ~1/sqrt(width)).
        train_step(engine, [tokens], step=step)
        measure(with_updates=True)
    probe.remove()
    return record


def fit_slope(widths: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(width)."""
    xs = [math.log(w) for w in widths]
    ys = [math.log(max(v, 1e-30)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def _spread(slopes: list[float]) -> float | None:
    """Sample standard deviation of the per-seed slopes; None when there is only one."""
    if len(slopes) < 2:
        return None
    mean = sum(slopes) / len(slopes)
    return math.sqrt(sum((x - mean) ** 2 for x in slopes) / (len(slopes) - 1))


def by_seed(records: list[WidthRecord]) -> dict[int, list[WidthRecord]]:
    """The records grouped by seed, each group sorted by width (every seed must have measured the same widths)."""
    groups: dict[int, list[WidthRecord]] = {}
    for r in records:
        groups.setdefault(r.seed, []).append(r)
    for group in groups.values():
        group.sort(key=lambda r: r.width)
    widths = {tuple(r.width for r in g) for g in groups.values()}
    if len(widths) != 1:
        raise ValueError(f"every seed must measure the same widths, got {sorted(widths)}")
    return groups


def drifts(records: list[WidthRecord]) -> list[Drift]:
    """Slope of every tracked quantity at the last step: fitted to the mean over seeds at each width."""
    groups = list(by_seed(records).values())
    widths = [r.width for r in groups[0]]
    out = []
    for kind, attr in (("activation", "activations"), ("update", "updates")):
        for name in getattr(groups[0][0], attr):
            per_seed = [[getattr(r, attr)[name][-1] for r in group] for group in groups]
            means = [sum(col) / len(col) for col in zip(*per_seed, strict=True)]
            seed_slopes = [fit_slope(widths, values) for values in per_seed]
            out.append(Drift(name, kind, fit_slope(widths, means), means, _spread(seed_slopes), seed_slopes, per_seed))
    return out


def excess(d: Drift) -> float:
    """How far a slope goes in the direction that counts as drift (sizes in MAY_SHRINK may shrink freely)."""
    if not math.isfinite(d.slope):
        return math.inf
    return d.slope if d.name in MAY_SHRINK else abs(d.slope)


def failures(found: list[Drift], tolerance: float) -> list[Drift]:
    """Quantities whose mean size grows or shrinks with width faster than width**±tolerance."""
    return [d for d in found if excess(d) > tolerance]
