"""What a launcher can do, declared as plain data: the front end dispatches on these, never on a launcher's name.

A launcher is a module (or any object) with:
- CAPABILITIES: Capabilities (what its jobs can do, below);
- launch(request) -> exit code, and describe(request) -> text (what would be started, for the plan);
- with parallel_trials: trial_slots(parallel, threads, procs_per_trial, gpus, trials) -> slots (.parallel, .envs),
  run_trials(trials, slots, on_start, on_end) -> exit codes, trial_log(request) -> Path (see launchers.local);
- with arrays: launch_many(requests) -> exit code, and optionally request_codes(requests) -> each one's code
  after a failed batch (else every member gets the batch's code);
- with chains: launch_chain(requests) -> exit code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    """What a launcher does with the jobs of a multirun or a pipeline, and where their ranks may start."""

    parallel_trials: bool = False
    """Runs a study's trials itself, several at once in slots of this machine (trial_slots, run_trials)."""
    arrays: bool = False
    """Submits a multirun's jobs as one batch (launch_many; a Slurm array)."""
    chains: bool = False
    """Submits every stage of a pipeline at once, each starting after the previous succeeded (launch_chain)."""
    requeue: bool = False
    """Warns a job with SIGUSR2 before its time limit and requeues it once the worker has saved a checkpoint."""
    multi_node: bool = False
    """Places ranks on several nodes (launcher.nodes > 1)."""
    remote: bool = False
    """Ranks start outside this process (a batch script, another node): requests carry absolute paths."""
    waits: bool = True
    """launch returns when the job has ended, so its exit code is the outcome; False: submitted only."""
