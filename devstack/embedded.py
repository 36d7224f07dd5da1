"""The embedded stack: PostgreSQL from `pgserver` and Temporal's CLI dev server from PyPI.

Used by `make run` (devstack.stack), the tests and the bench; no Docker, no system install.
"""

import json
import logging
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from core.search import dev_server_flags
from core.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

DYNAMIC_CONFIG = PROJECT_ROOT / "temporal-config" / "development-sql.yaml"


def bin_path(name: str) -> str:
    """A console script of this virtualenv (temporal, temporal-test-server), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install the project (make install)")
    return found


class EmbeddedPostgres:
    """A PostgreSQL server living in `pgdata`, listening on a unix socket there."""

    def __init__(self, pgdata: Path, *, stop_on_exit: bool = True) -> None:
        from pgserver.postgres_server import get_server

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.pgdata = pgdata
        self.server: Any = get_server(pgdata, cleanup_mode="stop" if stop_on_exit else None)

    @property
    def socket_dir(self) -> Path:
        return Path(self.server.get_postmaster_info().socket_dir)

    @property
    def pid(self) -> int:
        return int(self.server.get_pid())

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    def ensure_database(self, name: str) -> None:
        exists = self.server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")
        if "(1 row)" not in exists:
            self.server.psql(f'CREATE DATABASE "{name}";')

    def stop(self) -> None:
        self.server.cleanup()


def dynamic_config_flags(path: Path = DYNAMIC_CONFIG) -> list[str]:
    """The server's dynamic config file as `--dynamic-config-value` flags for the dev server.

    The dev server's flag takes one global value per key, so a value with constraints (a task
    queue, a namespace) applies to everything there. On the single-node dev server that is safe
    for every key the file holds (one task-queue partition everywhere costs nothing on one node);
    where a key has several values, the first one wins.
    """
    if not path.exists():
        return []
    entries = yaml.safe_load(path.read_text()) or {}
    flags: list[str] = []
    for key, values in entries.items():
        if values:
            flags += ["--dynamic-config-value", f"{key}={json.dumps(values[0]['value'])}"]
    return flags


# Every history event of the dev server goes through one SQLite database: write-ahead logging
# and normal sync more than double its throughput. A crash of the machine (not of the process)
# may lose the last transactions; the embedded stack is a one-machine default, not a cluster.
SQLITE_PRAGMAS = ["journal_mode=wal", "synchronous=normal"]


def sqlite_pragma_flags() -> list[str]:
    return [flag for pragma in SQLITE_PRAGMAS for flag in ("--sqlite-pragma", pragma)]


def temporal_dev_server_command(
    *,
    db_file: Path | None,
    port: int,
    ui_port: int,
    namespace: str = "default",
    ip: str = "127.0.0.1",
) -> list[str]:
    command = [
        bin_path("temporal"),
        "server",
        "start-dev",
        "--ip",
        ip,
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--namespace",
        namespace,
        "--log-level",
        "warn",
        *dynamic_config_flags(),
        *dev_server_flags(),
    ]
    if db_file is not None:
        command += ["--db-filename", str(db_file), *sqlite_pragma_flags()]
    return command


def api_server_command(*, host: str, port: int) -> list[str]:
    """The API under uvicorn, configured from the environment."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "api.main:create_configured_app",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(
    host: str, port: int, *, timeout: float, process: subprocess.Popen[Any] | None = None
) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
