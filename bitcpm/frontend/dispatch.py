"""Hands a study's members to their launchers: local trials in parallel slots, Slurm as one throttled array.

Stages that several members share (same run directory: e.g. the full-precision stage every QAT trial starts
from) run once, locally in a first wave before the members' own stages; they are written and tracked under
the first member that has them. Returns each member's exit code (None: submitted to Slurm without waiting;
the outcome is in launch/jobs.json).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bitcpm.frontend.launch import WORKER_MODULE, prepare_run_dir
from bitcpm.frontend.members import Member
from bitcpm.training.signals import EXIT_PREEMPTED
from launchers.request import LaunchRequest

# Asked while a member's stage runs locally: (member index, that stage's run directory) -> stop it now.
# A stopped worker saves a checkpoint and exits 75, so the trial can resume later.
StopTrial = Callable[[int, Path], bool]


def _requests(member: Member, written: dict[Path, LaunchRequest]) -> list[LaunchRequest]:
    from bitcpm.frontend.submission import request_for

    out = []
    for s in member.stages:
        if s.run_dir not in written:  # a shared stage keeps the first member's config (and MLflow parent)
            written[s.run_dir] = request_for(s.job, prepare_run_dir(s.job, s.overrides), WORKER_MODULE)
        out.append(written[s.run_dir])
    return out


def shared_prefix(member: Member, members: list[Member]) -> tuple[Path, ...]:
    """The leading stages of `member` whose run directories another member also has."""
    others = Counter(s.run_dir for m in members for s in m.stages)
    prefix = []
    for s in member.stages:
        if others[s.run_dir] < 2:
            break
        prefix.append(s.run_dir)
    return tuple(prefix)


def run_members(members: list[Member], total: int, stop_trial: StopTrial | None = None) -> dict[int, int | None]:
    """Run every member; one failing does not stop the others. `stop_trial` watches local trials."""
    from bitcpm.frontend.submission import on_slurm

    written: dict[Path, LaunchRequest] = {}
    requests = {m.index: _requests(m, written) for m in members}  # every run directory written before any start
    local = [m for m in members if m.job.launcher.name == "local"]
    slurm = [m for m in members if m not in local and all(on_slurm(s.job) for s in m.stages)]
    other = [m for m in members if m not in local and m not in slurm]
    codes: dict[int, int | None] = {}
    if local:
        codes.update(_run_local(local, requests, total, stop_trial))
    if slurm:
        codes.update(_run_slurm(slurm, requests))
    for m in other:  # e.g. Ascend per-node scripts: one after another
        from launchers import get_launcher

        code = 0
        for req in requests[m.index]:
            code = int(get_launcher(m.job.launcher.name).launch(req))
            if code != 0:
                break
        codes[m.index] = code
    return codes


def _run_local(
    members: list[Member], requests: dict[int, list[LaunchRequest]], total: int, stop_trial: StopTrial | None = None
) -> dict[int, int | None]:
    """Shared stages first (each once), then every member's own stages, in parallel slots."""
    prefixes = {m.index: shared_prefix(m, members) for m in members}
    first_wave = sorted({p for p in prefixes.values() if p}, key=lambda p: [str(d) for d in p])
    by_dir = {r.run_dir: r for reqs in requests.values() for r in reqs}
    shared_codes: dict[tuple[Path, ...], int] = {}
    if first_wave:
        items = [(f"shared stage(s) {', '.join(d.name for d in p)}", [by_dir[d] for d in p]) for p in first_wave]
        codes = _run_wave(members[0], items)
        shared_codes = dict(zip(first_wave, codes, strict=True))
    out: dict[int, int | None] = {}
    items, owners = [], []
    for m in members:
        prefix = prefixes[m.index]
        if prefix and shared_codes[prefix] != 0:
            out[m.index] = shared_codes[prefix]  # its shared stages failed: nothing of its own can start
            continue
        own = requests[m.index][len(prefix) :]
        if not own:
            out[m.index] = 0
            continue
        items.append((f"trial {m.index + 1}/{total} ({m.short_label})", own))
        owners.append(m.index)
    stop = None if stop_trial is None else (lambda k, req: stop_trial(owners[k], req.run_dir))
    for index, code in zip(owners, _run_wave(members[0], items, stop), strict=True):
        out[index] = code
    return out


def _run_wave(
    first: Member,
    items: list[tuple[str, list[LaunchRequest]]],
    stop_when: Callable[[int, LaunchRequest], bool] | None = None,
) -> list[int]:
    """Run labelled trials (each a list of requests in order) in the slots the first member's launcher allows."""
    from launchers.local import run_trials, trial_log, trial_slots

    if not items:
        return []
    lc = first.job.launcher
    trials = [reqs for _, reqs in items]
    procs = max(r.world_size for reqs in trials for r in reqs)
    gpus = first.job.hardware.device == "cuda"
    slots = trial_slots(lc.max_parallel, lc.threads_per_trial, procs, gpus, len(trials))
    print(f"bitcpm: running {len(trials)} trial(s), {slots.parallel} at a time", flush=True)

    def on_start(k: int, env: dict[str, str]) -> None:
        where = "" if slots.parallel == 1 else f"; log {trial_log(trials[k][-1])}"
        devices = f", CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in env else ""
        threads = f"{env['OMP_NUM_THREADS']} thread(s){devices}"
        print(f"bitcpm: {items[k][0]} started ({threads}){where}", flush=True)

    def on_end(k: int, code: int) -> None:
        state = (
            "finished" if code == 0 else ("stopped (resumable)" if code == EXIT_PREEMPTED else f"FAILED (exit {code})")
        )
        print(f"bitcpm: {items[k][0]} {state}", flush=True)

    return run_trials(trials, slots, on_start, on_end, stop_when)


def _run_slurm(members: list[Member], requests: dict[int, list[LaunchRequest]]) -> dict[int, int | None]:
    """Single-job members as one array (launcher.max_parallel is its %N throttle), recipes as afterok chains."""
    from launchers import slurm

    singles = [m for m in members if not m.is_pipeline]
    wait = all(s.job.launcher.wait for m in members for s in m.stages)
    codes: dict[int, int | None] = {}
    if singles:
        flat = [requests[m.index][0] for m in singles]
        code = slurm.launch_many(flat) if len(flat) > 1 else slurm.launch(flat[0])
        codes.update({m.index: (code if wait else None) for m in singles})
        if wait and code != 0 and len(flat) > 1:
            codes.update(_member_states(singles, flat))
    for m in members:
        if m.is_pipeline:
            code = slurm.launch_chain(requests[m.index])
            codes[m.index] = code if wait else None
    return codes


def _member_states(members: list[Member], requests: list[LaunchRequest]) -> dict[int, int | None]:
    """Which array members failed: each one's Slurm state (sacct), from the job ids in launch/jobs.json."""
    from launchers.slurm_state import query_states, read_records

    last = {m.index: read_records(r.launch_dir)[-1] for m, r in zip(members, requests, strict=True)}
    states = query_states([rec.job_id for rec in last.values()])
    return {i: 0 if states[rec.job_id].state == "COMPLETED" else 1 for i, rec in last.items()}
