"""tokens/s of bitcpm's megatron engine against a plain-PyTorch model of the same shape, one process, one rank.

    OMP_NUM_THREADS=1 python tests/perf/engine_vs_plain_pytorch.py [--repeats 5 --steps 5] [key=value ...]

The peer is the MiniCPM decoder written directly in torch (SDPA attention, RMSNorm, SwiGLU, RoPE, MiniCPM's muP
scalings, torch AdamW with lr / m on hidden matrices, decoupled weight decay on matrices, global-norm clip):
what a user would write without megatron. Both train on the same random token blocks; repeats alternate
(engine first on even repeats, peer first on odd ones) so machine drift cancels in the medians. Prints wall
and CPU-time tokens/s of both and their ratio (engine / peer; >= 1.0 means the engine keeps up).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class _Layer(nn.Module):
    def __init__(self, h: int, f: int, heads: int, kv: int, d: int, eps: float, branch: float) -> None:
        super().__init__()
        self.heads, self.kv, self.d, self.branch = heads, kv, d, branch
        self.norm1, self.norm2 = nn.RMSNorm(h, eps=eps), nn.RMSNorm(h, eps=eps)
        self.qkv = nn.Linear(h, (heads + 2 * kv) * d, bias=False)
        self.proj = nn.Linear(heads * d, h, bias=False)
        self.fc1 = nn.Linear(h, 2 * f, bias=False)
        self.fc2 = nn.Linear(f, h, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).split([self.heads * self.d, self.kv * self.d, self.kv * self.d], -1)
        q, k, v = (t.view(b, s, -1, self.d).transpose(1, 2) for t in (q, k, v))
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.heads != self.kv)
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, -1)) * self.branch
        gate, up = self.fc1(self.norm2(x)).chunk(2, dim=-1)
        return x + self.fc2(F.silu(gate) * up) * self.branch


def _rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=-1)
    return t * cos + torch.cat([-b, a], dim=-1) * sin


class PlainMiniCPM(nn.Module):
    """MiniCPM decoder in plain torch with muP (x scale_emb, x scale_depth/sqrt(L) branches, / m before the head)."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        branch = cfg.scale_depth / math.sqrt(cfg.num_layers)
        d = cfg.kv_channels
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        shape = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_kv_heads, d)
        self.layers = nn.ModuleList(_Layer(*shape, cfg.norm_eps, branch) for _ in range(cfg.num_layers))
        self.norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        inv = 1.0 / (cfg.rope.theta ** (torch.arange(0, d, 2).float() / d))
        self.register_buffer("inv_freq", inv, persistent=False)
        hidden_std = cfg.init_std / math.sqrt(cfg.width_mult)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, cfg.init_std if name.startswith("embed") else hidden_std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        inputs, labels = tokens[:, :-1], tokens[:, 1:]
        freqs = torch.outer(torch.arange(inputs.shape[1], dtype=torch.float32), self.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        x = self.embed(inputs) * self.cfg.scale_emb
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = F.linear(self.norm(x) / self.cfg.width_mult, self.embed.weight)
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1))


def plain_optimizer(model: PlainMiniCPM, job) -> torch.optim.AdamW:
    """torch AdamW: lr / m on 2-D layer matrices, weight decay on matrices only (MiniCPM's muP)."""
    o, m = job.optim, job.model.width_mult
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        lr = o.lr / m if (p.dim() == 2 and name.startswith("layers.")) else o.lr
        groups.setdefault((lr, o.weight_decay if p.dim() >= 2 else 0.0), []).append(p)
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()],
        betas=(o.beta1, o.beta2),
        eps=o.eps,
    )


def plain_step(model, optimizer, micro_batches: list[torch.Tensor], clip: float) -> float:
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for tokens in micro_batches:
        loss = model(tokens) / len(micro_batches)
        loss.backward()
        total += loss.detach()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return float(total)


def _time(step, steps: int) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    from bitcpm.backends import get_backend
    from bitcpm.config.parallel import derive_layout
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.training.build import build_engine
    from bitcpm.training.distributed import init_distributed
    from bitcpm.training.steps import train_step

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args, overrides = parser.parse_known_args()
    job = compose_job(CommandLine(), ["tracking=none", *overrides])
    backend = get_backend("cpu")
    backend.prepare()
    init_distributed(backend, "gloo", 1, 1, 1, job.train.seed)
    p, seq = job.parallel, job.train.seq_length
    micro = derive_layout(p, 1).micro_batches_per_step
    gen = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, job.model.vocab_size, (p.micro_batch_size, seq + 1), generator=gen) for _ in range(micro)
    ]
    engine = build_engine(job, 1, job.optim.lr)
    torch.manual_seed(job.train.seed)
    peer = PlainMiniCPM(job.model)
    peer_opt = plain_optimizer(peer, job)
    runners = {
        "engine": lambda: train_step(engine, batches),
        "plain": lambda: plain_step(peer, peer_opt, batches, job.optim.clip_grad),
    }
    for run in runners.values():
        for _ in range(args.warmup):
            run()
    tokens = p.global_batch_size * seq * args.steps
    wall: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(args.repeats):
        for name in ("engine", "plain") if r % 2 == 0 else ("plain", "engine"):
            w, c = _time(runners[name], args.steps)
            wall[name].append(tokens / w)
            cpu[name].append(tokens / c)
            print(f"repeat {r} {name:>6}: {tokens / w:9.1f} tok/s wall, {tokens / c:9.1f} tok/s CPU time", flush=True)
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in runners}
    print(f"engine {med['engine'][0]:.1f} tok/s, plain {med['plain'][0]:.1f} tok/s (wall medians)")
    wall_ratio, cpu_ratio = med["engine"][0] / med["plain"][0], med["engine"][1] / med["plain"][1]
    print(f"ratio engine/plain: wall {wall_ratio:.3f}, CPU time {cpu_ratio:.3f}")


if __name__ == "__main__":
    main()
