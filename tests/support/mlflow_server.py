"""A throw-away local `mlflow server` subprocess for tests and development, not for serving teams."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from types import TracebackType

from bitcpm.tracking.store_uri import ARTIFACTS_DIRNAME, sqlite_path

HOST = "127.0.0.1"
HEALTH_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 40
# The lean server: no background job runner, one worker; enough for a handful of test clients.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"}


class ServerStartError(RuntimeError):
    """The server exited or never answered /health; the message carries its log tail."""


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (another process could still take it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _default_artifacts_dir(backend_uri: str) -> Path | None:
    database = sqlite_path(backend_uri)
    return None if database is None else database.resolve().parent / ARTIFACTS_DIRNAME


class LocalServer:
    """Handle on an `mlflow server` process group on 127.0.0.1; restartable on the same port."""

    def __init__(
        self,
        backend_uri: str,
        port: int,
        artifacts_dir: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.backend_uri = backend_uri
        self.port = port
        self.artifacts_dir = artifacts_dir
        self._owns_log = log_path is None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="bitcpm-mlflow-server-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """Tracking URI clients should use."""
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def _command(self) -> list[str]:
        # sys.executable -m mlflow: the server runs from this interpreter's environment, no PATH lookup.
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri]
        cmd += ["--host", HOST, "--port", str(self.port), "--workers", "1"]
        if self.artifacts_dir is not None:
            cmd += ["--artifacts-destination", str(Path(self.artifacts_dir).resolve())]
        return cmd

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server's combined stdout/stderr."""
        try:
            with self.log_path.open(errors="replace") as log:
                return "".join(deque(log, maxlen=lines))
        except OSError:
            return ""

    def _healthy(self) -> bool:
        # An empty ProxyHandler: an HTTP(S)_PROXY in the environment must not capture loopback traffic.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout_s: float = HEALTH_TIMEOUT_S) -> LocalServer:
        """Launch the server and block until /health answers; raise ServerStartError otherwise."""
        if self.running:
            return self
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **SERVER_ENV},
                # Own process group, so stop() also reaches the uvicorn worker it forks.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while not self._healthy():
            code = self._process.poll()
            if code is not None:
                raise ServerStartError(
                    f"mlflow server exited with code {code} before becoming healthy; log tail:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"mlflow server on {self.uri} not healthy after {timeout_s:.0f} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.25)
        return self

    def _signal_group(self, sig: int) -> bool:
        """Send sig to the server's process group; False once the group is gone."""
        assert self._process is not None
        try:
            os.killpg(self._process.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the process group and wait for it; SIGKILL whatever is left after timeout_s."""
        if self._process is None:
            return
        deadline = time.monotonic() + timeout_s
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        # The group outlives its leader while forked workers shut down; wait for them too.
        while self._signal_group(0) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._signal_group(signal.SIGKILL):
            time.sleep(0.1)
        self._process.wait()
        self._process = None

    def close(self) -> None:
        """Stop the server and remove the log file if this object created it."""
        self.stop()
        if self._owns_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_local_server(
    backend_uri: str,
    port: int | None = None,
    artifacts_dir: Path | None = None,
    *,
    timeout_s: float = HEALTH_TIMEOUT_S,
) -> LocalServer:
    """Start `mlflow server` on 127.0.0.1 (free port if none) and wait until /health answers."""
    # Artifacts are proxied by the server; by default they land next to a sqlite database.
    artifacts_dir = artifacts_dir if artifacts_dir is not None else _default_artifacts_dir(backend_uri)
    server = LocalServer(backend_uri, port or free_port(), artifacts_dir)
    try:
        return server.start(timeout_s)
    except BaseException:
        server.close()
        raise
