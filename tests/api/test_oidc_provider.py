"""Authentication against a real OpenID provider: oidc-provider (panva, the certified Node.js
implementation) run with Node by tests/oidc/provider.mjs, installed by the tests themselves
under .data/npm. Machine tokens, the admin page's sign-in through the provider's own login
page (public and confidential clients), refresh, sign-out, key rotation, the provider down.

What a real provider cannot be made to do (forged keys, a malformed JWKS) stays with the fake
provider of test_auth.py."""

import asyncio
import json
import platform
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus, urljoin, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from jose import jwt
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from api.admin.session import SEALED_COOKIE, SEALED_PARTS, ProviderSession, ProviderSessions
from api.main import create_app
from core.auth import Permission, VerifiedTokens
from core.db import Database
from core.settings import Settings
from devstack.embedded import free_port
from devstack.npm import ensure_npm_package
from devstack.processes import stop_process
from tests.factories import make_dispatch
from tests.support import Queues, settings_for

# Pinned by name and version: what these tests ran against.
OIDC_PROVIDER = ("oidc-provider", "9.13.3")
# oidc-provider 9 runs on Node.js 22 LTS or later: an older system Node (Debian 12 has 18) is
# replaced by this one, a Node.js build from the npm registry like the package itself.
NODE_VERSION = "22.23.5"
NODE_ARCH = {"x86_64": "x64", "aarch64": "arm64"}
SCRIPT = Path(__file__).resolve().parent.parent / "oidc" / "provider.mjs"
AUDIENCE = "urn:mailing:api"
OTHER_API = "urn:billing:api"
# Characters that HTTP Basic must carry form-urlencoded (RFC 6749 2.3.1).
SECRET = "s3cret:with/special+chars"
API = "http://api"
CLIENTS = "/api/v1/clients"
DISPATCHES = "/api/v1/dispatches"


@dataclass
class RealProvider:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def discovery(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{self.issuer}/.well-known/openid-configuration")
            response.raise_for_status()
            return dict(response.json())

    async def machine_token(self, scope: str, resource: str = AUDIENCE) -> str:
        """A client_credentials token of the `machine` client (secret by HTTP Basic)."""
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{self.issuer}/token",
                data={"grant_type": "client_credentials", "scope": scope, "resource": resource},
                # RFC 6749 2.3.1: form-urlencoded, then Basic.
                auth=httpx.BasicAuth("machine", quote_plus(SECRET)),
            )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def control(self, what: str, **body: Any) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{self.issuer}/_test/{what}", json=body)
        response.raise_for_status()
        return dict(response.json())

    def stop(self) -> None:
        stop_process(self.process)


@cache
def node() -> str:
    """A Node.js that oidc-provider supports: the system's, else one installed for it."""
    system = shutil.which("node")
    if system is not None:
        version = subprocess.run([system, "--version"], capture_output=True, text=True).stdout
        if int(version.strip().lstrip("v").split(".")[0] or 0) >= 22:
            return system
    arch = NODE_ARCH.get(platform.machine())
    if arch is None:
        raise RuntimeError(f"no Node.js {NODE_VERSION} build for {platform.machine()}: install it")
    modules = ensure_npm_package(f"node-linux-{arch}", NODE_VERSION)
    return str(modules / f"node-linux-{arch}" / "bin" / "node")


