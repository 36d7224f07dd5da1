"""Every list pages by offset and by keyset (an opaque cursor), and counts only when asked."""

import httpx
import sqlalchemy as sa

from core.db import Database
from core.models import Message, MessageStatus
from tests.factories import make_client, make_dispatch, make_messages


async def walk(api: httpx.AsyncClient, url: str, **params: object) -> list[dict[str, object]]:
    """Every item of a list, page by page along next_cursor."""
    items: list[dict[str, object]] = []
    query = {"limit": 3, **params}
    while True:
        page = (await api.get(url, params=query)).json()
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        assert len(page["items"]) == 3
        query = {"limit": 3, **params, "cursor": page["next_cursor"]}


async def test_a_cursor_walks_every_client_once_in_id_order(
    api: httpx.AsyncClient, db: Database
) -> None:
    made = [await make_client(db, tag="a" if n % 2 else "b") for n in range(10)]
    items = await walk(api, "/api/v1/clients")
    assert [item["id"] for item in items] == [client.id for client in made]
    tagged = await walk(api, "/api/v1/clients", tag="a")
    assert [item["id"] for item in tagged] == [c.id for c in made if c.tag == "a"]


async def test_total_is_counted_without_a_cursor_or_when_asked(
    api: httpx.AsyncClient, db: Database
) -> None:
    for _ in range(5):
        await make_client(db)
    first = (await api.get("/api/v1/clients", params={"limit": 2})).json()
    assert first["total"] == 5 and first["next_cursor"]
    cursor = first["next_cursor"]
    second = (await api.get("/api/v1/clients", params={"limit": 2, "cursor": cursor})).json()
    assert second["total"] is None
    counted = await api.get(
        "/api/v1/clients", params={"limit": 2, "cursor": cursor, "with_total": "true"}
    )
    assert counted.json()["total"] == 5
    uncounted = await api.get("/api/v1/clients", params={"with_total": "false"})
    assert uncounted.json()["total"] is None
    # Offset paging is still there.
    third = (await api.get("/api/v1/clients", params={"limit": 2, "offset": 4})).json()
    assert len(third["items"]) == 1 and third["next_cursor"] is None


async def test_bad_cursors_are_422(api: httpx.AsyncClient, db: Database) -> None:
    for params in (
        {"cursor": "not-a-cursor"},
        {"cursor": "aWQ6LTE"},  # id:-1
        {"cursor": "aWQ6NQ", "offset": 3},  # a cursor and an offset
    ):
        response = await api.get("/api/v1/clients", params=params)
        assert response.status_code == 422, (params, response.text)
        assert "cursor" in response.json()["detail"]


async def test_a_dispatchs_messages_by_status_and_a_clients_messages(
    api: httpx.AsyncClient, db: Database
) -> None:
    clients = [await make_client(db) for _ in range(8)]
    dispatch = await make_dispatch(db)
    messages = await make_messages(db, dispatch, clients, cohort=None)
    failed = [m.id for m in messages[::2]]
    async with db.sessions() as session:
        await session.execute(
            sa.update(Message).where(sa.column("id").in_(failed)).values(status="failed")
        )
        await session.commit()
    url = f"/api/v1/dispatches/{dispatch.id}/messages"
    listed = await walk(api, url, status=MessageStatus.FAILED.value)
    assert [item["id"] for item in listed] == failed
    every = await walk(api, url)
    assert len(every) == 8
    other = await make_dispatch(db)
    await make_messages(db, other, clients[:1], cohort=None)
    history = await walk(api, f"/api/v1/clients/{clients[0].id}/messages")
    assert [item["dispatch_id"] for item in history] == [dispatch.id, other.id]


async def test_stats_and_dispatches_page_by_cursor(api: httpx.AsyncClient, db: Database) -> None:
    made = [await make_dispatch(db) for _ in range(4)]
    listed = await walk(api, "/api/v1/dispatches")
    assert [item["id"] for item in listed] == [d.id for d in made]
    first = (await api.get("/api/v1/stats", params={"limit": 3})).json()
    assert first["dispatch_count"] == 4
    rest = (
        await api.get("/api/v1/stats", params={"limit": 3, "cursor": first["next_cursor"]})
    ).json()
    ids = [d["dispatch_id"] for d in first["dispatches"] + rest["dispatches"]]
    assert ids == [d.id for d in made] and rest["next_cursor"] is None
