"""What one worker holds for a run: data, model, quantizer, optimizer, teacher; restore and save."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from bitcpm.config.derived import tokens_per_step
from bitcpm.config.root import JobConfig
from bitcpm.models.minicpm.hf_checkpoint import is_hf_checkpoint
from bitcpm.plan import flops_per_token
from bitcpm.training import checkpoint as ckpt
from bitcpm.training.distributed import DistInfo, barrier
from bitcpm.training.stage import branch_checkpoint, data_start_step, initial_weights_from, stage_schedule


class Session:
    """Everything a worker holds during a run."""

    def __init__(self, job: JobConfig, run_dir: Path, info: DistInfo, backend) -> None:
        from bitcpm.training.build import build_engine
        from bitcpm.training.data import build_training_data

        self.job, self.run_dir, self.info, self.backend = job, run_dir, info, backend
        t = job.train
        self.data = build_training_data(job.data, t.seq_length, info.is_main, job.model.vocab_size)
        self.schedule, self.base_lr = stage_schedule(job)
        self.engine = build_engine(job, info.world_size, self.base_lr)
        self.layout = self.engine.layout
        self.tokens_per_step = tokens_per_step(job)
        self.flops_per_token = flops_per_token(job.model, t.seq_length)
        self.forward_step = self._distill_step() if job.stage.name == "distill" else None
        self.step = 0
        self.nan_skips = 0
        self.fresh_init_val_loss: float | None = None
        self.mlflow_run_id: str | None = None
        self.tracker: Any = None
        self.bf16_tokens_per_s: float | None = None

    def _distill_step(self):
        """Build the frozen teacher from stage.teacher_from (its own size and precision) and the KD forward step."""
        from bitcpm.config.load import load_job
        from bitcpm.training.build import build_frozen_model
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
        teacher = build_frozen_model(
            teacher_job.model,
            teacher_job.quant,
            job.parallel,
            teacher_job.hardware.dtype,
            job.train.seq_length,
            job.train.seed,
            job.hardware.device,
        )
        ckpt.load_model_weights(source, teacher, f"stage.teacher_from={job.stage.teacher_from}")
        self.teacher = teacher
        return make_distill_loss(teacher[0], job.stage.alpha, job.stage.temperature)

    # --- state -------------------------------------------------------------------------------------
    def restore(self) -> str:
        """Resume from this run's newest complete checkpoint, else branch from or initialise from stage.init_from."""
        partial = ckpt.incomplete_checkpoints(self.run_dir)
        barrier()  # every rank has looked before rank 0 tidies up
        if partial and self.info.is_main:
            names = ", ".join(p.name for p in partial)
            print(f"bitcpm: ignoring incomplete checkpoint(s) left by an interrupted save: {names}")
            for p in partial:
                ckpt.discard(p)
        # Rank 0 checks the files against their manifests (a damaged newest one is skipped with a warning).
        latest = ckpt.newest_intact_checkpoint(self.run_dir)
        if latest is not None:
            state = ckpt.load_checkpoint(latest, self.engine.model, self.engine.optimizer, verified=True)
            self._weights_changed(main_weights_loaded=True)
            self.step = state["step"]
            self.nan_skips = state.get("nan_skips", 0)
            self.mlflow_run_id = state.get("mlflow_run_id")
            return f"resumed from {latest} (step {self.step})"
        if partial:
            print(f"bitcpm: no complete checkpoint in {self.run_dir}: starting from step 0")
        branch = branch_checkpoint(self.job)
        if branch is not None:
            # A decay branch goes on with its source run's training: weights, Adam moments, step and data position.
            state = ckpt.load_checkpoint(branch, self.engine.model, self.engine.optimizer)
            self._weights_changed(main_weights_loaded=True)
            self.step = state["step"]
            self.nan_skips = state.get("nan_skips", 0)  # the MLflow run stays this run's own
            return f"branched from {branch} (step {self.step}: weights, optimizer state, data position)"
        if is_hf_checkpoint(self.job.stage.init_from):
            from bitcpm.models.minicpm.hf_checkpoint import load_hf_weights

            self.fresh_init_val_loss = self.validate()
            load_hf_weights(self.engine.raw_chunks(), self.job.stage.init_from, self.job.model)
            self._weights_changed()
            return f"initialised from Hugging Face checkpoint {self.job.stage.init_from}"
        source = initial_weights_from(self.job)
        if source is not None:
            # The loss of the freshly initialised model shows what the stage gains from its start.
            self.fresh_init_val_loss = self.validate()
            ckpt.load_model_weights(source, self.engine.model, f"stage.init_from={self.job.stage.init_from}")
            self._weights_changed()
            stream = f"; data read on from its step {data_start_step(self.job)}" if self.job.stage.init_step else ""
            fresh = f"a fresh model's validation loss: {self.fresh_init_val_loss:.4f}"
            return f"initialised from {source} ({fresh}{stream})"
        return "fresh start"

    def _weights_changed(self, main_weights_loaded: bool = False) -> None:
        """Model weights were loaded: megatron's fp32 main weights follow (unless loaded too); cached W_q go."""
        from bitcpm.quant.converter import refresh_quantized_weights

        if not main_weights_loaded:
            self.engine.optimizer.reload_model_params()
        for chunk in self.engine.model:
            refresh_quantized_weights(chunk)

    def save(self) -> Path | None:
        """Write a complete checkpoint of the current step (every rank takes part; rank 0 publishes)."""
        extra = {
            "step": self.step,
            "nan_skips": self.nan_skips,
            "consumed_samples": self.step * self.job.parallel.global_batch_size,
            # Read at save time: after an outage at start the run id only exists once the server is back.
            "mlflow_run_id": getattr(self.tracker, "run_id", None) or self.mlflow_run_id,
            "config": OmegaConf.to_container(OmegaConf.structured(self.job)),
        }
        self.engine.sync_params()  # the saved weights are this step's on every rank
        return ckpt.save_checkpoint(
            self.run_dir, self.step, self.engine.model, self.engine.optimizer, extra, self.job.train.keep_checkpoints
        )

    # --- loop --------------------------------------------------------------------------------------
    def micro_batches(self, step: int) -> list[torch.Tensor]:
        """This rank's micro-batches of `step`: global sample order, split over dp then accumulation."""
        p, info = self.job.parallel, self.info
        # A start from a source's step (stage.init_step) reads on from its data position, not from the first sample.
        first = (data_start_step(self.job) + step) * p.global_batch_size
        out = []
        for i in range(self.layout.micro_batches_per_step):
            start = first + (i * self.layout.dp + info.dp_rank) * p.micro_batch_size
            out.append(self.data.train_micro_batch(start, p.micro_batch_size).to(info.device))
        return out

    def validate(self) -> float:
        """Validation loss on the held-out set: train.eval_batches global batches, the same at every layout."""
        from bitcpm.training.steps import evaluate

        batches = self.data.valid_batches(
            self.job.train.eval_batches * self.layout.micro_batches_per_step,
            self.job.parallel.micro_batch_size,
            self.info.dp_rank,
            self.layout.dp,
        )
        return evaluate(self.engine, [b.to(self.info.device) for b in batches])

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
