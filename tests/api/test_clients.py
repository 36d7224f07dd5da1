import httpx
import sqlalchemy as sa

from core.db import Database
from core.models import Message
from tests.factories import make_client, make_dispatch, make_messages

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
