"""Hands a study's members to their launchers by what each launcher can do (launchers/capabilities.py).

Members go to the launcher all their stages share: one that runs trials itself (parallel_trials: local) gets
them in parallel slots; one that batches (arrays, chains: Slurm) gets single jobs as one array and recipes as
chains; any other launcher (and a member whose stages go to different launchers) gets one request at a time.
Stages that several members share (same run directory: e.g. the full-precision stage every QAT trial starts
from) run once, in a first wave before the members' own stages, when trials run in slots; they are written
and tracked under the first member that has them. Returns each member's exit code (None: submitted without
waiting; for Slurm the outcome is in launch/jobs.json).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bitcpm.frontend.launch import WORKER_MODULE, common_launcher, prepare_run_dir, stages_wait
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
    """Run every member; one failing does not stop the others. `stop_trial` watches trials run in slots."""
    written: dict[Path, LaunchRequest] = {}
    requests = {m.index: _requests(m, written) for m in members}  # every run directory written before any start
    in_slots: dict[int, list[Member]] = {}
    batched: dict[int, tuple[Any, list[Member]]] = {}
    one_by_one: list[Member] = []
    for m in members:
        launcher = common_launcher([s.job for s in m.stages])
        caps = m.stages[0].job.launcher.capabilities()
        if launcher is not None and caps.parallel_trials:
            in_slots.setdefault(id(launcher), []).append(m)
        elif launcher is not None and (caps.chains if m.is_pipeline else caps.arrays):
            batched.setdefault(id(launcher), (launcher, []))[1].append(m)
        else:
            one_by_one.append(m)
    codes: dict[int, int | None] = {}
    for group in in_slots.values():  # first: these run to the end here; batches are submitted afterwards
        codes.update(_run_local(group, requests, total, stop_trial))
    for launcher, group in batched.values():
        codes.update(_run_batched(launcher, group, requests))
    for m in one_by_one:  # e.g. Ascend per-node scripts: one after another
        codes[m.index] = _run_one_by_one(m, requests[m.index])
    return codes


def _run_one_by_one(member: Member, requests: list[LaunchRequest]) -> int | None:
    """Each stage through its own launcher, in order, stopping at the first failure."""
    code = 0
    for stage, req in zip(member.stages, requests, strict=True):
        code = int(stage.job.launcher.implementation().launch(req))
        if code != 0:
            break
    return code if stages_wait(member.stages) else None


def _run_local(
    members: list[Member], requests: dict[int, list[LaunchRequest]], total: int, stop_trial: StopTrial | None = None
) -> dict[int, int | None]:
    """Shared stages first (each once), then every member's own stages, in the launcher's parallel slots."""
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
    launcher = first.job.launcher.implementation()  # one with parallel_trials: launchers.local, or a plugged-in one
    run_trials, trial_log, trial_slots = launcher.run_trials, launcher.trial_log, launcher.trial_slots

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

    watch = {} if stop_when is None else {"stop_when": stop_when}  # only launchers that can stop a trial need it
    return run_trials(trials, slots, on_start, on_end, **watch)


def _run_batched(
    launcher: Any, members: list[Member], requests: dict[int, list[LaunchRequest]]
) -> dict[int, int | None]:
    """Single-job members as one array (launch_many; launcher.max_parallel is Slurm's %N), recipes as chains."""
    singles = [m for m in members if not m.is_pipeline]
    codes: dict[int, int | None] = {}
    if singles:
        flat = [requests[m.index][0] for m in singles]
        wait = all(stages_wait(m.stages) for m in singles)
        code = int(launcher.launch_many(flat) if len(flat) > 1 else launcher.launch(flat[0]))
        codes.update({m.index: (code if wait else None) for m in singles})
        if wait and code != 0 and len(flat) > 1 and hasattr(launcher, "request_codes"):  # which members failed
            codes.update(zip([m.index for m in singles], launcher.request_codes(flat), strict=True))
    for m in members:
        if m.is_pipeline:
            code = int(launcher.launch_chain(requests[m.index]))
            codes[m.index] = code if stages_wait(m.stages) else None
    return codes
