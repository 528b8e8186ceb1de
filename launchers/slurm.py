"""Slurm launcher through submitit: one job per request (one array for several), one task per rank.

bitcpm owns the submission rather than Hydra's submitit launcher, which blocks until every job ends and reports
failed jobs as completed. Jobs can wait on others (`submit(requests, dependencies)`, afterok), `wait=false`
returns right after sbatch, and every submission is recorded in RUN_DIR/launch/jobs.json for
`python -m launchers.status`. submitit is imported lazily: the launcher layer stays importable without it.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from launchers.capabilities import Capabilities
from launchers.request import LaunchRequest, SlurmOptions
from launchers.slurm_state import JobRecord, JobState, append_records, query_states, read_records
from launchers.slurm_task import WorkerTask

POLL_S = 5.0
# waits: launcher.wait (SlurmOptions.wait) decides; the front end's schema sets it per job.
CAPABILITIES = Capabilities(arrays=True, chains=True, requeue=True, multi_node=True, remote=True)


def _options(req: LaunchRequest) -> SlurmOptions:
    if req.slurm is None:
        raise ValueError(f"{req.run_dir}: no Slurm options in the launch request")
    return req.slurm


def executor_parameters(req: LaunchRequest, dependencies: Iterable[str] = (), kind: str = "afterok") -> dict:
    """submitit SlurmExecutor parameters (sbatch options) of a request."""
    opt = _options(req)
    extra: dict[str, object] = {"requeue": True}  # `scontrol requeue` needs a requeueable job
    extra.update({k: (True if v in ("", None) else v) for k, v in opt.sbatch.items()})
    params: dict[str, object] = {
        "job_name": opt.job_name,
        "time": opt.time_min,
        "nodes": req.nodes,
        "ntasks_per_node": req.procs_per_node,
        "signal_delay_s": opt.signal_delay_s,
        "stderr_to_stdout": True,
        "additional_parameters": extra,
        "setup": list(req.setup) + [_preflight_line(m) for m in req.preflight],
    }
    optional = {
        "partition": opt.partition,
        "account": opt.account,
        "qos": opt.qos,
        "constraint": opt.constraint,
        "gpus_per_node": opt.gpus_per_node,
        "gres": opt.gres,
        "cpus_per_task": opt.cpus_per_task,
        "mem": f"{opt.mem_gb}GB" if opt.mem_gb else None,
        "array_parallelism": opt.array_parallelism,  # the %K of --array=0-N%K
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    deps = list(dependencies)
    if deps:
        params["dependency"] = f"{kind}:" + ":".join(deps)
    return params


def _preflight_line(module: str) -> str:
    # Once per node, before any rank starts; a failed check ends the job with the check's message.
    return f"srun --ntasks-per-node=1 --ntasks=$SLURM_JOB_NUM_NODES {shlex.quote(sys.executable)} -m {module} || exit 1"


def _resources(params: dict) -> dict:
    """What must match for requests to share an array (everything but the name)."""
    return {k: v for k, v in params.items() if k != "job_name"}


def _task(req: LaunchRequest) -> WorkerTask:
    return WorkerTask(
        worker_module=req.worker_module,
        worker_args=list(req.worker_args),
        launch_dir=str(req.launch_dir.resolve()),
        env=dict(req.env),
        max_restarts=_options(req).max_restarts,
        master_port=req.master_port,
    )


def describe(req: LaunchRequest) -> str:
    """The sbatch script this request would submit (what submitit writes), and how each task starts."""
    params = executor_parameters(req)
    folder = req.launch_dir / "submitit" / "<submission>"
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {folder}"
    try:
        from submitit.slurm.slurm import _make_sbatch_string

        script = _make_sbatch_string(command=command, folder=folder, **params)
    except ImportError:
        script = "\n".join(f"#SBATCH --{k.replace('_', '-')}={v}" for k, v in sorted(params.items()))
        script += "\n# (install submitit -- pip install bitcpm[slurm] -- to submit)"
    task = f"{sys.executable} -m {req.worker_module} {' '.join(req.worker_args)}"
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(req.env.items()))
    lines = [script.rstrip(), "# each task runs (RANK/WORLD_SIZE/MASTER_* from SLURM_*, USR2 -> save -> requeue):"]
    lines.append(f"#   {env + ' ' if env else ''}{task}")
    return "\n".join(lines)


def _submission_folder(requests: list[LaunchRequest]) -> Path:
    # A fresh folder per submission: Slurm may hand out a job id again after its state was wiped, and a
    # folder keyed only by job id would then mix two jobs' pickles and logs.
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    base = requests[0].launch_dir if len(requests) == 1 else Path(requests[0].run_dir).parent / "launch"
    return (base / "submitit" / stamp).resolve()


def submit(requests: list[LaunchRequest], dependencies: Iterable[str] = (), kind: str = "afterok") -> list[JobRecord]:
    """Submit the requests as one job (one request) or one array; each waits for `dependencies` (`kind`)."""
    import submitit

    if not requests:
        return []
    params = [executor_parameters(r, dependencies, kind) for r in requests]
    if any(_resources(p) != _resources(params[0]) for p in params[1:]):
        raise ValueError("an array needs identical resources; submit differing requests separately")
    if len(requests) > 1:
        # One array, one name: what its members' names share (they differ in the config hash).
        names = [str(p["job_name"]) for p in params]
        params[0]["job_name"] = os.path.commonprefix(names).rstrip("-") or "bitcpm"
    folder = _submission_folder(requests)
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    executor.update_parameters(**params[0])
    if len(requests) == 1:
        jobs = [executor.submit(_task(requests[0]))]
    else:
        with executor.batch():
            jobs = [executor.submit(_task(r)) for r in requests]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    records = []
    for req, job in zip(requests, jobs, strict=True):
        record = JobRecord(
            job_id=str(job.job_id),
            run_dir=str(Path(req.run_dir).resolve()),
            log=str(job.paths.stdout).replace("%t", "0"),
            submitted_at=stamp,
            dependencies=list(dependencies),
        )
        append_records(req.launch_dir, [record])
        records.append(record)
    return records


def wait_for(records: list[JobRecord], poll_s: float = POLL_S) -> dict[str, JobState]:
    """Poll until every job has ended, printing state changes; returns the final states."""
    last: dict[str, str] = {}
    while True:
        states = query_states([r.job_id for r in records])
        for jid, st in states.items():
            if last.get(jid) != st.state:
                print(f"bitcpm: Slurm job {jid}: {st.state}", flush=True)
                last[jid] = st.state
        if all(st.terminal or st.source == "none" for st in states.values()):
            return states
        time.sleep(poll_s)


def _report(records: list[JobRecord], wait: bool) -> int:
    for r in records:
        print(f"bitcpm: submitted Slurm job {r.job_id} for {r.run_dir}\n        log: {r.log}", flush=True)
    root = Path(records[0].run_dir).parent
    command = f"python -m launchers.status {records[0].run_dir if len(records) == 1 else f'--all --root {root}'}"
    if not wait:
        print(f"bitcpm: not waiting (launcher.wait=false); status: {command}", flush=True)
        return 0
    try:
        states = wait_for(records)
    except KeyboardInterrupt:
        print(f"bitcpm: stopped waiting; the jobs keep running ({command})", flush=True)
        return 130
    failed = [r for r in records if states[r.job_id].state != "COMPLETED"]
    for r in failed:
        print(f"bitcpm: job {r.job_id} ended {states[r.job_id].state}; log {r.log}", file=sys.stderr, flush=True)
    return 1 if failed else 0


def launch(req: LaunchRequest) -> int:
    """Submit one job; with wait, block until it ends (0 when it COMPLETED)."""
    return _report(submit([req]), _options(req).wait)


def launch_many(requests: list[LaunchRequest]) -> int:
    """Submit a multirun: requests with identical resources share one array."""
    groups: dict[str, list[LaunchRequest]] = {}
    for req in requests:
        groups.setdefault(repr(sorted(_resources(executor_parameters(req)).items())), []).append(req)
    records = [rec for group in groups.values() for rec in submit(group)]
    return _report(records, all(_options(r).wait for r in requests))


def launch_chain(requests: list[LaunchRequest]) -> int:
    """Submit stages at once, each starting only after the previous one succeeded (afterok)."""
    records: list[JobRecord] = []
    for req in requests:
        records += submit([req], dependencies=[records[-1].job_id] if records else [])
    return _report(records, all(_options(r).wait for r in requests))


def request_codes(requests: list[LaunchRequest]) -> list[int]:
    """After a failed array: each request's outcome (0 when its newest job COMPLETED, else 1) from sacct."""
    last = [read_records(r.launch_dir)[-1] for r in requests]
    states = query_states([rec.job_id for rec in last])
    return [0 if states[rec.job_id].state == "COMPLETED" else 1 for rec in last]
