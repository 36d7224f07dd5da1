"""The commands of README.md's quick start and of docs/operations.md's "Operating a dispatch",
run with bash as written, against a running stack: the API over HTTP, workers, the simulator,
PostgreSQL and the Temporal dev server of the tests.

The commands are read from the ```sh blocks under those headings, so that editing the docs
changes what is run. What differs from a user's terminal, and only that:

- the addresses: `127.0.0.1:8000` (the API) and `127.0.0.1:8090` (the simulator) become the
  test stack's ports; `.venv/bin/temporal` finds the test's Temporal server through
  `TEMPORAL_ADDRESS` in the environment;
- `make -s token` signs with the test API's key (`AUTH_SIGNING_KEY_FILE` in the environment);
  if make would reinstall the venv first (pyproject.toml newer than its stamp), the test runs
  what `make token` runs, `.venv/bin/python -m devstack.token`, instead;
- bash runs with `set -euo pipefail`, so a failing command fails the test, and `curl` is a
  function adding `-w` that reports each answer's status to stderr, so that every request must
  answer 2xx (a 401 of a command without its token fails the test).
"""

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.db import Database
from core.settings import Settings
from tests.conftest import RunningSimulator
from tests.support import Queues, auth_headers, running_workers, serving, settings_for, target_of

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
API = "127.0.0.1:8000"
SIMULATOR = "127.0.0.1:8090"
MAKE_TOKEN = "make -s token"
ANSWER = re.compile(r"^@@answer (\d{3}) (\S+) (\S+)$", re.M)
# curl's -w goes to stderr: a body piped into another command stays as the user sees it.
PREAMBLE = """set -euo pipefail
curl() { command curl -w '%{stderr}@@answer %{http_code} %{method} %{url_effective}\\n' "$@"; }
"""


def sh_blocks(document: Path, heading: str) -> str:
    """The ```sh blocks under `## heading` (its subsections included), in order, as one script."""
    text = document.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"{document.name} has no '## {heading}' section"
    blocks = re.findall(r"^```sh\n(.*?)^```\s*$", match.group(1), re.M | re.S)
    assert blocks, f"no ```sh block under '## {heading}' in {document.name}"
    return "".join(blocks)


@dataclass
class Stack:
    settings: Settings
    api_port: int
    simulator_port: int
    temporal_address: str

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.api_port}/api/v1",
            headers=auth_headers(self.settings),
        )


@dataclass
class Run:
    script: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def answers(self) -> list[tuple[int, str, str]]:
        """Every curl request: (status, method, URL)."""
        return [(int(c), m, u) for c, m, u in ANSWER.findall(self.stderr)]

    def explain(self) -> str:
        return f"script:\n{self.script}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> AsyncIterator[Stack]:
    """The API served over HTTP (bash's curl calls it), with workers, in this process."""
    s = settings_for(settings, dev_env.client, queues)
    app = create_app(s)
    async with running_workers(s, dev_env.client, db), app.router.lifespan_context(app):
        async with serving(app, lifespan="off") as port:
            yield Stack(s, port, simulator.port, target_of(dev_env.client))


def make_reinstalls() -> bool:
    """Whether `make token` would first reinstall the venv (its stamp older than pyproject)."""
    probe = subprocess.run(["make", "-q", ".venv/.installed"], cwd=ROOT, capture_output=True)
    return probe.returncode != 0


def for_the_stack(script: str, stack: Stack) -> str:
    """The script with the test stack's addresses, and nothing else changed (see above)."""
    assert API in script, f"the commands no longer name the API at {API}"
    script = script.replace(API, f"127.0.0.1:{stack.api_port}")
    script = script.replace(SIMULATOR, f"127.0.0.1:{stack.simulator_port}")
    if make_reinstalls():
        script = script.replace(MAKE_TOKEN, ".venv/bin/python -m devstack.token")
    return script


async def run(script: str, stack: Stack, seconds: float = 120) -> Run:
    script = for_the_stack(script, stack)
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AUTH_", "TEMPORAL_", "DATABASE_", "SEND_", "DATA_DIR"))
    }
    environment |= {
        "AUTH_SIGNING_KEY_FILE": str(stack.settings.auth_signing_key_file),
        "TEMPORAL_ADDRESS": stack.temporal_address,
        "TEMPORAL_NAMESPACE": stack.settings.temporal_namespace,
    }
    # Asynchronously: the API and the workers answering bash run on this event loop.
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        PREAMBLE + script,
        cwd=ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), seconds)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        pytest.fail(
            f"the commands did not finish in {seconds} s\n"
            + Run(script, -1, out.decode(), err.decode()).explain()
        )
    return Run(script, process.returncode or 0, out.decode(), err.decode())


