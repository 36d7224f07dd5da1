"""Personal texts at the API's edge: placeholders a text may not use refused on a create, an
edit, a resend and a preview, each naming the construct; the preview of a text for sample and
named clients, with the audience's clients that lack a key counted in SQL; and the SMS parts
a personal text is estimated at, in the preview, a create's answer and /stats/audience."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from api.services import statistics as statistics_service
from api.services.previews import Estimate
from core.db import Database
from core.models import Client, Message, dispatch_t, message_t
from core.segments import Encoding
from tests.api.test_dispatches import DISPATCHES, payload
from tests.factories import make_client, make_dispatch
from tests.support import api_client, auth_headers

PREVIEW = f"{DISPATCHES}/preview"
REFUSED = [
    ("{% for x in clients %}{{ x }}{% endfor %}", "statements ({% ... %}) are not allowed"),
    ("Hi {{ x.__class__ }}", "attribute access (`.__class__`) is not allowed"),
    ("Hi {{ a | upper }}", "the filter `upper` is not allowed in a text: only `default`"),
]
FRIEND = 'Здравствуйте, {{ name | default("друг") }}!'
NAMED = "Здравствуйте, {{ name }}!"


def preview(**changes: Any) -> dict[str, Any]:
    body = payload(filter={"tags": ["vip"]}, window=None)
    body.update(changes)
    return body


def assert_refused_text(response: httpx.Response, named: str) -> None:
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == ["text"], errors
    assert named in errors[0]["message"]
    assert response.json()["detail"].startswith("text: ")


async def test_refused_placeholders_are_422_on_every_text(
    api: httpx.AsyncClient, db: Database
) -> None:
    created = (await api.post(DISPATCHES, json=payload())).json()
    url = f"{DISPATCHES}/{created['id']}"
    first = await make_dispatch(db, text="Hello")
    async with db.sessions() as session:
        await session.execute(
            sa.update(dispatch_t).where(dispatch_t.c.id == first.id).values(status="completed")
        )
        await session.commit()
    for text, named in REFUSED:
        assert_refused_text(await api.post(DISPATCHES, json=payload(text=text)), named)
        assert_refused_text(await api.patch(url, json={"text": text}), named)
        assert_refused_text(await api.post(PREVIEW, json=preview(text=text)), named)
        resend = {**{k: payload()[k] for k in ("start_at", "end_at")}, "statuses": ["failed"]}
        assert_refused_text(
            await api.post(f"{DISPATCHES}/{first.id}/resend", json={**resend, "text": text}),
            named,
        )
    assert (await api.get(url)).json()["text"] == "Sale on Sunday"
    assert (await api.get(DISPATCHES)).json()["total"] == 2
    # /stats/audience cannot estimate a text a create refuses.
    audience = await api.get("/api/v1/stats/audience", params={"text": REFUSED[1][0]})
    assert_refused_text(audience, REFUSED[1][1])


async def test_placeholders_are_checked_as_the_text_is_stored(
    api: httpx.AsyncClient, db: Database
) -> None:
    # Curly quotes do not parse; normalized, they are the straight ones a default takes.
    curly = "Hi {{ name | default(“friend”) }}"
    assert_refused_text(await api.post(DISPATCHES, json=payload(text=curly)), "do not parse")
    normalized = await api.post(DISPATCHES, json=payload(text=curly, normalize_text=True))
    assert normalized.status_code == 201, normalized.text
    assert normalized.json()["text"] == 'Hi {{ name | default("friend") }}'
    # A text stored before texts could be templates is checked when an edit normalizes it.
    old = await make_dispatch(db, text="Hi {{ x.__class__ }} “there”")
    edited = await api.patch(f"{DISPATCHES}/{old.id}", json={"normalize_text": True})
    assert_refused_text(edited, "attribute access")
    # Nesting deep enough to exhaust the parser is refused, not a crash.
    deep = "{{" + "(" * 400 + "a" + ")" * 400 + "}}"
    assert_refused_text(await api.post(PREVIEW, json=preview(text=deep)), "nest too deeply")


async def test_a_preview_renders_for_the_audience(api: httpx.AsyncClient, db: Database) -> None:
    anna = await make_client(db, tag="vip", attributes={"name": "Анна"})
    nobody = await make_client(db, tag="vip")
    empty = await make_client(db, tag="vip", attributes={"name": "", "city": "Омск"})
    await make_client(db, tag="vip", opted_out=True, attributes={"name": "Стоп"})
    dima = await make_client(db, tag="other", attributes={"name": "Дмитрий"})

    response = await api.post(PREVIEW, json=preview(text=FRIEND))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "audience",
        "personal",
        "keys",
        "samples",
        "missing",
        "segments_total",
        "encoding",
    }
    assert (body["audience"], body["personal"], body["keys"]) == (3, True, ["name"])
    assert body["samples"] == [
        {
            "client_id": anna.id,
            "phone": anna.phone,
            "text": "Здравствуйте, Анна!",
            "encoding": "UCS-2",
            "segments": 1,
            "missing": [],
        },
        {
            "client_id": nobody.id,
            "phone": nobody.phone,
            "text": "Здравствуйте, друг!",
            "encoding": "UCS-2",
            "segments": 1,
            "missing": [],
        },
        {
            "client_id": empty.id,
            "phone": empty.phone,
            "text": "Здравствуйте, друг!",
            "encoding": "UCS-2",
            "segments": 1,
            "missing": [],
        },
    ]
    assert body["missing"] == {"count": 0, "client_ids": []}
    assert (body["segments_total"], body["encoding"]) == (3, "UCS-2")

    # Without a default, the clients lacking the key (no attribute, or an empty one) get none.
    needed = (await api.post(PREVIEW, json=preview(text=NAMED))).json()
    assert [(s["client_id"], s["text"], s["missing"]) for s in needed["samples"]] == [
        (anna.id, "Здравствуйте, Анна!", []),
        (nobody.id, None, ["name"]),
        (empty.id, None, ["name"]),
    ]
    assert needed["samples"][1]["encoding"] is None and needed["samples"][1]["segments"] is None
    assert needed["missing"] == {"count": 2, "client_ids": [nobody.id, empty.id]}
    assert needed["segments_total"] == 1

    # Named clients, by id or phone (any form a create takes), in their order, matching or not.
    domestic = "8 (" + nobody.phone[1:4] + ") " + nobody.phone[4:]
    named = await api.post(PREVIEW, json=preview(text=NAMED, clients=[dima.id, domestic]))
    assert named.status_code == 200, named.text
    assert [(s["client_id"], s["text"]) for s in named.json()["samples"]] == [
        (dima.id, "Здравствуйте, Дмитрий!"),
        (nobody.id, None),
    ]
    assert named.json()["audience"] == 3 and named.json()["missing"]["count"] == 2
    unknown = await api.post(PREVIEW, json=preview(text=NAMED, clients=[anna.id, 99999999]))
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == [
        {"field": "clients.1", "message": "no client has id 99999999"}
    ]
    bad_phone = await api.post(PREVIEW, json=preview(clients=["12345"]))
    assert bad_phone.status_code == 422 and bad_phone.json()["errors"][0]["field"] == "clients.0"
    too_many = await api.post(PREVIEW, json=preview(clients=list(range(1, 22))))
    assert too_many.status_code == 422 and too_many.json()["errors"][0]["field"] == "clients"

    # A plain text: the same for everyone, nobody missing.
    plain = (await api.post(PREVIEW, json=preview(text="Sale on Sunday"))).json()
    assert (plain["personal"], plain["keys"], plain["missing"]["count"]) == (False, [], 0)
    assert {s["text"] for s in plain["samples"]} == {"Sale on Sunday"}
    assert (plain["segments_total"], plain["encoding"]) == (3, "GSM-7")
    assert (await api.get(DISPATCHES)).json()["total"] == 0  # nothing stored


async def test_a_preview_takes_a_create_body(api: httpx.AsyncClient, api_app: FastAPI) -> None:
    past = datetime.now(UTC) - timedelta(days=3)
    ended = preview(start_at=past.isoformat(), end_at=(past + timedelta(days=1)).isoformat())
    assert (await api.post(PREVIEW, json=ended)).status_code == 200
    reversed_times = preview(start_at=ended["end_at"], end_at=ended["start_at"])
    refused = await api.post(PREVIEW, json=reversed_times)
    assert refused.status_code == 422 and "end_at must be after start_at" in refused.text
    unknown = await api.post(PREVIEW, json=preview(sample=5))
    assert unknown.json()["errors"] == [{"field": "sample", "message": "unknown field"}]
    no_filter = await api.post(PREVIEW, json=preview(filter={}))
    assert no_filter.status_code == 422 and "filter" in no_filter.text
    window = await api.post(PREVIEW, json=preview(window={"start": "10:00", "end": "10:00"}))
    assert window.status_code == 422 and window.json()["errors"][0]["field"] == "window"
    over = await api.post(PREVIEW, json=preview(text="Ж" * 800))
    assert over.status_code == 422 and "exceeds MAX_SEGMENTS=10" in over.text

    # dispatches:write, as a create.
    settings = api_app.state.settings
    reader = auth_headers(settings, permissions=frozenset({"dispatches:read"}))
    async with api_client(api_app, **reader) as read_only:
        denied = await read_only.post(PREVIEW, json=preview())
        assert denied.status_code == 403 and "dispatches:write" in denied.text
    # "preview" is no dispatch id.
    assert (await api.get(PREVIEW)).status_code == 422


async def test_missing_keys_are_counted_over_the_whole_audience(
    api: httpx.AsyncClient, db: Database
) -> None:
    lacking = [await make_client(db, tag="vip") for _ in range(23)]
    await make_client(db, tag="vip", attributes={"name": "Анна"})
    answer = (await api.post(PREVIEW, json=preview(text=NAMED))).json()
    assert answer["audience"] == 24
    assert answer["missing"] == {"count": 23, "client_ids": [c.id for c in lacking[:20]]}
    assert len(answer["samples"]) == 20
    assert answer["segments_total"] == 1
    # `tag` is a client's own field: the empty tag is missing.
    untagged = await make_client(db, attributes={"name": "Ян"})
    tagged = (await api.post(PREVIEW, json=preview(text="{{ tag }}", filter={"all": True}))).json()
    assert tagged["missing"] == {"count": 1, "client_ids": [untagged.id]}
    assert tagged["segments_total"] == 24


# "Ян, " and 66 more: 70 UCS-2 characters, one SMS; a longer name makes two.
LONG_TEXT = "{{ name }}, " + "Ж" * 66


async def test_a_personal_text_is_estimated_from_its_clients(
    api: httpx.AsyncClient, db: Database
) -> None:
    for _ in range(3):
        await make_client(db, tag="vip", operator_code="916", attributes={"name": "Ян"})
    await make_client(db, tag="vip", operator_code="916")  # no name: no message
    short = (await api.post(PREVIEW, json=preview(text=LONG_TEXT))).json()
    assert {s["segments"] for s in short["samples"] if s["text"]} == {1}
    assert len(short["samples"][0]["text"]) == 70
    assert (short["segments_total"], short["encoding"]) == (3, "UCS-2")

    await make_client(db, tag="vip", operator_code="916", attributes={"name": "Константин"})
    long = (await api.post(PREVIEW, json=preview(text=LONG_TEXT))).json()
    assert [s["segments"] for s in long["samples"]] == [1, 1, 1, None, 2]
    # The mean of those who get one (5 parts for 4) times the 4 of them.
    assert (long["audience"], long["missing"]["count"], long["segments_total"]) == (5, 1, 5)

    # The create answers the same estimate; `segments` is its longest message's.
    created = (await api.post(DISPATCHES, json=payload(text=LONG_TEXT))).json()
    assert (created["audience"], created["encoding"]) == (5, "UCS-2")
    assert (created["segments"], created["segments_total"]) == (2, 5)
    fetched = (await api.get(f"{DISPATCHES}/{created['id']}")).json()
    assert (fetched["segments"], fetched["segments_total"]) == (2, 0)  # no messages yet
    listed = (await api.get(DISPATCHES)).json()["items"]
    assert [(d["segments"], d["encoding"]) for d in listed] == [(2, "UCS-2")]
    measured = await api.get("/api/v1/stats/audience", params={"tag": "vip", "text": LONG_TEXT})
    assert measured.status_code == 200, measured.text
    assert {k: measured.json()[k] for k in ("clients", "segments", "segments_total")} == {
        "clients": 5,
        "segments": 2,
        "segments_total": 5,
    }

    # Laid out: its messages, less the one that cannot be rendered, at the mean.
    async with db.sessions() as session:
        clients = (await session.execute(sa.select(Client).order_by(Client.id))).scalars()
        session.add_all(
            Message(
                dispatch_id=created["id"],
                client_id=client.id,
                status="unrendered" if not client.attributes else "pending",
            )
            for client in clients
        )
        await session.commit()
    laid_out = (await api.get(f"{DISPATCHES}/{created['id']}")).json()
    assert (laid_out["messages"]["total"], laid_out["segments_total"]) == (5, 5)

    # A resend's audience is the first's clients of those statuses, estimated the same way.
    async with db.sessions() as session:
        await session.execute(
            sa.update(message_t).where(message_t.c.status == "pending").values(status="failed")
        )
        await session.execute(
            sa.update(dispatch_t).where(dispatch_t.c.id == created["id"]).values(status="completed")
        )
        await session.commit()
    times = {k: payload()[k] for k in ("start_at", "end_at")}
    resent = await api.post(
        f"{DISPATCHES}/{created['id']}/resend",
        json={**times, "statuses": ["failed", "unrendered"]},
    )
    assert resent.status_code == 201, resent.text
    answer = resent.json()
    assert (answer["audience"], answer["segments"], answer["segments_total"]) == (5, 2, 5)


async def test_a_plain_text_is_estimated_without_reading_a_client(db: Database) -> None:
    for _ in range(2):
        await make_client(db, tag="vip")
    with statements(db) as seen:
        async with db.sessions() as session:
            count = await statistics_service.audience_count(
                session=session, operator_codes=[], tags=["vip"], text="Ж" * 200
            )
    assert (count.clients, count.segments, count.segments_total) == (2, 3, 6)
    assert len(seen) == 1 and "count(" in seen[0]  # the audience's count, nothing else


def test_the_estimate_rounds_up() -> None:
    estimate = Estimate(Encoding.UCS2, segments=2, mean=Fraction(5, 4))
    assert (estimate.total(3), estimate.total(4), estimate.total(0)) == (4, 5, 0)
    assert Estimate.of_text("Ж" * 71).total(3) == 6


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements run meanwhile on the database's engine."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    engine = db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


async def test_the_admin_form_previews_through_the_same_service(
    api_app: FastAPI, db: Database
) -> None:
    from tests.api.test_admin import csrf_of, signed_in

    anna = await make_client(db, tag="vip", attributes={"name": "Анна <b>"})
    await make_client(db, tag="vip")
    async with signed_in(api_app) as client:
        form = (await client.get("/admin/dispatches/new")).text
        assert 'id="text-preview"' in form and 'hx-post="/admin/dispatches/preview"' in form
        fields = {"csrf": csrf_of(form), "text": NAMED, "tags": "vip"}
        shown = (await client.post("/admin/dispatches/preview", data=fields)).text
        assert "2</strong> clients match now · about <strong" in shown
        assert '"audience-parts">1</strong> SMS part in all (UCS-2)' in shown
        assert "personal text: name" in shown
        assert "<strong>1</strong> client lacks a key" in shown
        assert f'<tr data-client="{anna.id}">' in shown
        assert "Здравствуйте, Анна &lt;b&gt;!" in shown  # markup shown as text
        assert "no name: not sent" in shown
        refused = await client.post(
            "/admin/dispatches/preview", data={**fields, "text": REFUSED[2][0]}
        )
        assert 'id="preview-problem"' in refused.text and "the filter `upper`" in refused.text
        no_filter = await client.post("/admin/dispatches/preview", data={**fields, "tags": ""})
        assert "no filter: every client, which needs" in no_filter.text
        without_csrf = await client.post("/admin/dispatches/preview", data={"text": NAMED})
        assert without_csrf.status_code == 403
