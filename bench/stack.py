"""The bench's own stack: PostgreSQL, the Temporal dev server, the simulator, N worker processes
and the API, as separate processes over a temporary data directory on free ports.

Worker processes are named `worker-1` .. `worker-N` (their logs `worker-<n>.log`, their peak
memory under the same names); each serves its own /metrics on a free WORKER_METRICS_PORT so that
the bench can tell each one's share of a dispatch. The dev server serves its Prometheus metrics
(its `action` counter among them) on a free port too.

Each process runs in a session of its own (like core.stack), so that stopping it stops its
children too, and a Ctrl-C in the terminal reaches only the bench, which then stops them all.
"""

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from bench.memory import PeakRss
from core.db import EMBEDDED_DATABASE, migrate
from core.settings import PROJECT_ROOT, Settings
from devstack.embedded import (
    EmbeddedPostgres,
    api_server_command,
    free_port,
    temporal_dev_server_command,
    wait_for_port,
)
from simulator.app import DEFAULT_TOKEN

log = logging.getLogger(__name__)

NAMESPACE = "default"
TASK_QUEUE = "mailing"
SEND_TASK_QUEUE = "mailing-send"
STOP_TIMEOUT = 15.0
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Ports:
    temporal: int
    temporal_ui: int
    temporal_metrics: int
    simulator: int
    api: int

    @classmethod
    def free(cls) -> "Ports":
        return cls(
            temporal=free_port(),
            temporal_ui=free_port(),
            temporal_metrics=free_port(),
            simulator=free_port(),
            api=free_port(),
        )


def worker_name(index: int) -> str:
    """The name of the index-th worker process (from 1): its log, its peak memory, its pid."""
    return f"worker-{index}"


