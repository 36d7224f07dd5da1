"""The soak's short version: `python -m soak --short` with a fixed seed, about two minutes of two
faults of each kind (worker kill -9 and SIGTERM, Temporal and PostgreSQL restarts, gateway
outage, latency spike, garbage answers, 429s) on 5,000 clients while API users read and write.
It fails on any loss, any send outside a window or after the end, any duplicate beyond what was
in flight at a kill, any unexpected 5xx: on any failed check of the run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow

SEED = 20261201
# Start-up, two minutes of faults, the drain and the checks, with room for a slow machine.
TIMEOUT_S = 900


def test_the_short_soak_keeps_every_guarantee(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "soak",
            "--short",
            "--seed",
            str(SEED),
            "--results-dir",
            str(tmp_path),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    table = run.stdout
    [path] = tmp_path.glob("soak-*.json")
    result = json.loads(path.read_text())
    assert result["seed"] == SEED
    assert result["errors"] == [], f"{table}\n{run.stderr[-5000:]}"
    checks = {check["name"]: check for check in result["checks"]}
    failed = [name for name, check in checks.items() if not check["ok"]]
    assert not failed, (
        f"failed: {failed}\n{table}\n"
        + json.dumps({name: checks[name]["detail"] for name in failed}, indent=1)[:5000]
    )
    assert run.returncode == 0, table
    # Two of each of the eight kinds, each one carried out (none skipped, none failed).
    kinds = [fault["kind"] for fault in result["faults"]]
    assert len(kinds) == 16 and len(set(kinds)) == 8, table
    assert all(fault["outcome"] == "done" for fault in result["faults"]), table
    # The load did read and write: every route of the locustfile answered.
    assert len(result["api"]["by_route"]) >= 15, table
    assert "PASSED" in table
