"""The whole path on the dev server: REST API -> PostgreSQL -> dispatch workflow -> one delivery
per client -> send activity -> simulator over HTTP -> statuses -> statistics."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.contracts.shared import cohort_workflow_id, delivery_workflow_id, dispatch_workflow_id
from core.db import Database
from core.settings import Settings
from tests.conftest import TOKEN, RunningSimulator
from tests.support import Queues, api_client, running_workers, settings_for

pytestmark = pytest.mark.slow


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, settings: Settings, queues: Queues, db: Database
) -> AsyncIterator[httpx.AsyncClient]:
    s = settings_for(settings, dev_env.client, queues)
    app = create_app(s)
    async with running_workers(s, dev_env.client, db), app.router.lifespan_context(app):
        async with api_client(app) as api:
            yield api


@pytest.mark.parametrize("shape", ["cohorts", "per_client"])
async def test_dispatch_reaches_every_client(
    stack: httpx.AsyncClient,
    dev_env: WorkflowEnvironment,
    simulator: RunningSimulator,
    shape: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    api = stack
    phones = ["79161234567", "79031234567", "79261234567"]
    client_ids = []
    for phone in phones:
        response = await api.post("/api/v1/clients", json={"phone": phone, "tag": "demo"})
        assert response.status_code == 201, response.text
        client_ids.append(response.json()["id"])
    now = datetime.now(UTC)
    response = await api.post(
        "/api/v1/dispatches",
        json={
            "start_at": now.isoformat(),
            "end_at": (now + timedelta(hours=1)).isoformat(),
            "text": "Hello from the end-to-end test",
            "filter": {"tags": ["demo"]},
            "delivery": shape,
        },
    )
    assert response.status_code == 201, response.text
    dispatch_id = response.json()["id"]

    async with asyncio.timeout(60):
        while True:
            stats = (await api.get(f"/api/v1/dispatches/{dispatch_id}")).json()
            if stats["status"] == "completed":
                break
            await asyncio.sleep(0.2)
    assert stats["messages"]["sent"] == 3
    assert stats["messages"]["total"] == 3

    overall = (await api.get("/api/v1/stats")).json()
    assert overall["totals"]["sent"] >= 3

    received = simulator.state.stats()
    assert received["unique_accepted"] == 3
    assert received["duplicates"] == 0
    for phone in phones:
        assert any(
            record and record["phone"] == int(phone) and record["text"].startswith("Hello")
            for record in (
                simulator.state.message(m["id"])
                for m in (await api.get(f"/api/v1/dispatches/{dispatch_id}/messages")).json()[
                    "items"
                ]
            )
        )

    temporal = dev_env.client
    parent = await temporal.get_workflow_handle(dispatch_workflow_id(dispatch_id)).describe()
    assert parent.status == WorkflowExecutionStatus.COMPLETED
    children = [delivery_workflow_id(dispatch_id, client_id) for client_id in client_ids]
    cohort = cohort_workflow_id(dispatch_id, "all")
    if shape == "cohorts":
        # One cohort sent all three; no client needed a workflow of its own.
        assert (await temporal.get_workflow_handle(cohort).describe()).status == (
            WorkflowExecutionStatus.COMPLETED
        )
        for child in children:
            with pytest.raises(RPCError):
                await temporal.get_workflow_handle(child).describe()
    else:
        for child in children:
            status = (await temporal.get_workflow_handle(child).describe()).status
            assert status == WorkflowExecutionStatus.COMPLETED
        with pytest.raises(RPCError):
            await temporal.get_workflow_handle(cohort).describe()

    # No secret in the workflow histories, nor in any log line of the run.
    secrets = [TOKEN, api.headers["Authorization"].removeprefix("Bearer ")]
    workflow_ids = [dispatch_workflow_id(dispatch_id)]
    workflow_ids += [cohort] if shape == "cohorts" else children
    for workflow_id in workflow_ids:
        history = (await temporal.get_workflow_handle(workflow_id).fetch_history()).to_json()
        assert not any(secret in history for secret in secrets), workflow_id
    assert not any(secret in caplog.text for secret in secrets)
