"""`python -m MODULE ARGS` in a fresh process, without paying torch's and megatron's imports every time.

A helper process imports the heavy libraries once; every run is a child forked from it. Each run still is a
process of its own, as `python -m` would start it: its own pid, working directory, environment, standard
streams (files, so C-level output is captured too), signal dispositions and exit code, and a SIGKILL (the
run-safety faults) kills that child only. What it skips is the ~4 s of imports per run that the integration
tests used to pay dozens of times. Runs are one at a time per helper (one helper per pytest process).

The helper speaks JSON lines on its stdin/stdout: a request {module, args, cwd, env, stdout, stderr} is answered
with {"pid": ...} when the child started and {"returncode": ...} when it ended (negative: killed by a signal).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Imported once by the helper: everything a single-rank training run, an export or an eval imports, except the
# entry-point modules themselves (runpy executes those as __main__ in the child, as `python -m` does).
PRELOAD = (
    "torch",
    "megatron.core",
    "megatron.core.dist_checkpointing",
    "megatron.core.optimizer",
    "megatron.core.models.gpt",
    "hydra",
    "omegaconf",
    "mlflow",
    "bitcpm.frontend.app",
    "bitcpm.worker",
    "bitcpm.training.run",
    "bitcpm.training.checkpoint_write",
    "bitcpm.training.checkpoint_read",
    "bitcpm.export.source",
)


# --- the helper process ------------------------------------------------------------------------------------


def _child(request: dict) -> None:
    """Runs in the forked child: become `python -m module args` in cwd with env, then exit with its code."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for fd, target in ((stdin, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        threads = os.environ.get("OMP_NUM_THREADS")
        if threads:  # OpenMP read the variable when the helper loaded it: apply the run's own value
            import torch

            torch.set_num_threads(int(threads))
        sys.path[0] = os.getcwd()  # as `python -m` sets it
        sys.argv = [request["module"], *request["args"]]
        import runpy

        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            import atexit
            import threading

            threading._shutdown()  # join non-daemon threads, as interpreter shutdown does
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """The helper's loop: one request at a time, a forked child per request."""
    from bitcpm.backends.megatron_notices import hide_known_warnings

    hide_known_warnings()
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    reply = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        reply.write(json.dumps({"pid": pid}) + "\n")
        reply.flush()
        _, status = os.waitpid(pid, 0)
        reply.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        reply.flush()


# --- the test side ------------------------------------------------------------------------------------------


class WarmPython:
    """A helper process started on first use; `run` has subprocess.run's contract for `python -m`."""

    def __init__(self) -> None:
        self._helper: subprocess.Popen | None = None
        self._log: Path | None = None
        self._pending = b""  # reply bytes read but not yet consumed (two replies may arrive in one read)

    def _start(self) -> subprocess.Popen:
        if self._helper is None or self._helper.poll() is not None:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
            # Its own stderr goes to a file: it outlives the test that started it, and pytest's capture with it.
            self._log = Path(tempfile.mkdtemp(prefix="warm_python_")) / "helper.log"
            with open(self._log, "w") as log:
                self._helper = subprocess.Popen(
                    [sys.executable, "-m", "tests.support.warm_python"],
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                )
            self._pending = b""
        return self._helper

    def _reply(self, helper: subprocess.Popen, timeout: float) -> dict | None:
        """The helper's next reply line, or None when `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        fd = helper.stdout.fileno()
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the warm-python helper died (exit {helper.wait()}); its log: {self._log}")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)

    def run(
        self, module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        """Run `python -m module args` in cwd with exactly env; TimeoutExpired (child killed) past timeout."""
        helper = self._start()
        cmd = [sys.executable, "-m", module, *args]
        with tempfile.TemporaryDirectory(prefix="warm_python_") as streams:
            out, err = Path(streams) / "stdout", Path(streams) / "stderr"
            request = {
                "module": module,
                "args": args,
                "cwd": str(cwd),
                "env": env,
                "stdout": str(out),
                "stderr": str(err),
            }
            helper.stdin.write((json.dumps(request) + "\n").encode())
            helper.stdin.flush()
            started = self._reply(helper, 300)  # the first request waits for the helper's own imports
            if started is None:
                raise RuntimeError("the warm-python helper did not start a child in 300 s")
            pid = started["pid"]
            try:
                ended = self._reply(helper, timeout)
            except BaseException:  # the test itself timed out or was interrupted while its child ran
                self._abandon(helper, pid)
                raise
            if ended is None:
                self._abandon(helper, pid)
                raise subprocess.TimeoutExpired(cmd, timeout, out.read_text(), err.read_text())
            return subprocess.CompletedProcess(cmd, ended["returncode"], out.read_text(), err.read_text())

    def _abandon(self, helper: subprocess.Popen, pid: int) -> None:
        """Kill a child nobody waits for any more; the helper must reap it before it can serve the next run."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if self._reply(helper, 60) is None:  # the helper is stuck: start a new one next time
            helper.kill()
            helper.wait()

    def close(self) -> None:
        if self._helper is not None and self._helper.poll() is None:
            self._helper.stdin.close()
            self._helper.wait(timeout=30)


if __name__ == "__main__":
    serve()