def start_provider(log: Path) -> RealProvider:
    """oidc-provider on a free port, once its discovery document answers."""
    modules = ensure_npm_package(*OIDC_PROVIDER)
    port = free_port()
    config = {
        "port": port,
        "audience": AUDIENCE,
        "otherAudience": OTHER_API,
        "redirectUris": [f"{API}/admin/callback"],
        "postLogoutRedirectUris": [f"{API}/admin/signed-out"],
        "secret": SECRET,
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [node(), str(SCRIPT), str(modules), json.dumps(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    provider = RealProvider(port=port, process=process, log=log)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{provider.issuer}/.well-known/openid-configuration").raise_for_status()
            return provider
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                provider.stop()
                raise RuntimeError(f"oidc-provider did not start:\n{log.read_text()}") from None
            time.sleep(0.05)


@pytest.fixture(scope="module")
def real_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealProvider]:
    provider = start_provider(tmp_path_factory.mktemp("oidc") / "provider.log")
    yield provider
    provider.stop()


@pytest.fixture
async def provider(real_provider: RealProvider) -> AsyncIterator[RealProvider]:
    """The module's provider, its access tokens back to 10 minutes after the test."""
    yield real_provider
    await real_provider.control("ttl", seconds=600)


def app_for(
    settings: Settings, dev_env: WorkflowEnvironment, queues: Queues, issuer: str, **changes: Any
) -> FastAPI:
    configured = {
        "auth_issuer": issuer,
        "auth_audience": AUDIENCE,
        "auth_client_id": "admin-page",
        # oidc-provider grants offline_access only with it (OIDC Core 11).
        "auth_prompt": "consent",
        "auth_jwks_refresh_seconds": 0.2,
    }
    return create_app(settings_for(settings, dev_env.client, queues, **configured | changes))


@pytest.fixture
async def oidc_app(
    provider: RealProvider, settings: Settings, dev_env: WorkflowEnvironment, queues: Queues
) -> AsyncIterator[FastAPI]:
    app = app_for(settings, dev_env, queues, provider.issuer)
    async with app.router.lifespan_context(app):
        yield app


def api_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API)


def browser(app: FastAPI) -> httpx.AsyncClient:
    """One cookie jar for the app (in process, as http://api) and the provider (over HTTP),
    following redirects from one to the other as a browser does."""
    return httpx.AsyncClient(
        mounts={API: httpx.ASGITransport(app=app)},
        base_url=API,
        follow_redirects=True,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sign_in(page: httpx.AsyncClient, username: str) -> httpx.Response:
    """The admin page's sign-in through the provider's own login page, as a person does it:
    the button, the provider's form, the username posted; redirects followed back."""
    login = await page.get("/admin/login")
    assert 'href="/admin/login/oidc"' in login.text
    form = await page.get("/admin/login/oidc")
    assert form.status_code == 200 and "/interaction/" in form.url.path, form.text
    action = re.search(r'<form method="post" action="([^"]+)"', form.text)
    assert action, form.text
    return await page.post(urljoin(str(form.url), action.group(1)), data={"login": username})


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page[:500]
    return found.group(1)


def session_of(app: FastAPI, page: httpx.AsyncClient) -> ProviderSession:
    """The provider session sealed in the browser's cookies, opened as the app opens it."""
    jar = {cookie.name: cookie.value or "" for cookie in page.cookies.jar}
    names = [f"{SEALED_COOKIE}{n}" for n in range(SEALED_PARTS)]
    sealed = "".join(jar[name] for name in names if name in jar)
    assert sealed, sorted(jar)
    return ProviderSessions.of(app).open(sealed)


def sealed_cookies(page: httpx.AsyncClient) -> list[str]:
    return [cookie.name for cookie in page.cookies.jar if cookie.name.startswith(SEALED_COOKIE)]


async def test_machine_tokens_carry_their_scopes_and_nothing_more(
    oidc_app: FastAPI, provider: RealProvider
) -> None:
    token = await provider.machine_token("dispatches:read receipts:write clients:write")
    claims = jwt.get_unverified_claims(token)
    assert claims["aud"] == AUDIENCE and claims["sub"] == "machine"
    # The provider grants the client only what it may have.
    assert claims["scope"] == "dispatches:read receipts:write"
    async with api_of(oidc_app) as api:
        assert (await api.get(DISPATCHES, headers=bearer(token))).status_code == 200
        refused = await api.post(CLIENTS, json={"phone": "79161234567"}, headers=bearer(token))
        assert refused.status_code == 403 and "clients:write" in refused.json()["detail"]
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
        # A token the same provider issued for another API: not ours.
        other = await provider.machine_token("dispatches:read", resource=OTHER_API)
        wrong = await api.get(DISPATCHES, headers=bearer(other))
        assert wrong.status_code == 401 and "audience" in wrong.json()["detail"].lower()


async def test_key_rotation_is_followed_and_a_retired_key_refused(
    oidc_app: FastAPI,
    provider: RealProvider,
    settings: Settings,
    dev_env: WorkflowEnvironment,
    queues: Queues,
) -> None:
    async with api_of(oidc_app) as api:
        first = await provider.machine_token("dispatches:read")
        assert (await api.get(DISPATCHES, headers=bearer(first))).status_code == 200
        rotated = await provider.control("rotate")
        second = await provider.machine_token("dispatches:read")
        assert jwt.get_unverified_header(second)["kid"] == rotated["kid"]
        await asyncio.sleep(0.25)  # AUTH_JWKS_REFRESH_SECONDS since the last fetch
        assert (await api.get(DISPATCHES, headers=bearer(second))).status_code == 200
        assert (await api.get(DISPATCHES, headers=bearer(first))).status_code == 200
        # The older keys leave the provider's JWKS: a new app no longer takes their tokens.
        await provider.control("rotate", retire=True)
    fresh = app_for(settings, dev_env, queues, provider.issuer)
    async with fresh.router.lifespan_context(fresh), api_of(fresh) as api:
        stale = await api.get(DISPATCHES, headers=bearer(second))
        assert stale.status_code == 401 and "key id is unknown" in stale.json()["detail"]
        third = await provider.machine_token("dispatches:read")
        assert (await api.get(DISPATCHES, headers=bearer(third))).status_code == 200


async def test_the_operator_signs_in_through_the_providers_login_page(
    oidc_app: FastAPI, provider: RealProvider, db: Database
) -> None:
    dispatch = await make_dispatch(db, text="Through the provider")
    async with browser(oidc_app) as page:
        # What the sign-in asks for: every permission, a refresh token, for our API.
        start = await page.get("/admin/login/oidc", follow_redirects=False)
        asked = parse_qs(urlsplit(start.headers["location"]).query)
        assert set(asked["scope"][0].split()) == {
            "openid",
            "profile",
            "offline_access",
            *(str(p) for p in Permission),
        }
        assert asked["resource"] == [AUDIENCE] and asked["audience"] == [AUDIENCE]
        overview = await sign_in(page, "operator")
        assert overview.url == httpx.URL(f"{API}/admin"), overview.url
        assert overview.status_code == 200 and "operator" in overview.text
        assert 'href="/admin/dispatches/new"' in overview.text
        session = session_of(oidc_app, page)
        assert session.refresh_token and session.id_token
        claims = jwt.get_unverified_claims(session.access_token)
        assert claims["aud"] == AUDIENCE and len(claims["scope"].split()) == 7
        page_of_dispatch = (await page.get(f"/admin/dispatches/{dispatch.id}")).text
        assert 'id="cancel"' in page_of_dispatch and "/edit" in page_of_dispatch


async def test_a_reader_signs_in_and_sees_no_write_button(
    oidc_app: FastAPI, provider: RealProvider, db: Database
) -> None:
    dispatch = await make_dispatch(db, text="Read only")
    async with browser(oidc_app) as page:
        overview = await sign_in(page, "reader")
        assert overview.status_code == 200 and "reader" in overview.text
        assert "/admin/dispatches/new" not in overview.text
        session = session_of(oidc_app, page)
        scope = set(jwt.get_unverified_claims(session.access_token)["scope"].split())
        assert scope == {"dispatches:read", "clients:read"}
        shown = (await page.get(f"/admin/dispatches/{dispatch.id}")).text
        assert "Read only" in shown
        assert 'id="cancel"' not in shown and 'id="pause"' not in shown
        assert "/edit" not in shown and 'id="test-form"' not in shown
        # The server refuses what the page does not offer, as the API refuses the token.
        cancel = await page.post(
            f"/admin/dispatches/{dispatch.id}/cancel", data={"csrf": csrf_of(shown)}
        )
        assert cancel.status_code == 403 and "dispatches:control" in cancel.text
    async with api_of(oidc_app) as api:
        write = await api.post(
            CLIENTS, json={"phone": "79161234567"}, headers=bearer(session.access_token)
        )
        assert write.status_code == 403 and "clients:write" in write.json()["detail"]


@pytest.mark.parametrize(
    ("client_id", "method", "sent"),
    [("admin-basic", None, "basic"), ("admin-post", "client_secret_post", "form")],
)
async def test_a_confidential_client_signs_in_with_its_secret(
    provider: RealProvider,
    settings: Settings,
    dev_env: WorkflowEnvironment,
    queues: Queues,
    db: Database,
    client_id: str,
    method: str | None,
    sent: str,
) -> None:
    """AUTH_CLIENT_SECRET by HTTP Basic (the default) or in the form (client_secret_post)."""
    await provider.control("token-auth")
    for secret, works in ((SECRET, True), ("not-the-secret", False)):
        app = app_for(
            settings,
            dev_env,
            queues,
            provider.issuer,
            auth_client_id=client_id,
            auth_client_secret=SecretStr(secret),
            auth_token_endpoint_auth=method,
        )
        async with app.router.lifespan_context(app), browser(app) as page:
            landed = await sign_in(page, "operator")
            if works:
                assert landed.url.path == "/admin" and "operator" in landed.text
            else:
                assert landed.url.path == "/admin/login" and "invalid_client" in landed.text
    assert (await provider.control("token-auth"))["seen"] == [sent, sent]


async def test_the_session_is_refreshed_and_ends_when_the_provider_refuses(
    oidc_app: FastAPI, provider: RealProvider, db: Database
) -> None:
    await provider.control("ttl", seconds=4)  # renewed 2 s after each grant
    async with browser(oidc_app) as page:
        await sign_in(page, "operator")
        first = session_of(oidc_app, page)
        assert first.refresh_at - time.time() < 2.5
        await asyncio.sleep(max(first.refresh_at - time.time(), 0) + 0.1)
        again = await page.get("/admin")
        assert again.status_code == 200 and again.url.path == "/admin"
        assert "mailing_admin_sealed_0" in again.headers.get("set-cookie", "")
        second = session_of(oidc_app, page)
        assert second.access_token != first.access_token
        assert second.sid == first.sid  # the same session: its CSRF token still holds
        assert jwt.get_unverified_claims(second.access_token)["sub"] == "operator"
        # The provider revokes the grant: the next renewal is refused, and the user is out.
        async with httpx.AsyncClient() as http:
            revoked = await http.post(
                f"{provider.issuer}/token/revocation",
                data={"token": second.refresh_token, "client_id": "admin-page"},
            )
            assert revoked.status_code == 200, revoked.text
        await asyncio.sleep(max(second.refresh_at - time.time(), 0) + 0.1)
        out = await page.get("/admin")
        assert out.url.path == "/admin/login"
        assert "signed out: the identity provider did not renew the session" in out.text
        assert "invalid_grant" in out.text
        assert not sealed_cookies(page)


async def test_sign_out_ends_the_providers_session_too(
    oidc_app: FastAPI, provider: RealProvider, db: Database
) -> None:
    end_session = (await provider.discovery())["end_session_endpoint"]
    async with browser(oidc_app) as page:
        overview = await sign_in(page, "operator")
        session = session_of(oidc_app, page)
        out = await page.post(
            "/admin/logout", data={"csrf": csrf_of(overview.text)}, follow_redirects=False
        )
        assert out.status_code == 303
        target = urlsplit(out.headers["location"])
        assert f"{target.scheme}://{target.netloc}{target.path}" == end_session
        query = parse_qs(target.query)
        assert query["id_token_hint"] == [session.id_token]
        assert query["post_logout_redirect_uri"] == [f"{API}/admin/signed-out"]
        assert not sealed_cookies(page)
        # The provider asks to confirm, then sends the browser back.
        confirm = await page.get(out.headers["location"])
        form = re.search(
            r'action="([^"]+)"><input type="hidden" name="xsrf" value="([^"]+)"', confirm.text
        )
        assert form, confirm.text
        back = await page.post(form.group(1), data={"xsrf": form.group(2), "logout": "yes"})
        assert back.url.path == "/admin/login" and "signed out" in back.text
        assert (await page.get("/admin", follow_redirects=False)).status_code == 303
        # The provider's session is over too: signing in asks for the username again.
        again = await page.get("/admin/login/oidc")
        assert "/interaction/" in again.url.path and 'name="login"' in again.text


async def test_the_provider_down_is_503_and_cached_keys_still_check(
    settings: Settings,
    dev_env: WorkflowEnvironment,
    queues: Queues,
    tmp_path: Path,
) -> None:
    own = await asyncio.to_thread(start_provider, tmp_path / "provider.log")
    try:
        token = await own.machine_token("dispatches:read")
        known = app_for(settings, dev_env, queues, own.issuer)
        async with known.router.lifespan_context(known), api_of(known) as api:
            assert (await api.get(DISPATCHES, headers=bearer(token))).status_code == 200
            await asyncio.to_thread(own.stop)
            # Its keys are cached: a token it signed still passes (after the short-lived
            # cache of checked tokens, too).
            known.state.verifier.verified = VerifiedTokens()
            assert (await api.get(DISPATCHES, headers=bearer(token))).status_code == 200
        unknown = app_for(settings, dev_env, queues, own.issuer)
        async with unknown.router.lifespan_context(unknown), api_of(unknown) as api:
            down = await api.get(DISPATCHES, headers=bearer(token))
            assert down.status_code == 503 and "identity provider" in down.json()["detail"]
        async with browser(unknown) as page:
            refused = await page.get("/admin/login/oidc")
            assert refused.url.path == "/admin/login" and "identity provider" in refused.text
    finally:
        await asyncio.to_thread(own.stop)
