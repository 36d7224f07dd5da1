"""`make run`'s stack: refuses a second instance, and Ctrl-C leaves nothing behind."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.settings import PROJECT_ROOT, Settings
from devstack.embedded import free_port, port_is_free
from devstack.stack import StackError, check_ports, lock_data_dir


def test_second_instance_is_refused_by_the_data_lock(tmp_path: Path) -> None:
    held = lock_data_dir(tmp_path)
    try:
        with pytest.raises(StackError, match="in use by pid"):
            lock_data_dir(tmp_path)
    finally:
        held.close()
    lock_data_dir(tmp_path).close()


def test_taken_port_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(api_port=port, _env_file=None)  # type: ignore[call-arg]
        with pytest.raises(StackError, match=f"API_PORT={port}"):
            check_ports(settings)


@pytest.mark.slow
def test_run_serves_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    names = ("API", "TEMPORAL", "TEMPORAL_UI", "SIMULATOR", "WORKER_METRICS", "WORKER_SDK_METRICS")
    ports = {name: free_port() for name in names}
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        **{f"{name}_PORT": str(port) for name, port in ports.items()},
    }
    for name in ("DATABASE_URL", "TEMPORAL_ADDRESS", "SEND_API_URL"):
        env.pop(name, None)
    stack = subprocess.Popen(
        [sys.executable, "-m", "devstack"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 120
        assert stack.stdout is not None
        while time.monotonic() < deadline:
            line = stack.stdout.readline()
            output.append(line)
            if "Mailing service is up" in line or stack.poll() is not None:
                break
        assert any("Mailing service is up" in line for line in output), "".join(output)
        health = httpx.get(f"http://127.0.0.1:{ports['API']}/healthz", timeout=10)
        assert health.json() == {"status": "ok", "database": "ok", "temporal": "ok"}

        # A second instance on the same data directory is refused, saying why.
        second = subprocess.run(
            [sys.executable, "-m", "devstack"],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "in use" in second.stderr
    finally:
        stack.send_signal(signal.SIGINT)
        rest, _ = stack.communicate(timeout=60)
    assert stack.returncode == 0, "".join(output) + rest
    for name, port in ports.items():
        assert port_is_free("127.0.0.1", port), f"{name}_PORT {port} still taken"
    assert not (tmp_path / "data" / "pg" / "postmaster.pid").exists()