class BenchStack:
    """Every server of one bench run; `restart_services` gives the workers and the API fresh
    processes, so that each scenario's peak memory is its own. `workers` worker processes run
    at a time; set it before `restart_services` to change how many."""

    def __init__(
        self,
        *,
        data_dir: Path,
        send_concurrency: int,
        extra_env: dict[str, str],
        memory: PeakRss,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError(f"at least one worker, not {workers}")
        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.send_concurrency = send_concurrency
        self.extra_env = extra_env
        # Settings of the current scenario only (e.g. SEND_ROUTES); `prepare` sets them before
        # each restart, over `extra_env`.
        self.scenario_env: dict[str, str] = {}
        self.memory = memory
        self.workers = workers
        self.ports = Ports.free()
        self.postgres: EmbeddedPostgres | None = None
        self.database_url = ""
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        # The /metrics port of each running worker process, by name.
        self.worker_metrics_ports: dict[str, int] = {}

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.ports.temporal}"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.simulator}"

    @property
    def send_api_url(self) -> str:
        return f"{self.simulator_url}/v1"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def temporal_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.temporal_metrics}/metrics"

    @property
    def worker_names(self) -> list[str]:
        """The worker processes running now, in order."""
        return list(self.worker_metrics_ports)

    def log_path(self, name: str) -> Path:
        """The log of a process; every process of that name appends to it."""
        return self.logs / f"{name}.log"

    def worker_metrics_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.worker_metrics_ports[name]}/metrics"

    def env(self) -> dict[str, str]:
        """The environment of the worker and the API: only what is set here configures them."""
        fields = {name.upper() for name in Settings.model_fields}
        env = {key: value for key, value in os.environ.items() if key not in fields}
        env |= {
            "ENVIRONMENT": "development",
            "DATA_DIR": str(self.data_dir),
            "DATABASE_URL": self.database_url,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_NAMESPACE": NAMESPACE,
            "TEMPORAL_TASK_QUEUE": TASK_QUEUE,
            "TEMPORAL_SEND_TASK_QUEUE": SEND_TASK_QUEUE,
            "SEND_API_URL": self.send_api_url,
            "SEND_API_TOKEN": DEFAULT_TOKEN,
            "SEND_CONCURRENCY": str(self.send_concurrency),
            "LOG_LEVEL": "WARNING",
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.ports.api),
            "SIMULATOR_PORT": str(self.ports.simulator),
            "TEMPORAL_PORT": str(self.ports.temporal),
            "TEMPORAL_UI_PORT": str(self.ports.temporal_ui),
            "PYTHONUNBUFFERED": "1",
            # Off here; each worker process gets a free port of its own in `start_services`
            # (its /metrics tell its share of a dispatch). No SDK exporter.
            "WORKER_METRICS_PORT": "0",
            "WORKER_SDK_METRICS_PORT": "0",
        }
        return env | self.extra_env | self.scenario_env

    def start(self) -> None:
        """Starts every server; blocking, a minute at most."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.postgres = EmbeddedPostgres(self.data_dir / "pg")
        self.postgres.ensure_database(EMBEDDED_DATABASE)
        self.database_url = self.postgres.url(EMBEDDED_DATABASE)
        migrate(self.database_url)
        log.info("PostgreSQL ready, migrations applied (%s)", self.postgres.pgdata)

        temporal = self._spawn(
            "temporal",
            [
                *temporal_dev_server_command(
                    db_file=self.data_dir / "temporal.db",
                    port=self.ports.temporal,
                    ui_port=self.ports.temporal_ui,
                    namespace=NAMESPACE,
                ),
                "--headless",
                # Its `action` counter tells what a dispatch would cost on Temporal Cloud.
                "--metrics-port",
                str(self.ports.temporal_metrics),
            ],
        )
        wait_for_port("127.0.0.1", self.ports.temporal, timeout=READY_TIMEOUT, process=temporal)

        simulator = self._spawn(
            "simulator",
            [
                sys.executable,
                "-m",
                "simulator",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports.simulator),
                "--log-level",
                "WARNING",
            ],
        )
        wait_for_port("127.0.0.1", self.ports.simulator, timeout=READY_TIMEOUT, process=simulator)
        self.start_services()

    def start_services(self) -> None:
        """`workers` worker processes and the API; readiness is awaited by `wait_until_ready`."""
        for index in range(1, self.workers + 1):
            name = worker_name(index)
            port = free_port()
            self._spawn(
                name, [sys.executable, "worker.py"], extra_env={"WORKER_METRICS_PORT": str(port)}
            )
            self.worker_metrics_ports[name] = port
        self._spawn("api", api_server_command(host="127.0.0.1", port=self.ports.api))

    def restart_services(self) -> None:
        """Stops the API and every worker process (together: SIGTERM to all, then the waits),
        and starts `workers` fresh ones."""
        names = ["api", *self.worker_names]
        self._stop_all(names)
        for name in names:
            self.memory.unwatch(name)
        self.worker_metrics_ports.clear()
        self.start_services()

    def stop(self) -> None:
        """Stops everything started, newest first; safe to call twice or after a failed start."""
        for name in reversed(list(self.processes)):
            self._stop(name)
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        log.info("stack stopped")

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}\n{self.log_tail(name)}"
                )

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_path(name)
        if not path.exists():
            return ""
        return f"--- {path}\n{path.read_text(errors='replace')[-chars:]}"

    def _spawn(
        self, name: str, command: list[str], extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("ab") as out:
            process = subprocess.Popen(
                command,
                env=self.env() | (extra_env or {}),
                cwd=PROJECT_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        self.memory.watch(name, process.pid)
        log.info("started %s (pid %d)", name, process.pid)
        return process

    def _stop(self, name: str) -> None:
        """SIGTERM to the process group, SIGKILL if it is still there after a while."""
        self._stop_all([name])

    def _stop_all(self, names: list[str]) -> None:
        """SIGTERM to each one's process group first, then each one's wait (SIGKILL if it is
        still there after a while): N workers stop in the time of one."""
        stopping: dict[str, subprocess.Popen[bytes]] = {}
        for name in names:
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            stopping[name] = process
        for name, process in stopping.items():
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", name, STOP_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


async def connect_temporal(address: str) -> Client:
    """A client once the namespace answers: the port opens before the server serves."""
    async with asyncio.timeout(READY_TIMEOUT):
        while True:
            try:
                client = await Client.connect(address, namespace=NAMESPACE)
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace=NAMESPACE)
                )
                return client
            except (RuntimeError, RPCError):
                await asyncio.sleep(0.2)


async def wait_until_ready(stack: BenchStack, temporal: Client) -> None:
    """Until the API answers healthy and every worker process polls both task queues.

    A worker's pollers, seen by the server under its identity (pid@host), tell that it is up.
    Without this, the first scenario would time the workers' start-up (or start with only
    some of them polling, and give the first ones every batch).
    """
    async with asyncio.timeout(READY_TIMEOUT), httpx.AsyncClient(timeout=5) as http:
        while True:
            stack.check_alive()
            if await _api_healthy(http, stack.api_url) and await _workers_poll(
                temporal, [stack.pid(name) for name in stack.worker_names]
            ):
                return
            await asyncio.sleep(0.2)


async def _api_healthy(http: httpx.AsyncClient, api_url: str) -> bool:
    try:
        response = await http.get(f"{api_url}/healthz")
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def _workers_poll(temporal: Client, pids: list[int]) -> bool:
    """Whether every pid polls the workflow queue and the send queue."""
    wanted = [
        (TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        (SEND_TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
    ]
    for queue, kind in wanted:
        response = await temporal.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=NAMESPACE, task_queue=TaskQueue(name=queue), task_queue_type=kind
            )
        )
        polling = {poller.identity.partition("@")[0] for poller in response.pollers}
        if any(str(pid) not in polling for pid in pids):
            return False
    return True
