"""The run of one worker: open tracking, loop over steps, validate, checkpoint, stop on signals or NaNs; at the end a
carried prediction (a ladder's target run, training/prediction.py) is logged beside the final loss."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from bitcpm.backends import get_backend
from bitcpm.config.derived import base_lr
from bitcpm.config.root import JobConfig
from bitcpm.training.distributed import init_distributed, shutdown_distributed
from bitcpm.training.metrics_log import MetricsLog
from bitcpm.training.session import Session
from bitcpm.training.signals import StopRequest
from bitcpm.training.step_progress import Progress


def _run_name(job: JobConfig) -> str:
    return job.tracking.run_name or f"{job.model.name}-{job.stage.name}-{job.quant.label}"


@dataclass
class RunResult:
    """How a worker's run ended."""

    status: str  # "finished" | "already_complete" | "preempted"
    step: int
    metrics: dict[str, float] = field(default_factory=dict)


def _group_settings(job) -> dict[str, dict[str, float]]:
    """The effective per-group lr, decay and eps at the peak lr (MLflow params optimizer_groups.*)."""
    from bitcpm.models.minicpm.mup import effective_settings

    settings = effective_settings(job.model, base_lr(job), job.optim.weight_decay, job.optim.eps)
    return {kind.replace(" ", "_"): values for kind, values in settings.items()}


def _open_tracking(s: Session, run_dir: Path):
    from bitcpm.tracking import open_tracker
    from bitcpm.training.restarts import log_restarts

    job = s.job
    tracker = open_tracker(
        job.tracking,
        run_name=_run_name(job),
        params={**asdict(job), "optimizer_groups": _group_settings(job)},
        tags={
            "stage": job.stage.name,
            "model": job.model.name,
            "quant": job.quant.label,
            "run_dir": str(run_dir),
            "config_hash": run_dir.name.rsplit("-", 1)[-1],
            "init_from": str(job.stage.init_from or ""),
            "mlflow.source.name": "bitcpm.train",
        },
        resume_run_id=s.mlflow_run_id,
        # What the server cannot take (outage) is noted here and sent later, now or on the next start.
        spool_path=run_dir / "mlflow_spool.jsonl",
    )
    s.tracker = tracker
    log_restarts(tracker, run_dir, s.step)  # requeues by the scheduler, as a tag and a metric
    if job.quant.enabled and job.tracking.backend == "mlflow":
        from bitcpm.tracking.store_uri import resolve_experiment, resolve_store_uri
        from bitcpm.training.qat_overhead import bench_key, find_bf16_bench

        # A BF16 bench of the same configuration on the same devices gives this QAT run an overhead figure.
        key = bench_key(job, s.info.world_size)
        uri, experiment = resolve_store_uri(job.tracking.uri), resolve_experiment(job.tracking.experiment)
        s.bf16_tokens_per_s = find_bf16_bench(uri, experiment, key)
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
    from bitcpm.monitoring.system_metrics import SystemMonitor
    from bitcpm.training.build import set_lr
    from bitcpm.training.prediction import prediction_line, prediction_metrics
    from bitcpm.training.qat_overhead import qat_overhead
    from bitcpm.training.steps import train_step

    job, info = s.job, s.info
    total = s.schedule.total_steps
    # A tracker that keeps metrics.jsonl itself (MLflow, sent from there after an outage) must not get a second copy.
    own_log = info.is_main and tracker.metrics_path is None
    record = Recorder(tracker, MetricsLog(s.run_dir / "metrics.jsonl") if own_log else None)
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
        lr = set_lr(s.engine.optimizer, s.base_lr, s.schedule(s.step), job.optim.weight_decay)
        batches = s.micro_batches(s.step)
        s.backend.synchronize()
        t0 = time.perf_counter()
        extra = {"forward_step": s.forward_step} if s.forward_step is not None else {}
        result = train_step(s.engine, batches, step=s.step, **extra)
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
    predicted = prediction_metrics(job.tracking.tags, job.quant.label, val)
    if predicted:  # a scaling ladder's target run: the actual loss beside its prediction
        record(predicted, s.step)
        say(prediction_line(predicted, val))
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
    info = init_distributed(backend, job.hardware.dist_backend, p.tp, p.pp, p.cp, job.train.seed, p.virtual_pp)
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
