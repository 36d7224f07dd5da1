"""The soak's stack: the bench's (PostgreSQL, the Temporal dev server, the simulator, N worker
processes and the API on free ports over a temporary data directory), whose parts the fault
loop can kill and start again as the same servers at the same addresses.

Every method blocks; the run calls them in threads. PostgreSQL's peak memory is followed under
`postgres` (its postmaster's tree), across its restarts as each process's is.
"""

import contextlib
import logging
import os
import signal
import subprocess
import sys

from bench.stack import BenchStack
from devstack.embedded import wait_for_port
from devstack.processes import CrashablePostgres

log = logging.getLogger(__name__)

READY_TIMEOUT = 60.0


class SoakStack(BenchStack):
    postgres_handle: CrashablePostgres | None = None

    def start(self) -> None:
        super().start()
        assert self.postgres is not None
        # The same server (pgserver keeps one handle per data directory), now killable.
        self.postgres_handle = CrashablePostgres(self.postgres.pgdata)
        self.memory.watch("postgres", self.postgres_handle.server.pid)

    def worker_pid(self, index: int) -> int | None:
        process = self.processes.get(f"worker-{index}")
        return None if process is None or process.poll() is not None else process.pid

    def signal_worker(self, index: int, signum: signal.Signals) -> subprocess.Popen[bytes]:
        """Sends the signal to the worker process (its group, for SIGKILL: nothing of it
        survives); the process, to wait for."""
        process = self.processes[f"worker-{index}"]
        with contextlib.suppress(ProcessLookupError):
            if signum == signal.SIGKILL:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
        return process

    def wait_exit(self, process: subprocess.Popen[bytes], timeout: float) -> int | None:
        """Its exit code, or None (and then SIGKILL) if it is still running after `timeout`."""
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return None

    def start_worker(self, index: int) -> None:
        """A fresh process under the same name, log and metrics port."""
        name = f"worker-{index}"
        port = self.worker_metrics_ports[name]
        self._spawn(
            name, [sys.executable, "worker.py"], extra_env={"WORKER_METRICS_PORT": str(port)}
        )

    def kill_temporal(self) -> None:
        process = self.processes["temporal"]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def start_temporal(self) -> None:
        """The same command again: the same ports and SQLite file."""
        command = [str(part) for part in self.processes["temporal"].args]  # type: ignore[union-attr]
        process = self._spawn("temporal", command)
        wait_for_port("127.0.0.1", self.ports.temporal, timeout=READY_TIMEOUT, process=process)

    def kill_postgres(self) -> None:
        assert self.postgres_handle is not None
        self.postgres_handle.kill()

    def start_postgres(self) -> None:
        assert self.postgres_handle is not None
        self.postgres_handle.restart()
        self.postgres = self.postgres_handle.server
        self.memory.watch("postgres", self.postgres.pid)

    def ensure_running(self) -> list[str]:
        """Starts again whatever is down (a fault cut short by the end of the run); the names."""
        started = []
        if self.processes["temporal"].poll() is not None:
            self.start_temporal()
            started.append("temporal")
        for name in list(self.worker_metrics_ports):
            if self.processes[name].poll() is not None:
                self.start_worker(int(name.split("-")[1]))
                started.append(name)
        return started
