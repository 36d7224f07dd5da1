"""Processes of the embedded stack that tests and benchmarks start, kill and start again."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]
from pydantic import SecretStr

from core.settings import PROJECT_ROOT, Settings
from devstack.embedded import (
    EmbeddedPostgres,
    free_port,
    temporal_dev_server_command,
    wait_for_port,
)


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a worker or API process configured by `settings` alone: none of the
    caller's own settings variables leak in."""
    fields = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key not in fields}
    dumped = settings.model_dump(mode="json", exclude_none=True)
    for name, value in dumped.items():
        secret = getattr(settings, name)
        if isinstance(secret, SecretStr):  # dumped masked: the process needs the value
            value = secret.get_secret_value()
        # Lists and dicts as JSON, as pydantic-settings reads them back.
        env[name.upper()] = value if isinstance(value, str) else json.dumps(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env | extra


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL if it is still there after a while."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class TemporalServer:
    """`temporal server start-dev` over a SQLite file on fixed ports, so that it can be killed
    and started again as the same server at the same address."""

    def __init__(self, db_file: Path, log_file: Path) -> None:
        self.port = free_port()
        self.log_file = log_file
        self.command = [
            *temporal_dev_server_command(db_file=db_file, port=self.port, ui_port=free_port()),
            "--headless",
            # Random by default: fixed, so that a restart binds what the first start bound.
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_file.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_port("127.0.0.1", self.port, timeout=60, process=self.process)

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class WorkerProcess:
    """`python worker.py` with the given environment, its output in a log file."""

    def __init__(self, env: dict[str, str], log_file: Path) -> None:
        self.log_file = log_file
        with log_file.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "worker.py"],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


class CrashablePostgres:
    """An embedded PostgreSQL that can die: kill -9 of its postmaster, and a start over the
    same data directory (crash recovery included), at the same socket."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.server = EmbeddedPostgres(pgdata)

    def url(self, database: str) -> str:
        return self.server.url(database)

    def kill(self) -> None:
        """SIGKILL to the postmaster; returns once it and its backends are gone."""
        postmaster = psutil.Process(self.server.pid)
        family = [postmaster, *postmaster.children()]
        postmaster.kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in family):
            time.sleep(0.05)
        # The postmaster is a child of init: until init reaps it, it is a zombie that both
        # pgserver (psutil's is_running) and postgres (kill(pid, 0)) take for a live server
        # owning postmaster.pid. Wait for the reaping; without a reaper, drop the stale file.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and psutil.pid_exists(postmaster.pid):
            time.sleep(0.05)
        if psutil.pid_exists(postmaster.pid):
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)

    def restart(self) -> None:
        """Starts PostgreSQL again over the same data directory (crash recovery included)."""
        from pgserver.postgres_server import PostgresServer

        socket_dir = self.server.socket_dir
        # pgserver keeps one handle per data directory, holding the dead postmaster's info:
        # get_server would hand that back and start nothing. Forget it to get a fresh start.
        PostgresServer._instances.pop(self.server.server.pgdata, None)
        self.server = EmbeddedPostgres(self.pgdata)
        # The URL the worker holds must still reach the server.
        assert self.server.socket_dir == socket_dir

    def stop(self) -> None:
        self.server.stop()


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
