"""A client's attributes: set on create, changed key by key with PATCH (null removes), capped
at 20 after the merge, refused with the key named, filtered on in lists, gone on erasure, and
taken from an import's `attributes.<key>` columns."""

import asyncio
from typing import Any

import httpx
import sqlalchemy as sa

from api.paging import Paging
from api.services import clients as clients_service
from core.db import Database
from core.models import Client, Message, test_message_t
from tests.factories import make_client, make_dispatch, make_messages

CLIENTS = "/api/v1/clients"
IMPORT = f"{CLIENTS}/import"
CSV = {"Content-Type": "text/csv"}
NDJSON = {"Content-Type": "application/x-ndjson"}


async def create(api: httpx.AsyncClient, phone: str, **fields: Any) -> dict[str, Any]:
    response = await api.post(CLIENTS, json={"phone": phone, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def stored(db: Database) -> dict[str, dict[str, str]]:
    async with db.sessions() as session:
        clients = (await session.execute(sa.select(Client))).scalars().all()
    return {client.phone: client.attributes for client in clients}


def fields_of(response: httpx.Response) -> set[str | None]:
    assert response.status_code == 422, response.text
    return {error["field"] for error in response.json()["errors"]}


async def test_create_shows_them_and_a_client_without_has_none(api: httpx.AsyncClient) -> None:
    plain = await create(api, "79161234501")
    assert plain["attributes"] == {}
    client = await create(api, "79161234502", attributes={"name": "Анна", "city": "Omsk"})
    assert client["attributes"] == {"name": "Анна", "city": "Omsk"}
    assert (await api.get(f"{CLIENTS}/{client['id']}")).json()["attributes"] == {
        "name": "Анна",
        "city": "Omsk",
    }
    listed = (await api.get(CLIENTS)).json()["items"]
    assert [c["attributes"] for c in listed] == [{}, {"name": "Анна", "city": "Omsk"}]


async def test_bad_attributes_are_422_naming_the_key(api: httpx.AsyncClient) -> None:
    cases: list[tuple[Any, str]] = [
        ({"Name": "x"}, "attributes.Name"),
        ({"1st": "x"}, "attributes.1st"),
        ({"a" * 33: "x"}, f"attributes.{'a' * 33}"),
        ({"ok": "x" * 201}, "attributes.ok"),
        ({"ok": "a\u0000b"}, "attributes.ok"),
        ({"age": 30}, "attributes.age"),
        ({"city": None}, "attributes.city"),
        ({"phone": "x"}, "attributes.phone"),  # the client's own field
        ({f"k{n}": "x" for n in range(21)}, "attributes"),
        (["city"], "attributes"),
        ("city=Omsk", "attributes"),
    ]
    for attributes, field in cases:
        response = await api.post(CLIENTS, json={"phone": "79161234567", "attributes": attributes})
        assert field in fields_of(response), (attributes, response.text)
        assert not any(e["message"].startswith("Value error") for e in response.json()["errors"])
    assert (await api.get(CLIENTS)).json()["total"] == 0
    # Twenty keys of 32 characters and values of 200 are the limits, not past them.
    most = {f"k{n}{'x' * 29}": "v" * 200 for n in range(10, 30)}
    assert (await create(api, "79161234567", attributes=most))["attributes"] == most


async def test_patch_sets_removes_with_null_and_keeps_the_others(
    api: httpx.AsyncClient,
) -> None:
    client = await create(api, "79161234567", attributes={"name": "Anna", "city": "Omsk"})
    url = f"{CLIENTS}/{client['id']}"
    changed = await api.patch(url, json={"attributes": {"city": "Tomsk", "plan": "gold"}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["attributes"] == {"name": "Anna", "city": "Tomsk", "plan": "gold"}
    assert changed.json()["updated_at"] > client["updated_at"]
    removed = await api.patch(url, json={"attributes": {"name": None, "absent": None}})
    assert removed.json()["attributes"] == {"city": "Tomsk", "plan": "gold"}
    # Other fields alone, an empty change or null leave the attributes as they are.
    for body in ({"tag": "vip"}, {"attributes": {}}, {"attributes": None}):
        kept = await api.patch(url, json=body)
        assert kept.status_code == 200, kept.text
        assert kept.json()["attributes"] == {"city": "Tomsk", "plan": "gold"}
    both = await api.patch(url, json={"tag": "gold", "attributes": {"city": "Omsk"}})
    assert (both.json()["tag"], both.json()["attributes"]["city"]) == ("gold", "Omsk")
    assert (await api.get(url)).json()["attributes"] == {"city": "Omsk", "plan": "gold"}
    assert "attributes.City" in fields_of(await api.patch(url, json={"attributes": {"City": "x"}}))
    missing = await api.patch(f"{CLIENTS}/999999", json={"attributes": {"a": "b"}})
    assert missing.status_code == 404


async def test_concurrent_patches_of_other_keys_all_stay(api: httpx.AsyncClient) -> None:
    # Merged in SQL, not read, changed and written back: no change is lost to another.
    client = await create(api, "79161234567")
    url = f"{CLIENTS}/{client['id']}"
    answers = await asyncio.gather(
        *(api.patch(url, json={"attributes": {f"k{n}": str(n)}}) for n in range(10))
    )
    assert all(answer.status_code == 200 for answer in answers)
    stored_now = (await api.get(url)).json()["attributes"]
    assert stored_now == {f"k{n}": str(n) for n in range(10)}


async def test_patch_keeps_the_cap_of_20_after_the_merge(api: httpx.AsyncClient) -> None:
    client = await create(api, "79161234567", attributes={f"k{n}": "x" for n in range(18)})
    url = f"{CLIENTS}/{client['id']}"
    over = await api.patch(url, json={"tag": "new", "attributes": {"a": "1", "b": "2", "c": "3"}})
    assert fields_of(over) == {"attributes"}
    assert "at most 20" in over.json()["detail"]
    # Nothing of the refused change was taken, the tag neither.
    unchanged = (await api.get(url)).json()
    assert (unchanged["tag"], len(unchanged["attributes"])) == ("", 18)
    full = await api.patch(url, json={"attributes": {"a": "1", "b": "2"}})
    assert len(full.json()["attributes"]) == 20
    # Removing and setting in one change: counted after both.
    swapped = await api.patch(url, json={"attributes": {"a": None, "b": None, "c": "3", "d": "4"}})
    assert swapped.status_code == 200, swapped.text
    assert set(swapped.json()["attributes"]) == {f"k{n}" for n in range(18)} | {"c", "d"}
    replace_all = {**{f"k{n}": None for n in range(18)}, "c": None, "d": None}
    replace_all |= {f"n{n}": "y" for n in range(20)}
    replaced = await api.patch(url, json={"attributes": replace_all})
    assert replaced.json()["attributes"] == {f"n{n}": "y" for n in range(20)}
    too_long = {f"z{n}": None for n in range(41)}
    assert fields_of(await api.patch(url, json={"attributes": too_long})) == {"attributes"}


async def test_the_list_filters_on_attributes(api: httpx.AsyncClient) -> None:
    people = [
        ("79161234501", {"city": "Omsk", "plan": "gold"}),
        ("79161234502", {"city": "Omsk"}),
        ("79161234503", {"city": "Tomsk", "plan": "gold"}),
        ("79161234504", {"city": "Omsk", "plan": "gold", "note": "a:b"}),
        ("79161234505", {}),
        ("79161234506", {"city": "Omsk", "plan": "gold"}),
    ]
    ids = [(await create(api, phone, attributes=attrs))["id"] for phone, attrs in people]

    async def listed(*filters: str, **params: Any) -> dict[str, Any]:
        response = await api.get(CLIENTS, params={"attribute": list(filters), **params})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    omsk = await listed("city:Omsk")
    assert [c["id"] for c in omsk["items"]] == [ids[0], ids[1], ids[3], ids[5]]
    assert omsk["total"] == 4
    gold_omsk = await listed("city:Omsk", "plan:gold")
    assert [c["id"] for c in gold_omsk["items"]] == [ids[0], ids[3], ids[5]]
    # Split at the first colon; a value is matched exactly.
    assert [c["id"] for c in (await listed("note:a:b"))["items"]] == [ids[3]]
    assert (await listed("city:omsk"))["total"] == 0
    assert (await listed("city:Omsk", "city:Tomsk"))["total"] == 0
    # With the other filters, and a page at a time by cursor with the same count.
    tagged = await listed("plan:gold", phone="791612345")
    assert tagged["total"] == 4
    first = await listed("city:Omsk", "plan:gold", limit=2)
    assert [c["id"] for c in first["items"]] == [ids[0], ids[3]]
    assert first["total"] == 3 and first["next_cursor"]
    second = await listed(
        "city:Omsk", "plan:gold", limit=2, cursor=first["next_cursor"], with_total="true"
    )
    assert [c["id"] for c in second["items"]] == [ids[5]]
    assert second["total"] == 3 and second["next_cursor"] is None
    by_offset = await listed("city:Omsk", "plan:gold", limit=2, offset=2)
    assert [c["id"] for c in by_offset["items"]] == [ids[5]]

    for bad in ("city", "City:Omsk", ":Omsk", "1a:x", f"city:{'x' * 201}", "city:a\u0000"):
        response = await api.get(CLIENTS, params={"attribute": bad})
        assert fields_of(response) == {"attribute"}, bad


async def test_the_admin_list_still_lists(api: httpx.AsyncClient, db: Database) -> None:
    # The admin page shares the service's list: its call without attributes still works.
    await create(api, "79161234567", attributes={"city": "Omsk"})
    async with db.sessions() as session:
        rows, total, _ = await clients_service.list_clients(
            session=session,
            tags=[],
            operator_codes=[],
            timezones=[],
            phone_prefix=None,
            opted_out=None,
            paging=Paging(limit=10, offset=0, after_id=None, with_total=True),
        )
    assert total == 1 and rows[0].attributes == {"city": "Omsk"}


async def test_erasure_leaves_nothing_of_them(api: httpx.AsyncClient, db: Database) -> None:
    client = await make_client(db, attributes={"name": "Anna", "city": "Omsk"})
    other = await make_client(db, attributes={"name": "Boris"})
    dispatch = await make_dispatch(db, text="Hi {{ name }}")
    [message, kept] = await make_messages(db, dispatch, [client, other], cohort=None)
    async with db.sessions() as session:
        for row, name in ((message, "Anna"), (kept, "Boris")):
            await session.execute(
                sa.update(Message).where(Message.id == row.id).values(text=f"Hi {name}")
            )
        await session.execute(
            sa.insert(test_message_t),
            [
                {
                    "dispatch_id": dispatch.id,
                    "client_id": someone.id,
                    "phone": "79031234567",
                    "operator_code": "903",
                    "text": f"Hi {someone.attributes['name']}",
                    "segments": 1,
                    "actor": "test",
                }
                for someone in (client, other)
            ],
        )
        await session.commit()
    response = await api.delete(f"{CLIENTS}/{client.id}", params={"erase": "true"})
    assert response.status_code == 204, response.text
    async with db.sessions() as session:
        leftovers = await session.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM client WHERE attributes->>'name' = 'Anna')"
                " + (SELECT count(*) FROM message WHERE text LIKE '%Anna%')"
                " + (SELECT count(*) FROM test_message WHERE text LIKE '%Anna%')"
            )
        )
        assert leftovers.scalar_one() == 0
        erased = await session.get(Message, message.id)
        untouched = await session.get(Message, kept.id)
        tests = (await session.execute(sa.select(test_message_t.c.text))).scalars().all()
    assert erased is not None and erased.text is None and erased.phone is None
    # Another client's personal text and test send stay.
    assert untouched is not None and untouched.text == "Hi Boris"
    assert tests == ["Hi Boris"]


async def test_import_takes_attribute_columns(api: httpx.AsyncClient, db: Database) -> None:
    text = (
        "phone,tag,Attributes.city,attributes.name\n"
        "79161234501,vip,Omsk,Anna\n"
        "79161234502,,,Boris\n"  # an empty cell: not set
        "79161234503,,  ,\n"  # blank cells: no attributes at all
        "79161234504,,Omsk,  Vera \n"  # a value is taken as it is, like a tag
    )
    response = await api.post(IMPORT, content=text, headers=CSV)
    assert response.status_code == 200, response.text
    assert (response.json()["created"], response.json()["rejected"]) == (4, 0)
    assert await stored(db) == {
        "79161234501": {"city": "Omsk", "name": "Anna"},
        "79161234502": {"name": "Boris"},
        "79161234503": {},
        "79161234504": {"city": "Omsk", "name": "  Vera "},
    }
    listed = (await api.get(CLIENTS, params={"attribute": "city:Omsk"})).json()
    assert [c["phone"] for c in listed["items"]] == ["79161234501", "79161234504"]


async def test_import_rejects_a_bad_attribute_with_its_line_and_field(
    api: httpx.AsyncClient, db: Database
) -> None:
    text = (
        "phone,attributes.city,attributes.City\n"
        "79161234501,Omsk,\n"  # 2: the bad column empty, nothing set in it: fine
        "79161234502,,Tomsk\n"  # 3: a key a create refuses
        f"79161234503,{'x' * 201},\n"  # 4: too long a value
        "79161234504,a\u0000b,\n"  # 5: NUL
    )
    response = await api.post(IMPORT, content=text, headers=CSV, params={"on_error": "skip_row"})
    report = response.json()
    assert (report["created"], report["rejected"]) == (1, 3), report
    assert [(r["line"], r["field"]) for r in report["rejected_rows"]] == [
        (3, "attributes.City"),
        (4, "attributes.city"),
        (5, "attributes.city"),
    ]
    assert await stored(db) == {"79161234501": {"city": "Omsk"}}
    refused = await api.post(IMPORT, content=text, headers=CSV)
    assert refused.status_code == 422
    assert refused.json()["errors"][1]["field"] == "line 3, attributes.City"
    too_many = "phone," + ",".join(f"attributes.k{n}" for n in range(21)) + "\n"
    too_many += "79161234509," + ",".join("x" for _ in range(21)) + "\n"
    only_twenty = "79161234510," + ",".join("x" for _ in range(20)) + ",\n"
    many = await api.post(
        IMPORT, content=too_many + only_twenty, headers=CSV, params={"on_error": "skip_row"}
    )
    assert [(r["line"], r["field"]) for r in many.json()["rejected_rows"]] == [(2, "attributes")]
    assert len((await stored(db))["79161234510"]) == 20
    # The prefix alone is not an attribute: an unknown column, as a typo is.
    unknown = await api.post(IMPORT, content="phone,attributes\n79161234511,x\n", headers=CSV)
    assert unknown.status_code == 422 and "unknown column 'attributes'" in unknown.text


async def test_import_json_lines_flat_or_nested(api: httpx.AsyncClient, db: Database) -> None:
    lines = [
        '{"phone": "79161234501", "attributes": {"city": "Omsk", "name": "Anna"}}',
        '{"phone": "79161234502", "attributes.city": "Tomsk", "attributes.name": null}',
        '{"phone": "79161234503", "attributes": {"city": "Omsk"}, "attributes.plan": "gold"}',
        '{"phone": "79161234504", "attributes": {"City": "Omsk"}}',
        '{"phone": "79161234505", "attributes": {"age": 30}}',
        '{"phone": "79161234506", "attributes.age": 30}',
        '{"phone": "79161234507", "attributes": ["city"]}',
        '{"phone": "79161234508", "attributes": {"city": "a"}, "attributes.city": "b"}',
        '{"phone": "79161234509", "attributes": {"city": ""}, "tag": "x"}',
        '{"phone": "79161234510", "colour": "red"}',
    ]
    response = await api.post(
        IMPORT, content="\n".join(lines) + "\n", headers=NDJSON, params={"on_error": "skip_row"}
    )
    report = response.json()
    assert [(r["line"], r["field"]) for r in report["rejected_rows"]] == [
        (4, "attributes.City"),
        (5, "attributes.age"),
        (6, "attributes.age"),
        (7, "attributes"),
        (8, "attributes.city"),
        (10, "colour"),
    ]
    assert report["created"] == 4
    assert await stored(db) == {
        "79161234501": {"city": "Omsk", "name": "Anna"},
        "79161234502": {"city": "Tomsk"},
        "79161234503": {"city": "Omsk", "plan": "gold"},
        "79161234509": {},
    }


async def test_import_update_merges_attributes_key_by_key(
    api: httpx.AsyncClient, db: Database
) -> None:
    await create(api, "79161234501", attributes={"city": "Omsk", "name": "Anna"})
    await create(api, "79161234502", attributes={f"k{n}": "x" for n in range(19)})
    text = (
        "phone,attributes.city,attributes.plan,attributes.extra\n"
        "79161234501,Tomsk,,\n"  # set one key, keep the other, an empty cell keeps too
        "79161234502,,gold,\n"  # the 20th: fine
        "79161234502,,,more\n"  # a 21st: refused, the row before kept
        "79161234503,Omsk,,\n"  # new
        "79161234503,,gold,\n"  # the same new client again: merged into the first row's
    )
    response = await api.post(
        IMPORT, content=text, headers=CSV, params={"on_duplicate": "update", "on_error": "skip_row"}
    )
    report = response.json()
    assert (report["created"], report["updated"], report["rejected"]) == (1, 3, 1), report
    assert report["rejected_rows"] == [
        {
            "line": 4,
            "field": "attributes",
            "message": "the client would hold more than 20 attributes",
        }
    ]
    clients = await stored(db)
    assert clients["79161234501"] == {"city": "Tomsk", "name": "Anna"}
    assert len(clients["79161234502"]) == 20 and clients["79161234502"]["plan"] == "gold"
    assert clients["79161234503"] == {"city": "Omsk", "plan": "gold"}
    # Over the cap against what is stored (the rows in another import): the row alone refused.
    again = await api.post(
        IMPORT,
        content="phone,attributes.extra,tag\n79161234502,more,new\n79161234501,,vip\n",
        headers=CSV,
        params={"on_duplicate": "update", "on_error": "skip_row"},
    )
    assert [(r["line"], r["field"]) for r in again.json()["rejected_rows"]] == [(2, "attributes")]
    assert again.json()["updated"] == 1
    async with db.sessions() as session:
        clients_now = (await session.execute(sa.select(Client))).scalars().all()
    tags = {client.phone: client.tag for client in clients_now}
    assert (tags["79161234502"], tags["79161234501"]) == ("", "vip")
    # Skipping duplicates leaves the stored attributes alone.
    skip = await api.post(IMPORT, content="phone,attributes.city\n79161234501,Omsk\n", headers=CSV)
    assert skip.json()["skipped"] == 1
    assert (await stored(db))["79161234501"]["city"] == "Tomsk"
