"""A real Prometheus (Debian's package) scrapes a running stack every second with
deploy/prometheus/rules.yml: the API over HTTP, a real `worker.py` process's two metrics
endpoints, and a second worker target where nothing listens. After two small dispatches through
the simulator and one daily report, the recording rules hold values computed from what was
scraped (messages by status, the send rate, the SDK's schedule-to-start latency, the report's
time, messages past their dispatch's end), every rule evaluates without error, the dashboard's
queries all run, `MailingWorkerDown` fires for the missing target only and
`MailingMessagesPastEnd` is pending for a dispatch whose end passed.

The one change in the test's copy of the rules: `MailingWorkerDown` fires at once (`for: 0s`
instead of 2 minutes)."""

import asyncio
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.db import Database
from core.settings import PROJECT_ROOT, Settings
from devstack.embedded import free_port
from devstack.processes import WorkerProcess, service_env, stop_process
from report.contracts import REPORT_WORKFLOW, ReportInput, ReportResult
from tests.conftest import RunningSimulator
from tests.e2e.test_control import until
from tests.factories import make_client, make_dispatch, make_messages
from tests.support import Queues, auth_headers, serving, settings_for

pytestmark = pytest.mark.slow

RULES = PROJECT_ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = PROJECT_ROOT / "docs" / "grafana-dashboard.json"


def rules_of_the_test(directory: Path) -> Path:
    """rules.yml with MailingWorkerDown firing at its first evaluation."""
    rules = yaml.safe_load(RULES.read_text())
    changed = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "MailingWorkerDown":
                rule["for"] = "0s"
                changed += 1
    assert changed == 1
    copy = directory / "rules.yml"
    copy.write_text(yaml.safe_dump(rules, sort_keys=False))
    return copy


def prometheus_config(directory: Path, *, api: int, worker: int, sdk: int, gone: int) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_of_the_test(directory))],
        "scrape_configs": [
            {"job_name": "mailing-api", "static_configs": [{"targets": [f"127.0.0.1:{api}"]}]},
            {
                "job_name": "mailing-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{worker}", f"127.0.0.1:{gone}"]}],
            },
            {
                "job_name": "mailing-worker-sdk",
                "static_configs": [{"targets": [f"127.0.0.1:{sdk}"]}],
            },
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    assert binary, (
        "the test needs Debian's prometheus: python -m devstack.system prometheus "
        "(make test runs it), or sudo apt-get install -y prometheus"
    )
    return binary


