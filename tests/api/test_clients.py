import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from core.db import Database
from core.models import Message
from tests.factories import make_client, make_dispatch, make_messages
from tests.support import api_client, auth_headers

CLIENTS = "/api/v1/clients"


async def test_create_derives_operator_code_and_zone(api: httpx.AsyncClient) -> None:
    response = await api.post(CLIENTS, json={"phone": 79161234567, "tag": "vip"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["phone"] == "79161234567"
    assert body["operator_code"] == "916"
    # A mobile number spans many zones in phonenumbers: the configured default applies.
    assert body["timezone"] == "Europe/Moscow"
    assert body["tag"] == "vip"


async def test_explicit_operator_code_and_zone_are_kept(api: httpx.AsyncClient) -> None:
    response = await api.post(
        CLIENTS,
        json={"phone": "+7 (903) 123-45-67", "operator_code": "999", "timezone": "Asia/Tokyo"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["phone"] == "79031234567"
    assert response.json()["operator_code"] == "999"
    assert response.json()["timezone"] == "Asia/Tokyo"


async def test_bad_input_is_422_naming_the_field(api: httpx.AsyncClient, db: Database) -> None:
    cases = [
        ({"phone": "12345"}, "phone"),
        ({"phone": "74951234567"}, "phone"),  # a Moscow landline
        ({"phone": True}, "phone"),
        ({"phone": "79161234567", "timezone": "Mars/Olympus"}, "timezone"),
        ({"phone": "79161234567", "operator_code": "91"}, "operator_code"),
        ({"phone": "79161234567", "tag": "x" * 65}, "tag"),
        ({"phone": "79161234567", "tag": "a\u0000b"}, "tag"),  # found by schemathesis
        ({}, "phone"),
    ]
    for payload, field in cases:
        response = await api.post(CLIENTS, json=payload)
        assert response.status_code == 422, (payload, response.text)
        errors = response.json()["errors"]
        assert field in {e["field"] for e in errors}, errors
        assert not any(e["message"].startswith("Value error") for e in errors)
    listed = await api.get(CLIENTS)
    assert listed.json()["total"] == 0


async def test_duplicate_phone_is_409(api: httpx.AsyncClient) -> None:
    assert (await api.post(CLIENTS, json={"phone": "79161234567"})).status_code == 201
    response = await api.post(CLIENTS, json={"phone": "79161234567"})
    assert response.status_code == 409
    assert "79161234567" in response.json()["detail"]


async def test_get_update_delete(api: httpx.AsyncClient) -> None:
    created = (await api.post(CLIENTS, json={"phone": "79161234567"})).json()
    url = f"{CLIENTS}/{created['id']}"
    assert (await api.get(url)).json() == created

    updated = await api.patch(url, json={"phone": "79261234567", "tag": "new"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["operator_code"] == "926"
    assert updated.json()["tag"] == "new"
    assert updated.json()["updated_at"] > created["updated_at"]

    kept = await api.patch(url, json={"operator_code": "111"})
    assert kept.json()["operator_code"] == "111"
    assert kept.json()["phone"] == "79261234567"

    assert (await api.delete(url)).status_code == 204
    assert (await api.get(url)).status_code == 404
    assert (await api.delete(url)).status_code == 404
    assert (await api.patch(url, json={"tag": "x"})).status_code == 404


async def test_unknown_and_absurd_ids(api: httpx.AsyncClient, db: Database) -> None:
    assert (await api.get(f"{CLIENTS}/12345")).status_code == 404
    assert (await api.get(f"{CLIENTS}/{2**70}")).status_code == 422
    assert (await api.get(f"{CLIENTS}/0")).status_code == 422
    assert (await api.get(f"{CLIENTS}/abc")).status_code == 422


async def test_list_filters_and_pages(api: httpx.AsyncClient) -> None:
    phones = ["79161234501", "79161234502", "79031234503", "79031234504", "79261234505"]
    for index, phone in enumerate(phones):
        tag = "vip" if index % 2 == 0 else "regular"
        assert (await api.post(CLIENTS, json={"phone": phone, "tag": tag})).status_code == 201

    vip = (await api.get(CLIENTS, params={"tag": "vip"})).json()
    assert [c["phone"] for c in vip["items"]] == [phones[0], phones[2], phones[4]]

    beeline = (await api.get(CLIENTS, params={"operator_code": "903", "tag": "vip"})).json()
    assert [c["phone"] for c in beeline["items"]] == [phones[2]]

    page = (await api.get(CLIENTS, params={"limit": 2, "offset": 2})).json()
    assert page["total"] == 5
    assert [c["phone"] for c in page["items"]] == phones[2:4]

    assert (await api.get(CLIENTS, params={"limit": 0})).status_code == 422
    assert (await api.get(CLIENTS, params={"operator_code": "9"})).status_code == 422
    assert (await api.get(CLIENTS, params={"tag": "a\u0000"})).status_code == 422


async def test_domestic_form_is_the_same_number(api: httpx.AsyncClient) -> None:
    response = await api.post(CLIENTS, json={"phone": "8 (916) 123-45-67"})
    assert response.status_code == 201, response.text
    assert response.json()["phone"] == "79161234567"
    again = await api.post(CLIENTS, json={"phone": 89161234567})
    assert again.status_code == 409, again.text


async def test_foreign_number_is_refused_saying_only_russian_mobiles(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post(CLIENTS, json={"phone": "+44 20 7946 0958"})
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "phone"
    assert "only Russian mobiles" in error["message"]
    assert response.json()["detail"].startswith("phone: ")


async def test_deleting_a_client_cancels_its_unsent_messages_at_once(
    api: httpx.AsyncClient, db: Database
) -> None:
    client = await make_client(db)
    other = await make_client(db)
    dispatch = await make_dispatch(db)
    waiting, untouched = await make_messages(db, dispatch, [client, other], cohort="all")
    response = await api.delete(f"{CLIENTS}/{client.id}")
    assert response.status_code == 204
    async with db.sessions() as session:
        stored = {m.id: m for m in (await session.execute(sa.select(Message))).scalars()}
    assert (stored[waiting.id].status, stored[waiting.id].last_error) == (
        "cancelled",
        "client deleted",
    )
    assert stored[waiting.id].client_id is None
    assert stored[untouched.id].status == "pending"


async def test_a_clients_messages_across_dispatches(api: httpx.AsyncClient, db: Database) -> None:
    client = await make_client(db)
    other = await make_client(db)
    first, second = await make_dispatch(db), await make_dispatch(db)
    [one] = await make_messages(db, first, [client], cohort="all")
    [two, _] = await make_messages(db, second, [client, other], cohort="all")
    listed = await api.get(f"{CLIENTS}/{client.id}/messages")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["total"] == 2
    assert [m["id"] for m in body["items"]] == [one.id, two.id]
    assert {m["dispatch_id"] for m in body["items"]} == {first.id, second.id}
    sent = await api.get(f"{CLIENTS}/{client.id}/messages", params={"status": "sent"})
    assert sent.json()["total"] == 0
    assert (await api.get(f"{CLIENTS}/999999/messages")).status_code == 404


async def test_the_stop_list(api: httpx.AsyncClient, api_app: FastAPI, db: Database) -> None:
    created = (await api.post(CLIENTS, json={"phone": "79161234567"})).json()
    assert created["opted_out"] is False and created["opted_out_at"] is None
    # The provider's STOP callback: a token that may do nothing else, the number in any form.
    headers = auth_headers(api_app.state.settings, frozenset({"clients:opt-out"}))
    async with api_client(api_app, **headers) as provider:
        first = await provider.post(f"{CLIENTS}/opt-out", json={"phone": "8 916 123-45-67"})
        assert first.status_code == 200, first.text
        assert first.json()["opted_out"] is True and first.json()["opted_out_at"]
        again = await provider.post(f"{CLIENTS}/opt-out", json={"phone": 79161234567})
        assert again.json()["opted_out_at"] == first.json()["opted_out_at"]
        unknown = await provider.post(f"{CLIENTS}/opt-out", json={"phone": "79031234567"})
        assert unknown.status_code == 404 and "79031234567" in unknown.json()["detail"]
        assert (await provider.get(CLIENTS)).status_code == 403
    listed = (await api.get(CLIENTS, params={"opted_out": "true"})).json()
    assert [c["id"] for c in listed["items"]] == [created["id"]]
    # A new audience leaves the client out.
    dispatch = await api.post(
        "/api/v1/dispatches",
        json={
            "start_at": "2030-01-01T00:00:00Z",
            "end_at": "2030-01-02T00:00:00Z",
            "text": "hi",
            "filter": {"all": True},
        },
    )
    assert dispatch.json()["audience"] == 0
    back = await api.patch(f"{CLIENTS}/{created['id']}", json={"opted_out": False})
    assert back.json()["opted_out"] is False and back.json()["opted_out_at"] is None


async def test_erasing_a_client_removes_its_phone_and_keeps_the_counts(
    api: httpx.AsyncClient, db: Database
) -> None:
    client = await make_client(db)
    dispatch = await make_dispatch(db)
    [message] = await make_messages(db, dispatch, [client], cohort=None)
    async with db.sessions() as session:
        await session.execute(
            sa.update(Message).where(Message.id == message.id).values(phone=client.phone)
        )
        await session.commit()
    response = await api.delete(f"{CLIENTS}/{client.id}", params={"erase": "true"})
    assert response.status_code == 204
    async with db.sessions() as session:
        stored = await session.get(Message, message.id)
        phones = await session.execute(
            sa.text("SELECT count(*) FROM message WHERE phone = :p"), {"p": client.phone}
        )
        assert phones.scalar_one() == 0
    assert stored is not None and stored.phone is None and stored.client_id is None
    stats = (await api.get(f"/api/v1/dispatches/{dispatch.id}/stats")).json()
    assert stats["messages"]["total"] == 1 and stats["messages"]["cancelled"] == 1
