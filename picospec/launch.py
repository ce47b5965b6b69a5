"""Run the cloud and the link emulator on this machine, as a user would on two: the cloud in its
own process pinned to one core, the edge (this process) on another, the emulated link between."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from picospec.affinity import CLOUD_CORE
from picospec.cloud.config import CloudConfig
from picospec.cloud.server import STATS_LINE
from picospec.models.registry import DEFAULT_TARGET
from picospec.errors import PicoSpecError
from picospec.transport.netem import LinkEmulatorThread, LinkProfile



@dataclass(frozen=True)
class CloudProcessConfig:
    """How to start `picospec cloud` in a subprocess."""

    model: str = DEFAULT_TARGET
    threads: int = CloudConfig.threads
    gpu_layers: int = CloudConfig.gpu_layers
    batching: bool = CloudConfig.batching
    max_sessions: int = CloudConfig.max_sessions
    step_tokens: int = CloudConfig.step_tokens
    gather_s: float = CloudConfig.gather_s
    deterministic: bool = False
    core: int | None = CLOUD_CORE
    # Loading the model and measuring its cost curve take ~10 s here; a cloud silent for this long is hung.
    startup_timeout_s: float = 120.0
    device: str = CloudConfig.device  # where a checkpoint directory runs


class LocalCloud:
    """`picospec cloud` in a subprocess on a free port, behind an in-process link emulator.

    Edges connect to `address` (the emulator), which relays to the cloud with the link profile's
    delay and bandwidth; with no profile, `address` is the cloud itself (a balancer in front of
    replicas on this machine). A context manager; the subprocess is stopped on exit.
    """

    def __init__(self, config: CloudProcessConfig, profile: LinkProfile | None) -> None:
        self.config, self.profile = config, profile
        self._process: subprocess.Popen | None = None
        self._link: LinkEmulatorThread | None = None
        self._stderr: list[str] = []
        self._stdout: queue.Queue[str | None] = queue.Queue()  # the cloud's stdout lines, read on a thread
        self._cloud_port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._link.port if self._link else self._cloud_port}"

    @property
    def link(self) -> LinkEmulatorThread:
        return self._link

    def __enter__(self) -> "LocalCloud":
        self._cloud_port = self._start_cloud()
        if self.profile is not None:
            self._link = LinkEmulatorThread("127.0.0.1", 0, "127.0.0.1", self._cloud_port, self.profile)
            self._link.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the link emulator and the cloud process."""
        if self._link is not None:
            self._link.stop()
            self._link = None
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None

    def drain(self) -> None:
        """SIGTERM the cloud: it refuses new sessions, lets the running ones finish, then exits (see wait())."""
        self._process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        """The cloud process's exit code, once it has exited (subprocess.TimeoutExpired after timeout_s)."""
        return self._process.wait(timeout=timeout_s)

    def _start_cloud(self) -> int:
        command = [sys.executable, "-m", "picospec.cli", "cloud", "--model", self.config.model, "--port", "0",
                   "--threads", str(self.config.threads), "--gpu-layers", str(self.config.gpu_layers),
                   "--batching", "on" if self.config.batching else "off",
                   "--max-sessions", str(self.config.max_sessions), "--step-tokens", str(self.config.step_tokens),
                   "--gather-ms", f"{self.config.gather_s * 1000:g}"]  # fmt: skip
        if self.config.deterministic:
            command.append("--deterministic")
        if self.config.device != CloudConfig.device:
            command += ["--device", self.config.device]
        if self.config.core is not None:
            command += ["--cores", str(self.config.core)]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._collect_stderr, daemon=True).start()
        return self._wait_for_port()

    def _collect_stderr(self) -> None:
        for line in self._process.stderr:
            self._stderr.append(line.rstrip())

    def _wait_for_port(self) -> int:
        """The port from the cloud's 'serving ... on HOST:PORT' line; a clear error with the cloud's
        stderr if it exits or stays silent past the start-up timeout (the process is then stopped)."""
        # Read on a thread: a blocking read of a hung child's stdout would never reach the deadline.
        threading.Thread(target=self._forward_stdout, daemon=True).start()
        timeout_s = self.config.startup_timeout_s
        deadline = time.monotonic() + timeout_s
        try:
            while (line := self._stdout.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
                if "serving" in line:
                    return int(line.rsplit(":", 1)[1])
            problem = f"the cloud process exited (code {self._process.wait(timeout=5)})"
        except queue.Empty:
            problem = f"the cloud process was not serving after {timeout_s:g} s"
        detail = "\n".join(self._stderr[-5:]) or "no output"
        self.close()
        raise PicoSpecError(f"{problem}; its last output:\n{detail}")

    def _forward_stdout(self) -> None:
        for line in self._process.stdout:  # keeps draining, so the cloud never blocks on a full pipe
            self._stdout.put(line)
        self._stdout.put(None)

    def stats(self, timeout_s: float = 30.0) -> dict:
        """The cloud's counters now (its scheduler's passes, tokens, busy seconds, ...), asked by SIGUSR1."""
        self._process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        try:
            while (line := self._stdout.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
                if line.startswith(STATS_LINE):
                    return json.loads(line[len(STATS_LINE) :])
        except queue.Empty:
            pass
        raise PicoSpecError(f"the cloud process gave no stats within {timeout_s:g} s")