def assert_every_request_answered_2xx(result: Run) -> None:
    assert result.returncode == 0, result.explain()
    refused = [a for a in result.answers if not 200 <= a[0] < 300]
    assert not refused, f"requests refused: {refused}\n{result.explain()}"


def requested(result: Run, method: str, path_pattern: str) -> list[int]:
    """The statuses of the requests of this method whose path matches (fully)."""
    return [
        status
        for status, m, url in result.answers
        if m == method and re.fullmatch(path_pattern, httpx.URL(url).path)
    ]


async def test_the_quick_start_sends_and_shows_it(
    stack: Stack, simulator: RunningSimulator
) -> None:
    result = await run(sh_blocks(ROOT / "README.md", "Quick start"), stack)
    assert_every_request_answered_2xx(result)
    assert requested(result, "POST", "/api/v1/clients") == [201, 201, 201]
    assert requested(result, "POST", "/api/v1/dispatches") == [201]

    async with stack.api() as api:
        dispatches = (await api.get("/dispatches")).json()["items"]
        assert len(dispatches) == 1
        dispatch = (await api.get(f"/dispatches/{dispatches[0]['id']}")).json()
    assert dispatch["status"] == "completed"
    assert dispatch["messages"]["sent"] == 3
    assert simulator.state.stats()["unique_accepted"] == 3
    # What the user reads: the dispatch, the simulator's counts, the metrics.
    assert '"status":"completed"' in result.stdout
    assert '"unique_accepted":3' in result.stdout.replace(" ", "")
    assert 'mailing_messages{status="sent"} 3.0' in result.stdout


async def wait_out_the_window(script: str) -> None:
    """The operating section's dispatch waits for a window closed nearly all day: run in that
    very minute, the test would find it sending, so it waits the minute out."""
    times = re.findall(r'\\"(?:start|end)\\": \\"(\d\d:\d\d)\\"', script)
    if len(times) != 2:
        return
    zone = ZoneInfo("Europe/Moscow")  # the zone of the quick start's numbers
    now = datetime.now(zone)
    start, end = (
        now.replace(hour=int(t[:2]), minute=int(t[3:]), second=0, microsecond=0) for t in times
    )
    if start - timedelta(minutes=2) <= now < end + timedelta(minutes=1):
        await asyncio.sleep((end + timedelta(minutes=1) - now).total_seconds())


async def test_operating_a_dispatch_works_as_written(
    stack: Stack, simulator: RunningSimulator
) -> None:
    quick_start = await run(sh_blocks(ROOT / "README.md", "Quick start"), stack)
    assert_every_request_answered_2xx(quick_start)
    script = sh_blocks(ROOT / "docs" / "operations.md", "Operating a dispatch")
    await wait_out_the_window(script)
    sent_before = simulator.state.stats()["accepted"]

    result = await run(script, stack)
    assert_every_request_answered_2xx(result)
    dispatch_path = r"/api/v1/dispatches/\d+"
    for command in ("pause", "resume", "cancel"):
        assert requested(result, "POST", f"{dispatch_path}/{command}") == [200], command
    assert requested(result, "PATCH", dispatch_path) == [200]
    assert requested(result, "GET", f"{dispatch_path}/events")

    async with stack.api() as api:
        dispatch_id = max(d["id"] for d in (await api.get("/dispatches")).json()["items"])
        dispatch = (await api.get(f"/dispatches/{dispatch_id}")).json()
        events = (await api.get(f"/dispatches/{dispatch_id}/events")).json()["items"]
    assert dispatch["status"] == "cancelled", dispatch
    assert dispatch["text"] == "Fixed"
    assert dispatch["messages"]["cancelled"] == 3, dispatch
    assert simulator.state.stats()["accepted"] == sent_before, "the waiting dispatch sent"

    # Each command acted once, in the order the section gives them: the API's, then Temporal's.
    signals = re.findall(r"temporal workflow signal .*?--name (\w+)", script)
    updates = re.findall(r"temporal workflow update execute .*?\"command\": \"(\w+)\"", script)
    past = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}
    actions = [(e["action"], e["actor"]) for e in events]
    assert actions[0][0] == "created"
    by_temporal = [a for a, actor in actions if actor == "temporal"]
    assert by_temporal == [past[s] for s in signals], actions
    assert [a for a, _ in actions].count("edited") == 1, actions
    assert [a for a, _ in actions][-1] == "cancelled", actions
    assert len([a for a, _ in actions if a == "paused"]) == 1 + signals.count("pause") + (
        updates.count("pause")
    ), actions
    # The queries answered, and the lists found the dispatch's workflows.
    assert result.stdout.count("phase") >= script.count("--name progress"), result.explain()
    assert f"dispatch-{dispatch_id}" in result.stdout, result.explain()
