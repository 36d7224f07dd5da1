"""Prometheus metrics of the API and of a real worker process, scraped over HTTP after a
dispatch whose first send fails once and then succeeds: the counters moved by exactly that,
and `promtool check metrics` accepts every endpoint."""

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.db import Database
from core.settings import Settings
from devstack.embedded import free_port
from devstack.processes import WorkerProcess, service_env
from simulator.app import SimulatorConfig
from tests.conftest import RunningSimulator
from tests.e2e.test_control import until
from tests.factories import make_client
from tests.support import Queues, api_client, settings_for

pytestmark = pytest.mark.slow


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=5) as http:
        async with asyncio.timeout(60):
            while True:
                try:
                    response = await http.get(url)
                    if response.status_code == 200:
                        return response.text
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)


async def promtool_accepts(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "make test installs Debian's prometheus (python -m devstack.system)"
    process = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate(text.encode())
    assert process.returncode == 0, out.decode()


async def test_counters_move_by_exactly_one_failed_and_three_sent(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
    tmp_path: Path,
) -> None:
    port, sdk_port = free_port(), free_port()
    s = settings_for(
        settings, dev_env.client, queues, worker_metrics_port=port, worker_sdk_metrics_port=sdk_port
    )
    for _ in range(3):
        await make_client(db)
    simulator.state.set_config(SimulatorConfig(fail_first=1))
    worker = WorkerProcess(service_env(s), tmp_path / "worker.log")
    try:
        app = create_app(s)
        async with app.router.lifespan_context(app), api_client(app) as api:
            worker_url = f"http://127.0.0.1:{port}/metrics"
            before = await scrape(worker_url)
            api_before = (await api.get("/metrics")).text
            now = datetime.now(UTC)
            created = await api.post(
                "/api/v1/dispatches",
                json={
                    "start_at": now.isoformat(),
                    "end_at": (now + timedelta(hours=1)).isoformat(),
                    "text": "Metrics",
                    "filter": {"all": True},
                },
            )
            assert created.status_code == 201, created.text
            done = await until(api, created.json()["id"], "completed", seconds=60)
            assert done["messages"]["sent"] == 3
            after = await scrape(worker_url)
            api_after = (await api.get("/metrics")).text
            sdk = await scrape(f"http://127.0.0.1:{sdk_port}/metrics")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as probe:
                live, ready = await probe.get("/livez"), await probe.get("/readyz")
    finally:
        worker.stop()
    # The worker's probes, on its metrics port.
    assert live.status_code == 200
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "database": "ok", "temporal": "ok", "worker": "ok"}

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("mailing_send_attempts_total", outcome="sent") == 3
    assert moved("mailing_send_attempts_total", outcome="retried", error_class="server") == 1
    assert moved("mailing_send_attempts_total", outcome="retried") == 1
    assert moved("mailing_messages_finished_total", status="sent") == 3
    assert moved("mailing_remote_request_duration_seconds_count", answer="accepted") == 3
    assert moved("mailing_remote_request_duration_seconds_count", answer="server") == 1
    assert moved("mailing_batch_messages_count") >= 1
    assert moved("mailing_batch_messages_sum") == 3  # one cohort's batch took all three
    assert stats_of(api_before, api_after) == 1
    assert value(api_after, "mailing_messages", status="sent") == 3
    assert value(api_after, "mailing_dispatches", status="completed") == 1
    # The SDK's own worker metrics, from its exporter.
    assert "temporal_worker_task_slots_available" in sdk
    assert "temporal_workflow_task_schedule_to_start_latency" in sdk
    for text in (after, api_after, sdk):
        await promtool_accepts(text)
    # Bounded labels: the route template, never an id.
    assert 'route="/api/v1/dispatches/{dispatch_id}"' in api_after
    assert "/dispatches/1" not in api_after


def stats_of(before: str, after: str) -> float:
    """Creates answered 201 on the route template, counted once."""
    labels = {"method": "POST", "route": "/api/v1/dispatches", "status": "201"}
    return value(after, "mailing_http_requests_total", **labels) - value(
        before, "mailing_http_requests_total", **labels
    )
