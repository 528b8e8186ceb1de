"""One training run on one worker process: build everything, resume if possible, loop, report."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from bitcpm.backends import get_backend
from bitcpm.config.root import JobConfig
from bitcpm.plan import flops_per_token
from bitcpm.training import checkpoint as ckpt
from bitcpm.training.distributed import DistInfo, barrier, init_distributed, shutdown_distributed
from bitcpm.training.metrics_log import MetricsLog
from bitcpm.training.progress import Progress
from bitcpm.training.signals import StopRequest
from bitcpm.training.stage import initial_weights_from, stage_schedule


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


def _run_name(job: JobConfig) -> str:
    quant = "bf16" if not job.quant.enabled else f"ternary-g{job.quant.group_size}"
    return job.tracking.run_name or f"{job.model.name}-{job.stage.name}-{quant}"


class Session:
    """Everything a worker holds during a run."""

    def __init__(self, job: JobConfig, run_dir: Path, info: DistInfo, backend) -> None:
        from bitcpm.models import build_model
        from bitcpm.quant.converter import convert_to_ternary
        from bitcpm.training.data import build_training_data
        from bitcpm.training.optim import build_optimizer

        self.job, self.run_dir, self.info, self.backend = job, run_dir, info, backend
        p, t = job.parallel, job.train
        self.data = build_training_data(job.data, t.seq_length, info.is_main, job.model.vocab_size)
        self.model = build_model(
            job.model,
            seq_length=t.seq_length,
            tp=p.tp,
            dtype=job.hardware.dtype,
            sequence_parallel=p.sequence_parallel,
            recompute=p.recompute,
            device=job.hardware.device,
        ).to(info.device)
        self.quantized = convert_to_ternary(self.model, job.quant)
        self.schedule, self.base_lr = stage_schedule(job)
        self.optimizer = build_optimizer(self.model, job.model, job.optim, self.base_lr)
        self.micro_per_step = p.global_batch_size // (p.micro_batch_size * info.dp_size)
        self.tokens_per_step = p.global_batch_size * t.seq_length
        self.flops_per_token = flops_per_token(job.model, t.seq_length)
        self.loss_fn = self._distill_loss() if job.stage.name == "distill" else None
        self.step = 0
        self.nan_skips = 0
        self.fresh_init_val_loss: float | None = None
        self.mlflow_run_id: str | None = None
        self.tracker: Any = None
        self.bf16_tokens_per_s: float | None = None

    def _distill_loss(self):
        """Build the frozen teacher from stage.teacher_from (its own size and precision) and the KD loss."""
        from bitcpm.config.load import load_job
        from bitcpm.models import build_model
        from bitcpm.quant.converter import convert_to_ternary
        from bitcpm.training.distill import make_distill_loss
        from bitcpm.training.stage import resolve_checkpoint

        job = self.job
        source = resolve_checkpoint(job.stage.teacher_from, "stage.teacher_from")
        teacher_job = load_job(source.parent.parent / "config.yaml")
        if teacher_job.model.vocab_size != job.model.vocab_size:
            raise ValueError(
                f"stage.teacher_from: teacher vocab_size={teacher_job.model.vocab_size} differs from "
                f"model.vocab_size={job.model.vocab_size}"
            )
        teacher = build_model(
            teacher_job.model, seq_length=job.train.seq_length, tp=job.parallel.tp, dtype=teacher_job.hardware.dtype
        ).to(self.info.device)
        convert_to_ternary(teacher, teacher_job.quant)
        teacher.load_state_dict(self._read_state(source, with_optimizer=False, model=teacher)["model"])
        teacher.requires_grad_(False).eval()
        self.teacher = teacher
        return make_distill_loss(teacher, job.stage.alpha, job.stage.temperature)

    # --- state -------------------------------------------------------------------------------------
    def _read_state(self, ckpt_dir: Path, with_optimizer: bool, model: torch.nn.Module | None = None) -> dict[str, Any]:
        """This rank's state from a checkpoint, resharded when it was written at another tp size."""
        from bitcpm.training.reshard import reshard_model_state, reshard_optimizer_state

        model = model or self.model
        tp, rank = self.job.parallel.tp, self.info.tp_rank
        saved = ckpt.saved_tp(ckpt_dir)
        if saved == tp:
            return ckpt.read_shard(ckpt_dir, rank)
        shards = [ckpt.read_shard(ckpt_dir, r) for r in range(saved)]
        state = dict(shards[0])
        state["model"] = reshard_model_state(model, [sh["model"] for sh in shards], tp, rank)
        if with_optimizer:
            state["optimizer"] = reshard_optimizer_state(model, [sh["optimizer"] for sh in shards], tp, rank)
        return state

    def restore(self) -> str:
        """Resume from the newest complete checkpoint of this run, or initialise from stage.init_from."""
        partial = ckpt.incomplete_checkpoints(self.run_dir)
        latest = ckpt.latest_checkpoint(self.run_dir)
        barrier()  # every rank has looked before rank 0 tidies up
        if partial and self.info.is_main:
            names = ", ".join(p.name for p in partial)
            print(f"bitcpm: ignoring incomplete checkpoint(s) left by an interrupted save: {names}")
            for p in partial:
                ckpt.discard(p)
        if latest is not None:
            state = self._read_state(latest, with_optimizer=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"]["torch"])
            self.step = state["step"]
            self.nan_skips = state.get("nan_skips", 0)
            self.mlflow_run_id = state.get("mlflow_run_id")
            return f"resumed from {latest} (step {self.step})"
        if partial:
            print(f"bitcpm: no complete checkpoint in {self.run_dir}: starting from step 0")
        source = initial_weights_from(self.job)
        if source is not None:
            # The loss of the freshly initialised model shows what the stage gains from its start.
            self.fresh_init_val_loss = self.validate()
            self.model.load_state_dict(self._read_state(source, with_optimizer=False)["model"])
            return f"initialised from {source} (a fresh model's validation loss: {self.fresh_init_val_loss:.4f})"
        return "fresh start"

    def save(self) -> Path | None:
        """Write a complete checkpoint of the current step (all ranks; rank 0 publishes)."""
        tmp = ckpt.temporary_dir(self.run_dir, self.step)
        if self.info.dp_rank == 0:
            ckpt.write_shard(
                tmp,
                self.info.tp_rank,
                {
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "rng": _rng_state(),
                    "step": self.step,
                    "nan_skips": self.nan_skips,
                    "consumed_samples": self.step * self.job.parallel.global_batch_size,
                    # Read at save time: after an outage at start the run id only exists once the server is back.
                    "mlflow_run_id": getattr(self.tracker, "run_id", None) or self.mlflow_run_id,
                    "config": OmegaConf.to_container(OmegaConf.structured(self.job)),
                },
            )
        barrier()
        final = (
            ckpt.publish(self.run_dir, self.step, keep_last=self.job.train.keep_checkpoints)
            if self.info.is_main
            else None
        )
        barrier()
        return final

    # --- loop --------------------------------------------------------------------------------------
    def micro_batches(self, step: int) -> list[torch.Tensor]:
        """This rank's micro-batches of `step`: global sample order, split over dp then accumulation."""
        p, info = self.job.parallel, self.info
        first = step * p.global_batch_size
        out = []
        for i in range(self.micro_per_step):
            start = first + (i * info.dp_size + info.dp_rank) * p.micro_batch_size
            out.append(self.data.train_micro_batch(start, p.micro_batch_size).to(info.device))
        return out

    def validate(self) -> float:
        """Validation loss on the fixed held-out batches."""
        from bitcpm.training.steps import evaluate

        batches = self.data.valid_batches(
            self.job.train.eval_batches,
            self.job.parallel.micro_batch_size,
            self.info.dp_rank,
            self.info.dp_size,
        )
        return evaluate(self.model, [b.to(self.info.device) for b in batches])

    def throughput(self, seconds: float) -> dict[str, float]:
        """tokens/s, per device, model TFLOP/s per device and MFU (when the peak is known)."""
        tps = self.tokens_per_step / seconds
        per_device = tps / self.info.world_size
        tflops = per_device * self.flops_per_token / 1e12
        out = {
            "step_time_s": seconds,
            "tokens_per_s": tps,
            "tokens_per_s_per_device": per_device,
            "tflops_per_device": tflops,
        }
        if self.job.hardware.peak_tflops:
            out["mfu"] = tflops / self.job.hardware.peak_tflops
        return out


@dataclass
class RunResult:
    """How a worker's run ended."""

    status: str  # "finished" | "already_complete" | "preempted"
    step: int
    metrics: dict[str, float] = field(default_factory=dict)


def _open_tracking(s: Session, run_dir: Path):
    from bitcpm.tracking import open_tracker
    from bitcpm.training.restarts import log_restarts

    job = s.job
    tracker = open_tracker(
        job.tracking,
        run_name=_run_name(job),
        params=asdict(job),
        tags={
            "stage": job.stage.name,
            "model": job.model.name,
            "quant": job.quant.method if not job.quant.enabled else f"ternary_g{job.quant.group_size}",
            "run_dir": str(run_dir),
            "config_hash": run_dir.name.rsplit("-", 1)[-1],
            "init_from": str(job.stage.init_from or ""),
            "mlflow.source.name": "bitcpm.train",
        },
        resume_run_id=s.mlflow_run_id,
        # Metrics the server cannot take (outage) wait here and are replayed, now or on the next start.
        spool_path=run_dir / "mlflow_spool.jsonl",
    )
    s.tracker = tracker
    log_restarts(tracker, run_dir, s.step)  # requeues by the scheduler, as a tag and a metric
    if job.quant.enabled:
        from bitcpm.tracking.overhead import bench_key, find_bf16_bench
        from bitcpm.tracking.store_uri import resolve_store_uri

        # A BF16 bench of the same configuration on the same devices gives this QAT run an overhead figure.
        key = bench_key(job, s.info.world_size)
        s.bf16_tokens_per_s = find_bf16_bench(resolve_store_uri(job.tracking.uri), job.tracking.experiment, key)
    for name in ("config.yaml", "overrides.yaml"):
        if (run_dir / name).exists():
            tracker.log_text(_mask_secrets((run_dir / name).read_text()), name)
    return tracker


def _mask_secrets(text: str) -> str:
    """Replace values of secret environment variables (a config may interpolate them) before upload."""
    from bitcpm.tracking.run_info import secret_env_values

    for secret in secret_env_values():
        text = text.replace(secret, "***")
    return text


class Recorder:
    """Sends metrics to the tracker and to RUN_DIR/metrics.jsonl (rank 0 only)."""

    def __init__(self, tracker, log: MetricsLog | None) -> None:
        self.tracker, self.log = tracker, log

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        if self.log is not None:
            self.log.append(metrics, step)
        self.tracker.log_metrics(metrics, step=step)


def _loop(s: Session, tracker, stop: StopRequest, say) -> RunResult:
    from bitcpm.tracking.overhead import qat_overhead
    from bitcpm.tracking.system_metrics import SystemMonitor
    from bitcpm.training.optim import set_lr
    from bitcpm.training.steps import train_step

    job, info = s.job, s.info
    total = s.schedule.total_steps
    record = Recorder(tracker, MetricsLog(s.run_dir / "metrics.jsonl") if info.is_main else None)
    monitor = SystemMonitor.for_rank(job.hardware.device, info.rank, info.local_rank)
    tracker.set_tags(monitor.collect_tags())
    entropies = s.data.valid_unigram_entropy()
    for name, h in zip(s.data.names, entropies, strict=True):
        say(f"bitcpm: held-out unigram entropy of '{name}': {h:.4f} nats/token")
    if s.fresh_init_val_loss is not None:
        record({"val_loss_fresh_init": s.fresh_init_val_loss}, 0)
    val = s.validate()
    say(f"bitcpm: step {s.step} validation loss {val:.4f}")
    record({"val_loss": val, "unigram_entropy": entropies[0]}, s.step)
    progress = Progress(total, start_step=s.step, log_every=job.tracking.log_interval)
    log_every, eval_every, save_every = job.tracking.log_interval, job.train.eval_interval, job.train.save_interval
    loss = float("nan")
    while s.step < total:
        lr = set_lr(s.optimizer, s.base_lr, s.schedule(s.step))
        batches = s.micro_batches(s.step)
        s.backend.synchronize()
        t0 = time.perf_counter()
        extra = {"loss_fn": s.loss_fn} if s.loss_fn is not None else {}
        result = train_step(s.model, s.optimizer, batches, job.optim.clip_grad, step=s.step, **extra)
        s.backend.synchronize()
        seconds = time.perf_counter() - t0
        if not result.finite:
            _handle_nonfinite(s, result, record, say)
        s.step += 1
        loss = result.loss
        perf = s.throughput(seconds)
        if info.is_main:
            progress.update(s.step - 1, loss, lr, perf["tokens_per_s"])
        if s.step % log_every == 0 or s.step == total:
            metrics = {"loss": loss, "lr": lr, "grad_norm": result.grad_norm, **perf}
            if s.bf16_tokens_per_s:
                metrics["qat_overhead"] = qat_overhead(perf["tokens_per_s_per_device"], s.bf16_tokens_per_s)
            metrics |= monitor.collect()  # GPU memory/utilisation of every rank (empty on CPU)
            record(metrics | {"tokens_seen": float(s.step * s.tokens_per_step)}, s.step)
        if (eval_every and s.step % eval_every == 0) or s.step == total:
            val = s.validate()
            record({"val_loss": val}, s.step)
            if info.is_main:
                progress.message(f"bitcpm: step {s.step} validation loss {val:.4f}")
        if (save_every and s.step % save_every == 0) or s.step == total:
            s.save()
        if _stop_agreed(stop) and s.step < total:
            s.save()
            say(f"bitcpm: {stop.signal_name} received: saved step {s.step}, exiting for requeue")
            tracker.set_tags({"stopped_by": stop.signal_name or "signal"})
            return RunResult("preempted", s.step, {"loss": loss})
    say(f"bitcpm: final validation loss {val:.4f} (held-out unigram entropy {entropies[0]:.4f})")
    return RunResult("finished", s.step, {"val_loss": val, "loss": loss, "unigram_entropy": entropies[0]})


def _replay_leftover_metrics(job: JobConfig, run_dir: Path, run_id: str | None, is_main: bool, say) -> None:
    """A finished run whose last metrics were spooled during an outage sends them now."""
    spool = run_dir / "mlflow_spool.jsonl"
    if not is_main or job.tracking.backend == "none" or not spool.exists() or spool.stat().st_size == 0:
        return
    from bitcpm.tracking import replay_spool

    sent = replay_spool(job.tracking, spool, run_id)
    say(f"bitcpm: replayed {sent} spooled MLflow record(s) from {spool}")


class NonFiniteError(RuntimeError):
    """Training stopped on a NaN/inf loss or gradient after saving the last good state."""


def _handle_nonfinite(s: Session, result, record, say) -> None:
    """Policy for a NaN/inf step (the update was already skipped): count it, or save and stop."""
    s.nan_skips += 1
    record({"nonfinite_steps": float(s.nan_skips), "nonfinite_loss": 1.0}, s.step + 1)
    what = f"non-finite loss or gradient at step {s.step + 1} (loss {result.loss}, grad norm {result.grad_norm})"
    if s.job.train.nan_policy == "skip" and s.nan_skips <= s.job.train.max_nan_skips:
        say(f"bitcpm: warning: {what}: batch skipped ({s.nan_skips}/{s.job.train.max_nan_skips})")
        return
    s.save()  # the weights are still those of the last good step
    raise NonFiniteError(f"{what}; saved the last good state at step {s.step} and stopped (train.nan_policy)")


def _stop_agreed(stop: StopRequest) -> bool:
    """Every rank stops at the same step: any rank's signal counts (Slurm may signal them unevenly)."""
    import torch.distributed as dist

    flag = torch.tensor([1.0 if stop.requested else 0.0])
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() > 0 and stop.signal_name is None:
        stop.signal_name = "peer-signal"
    return bool(flag.item() > 0)


def run_training(job: JobConfig, run_dir: Path) -> RunResult:
    """Train `job` in run_dir on this process's rank."""
    from bitcpm.tracking import NullTracker

    backend = get_backend(job.hardware.device)
    backend.prepare()
    stop = StopRequest().install(job.train.stop_signals)
    p = job.parallel
    info = init_distributed(backend, job.hardware.dist_backend, p.tp, p.pp, p.cp, job.train.seed)
    tracker = NullTracker()
    say = print if info.is_main else (lambda *_a, **_k: None)
    try:
        s = Session(job, run_dir, info, backend)
        how = s.restore()
        say(f"bitcpm: {how}; run directory {run_dir}", flush=True)
        if s.step >= s.schedule.total_steps:
            _replay_leftover_metrics(job, run_dir, s.mlflow_run_id, info.is_main, say)
            val = s.validate()
            say(f"bitcpm: run already complete ({s.step}/{s.schedule.total_steps} steps); validation loss {val:.4f}")
            return RunResult("already_complete", s.step, {"val_loss": val})
        if info.is_main:
            tracker = _open_tracking(s, run_dir)
        result = _loop(s, tracker, stop, say)
        tracker.close("KILLED" if result.status == "preempted" else "FINISHED")
        return result
    except BaseException:
        tracker.close("FAILED")
        raise
    finally:
        stop.restore()
        shutdown_distributed()
