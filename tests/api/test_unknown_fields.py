"""A body field the API does not know is a 422 naming it, and nothing is written: a
`time_zone` for `timezone` would otherwise leave the client in its number's zone."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from core.db import Database
from tests.factories import make_client, make_dispatch

LATER = datetime.now(UTC) + timedelta(days=1)
DISPATCH = {
    "start_at": LATER.isoformat(),
    "end_at": (LATER + timedelta(hours=12)).isoformat(),
    "text": "hello",
    "filter": {"tags": ["vip"]},
}


def refused(answer: httpx.Response, field: str) -> None:
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert {"field": field, "message": "unknown field"} in errors, errors


async def test_a_client_with_an_unknown_field_is_refused(api: httpx.AsyncClient) -> None:
    answer = await api.post(
        "/api/v1/clients", json={"phone": "79161234567", "time_zone": "Asia/Omsk"}
    )
    refused(answer, "time_zone")
    assert (await api.get("/api/v1/clients")).json()["total"] == 0


async def test_a_typo_in_a_patch_changes_nothing_and_says_so(
    api: httpx.AsyncClient, db: Database
) -> None:
    client = await make_client(db, tag="old")
    answer = await api.patch(f"/api/v1/clients/{client.id}", json={"tga": "new"})
    refused(answer, "tga")
    assert (await api.get(f"/api/v1/clients/{client.id}")).json()["tag"] == "old"
    refused(await api.post("/api/v1/clients/opt-out", json={"phone": client.phone, "x": 1}), "x")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"text_": "hi"}, "text_"),
        ({"filter": {"tag": ["vip"]}}, "filter.tag"),
        ({"window": {"start": "09:00", "end": "21:00", "zone": "UTC"}}, "window.zone"),
    ],
    ids=["top", "filter", "window"],
)
async def test_a_dispatch_with_an_unknown_field_is_refused(
    api: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    refused(await api.post("/api/v1/dispatches", json={**DISPATCH, **change}), field)
    assert (await api.get("/api/v1/dispatches")).json()["total"] == 0


async def test_edits_commands_and_resends_refuse_unknown_fields(
    api: httpx.AsyncClient, db: Database
) -> None:
    dispatch = await make_dispatch(db)
    path = f"/api/v1/dispatches/{dispatch.id}"
    refused(await api.patch(path, json={"txt": "new"}), "txt")
    refused(await api.post(f"{path}/pause", json={"reasn": "typo"}), "reasn")
    resend = {"statuses": ["failed"], **{k: DISPATCH[k] for k in ("start_at", "end_at")}}
    refused(await api.post(f"{path}/resend", json={**resend, "filter": {}}), "filter")
