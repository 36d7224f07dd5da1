"""Test sends on the real stack (the API, PostgreSQL, the Temporal dev server, a worker, the
simulator over HTTP): a dispatch scheduled for tomorrow sends its text, rendered per number,
now; the test messages end sent in their own table, counted nowhere in the dispatch; a refusal,
an outage ridden out, a deadline that ends them failed; and the requests refused."""

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.db import Database
from core.models import Dispatch, test_message_t
from core.settings import Settings
from simulator.app import SimulatorConfig
from tests.api.test_admin import csrf_of, signed_in
from tests.conftest import RunningSimulator
from tests.factories import make_client, make_dispatch, make_messages
from tests.support import Queues, api_client, running_workers, settings_for

pytestmark = pytest.mark.slow

TEXT = 'Привет, {{ name | default("друг") }}!'
ANNA = "79161234567"
STRANGER = "79037654321"


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, settings: Settings, queues: Queues, db: Database
) -> AsyncIterator[httpx.AsyncClient]:
    s = settings_for(settings, dev_env.client, queues)
    app = create_app(s)
    async with running_workers(s, dev_env.client, db), app.router.lifespan_context(app):
        async with api_client(app) as api:
            yield api


async def tomorrows_dispatch(api: httpx.AsyncClient, text: str = TEXT) -> int:
    start = datetime.now(UTC) + timedelta(days=1)
    answer = await api.post(
        "/api/v1/dispatches",
        json={
            "start_at": start.isoformat(),
            "end_at": (start + timedelta(hours=12)).isoformat(),
            "text": text,
            "filter": {"all": True},
        },
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


async def stored_tests(api: httpx.AsyncClient, dispatch_id: int) -> list[dict[str, Any]]:
    answer = await api.get(f"/api/v1/dispatches/{dispatch_id}/tests")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


async def until(
    api: httpx.AsyncClient,
    dispatch_id: int,
    done: Callable[[list[dict[str, Any]]], bool],
    seconds: float = 30,
) -> list[dict[str, Any]]:
    async with asyncio.timeout(seconds):
        while True:
            found = await stored_tests(api, dispatch_id)
            if done(found):
                return found
            await asyncio.sleep(0.1)


def all_final(found: list[dict[str, Any]]) -> bool:
    return bool(found) and all(t["status"] != "pending" for t in found)


async def test_a_test_send_goes_now_rendered_and_counts_nowhere(
    stack: httpx.AsyncClient,
    dev_env: WorkflowEnvironment,
    db: Database,
    simulator: RunningSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    api = stack
    anna = await make_client(db, phone=ANNA, attributes={"name": "Анна"})
    dispatch_id = await tomorrows_dispatch(api)
    async with db.sessions() as session:
        dispatch = await session.get(Dispatch, dispatch_id)
    assert dispatch is not None
    # Anna's real message of the dispatch, as its layout will write it tomorrow.
    [real] = await make_messages(db, dispatch, [anna], cohort="all")

    answer = await api.post(
        f"/api/v1/dispatches/{dispatch_id}/test", json={"phones": [ANNA, "+7 (903) 765-43-21"]}
    )
    assert answer.status_code == 202, answer.text
    entries = answer.json()["messages"]
    assert [
        (e["phone"], e["client_id"], e["text"], e["segments"], e["status"]) for e in entries
    ] == [
        (ANNA, anna.id, "Привет, Анна!", 1, "pending"),
        (STRANGER, None, "Привет, друг!", 1, "pending"),
    ]
    assert all(e["id"] and e["reason"] is None for e in entries)

    # Sent now, though the dispatch starts tomorrow.
    found = await until(api, dispatch_id, all_final)
    assert [t["id"] for t in found] == sorted((e["id"] for e in entries), reverse=True)
    for test in found:
        assert (test["status"], test["route"], test["segments"], test["attempts"]) == (
            "sent",
            "default",
            1,
            1,
        ), test
        assert test["sent_at"] and test["last_error"] is None and test["actor"] == "tester"
    for entry in entries:
        received = simulator.state.message(entry["id"])
        assert received is not None
        assert (str(received["phone"]), received["text"]) == (entry["phone"], entry["text"])
    assert simulator.state.stats()["duplicates"] == 0

    # Nothing of them in the dispatch: its one real message stays pending, alone in its counts.
    stats = (await api.get(f"/api/v1/dispatches/{dispatch_id}/stats")).json()
    assert stats["status"] == "scheduled"
    assert (stats["messages"]["total"], stats["messages"]["pending"]) == (1, 1)
    assert stats["messages"]["sent"] == 0 and stats["routes"] == []
    messages = (await api.get(f"/api/v1/dispatches/{dispatch_id}/messages")).json()["items"]
    assert [(m["id"], m["status"], m["attempts"]) for m in messages] == [(real.id, "pending", 0)]
    assert simulator.state.message(real.id or 0) is None

    handle = dev_env.client.get_workflow_handle(f"test-send-{entries[0]['id']}")
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    # Its log lines name the message, the dispatch and the client.
    assert any(
        getattr(r, "message_id", None) == entries[0]["id"]
        and getattr(r, "dispatch_id", None) == dispatch_id
        and getattr(r, "client_id", None) == anna.id
        for r in caplog.records
    )


async def test_numbers_not_sent_are_answered_and_not_stored(
    stack: httpx.AsyncClient, db: Database, simulator: RunningSimulator
) -> None:
    api = stack
    await make_client(db, phone=ANNA, attributes={"name": "Анна"})
    nameless = await make_client(db, phone="79261234567")
    stopped = await make_client(
        db, phone="79031234567", attributes={"name": "Ivan"}, opted_out=True
    )
    dispatch_id = await tomorrows_dispatch(api, "Hi {{ name }}")
    answer = await api.post(
        f"/api/v1/dispatches/{dispatch_id}/test",
        json={"phones": [ANNA, nameless.phone, STRANGER, stopped.phone, "8 916 123-45-67"]},
    )
    assert answer.status_code == 202, answer.text
    entries = answer.json()["messages"]
    # The same number given twice is sent to once.
    assert [(e["phone"], e["status"], e["text"]) for e in entries] == [
        (ANNA, "pending", "Hi Анна"),
        (nameless.phone, "unrendered", None),
        (STRANGER, "unrendered", None),
        (stopped.phone, "opted_out", None),
    ]
    assert [e["id"] is None for e in entries] == [False, True, True, True]
    assert "`name`" in entries[1]["reason"] and "`name`" in entries[2]["reason"]
    assert "stop list" in entries[3]["reason"]
    found = await until(api, dispatch_id, all_final)
    assert [(t["phone"], t["status"]) for t in found] == [(ANNA, "sent")]
    assert simulator.state.stats()["unique_accepted"] == 1


async def test_requests_refused(stack: httpx.AsyncClient, db: Database) -> None:
    api = stack
    dispatch_id = await tomorrows_dispatch(api)
    url = f"/api/v1/dispatches/{dispatch_id}/test"

    eleven = [f"7916000{n:04d}" for n in range(11)]
    answer = await api.post(url, json={"phones": eleven})
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "phones"
    answer = await api.post(url, json={"phones": [ANNA, "12345"]})
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == ["phones.1"]
    answer = await api.post(url, json={"phones": []})
    assert answer.status_code == 422
    answer = await api.post(url, json={"phones": [ANNA], "phone": ANNA})
    assert answer.status_code == 422
    assert {"field": "phone", "message": "unknown field"} in answer.json()["errors"]
    answer = await api.post("/api/v1/dispatches/999999/test", json={"phones": [ANNA]})
    assert answer.status_code == 404

    async with db.sessions() as session:
        await session.execute(
            sa.update(Dispatch).where(Dispatch.id == dispatch_id).values(status="cancelled")
        )
        await session.commit()
    answer = await api.post(url, json={"phones": [ANNA]})
    assert answer.status_code == 409, answer.text
    assert "cancelled" in answer.json()["detail"]
    assert await stored_tests(api, dispatch_id) == []


async def test_a_test_send_rides_out_an_outage(
    stack: httpx.AsyncClient, db: Database, simulator: RunningSimulator
) -> None:
    api = stack
    dispatch_id = await tomorrows_dispatch(api)
    simulator.state.set_config(SimulatorConfig(outage=True))
    answer = await api.post(f"/api/v1/dispatches/{dispatch_id}/test", json={"phones": [ANNA]})
    assert answer.status_code == 202, answer.text
    # Failed twice, it waits for its next attempt; the remote comes back meanwhile.
    failing = await until(api, dispatch_id, lambda found: found[0]["attempts"] >= 2)
    assert failing[0]["status"] == "pending" and "503" in (failing[0]["last_error"] or "")
    simulator.state.set_config(SimulatorConfig())
    [test] = await until(api, dispatch_id, all_final, seconds=60)
    assert (test["status"], test["route"], test["last_error"]) == ("sent", "default", None)
    assert test["attempts"] >= 3
    assert simulator.state.message(test["id"])["text"] == "Привет, друг!"  # type: ignore[index]


async def test_a_refusal_ends_it_failed_at_once(
    stack: httpx.AsyncClient, db: Database, simulator: RunningSimulator
) -> None:
    api = stack
    dispatch_id = await tomorrows_dispatch(api)
    simulator.state.set_config(SimulatorConfig(reject_rate=1.0))
    answer = await api.post(f"/api/v1/dispatches/{dispatch_id}/test", json={"phones": [ANNA]})
    assert answer.status_code == 202, answer.text
    [test] = await until(api, dispatch_id, all_final)
    assert (test["status"], test["attempts"], test["sent_at"]) == ("failed", 1, None)
    assert "400" in test["last_error"]


async def test_one_that_never_goes_ends_failed_at_its_deadline(
    stack: httpx.AsyncClient,
    db: Database,
    simulator: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("api.services.test_sends.TEST_SEND_DEADLINE", timedelta(seconds=3))
    api = stack
    dispatch_id = await tomorrows_dispatch(api)
    simulator.state.set_config(SimulatorConfig(outage=True))
    answer = await api.post(f"/api/v1/dispatches/{dispatch_id}/test", json={"phones": [ANNA]})
    assert answer.status_code == 202, answer.text
    [test] = await until(api, dispatch_id, all_final)
    assert test["status"] == "failed" and test["sent_at"] is None
    assert test["last_error"].startswith("not sent within 3 seconds: ")
    assert test["attempts"] >= 1


async def test_the_admin_box_needs_this_sessions_csrf_and_the_write_permission(
    api_app: FastAPI, db: Database
) -> None:
    dispatch = await make_dispatch(db, start_at=datetime.now(UTC) + timedelta(days=1))
    url = f"/admin/dispatches/{dispatch.id}/test"
    async with signed_in(api_app) as browser:
        page = await browser.get(f"/admin/dispatches/{dispatch.id}")
        assert 'id="test-form"' in page.text
        csrf = csrf_of(page.text)
        assert (await browser.post(url, data={"phones": ANNA})).status_code == 403
        refused = await browser.post(url, data={"csrf": csrf, "phones": f"{ANNA}\n12345"})
        assert refused.status_code == 422 and 'id="test-errors"' in refused.text
        assert "Numbers</a>: 12345 is not" in refused.text
    async with signed_in(api_app, "dispatches:read") as reader:
        page = await reader.get(f"/admin/dispatches/{dispatch.id}")
        assert page.status_code == 200 and 'id="test-form"' not in page.text
        answer = await reader.post(url, data={"csrf": csrf_of(page.text), "phones": ANNA})
        assert answer.status_code == 403 and "dispatches:write" in answer.text
    async with db.sessions() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(test_message_t)) == 0