class Prometheus:
    """`prometheus` on a free port with a config and a data directory of the test's own."""

    def __init__(self, binary: str, config: Path, directory: Path) -> None:
        self.port = free_port()
        self.log_file = directory / "prometheus.log"
        with self.log_file.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=5)

    async def ready(self) -> None:
        async with asyncio.timeout(20):
            while True:
                assert self.process.poll() is None, self.log_file.read_text()
                try:
                    if (await self.http.get("/-/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)

    async def api(self, path: str, **params: str) -> Any:
        answer = await self.http.get(f"/api/v1/{path}", params=params)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", (params, body)
        return body["data"]

    async def query(self, expr: str) -> dict[str, float]:
        """The instant vector of `expr`, as {labels as JSON: value}."""
        data = await self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return {
            json.dumps(sample["metric"], sort_keys=True): float(sample["value"][1])
            for sample in data["result"]
        }

    async def until(self, expr: str, seconds: float = 30) -> float:
        """The value of the one series `expr` (a filter such as `x > 0`) answers, once it
        answers one."""
        async with asyncio.timeout(seconds):
            while not (found := await self.query(expr)):
                await asyncio.sleep(0.25)
        [value] = found.values()
        return value

    async def close(self) -> None:
        await self.http.aclose()
        await asyncio.to_thread(stop_process, self.process)


async def dispatch_to_everyone(api: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    created = await api.post(
        "/api/v1/dispatches",
        json={
            "start_at": now.isoformat(),
            "end_at": (now + timedelta(hours=1)).isoformat(),
            "text": "Alerts",
            "filter": {"all": True},
        },
    )
    assert created.status_code == 201, created.text
    await until(api, created.json()["id"], "completed", seconds=30)


async def test_a_real_prometheus_records_and_alerts_on_the_running_stack(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
    tmp_path: Path,
    prometheus_binary: str,
) -> None:
    worker_port, sdk_port, gone_port = free_port(), free_port(), free_port()
    s = settings_for(
        settings,
        dev_env.client,
        queues,
        worker_metrics_port=worker_port,
        worker_sdk_metrics_port=sdk_port,
        report_recipients=[],
    )
    clients = [await make_client(db) for _ in range(3)]
    worker = WorkerProcess(service_env(s), tmp_path / "worker.log")
    prometheus: Prometheus | None = None
    app = create_app(s)
    try:
        async with (
            serving(app) as api_port,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{api_port}", headers=auth_headers(s), timeout=10
            ) as api,
        ):
            config = prometheus_config(
                tmp_path, api=api_port, worker=worker_port, sdk=sdk_port, gone=gone_port
            )
            prometheus = Prometheus(prometheus_binary, config, tmp_path)
            await prometheus.ready()
            live = f"127.0.0.1:{worker_port}"
            await prometheus.until(f'up{{job="mailing-worker", instance="{live}"}} == 1')

            # A first dispatch makes the worker's `sent` series; once scraped, a second one
            # moves it, so that a rate is computed from what the worker counted.
            await dispatch_to_everyone(api)
            await prometheus.until('mailing_send_attempts_total{outcome="sent"} == 3')
            await dispatch_to_everyone(api)
            await prometheus.until('status:mailing_messages:max{status="sent"} == 6')
            await prometheus.until('route:mailing_send_attempts_sent:rate5m{route="default"} > 0')
            past_end = await prometheus.query("dispatch_status:mailing_messages_past_end:sum")
            assert past_end and set(past_end.values()) == {0}
            # The SDK's histograms, under the names the rules use (seconds, no `_seconds`).
            for kind in ("workflow_task", "activity"):
                waited = await prometheus.until(
                    f"task_queue:temporal_{kind}_schedule_to_start_latency:p99_rate5m"
                    f'{{task_queue="{queues.main}"}} >= 0'
                )
                assert waited < 10

            # The daily report, run now by the worker (no recipients: logged, and counted).
            await dev_env.client.execute_workflow(
                REPORT_WORKFLOW,
                ReportInput(timezone="UTC"),
                id=f"report-{queues.main}",
                task_queue=s.temporal_task_queue,
                result_type=ReportResult,
            )
            reported = await prometheus.until(
                ":mailing_report_last_sent_timestamp_seconds:max26h > 0"
            )
            assert abs(reported - datetime.now(UTC).timestamp()) < 60

            # A dispatch that never started and whose end passed, its three messages pending:
            # read from PostgreSQL by the API, recorded, and its alert pending (for 15 minutes).
            late = await make_dispatch(
                db, start_at=datetime.now(UTC) - timedelta(hours=2), end_at=datetime.now(UTC)
            )
            await make_messages(db, late, clients, cohort="all")
            await prometheus.until(
                'dispatch_status:mailing_messages_past_end:sum{dispatch_status="scheduled"} == 3'
            )

            # The worker gone: firing for the target where nothing listens, and that one only.
            async with asyncio.timeout(20):
                while True:
                    alerts = (await prometheus.api("alerts"))["alerts"]
                    down = [a for a in alerts if a["labels"]["alertname"] == "MailingWorkerDown"]
                    past = [
                        a for a in alerts if a["labels"]["alertname"] == "MailingMessagesPastEnd"
                    ]
                    if any(a["state"] == "firing" for a in down) and past:
                        break
                    await asyncio.sleep(0.25)
            assert [a["labels"]["instance"] for a in down] == [f"127.0.0.1:{gone_port}"]
            [firing] = down
            assert firing["labels"]["severity"] == "warning"
            assert f"127.0.0.1:{gone_port}" in firing["annotations"]["summary"]
            assert firing["annotations"]["runbook_url"].startswith("docs/operations.md#")
            assert not [a for a in alerts if a["labels"]["alertname"] == "MailingNoWorker"]
            assert [(a["state"], a["labels"]["dispatch_status"]) for a in past] == [
                ("pending", "scheduled")
            ]

            # Every rule evaluated against the live series without an error.
            groups = (await prometheus.api("rules"))["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            assert len(rules) == sum(
                len(group["rules"]) for group in yaml.safe_load(RULES.read_text())["groups"]
            )
            assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []

            # The dashboard's queries parse and run on this Prometheus.
            dashboard = json.loads(DASHBOARD.read_text())
            for panel in dashboard["panels"]:
                for target in panel.get("targets", []):
                    await prometheus.api("query", query=target["expr"])
    finally:
        if prometheus is not None:
            await prometheus.close()
        worker.stop()
