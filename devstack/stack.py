"""`make run` (`python -m devstack`): the whole service on the embedded stack, in the foreground.

Starts PostgreSQL (pgserver) and applies migrations, the Temporal dev server with its UI
(persisted in .data/temporal.db), the simulator of the send API (unless SEND_API_URL is set),
the worker and the API. Ctrl-C stops every process it started. A lock on the data directory
and a check of every port refuse a second instance before it touches anything.
"""

import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from core.db import EMBEDDED_DATABASE, migrate
from core.logging import configure_logging
from core.settings import PROJECT_ROOT, Settings, get_settings
from devstack.embedded import (
    EmbeddedPostgres,
    api_server_command,
    port_is_free,
    temporal_dev_server_command,
    wait_for_port,
)

log = logging.getLogger("stack")


class StackError(Exception):
    """The stack cannot start; the message says why."""


def lock_data_dir(data_dir: Path) -> TextIO:
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / "run.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        raise StackError(
            f"{data_dir} is in use by {owner}: is `make run` already running? "
            "Stop it, or set DATA_DIR to another folder (and other ports)."
        ) from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def check_ports(settings: Settings) -> None:
    wanted = {"API_PORT": (settings.api_host, settings.api_port)}
    if settings.temporal_address is None:
        wanted["TEMPORAL_PORT"] = ("127.0.0.1", settings.temporal_port)
        wanted["TEMPORAL_UI_PORT"] = ("127.0.0.1", settings.temporal_ui_port)
    if settings.send_api_url is None:
        wanted["SIMULATOR_PORT"] = (settings.simulator_host, settings.simulator_port)
    taken = [
        f"{name}={port}" for name, (host, port) in wanted.items() if not port_is_free(host, port)
    ]
    if taken:
        raise StackError(
            f"ports already in use: {', '.join(taken)}. Is another instance running? "
            "Stop it, or choose other ports with these variables."
        )


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.postgres: EmbeddedPostgres | None = None
        self.logs = settings.data_dir / "logs"

    def spawn(
        self, name: str, command: list[str], env: dict[str, str], *, log_file: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Starts a process in a session of its own; its output goes to the terminal, or to
        `log_file` under DATA_DIR/logs."""
        out = None
        if log_file is not None:
            self.logs.mkdir(parents=True, exist_ok=True)
            out = (self.logs / log_file).open("ab")
        try:
            process = subprocess.Popen(
                command, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=out, start_new_session=True
            )
        finally:
            # The child holds its own copy of the file.
            if out is not None:
                out.close()
        self.processes.append((name, process))
        log.info("started %s (pid %d)", name, process.pid)
        return process

    def start(self) -> None:
        settings = self.settings
        env = dict(os.environ)
        if settings.database_url is None:
            self.postgres = EmbeddedPostgres(settings.data_dir / "pg")
            self.postgres.ensure_database(EMBEDDED_DATABASE)
            env["DATABASE_URL"] = self.postgres.url(EMBEDDED_DATABASE)
            log.info("PostgreSQL ready in %s", self.postgres.pgdata)
        migrate(env.get("DATABASE_URL") or str(settings.database_url))
        log.info("migrations applied")

        if settings.temporal_address is None:
            temporal = self.spawn(
                "temporal",
                temporal_dev_server_command(
                    db_file=settings.data_dir / "temporal.db",
                    port=settings.temporal_port,
                    ui_port=settings.temporal_ui_port,
                    namespace=settings.temporal_namespace,
                ),
                env,
                log_file="temporal.log",
            )
            wait_for_port("127.0.0.1", settings.temporal_port, timeout=60, process=temporal)
            env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{settings.temporal_port}"

        if settings.send_api_url is None:
            simulator = self.spawn(
                "simulator",
                [
                    sys.executable,
                    "-m",
                    "simulator",
                    "--host",
                    settings.simulator_host,
                    "--port",
                    str(settings.simulator_port),
                ],
                env,
            )
            wait_for_port(
                settings.simulator_host, settings.simulator_port, timeout=30, process=simulator
            )

        self.spawn("worker", [sys.executable, "worker.py"], env)
        api = self.spawn(
            "api",
            api_server_command(host=settings.api_host, port=settings.api_port),
            env,
        )
        wait_for_port(settings.api_host, settings.api_port, timeout=60, process=api)

    def banner(self) -> str:
        s = self.settings
        api = f"http://{s.api_host}:{s.api_port}"
        lines = [
            "",
            "Mailing service is up. Ctrl-C stops everything.",
            f"  Admin page:            {api}/admin  (sign in with a token from: make token)",
            f"  API docs (Swagger UI): {api}/docs",
            f"  Health:                {api}/healthz",
            f"  Metrics (API):         {api}/metrics",
        ]
        if s.worker_metrics_port:
            lines.append(
                f"  Metrics (worker):      http://{s.metrics_host}:{s.worker_metrics_port}/metrics"
            )
        if s.worker_sdk_metrics_port:
            lines.append(
                f"  Metrics (Temporal SDK): http://{s.metrics_host}:{s.worker_sdk_metrics_port}/metrics"
            )
        if s.temporal_address is None:
            lines.append(f"  Temporal UI:           http://127.0.0.1:{s.temporal_ui_port}")
        if s.send_api_url is None:
            lines.append(
                f"  Send API simulator:    http://{s.simulator_host}:{s.simulator_port}/_sim/stats"
            )
        auth = '-H "Authorization: Bearer $TOKEN" '
        if s.auth_disabled:
            how = ["  AUTHENTICATION IS DISABLED (AUTH_DISABLED=true): local experiments only"]
        elif s.auth_issuer:
            how = [f"  TOKEN=<an access token from {s.auth_issuer}>"]
        else:
            how = ["  TOKEN=$(make -s token)    # every /api/v1 call needs a bearer token"]
        lines += [
            f"  Data:                  {s.data_dir}",
            "Try it:",
            *how,
            f"  curl -s -X POST {api}/api/v1/clients {auth}-H 'content-type: application/json' "
            '-d \'{"phone": "79161234567", "tag": "vip"}\'',
            f"  curl -s {auth}{api}/api/v1/stats",
            "",
        ]
        return "\n".join(lines)

    def watch(self, stop: list[bool]) -> None:
        while not stop:
            for name, process in self.processes:
                if process.poll() is not None:
                    raise StackError(f"{name} exited with code {process.returncode}; stopping")
            time.sleep(0.5)

    def stop(self) -> None:
        for _, process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.postgres is not None:
            self.postgres.stop()
        log.info("stopped")


def main() -> int:
    settings = get_settings()
    configure_logging(level=settings.log_level, json_output=settings.log_json)
    stack = Stack(settings)
    stop: list[bool] = []

    def request_stop(signum: int, frame: object) -> None:
        stop.append(True)

    try:
        lock = lock_data_dir(settings.data_dir)
        check_ports(settings)
    except StackError as error:
        log.error("%s", error)
        return 1
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        stack.start()
        sys.stderr.write(stack.banner() + "\n")
        stack.watch(stop)
    except (StackError, RuntimeError, TimeoutError) as error:
        log.error("%s", error)
        return 1
    finally:
        stack.stop()
        lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
