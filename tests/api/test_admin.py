"""The admin page's session over HTTP: sign-in with a token, expired and forged tokens refused,
CSRF on every form, markup shown as text, permissions followed; and the API reads it added."""

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from core.auth import embedded_tokens
from core.db import Database
from core.models import Client, Message
from tests.factories import make_client, make_dispatch, make_messages
from tests.support import api_client


def browser(app: FastAPI) -> httpx.AsyncClient:
    """A client without the API's bearer header: the admin page's cookie is all it has."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def token(app: FastAPI, *permissions: str, hours: float = 1) -> str:
    tokens = embedded_tokens(app.state.settings)
    lifetime = timedelta(hours=hours)
    if hours < 0:  # issued two hours ago, for an hour
        past = datetime.now(UTC) - timedelta(hours=2)
        return tokens.mint(subject="ann", lifetime=timedelta(hours=1), now=past)
    if permissions:
        return tokens.mint(subject="ann", permissions=frozenset(permissions), lifetime=lifetime)
    return tokens.mint(subject="ann", lifetime=lifetime)


@contextlib.asynccontextmanager
async def signed_in(app: FastAPI, *permissions: str) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(app) as client:
        response = await client.post("/admin/login", data={"token": token(app, *permissions)})
        assert response.status_code == 303, response.text
        yield client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page[:500]
    return found.group(1)


async def test_sign_in_and_out(api_app: FastAPI) -> None:
    async with browser(api_app) as client:
        first = await client.get("/admin")
        assert first.status_code == 303 and first.headers["location"] == "/admin/login"
        response = await client.post("/admin/login", data={"token": token(api_app)})
        assert response.status_code == 303
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/admin" in cookie
        overview = await client.get("/admin")
        assert overview.status_code == 200 and "Messages by status" in overview.text
        policy = overview.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert overview.headers["x-frame-options"] == "DENY"
        out = await client.post("/admin/logout", data={"csrf": csrf_of(overview.text)})
        assert out.status_code == 303
        assert (await client.get("/admin")).status_code == 303


async def test_forged_and_expired_tokens_are_refused(api_app: FastAPI) -> None:
    valid = token(api_app)
    header, payload, signature = valid.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    expired = token(api_app, hours=-1)
    async with browser(api_app) as client:
        elsewhere = await client.post(
            "/admin/login", data={"token": valid}, headers={"Origin": "https://evil.example"}
        )
        assert elsewhere.status_code == 403 and "set-cookie" not in elsewhere.headers
        for bad, reason in ((forged, "not signed in"), (expired, "expired"), ("x", "not")):
            response = await client.post("/admin/login", data={"token": bad})
            assert response.status_code == 401 and reason in response.text
        # A cookie set by hand is checked on every request as the API checks a token.
        client.cookies.set("mailing_admin", expired, path="/admin")
        page = await client.get("/admin")
        assert page.status_code == 303 and "expired" in page.headers["location"]


async def test_every_form_needs_this_sessions_csrf_token(api_app: FastAPI, db: Database) -> None:
    async with signed_in(api_app) as client:
        page = await client.get("/admin/clients/new")
        csrf = csrf_of(page.text)
        form = {"phone": "79161234567", "tag": "a"}
        assert (await client.post("/admin/clients", data=form)).status_code == 403
        wrong = {**form, "csrf": "0" * 64}
        assert (await client.post("/admin/clients", data=wrong)).status_code == 403
        other_site = await client.post(
            "/admin/clients",
            data={**form, "csrf": csrf},
            headers={"Origin": "https://evil.example"},
        )
        assert other_site.status_code == 403
        async with db.sessions() as session:
            assert (await session.scalar(sa.select(sa.func.count()).select_from(Client))) == 0
        made = await client.post("/admin/clients", data={**form, "csrf": csrf})
        assert made.status_code == 303
        # htmx requests carry it in a header instead.
        overview = await client.get("/admin")
        assert f'"X-CSRF-Token": "{csrf}"' in overview.text


async def test_markup_in_data_shows_as_text(api_app: FastAPI, db: Database) -> None:
    await make_client(db, tag="<script>alert(1)</script>")
    await make_dispatch(db, text='<img src=x onerror="alert(2)">')
    async with signed_in(api_app) as client:
        clients = (await client.get("/admin/clients")).text
        assert "<script>alert(1)" not in clients
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in clients
        dispatches = (await client.get("/admin/dispatches")).text
        assert "<img src=x" not in dispatches and "&lt;img src=x" in dispatches


async def test_a_reader_sees_no_write_buttons_and_is_refused(
    api_app: FastAPI, db: Database
) -> None:
    async with signed_in(api_app, "dispatches:read", "clients:read") as client:
        page = await client.get("/admin/dispatches")
        assert page.status_code == 200
        assert "New dispatch" not in page.text
        assert "Add a client" not in (await client.get("/admin/clients")).text
        csrf = csrf_of(page.text)
        refused = await client.post(
            "/admin/dispatches", data={"csrf": csrf, "text": "x", "all": "on"}
        )
        assert refused.status_code == 403 and "dispatches:write" in refused.text
        assert (await client.get("/admin/dispatches/new")).status_code == 403


async def test_a_dispatch_made_from_the_form(api_app: FastAPI, db: Database) -> None:
    await make_client(db, tag="vip")
    async with signed_in(api_app) as client:
        form = (await client.get("/admin/dispatches/new")).text
        preview = await client.post(
            "/admin/dispatches/preview", data={"csrf": csrf_of(form), "tags": "vip, none"}
        )
        assert "<strong>1</strong> client matches now" in preview.text
        values = {
            "csrf": csrf_of(form),
            "zone": "Europe/Moscow",
            "start_at": "2031-01-01T10:00",
            "end_at": "2031-01-01T09:00",
            "text": "Hello",
            "tags": "vip",
        }
        refused = await client.post("/admin/dispatches", data=values)
        assert refused.status_code == 422 and "choose a time after the start" in refused.text
        made = await client.post("/admin/dispatches", data={**values, "end_at": "2031-01-02T10:00"})
        assert made.status_code == 303
        page = await client.get(made.headers["location"])
        assert "scheduled" in page.text and "Hello" in page.text


async def test_the_reads_the_page_needs_are_in_the_api(
    api: httpx.AsyncClient, db: Database
) -> None:
    clients = [await make_client(db, tag="vip"), await make_client(db, tag="x")]
    dispatch = await make_dispatch(db)
    messages = await make_messages(db, dispatch, clients, cohort=None)
    now = datetime.now(UTC)
    async with db.sessions() as session:
        await session.execute(
            sa.update(Message)
            .where(Message.id == messages[0].id)
            .values(status="sent", sent_at=now, attempts=2)
        )
        await session.execute(
            sa.update(Message)
            .where(Message.id == messages[1].id)
            .values(status="failed", last_error="HTTP 400: bad phone", attempts=1)
        )
        await session.commit()
    audience = (await api.get("/api/v1/stats/audience", params={"tag": ["vip"]})).json()
    assert audience["clients"] == 1
    everyone = (await api.get("/api/v1/stats/audience")).json()
    assert everyone["clients"] == 2
    hourly = (await api.get("/api/v1/stats/timeline", params={"hours": 3})).json()
    assert sum(point["sent"] for point in hourly) == 1 and len(hourly) >= 3
    remote = (await api.get("/api/v1/stats/remote")).json()
    assert (remote["attempts"], remote["sent"], remote["failed"]) == (3, 1, 1)
    assert abs(remote["error_rate"] - 2 / 3) < 0.001
    url = f"/api/v1/dispatches/{dispatch.id}"
    minutes = (await api.get(f"{url}/timeline")).json()
    assert [point["sent"] for point in minutes] == [1]
    failures = (await api.get(f"{url}/failures")).json()
    assert failures == [{"status": "failed", "reason": "HTTP 400: bad phone", "count": 1}]
    progress = (await api.get(f"{url}/progress")).json()
    assert progress["available"] is False  # no workflow for a row made by hand
    search = await api.get(
        "/api/v1/clients", params={"tag": ["vip", "x"], "phone": clients[0].phone[:6]}
    )
    assert {c["id"] for c in search.json()["items"]} >= {clients[0].id}
    assert (await api.get(f"{url}/timeline", params={"bucket": "day"})).status_code == 422
    assert now - timedelta(hours=1) < datetime.fromisoformat(minutes[0]["at"]) <= now


async def test_an_unknown_dispatch_is_a_page_saying_so(api_app: FastAPI) -> None:
    async with signed_in(api_app) as client:
        page = await client.get("/admin/dispatches/999999")
        assert page.status_code == 404
        assert "<h1>Not found</h1>" in page.text and "dispatch 999999 not found" in page.text


async def test_the_root_leads_to_the_admin_page(api_app: FastAPI) -> None:
    async with api_client(api_app) as client:
        response = await client.get("/")
        assert response.status_code == 307 and response.headers["location"] == "/admin"


async def test_the_pages_show_routes_and_sms_parts(api_app: FastAPI, db: Database) -> None:
    from core.models import send_route_t
    from tests.factories import make_routed_messages

    dispatch = await make_dispatch(db, text="Привет")
    clients = [await make_client(db) for _ in range(2)]
    await make_routed_messages(
        db, dispatch, [(clients[0], "sent", "default", 1), (clients[1], "pending", None, None)]
    )
    now = datetime.now(UTC)
    async with db.sessions() as session:
        await session.execute(
            sa.insert(send_route_t).values(
                name="default",
                state="open",
                since=now,
                down_since=now,
                probe_at=now,
                last_error="connection refused",
                last_error_at=now,
            )
        )
        await session.commit()
    async with signed_in(api_app) as client:
        overview = (await client.get("/admin")).text
        routes = overview.split('id="routes"')[1].split("</table>")[0]
        assert "default" in routes and "route-open" in routes
        assert "connection refused" in routes
        page = (await client.get(f"/admin/dispatches/{dispatch.id}")).text
        assert '<th scope="col">Route</th><th scope="col">SMS parts</th>' in page
        assert '<td data-label="Route">default</td><td data-label="SMS parts">1</td>' in page
        assert "6 chars · UCS-2 · 1 SMS each; 2 SMS for its 2 messages" in page
        only = await client.get(f"/admin/dispatches/{dispatch.id}", params={"route": "default"})
        assert "1 message through default" in only.text
        retired = await client.get(f"/admin/dispatches/{dispatch.id}", params={"route": "old"})
        assert "0 messages through old" in retired.text
        # The cohorts come apart (its workers answer for them): the page only asks for them.
        assert f'hx-get="/admin/dispatches/{dispatch.id}/progress"' in page
        assert 'id="cohorts"' not in page
        cohorts = await client.get(f"/admin/dispatches/{dispatch.id}/progress")
        assert cohorts.status_code == 200
        assert "No workflow answers for it now" in cohorts.text  # a row made by hand
        assert (await client.get("/admin/dispatches/999999/progress")).status_code == 404


async def test_the_form_counts_sms_parts_and_normalizes(api_app: FastAPI, db: Database) -> None:
    async with signed_in(api_app) as client:
        form = (await client.get("/admin/dispatches/new")).text
        assert "0 chars · GSM-7 · 1 SMS" in form
        size = await client.get("/admin/text-size", params={"text": "Ж" * 200})
        assert "200 chars · UCS-2 · 3 SMS" in size.text
        assert 'id="text-length"' in size.text and "over" not in size.text
        quoted = {"text": "“Hi” — " + "x" * 70, "normalize_text": "on"}
        normalized = await client.get("/admin/text-size", params=quoted)
        assert "77 chars · GSM-7 · 1 SMS (normalized from UCS-2 · 2 SMS)" in normalized.text
        long = await client.get("/admin/text-size", params={"text": "Ж" * 800})
        assert "UCS-2 · 12 SMS · more than the 10 allowed" in long.text

        values = {
            "csrf": csrf_of(form),
            "zone": "Europe/Moscow",
            "start_at": "2031-01-01T10:00",
            "end_at": "2031-01-02T10:00",
            "text": "Ж" * 800,
            "all": "on",
        }
        refused = await client.post("/admin/dispatches", data=values)
        assert refused.status_code == 422
        assert ">Text</a>: 800 characters make 12 SMS parts (UCS-2): at most 10" in refused.text
        assert "more than the 10 allowed" in refused.text  # the counter, as it was sent
        made = await client.post(
            "/admin/dispatches", data={**values, "text": "“Sale” — now", "normalize_text": "on"}
        )
        assert made.status_code == 303, made.text
        page = await client.get(made.headers["location"])
        assert "&#34;Sale&#34; - now" in page.text and " · GSM-7 · " in page.text


async def test_the_zone_of_the_pages_times_is_kept_in_a_cookie(api_app: FastAPI) -> None:
    async with signed_in(api_app) as client:
        page = (await client.get("/admin/zone", params={"next": "/admin/clients"})).text
        assert page.index("Europe/Kaliningrad") < page.index("America/New_York")
        form = {"csrf": csrf_of(page), "zone": "America/New_York", "next": "/admin/clients"}
        chosen = await client.post("/admin/zone", data=form)
        assert chosen.status_code == 303 and chosen.headers["location"].startswith(
            "/admin/clients?notice=Times%20are%20now%20shown%20in%20America/New_York"
        )
        assert "Times in America/New_York" in (await client.get("/admin/clients")).text
        # Back to a page of the admin only; an unknown zone is refused and changes nothing.
        away = await client.post("/admin/zone", data={**form, "next": "https://elsewhere"})
        assert away.headers["location"].startswith("/admin?notice=")
        unknown = await client.post("/admin/zone", data={**form, "zone": "Mars/Olympus"})
        assert "Mars/Olympus%20is%20not%20a%20time%20zone" in unknown.headers["location"]
        assert "Times in America/New_York" in (await client.get("/admin/clients")).text
