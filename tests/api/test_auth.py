"""Authentication and permissions against a fake OIDC provider served over real HTTP (its own
RSA and EC keys, discovery document and JWKS), and in the embedded mode: what a real provider
cannot be made to do (forged keys, a malformed JWKS, tokens shaped as Keycloak's or Entra ID's,
an access token that expires before its session expected). The real one: test_oidc_provider.py."""

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from http.cookiejar import Cookie
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from jose import jwk, jwt
from pydantic import ValidationError
from temporalio.testing import WorkflowEnvironment

from api.admin.session import SEALED_COOKIE, ProviderSession, ProviderSessions
from api.main import create_app
from core.auth import ALL_PERMISSIONS, ClaimRules, embedded_tokens, permissions_of
from core.settings import PROJECT_ROOT, Settings
from devstack.embedded import free_port
from tests.support import Queues, api_client, auth_headers, settings_for

CLIENTS = "/api/v1/clients"
AUDIENCE = "mailing-api"


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, alg: str) -> Any:
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    data = jwk.construct(public.decode(), alg).to_dict()
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


@dataclass
class Provider:
    """A fake OIDC provider: discovery document and JWKS over HTTP; counts JWKS fetches."""

    port: int
    rsa_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    keys: list[Any] = field(default_factory=list)
    jwks_fetches: int = 0
    # Codes handed out by /authorize: code -> (code challenge, redirect URI, client id).
    codes: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    # Refresh tokens it honours (each once: rotated), and the refreshes it answered.
    refresh_tokens: set[str] = field(default_factory=set)
    refreshes: int = 0
    # Claims added to the access tokens the token endpoint issues.
    issued_claims: dict[str, Any] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def token(
        self, *, key: Any = None, alg: str = "RS256", kid: str = "rsa-1", **claims: Any
    ) -> str:
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "auth0|ann",
            "iat": now,
            "exp": now + 600,
            "permissions": sorted(ALL_PERMISSIONS),
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        signing = key if key is not None else (self.rsa_key if alg == "RS256" else self.ec_key)
        return str(jwt.encode(body, pem(signing), algorithm=alg, headers={"kid": kid}))

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "jwks_uri": f"{self.issuer}.well-known/jwks.json",
                "authorization_endpoint": f"{self.issuer}authorize",
                "token_endpoint": f"{self.issuer}oauth/token",
            }
        )

    async def authorize(self, request: web.Request) -> web.Response:
        """A user already signed in at the provider, who consents at once: back to the
        client with a code (only for S256 challenges)."""
        query = request.query
        if query.get("code_challenge_method") != "S256" or query.get("response_type") != "code":
            return web.json_response({"error": "invalid_request"}, status=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = (query["code_challenge"], query["redirect_uri"], query["client_id"])
        target = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query["state"]})
        raise web.HTTPFound(target)

    def tokens(self) -> web.Response:
        refresh = secrets.token_urlsafe(16)
        self.refresh_tokens.add(refresh)
        body = {"access_token": self.token(**self.issued_claims), "refresh_token": refresh}
        return web.json_response({**body, "token_type": "Bearer", "expires_in": 600})

    async def exchange(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") == "refresh_token":
            spent = str(form.get("refresh_token"))
            if spent not in self.refresh_tokens:
                return web.json_response({"error": "invalid_grant"}, status=400)
            self.refresh_tokens.discard(spent)
            self.refreshes += 1
            return self.tokens()
        challenge, redirect_uri, client_id = self.codes.pop(str(form.get("code")), ("", "", ""))
        digest = hashlib.sha256(str(form.get("code_verifier", "")).encode()).digest()
        proof = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        if (
            not challenge
            or proof != challenge
            or form.get("redirect_uri") != redirect_uri
            or form.get("client_id") != client_id
        ):
            return web.json_response({"error": "invalid_grant"}, status=400)
        return self.tokens()

    async def jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": self.keys})


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    provider = Provider(port=free_port())
    provider.keys = [
        public_jwk(provider.rsa_key, "rsa-1", "RS256"),
        public_jwk(provider.ec_key, "ec-1", "ES256"),
        {"kid": "broken", "kty": "RSA", "alg": "RS256", "e": "AQAB"},  # no modulus
    ]
    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", provider.discovery)
    app.router.add_get("/.well-known/jwks.json", provider.jwks)
    app.router.add_get("/authorize", provider.authorize)
    app.router.add_post("/oauth/token", provider.exchange)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", provider.port).start()
    yield provider
    await runner.cleanup()


async def app_with(
    settings: Settings, dev_env: WorkflowEnvironment, queues: Queues, **changes: Any
) -> tuple[FastAPI, Settings]:
    s = settings_for(settings, dev_env.client, queues, **changes)
    return create_app(s), s


@pytest.fixture
async def oidc_api(
    provider: Provider, settings: Settings, dev_env: WorkflowEnvironment, queues: Queues
) -> AsyncIterator[httpx.AsyncClient]:
    app, _ = await app_with(
        settings,
        dev_env,
        queues,
        auth_issuer=provider.issuer,
        auth_audience=AUDIENCE,
        auth_client_id="docs-spa",
        auth_jwks_refresh_seconds=1.0,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(provider: Provider) -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
    claims = json.loads(base64.urlsafe_b64decode(provider.token().split(".")[1] + "==").decode())
    return f"{header}.{b64(json.dumps(claims).encode())}."


def with_header(provider: Provider, header: dict[str, str]) -> str:
    _, payload, signature = provider.token().split(".")
    return f"{b64(json.dumps(header).encode())}.{payload}.{signature}"


def hs256_with_public_key(provider: Provider) -> str:
    """The classic confusion attack: HMAC keyed with the provider's public key."""
    public = provider.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = provider.token().split(".")[1]
    signature = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


async def refused(api: httpx.AsyncClient, headers: dict[str, str], why: str) -> None:
    response = await api.get(CLIENTS, headers=headers)
    assert response.status_code == 401, (why, response.text)
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="mailing"'), why
    assert why in response.json()["detail"], (why, response.json())


async def test_provider_tokens_pass_and_every_forgery_is_refused(
    oidc_api: httpx.AsyncClient, provider: Provider, settings: Settings
) -> None:
    api = oidc_api
    assert (await api.get(CLIENTS, headers=bearer(provider.token()))).status_code == 200
    es256 = provider.token(alg="ES256", kid="ec-1")
    assert (await api.get(CLIENTS, headers=bearer(es256))).status_code == 200
    # Auth0's `scope` works as well as its `permissions`.
    scoped = provider.token(permissions=None, scope="openid clients:read")
    assert (await api.get(CLIENTS, headers=bearer(scoped))).status_code == 200

    now = int(time.time())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = [
        (provider.token(exp=now - 120), "expired"),
        (provider.token(nbf=now + 600), "not yet valid"),
        (provider.token(iss="https://evil.example/"), "claims are not accepted"),
        (provider.token(aud="another-api"), "claims are not accepted"),
        (provider.token(key=other_key), "not valid"),
        (unsigned(provider), "'none' are not accepted"),
        (hs256_with_public_key(provider), "'HS256' are not accepted"),
        (provider.token(kid="rotated-away"), "key id is unknown"),
        # An EC-signed token naming the RSA key (and the reverse): refused, never a 500.
        (provider.token(alg="ES256", kid="rsa-1"), "does not sign ES256"),
        (provider.token(alg="RS256", kid="ec-1"), "does not sign RS256"),
        (provider.token(kid="broken"), "its key does not fit"),
        (provider.token(aud=None), "missing required key"),
        (provider.token(iss=None), "missing required key"),
        (with_header(provider, {"alg": "\u0101", "kid": "rsa-1"}), "are not accepted"),
        (embedded_tokens(settings).mint(subject="local"), "key id is unknown"),
        ("not.a.jwt", "not a JWT"),
    ]
    for token, why in cases:
        await refused(api, bearer(token), why)
    await refused(api, {"Authorization": "Basic dXNlcjpwdw=="}, "Bearer token is required")
    no_token = await api.get(CLIENTS)
    assert no_token.status_code == 401
    assert no_token.headers["WWW-Authenticate"] == 'Bearer realm="mailing"'
    # The error never echoes the token.
    forged = provider.token(key=other_key)
    assert forged not in (await api.get(CLIENTS, headers=bearer(forged))).text


async def test_a_missing_permission_is_403_naming_it(
    oidc_api: httpx.AsyncClient, provider: Provider
) -> None:
    reader = bearer(provider.token(permissions=["clients:read", "dispatches:read"]))
    assert (await oidc_api.get(CLIENTS, headers=reader)).status_code == 200
    response = await oidc_api.post(CLIENTS, json={"phone": "79161234567"}, headers=reader)
    assert response.status_code == 403
    assert "clients:write" in response.json()["detail"]
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    pause = await oidc_api.post("/api/v1/dispatches/1/pause", headers=reader)
    assert (pause.status_code, "dispatches:control" in pause.text) == (403, True)


async def test_keys_refresh_once_for_an_unknown_key_id(
    oidc_api: httpx.AsyncClient, provider: Provider
) -> None:
    assert (await oidc_api.get(CLIENTS, headers=bearer(provider.token()))).status_code == 200
    assert provider.jwks_fetches == 1
    # The provider rotates in a new key: the first token naming it makes the API fetch again
    # (once the refresh interval since the last fetch has passed).
    await asyncio.sleep(1.1)
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    provider.keys.append(public_jwk(rotated, "rsa-2", "RS256"))
    token = provider.token(key=rotated, kid="rsa-2")
    assert (await oidc_api.get(CLIENTS, headers=bearer(token))).status_code == 200
    assert provider.jwks_fetches == 2
    # Unknown key ids within the interval do not make it fetch again (no amplification).
    for n in range(5):
        await refused(oidc_api, bearer(provider.token(kid=f"bogus-{n}")), "key id is unknown")
    assert provider.jwks_fetches == 2


async def test_an_unreachable_provider_is_503_and_nothing_passes(
    settings: Settings, dev_env: WorkflowEnvironment, queues: Queues, provider: Provider
) -> None:
    app, _ = await app_with(
        settings, dev_env, queues, auth_issuer=f"http://127.0.0.1:{free_port()}/"
    )
    async with app.router.lifespan_context(app), api_client(app) as api:
        response = await api.get(CLIENTS, headers=bearer(provider.token()))
        assert response.status_code == 503
        assert "identity provider" in response.json()["detail"]
        # Within the refresh interval nobody waits for another attempt: 503 at once.
        started = time.monotonic()
        for n in range(5):
            again = await api.get(CLIENTS, headers=bearer(provider.token(kid=f"k{n}")))
            assert again.status_code == 503
        assert time.monotonic() - started < 1.0
        assert (await api.get("/healthz")).status_code == 200


async def test_embedded_mode_tokens_and_permissions(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    assert (await api.get(CLIENTS)).status_code == 200  # the fixture's token
    anonymous = await api.get(CLIENTS, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    reader = auth_headers(settings, frozenset({"clients:read"}))
    assert (await api.get(CLIENTS, headers=reader)).status_code == 200
    denied = await api.get("/api/v1/dispatches", headers=reader)
    assert denied.status_code == 403 and "dispatches:read" in denied.text
    for open_path in ("/healthz", "/openapi.json", "/docs", "/redoc"):
        assert (await api.get(open_path, headers={"Authorization": ""})).status_code == 200


async def test_make_token_prints_a_token_the_api_takes(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    env = {"AUTH_SIGNING_KEY_FILE": str(settings.auth_signing_key_file), "PATH": "/usr/bin:/bin"}
    made = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "devstack.token", "--permissions", "clients:read", "--hours", "1"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    printed = made.stdout.strip()
    ok = await api.get(CLIENTS, headers=bearer(printed))
    assert ok.status_code == 200
    claims = jwt.get_unverified_claims(printed)
    assert claims["permissions"] == ["clients:read"]
    assert claims["exp"] - claims["iat"] == 3600
    wrong = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "devstack.token", "--permissions", "everything"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2 and "unknown permissions" in wrong.stderr


async def test_disabled_authentication_is_explicit_and_warned(
    settings: Settings,
    dev_env: WorkflowEnvironment,
    queues: Queues,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = await app_with(settings, dev_env, queues, auth_disabled=True)
    with caplog.at_level("WARNING"):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
                assert (await api.get(CLIENTS)).status_code == 200
    assert "AUTHENTICATION IS DISABLED" in caplog.text


def test_production_refuses_the_embedded_defaults() -> None:
    with pytest.raises(ValidationError) as refused_settings:
        Settings(environment="production", _env_file=None)  # type: ignore[call-arg]
    message = str(refused_settings.value)
    for needed in ("SEND_API_TOKEN", "AUTH_ISSUER", "DATABASE_URL", "TEMPORAL_ADDRESS"):
        assert needed in message
    Settings(  # type: ignore[call-arg]
        environment="production",
        send_api_token="real",
        auth_issuer="https://tenant.eu.auth0.com/",
        database_url="postgresql+asyncpg://db/mailing",
        temporal_address="temporal:7233",
        _env_file=None,
    )


async def test_docs_are_served_without_internet(api: httpx.AsyncClient) -> None:
    page = await api.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "/docs/assets/swagger-ui-bundle.js" in page.text
    script = await api.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    assert (await api.get("/docs/assets/swagger-ui.css")).status_code == 200
    redoc = await api.get("/redoc")
    assert "cdn" not in redoc.text.lower() and "fonts.googleapis" not in redoc.text
    assert (await api.get("/docs/assets/redoc.standalone.js")).status_code == 200
    schema = (await api.get("/openapi.json")).json()
    create = schema["paths"]["/api/v1/dispatches"]["post"]
    assert create["x-required-permission"] == "dispatches:write"
    assert "dispatches:write" in create["description"]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


async def test_docs_offer_the_providers_code_flow_with_pkce(
    oidc_api: httpx.AsyncClient, provider: Provider
) -> None:
    page = (await oidc_api.get("/docs")).text
    assert '"usePkceWithAuthorizationCodeGrant": true' in page
    assert '"clientId": "docs-spa"' in page
    schema = (await oidc_api.get("/openapi.json")).json()
    oidc = schema["components"]["securitySchemes"]["oidc"]
    assert oidc == {
        "type": "openIdConnect",
        "openIdConnectUrl": f"{provider.issuer}.well-known/openid-configuration",
    }
    pause = schema["paths"]["/api/v1/dispatches/{dispatch_id}/pause"]["post"]
    assert {"oidc": ["dispatches:control"]} in pause["security"]


async def test_the_admin_page_signs_in_with_the_providers_code_flow(
    provider: Provider, settings: Settings, dev_env: WorkflowEnvironment, queues: Queues
) -> None:
    """Authorization code with PKCE, end to end against the fake provider over HTTP."""
    app, _ = await app_with(
        settings,
        dev_env,
        queues,
        auth_issuer=provider.issuer,
        auth_audience=AUDIENCE,
        auth_client_id="admin-page",
    )
    async with app.router.lifespan_context(app):
        page = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
        async with page, httpx.AsyncClient() as outside:
            login = await page.get("/admin/login")
            assert 'href="/admin/login/oidc"' in login.text

            async def leave() -> str:
                """Starts a sign-in; the provider sends the browser back with a code."""
                start = await page.get("/admin/login/oidc")
                assert start.status_code == 303
                authorize = start.headers["location"]
                assert authorize.startswith(f"{provider.issuer}authorize?")
                assert "code_challenge_method=S256" in authorize
                assert "code_verifier" not in authorize
                back = await outside.get(authorize)
                assert back.status_code == 302
                return str(back.headers["location"]).removeprefix("http://api")

            # Another state than the one that left: refused, and that sign-in is over.
            forged = (await leave()).replace("state=", "state=x")
            refused = await page.get(forged)
            assert refused.status_code == 303 and "state" in refused.headers["location"]
            callback = await leave()
            signed = await page.get(callback)
            assert signed.status_code == 303 and signed.headers["location"] == "/admin"
            overview = await page.get("/admin")
            assert overview.status_code == 200 and "auth0|ann" in overview.text
            # A code works once, and only with the verifier of the sign-in that asked for it.
            fresh = await leave()
            state = fresh.split("state=")[1]
            reused = callback.split("state=")[0] + "state=" + state
            again = await page.get(reused)
            assert again.status_code == 303 and "exchanged" in again.headers["location"]


def test_the_default_claims_and_dotted_paths() -> None:
    # Auth0's `permissions` first; names that are no permission of ours count for nothing.
    auth0 = {"permissions": ["clients:read", "openid"], "scope": "dispatches:read"}
    assert permissions_of(auth0) == {"clients:read"}
    # Else `scope` (RFC 9068, Keycloak) and `scp`: Okta's list, Entra ID's string.
    assert permissions_of({"scope": "openid clients:read", "scp": ["dispatches:read"]}) == {
        "clients:read",
        "dispatches:read",
    }
    assert permissions_of({"scp": "dispatches:read receipts:write"}) == {
        "dispatches:read",
        "receipts:write",
    }
    rules = ClaimRules(
        paths=("https://mailing.example/roles", "resource_access.mailing.app.roles"),
        roles={"ops": frozenset({"dispatches:control"})},
    )
    claims = {
        "https://mailing.example/roles": ["ops"],  # Auth0's namespaced claim: taken whole
        "resource_access": {"mailing.app": {"roles": "clients:read"}},  # a key with a dot
        "scope": "clients:write",  # not where these rules look
    }
    assert rules.permissions(claims) == {"dispatches:control", "clients:read"}
    assert rules.permissions({"resource_access": {"mailing.app": {"roles": 7}}}) == frozenset()


def test_the_sign_in_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert set(defaults.auth_scopes.split()) == {
        "openid",
        "profile",
        "offline_access",
        *ALL_PERMISSIONS,
    }
    with pytest.raises(ValidationError, match="needs AUTH_CLIENT_SECRET"):
        Settings(auth_token_endpoint_auth="client_secret_post", _env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("AUTH_ROLE_PERMISSIONS", '{"mailing-viewer": ["dispatches:read"]}')
    read = Settings(_env_file=None)  # type: ignore[call-arg]
    assert read.auth_role_permissions == {"mailing-viewer": ["dispatches:read"]}
    with pytest.raises(ValidationError, match="AUTH_SESSION_KEY"):
        Settings(  # type: ignore[call-arg]
            environment="production",
            send_api_token="real",
            auth_issuer="https://id.example/realms/mailing",
            auth_client_id="admin-page",
            database_url="postgresql+asyncpg://db/mailing",
            temporal_address="temporal:7233",
            _env_file=None,
        )


def test_an_unknown_permission_in_the_role_mapping_stops_the_start(settings: Settings) -> None:
    wrong = settings.model_copy(
        update={
            "auth_issuer": "https://id.example/",
            "auth_role_permissions": {"mailing-operator": ["dispatches:read", "dispatches:launch"]},
        }
    )
    with pytest.raises(
        ValueError, match="'mailing-operator' to unknown permissions dispatches:launch"
    ):
        create_app(wrong)


async def test_keycloak_roles_through_the_role_mapping(
    provider: Provider, settings: Settings, dev_env: WorkflowEnvironment, queues: Queues
) -> None:
    """A Keycloak-shaped token: realm roles in `realm_access.roles`, a client's roles in
    `resource_access.<client>.roles`, mapped by AUTH_ROLE_PERMISSIONS."""
    app, _ = await app_with(
        settings,
        dev_env,
        queues,
        auth_issuer=provider.issuer,
        auth_audience=AUDIENCE,
        auth_permissions_claim="realm_access.roles, resource_access.mailing.roles",
        auth_role_permissions={
            "mailing-viewer": ["dispatches:read", "clients:read"],
            "mailing-controller": ["dispatches:control"],
        },
    )

    def keycloak(realm: list[str], client: list[str] | None = None, **claims: Any) -> str:
        access = {"mailing": {"roles": client or []}, "account": {"roles": ["manage-account"]}}
        shaped = {
            "permissions": None,
            "scope": "openid profile email",
            "realm_access": {"roles": ["offline_access", "default-roles-mailing", *realm]},
            "resource_access": access,
        }
        return provider.token(**shaped | claims)

    async with app.router.lifespan_context(app), api_client(app) as api:
        viewer = bearer(keycloak(["mailing-viewer"], ["mailing-controller"]))
        assert (await api.get(CLIENTS, headers=viewer)).status_code == 200
        assert (await api.get("/api/v1/dispatches", headers=viewer)).status_code == 200
        paused = await api.post("/api/v1/dispatches/999999/pause", headers=viewer)
        assert paused.status_code == 404  # past the permission check: no such dispatch
        write = await api.post(CLIENTS, json={"phone": "79161234567"}, headers=viewer)
        assert write.status_code == 403 and "clients:write" in write.json()["detail"]
        # A role named as a permission counts as it.
        writer = bearer(keycloak(["clients:write"]))
        assert (await api.post(CLIENTS, json={}, headers=writer)).status_code == 422
        # Authenticated, but no role gives a permission: 403 naming the one needed; the
        # `scope` claim is not read once AUTH_PERMISSIONS_CLAIM says where to look.
        nobody = bearer(keycloak([], scope="clients:read"))
        refused = await api.get(CLIENTS, headers=nobody)
        assert refused.status_code == 403 and "clients:read" in refused.json()["detail"]


async def test_entra_scopes_and_app_roles(
    provider: Provider, settings: Settings, dev_env: WorkflowEnvironment, queues: Queues
) -> None:
    """An Entra ID-shaped token: delegated scopes in the space-separated `scp`, application
    roles in the `roles` list, both with Entra's dotted names mapped to ours."""
    app, _ = await app_with(
        settings,
        dev_env,
        queues,
        auth_issuer=provider.issuer,
        auth_audience=AUDIENCE,
        auth_permissions_claim="scp,roles",
        auth_role_permissions={
            "Dispatches.Read": ["dispatches:read"],
            "Clients.Read": ["clients:read"],
            "Receipts.Write": ["receipts:write"],
        },
    )
    async with app.router.lifespan_context(app), api_client(app) as api:
        user = bearer(
            provider.token(permissions=None, scp="Dispatches.Read Clients.Read", ver="2.0")
        )
        assert (await api.get("/api/v1/dispatches", headers=user)).status_code == 200
        assert (await api.get(CLIENTS, headers=user)).status_code == 200
        write = await api.post(CLIENTS, json={"phone": "79161234567"}, headers=user)
        assert write.status_code == 403 and "clients:write" in write.json()["detail"]
        # An application's token (client credentials): app roles only.
        gateway = bearer(provider.token(permissions=None, roles=["Receipts.Write"]))
        assert (await api.post("/api/v1/receipts", json={}, headers=gateway)).status_code == 422
        read = await api.get("/api/v1/dispatches", headers=gateway)
        assert read.status_code == 403 and "dispatches:read" in read.json()["detail"]


def page_of(app: FastAPI) -> httpx.AsyncClient:
    """A browser: the app in process as http://api, the fake provider over HTTP, one cookie
    jar, redirects followed."""
    return httpx.AsyncClient(
        mounts={"http://api": httpx.ASGITransport(app=app)},
        base_url="http://api",
        follow_redirects=True,
    )


def sealed_in(page: httpx.AsyncClient) -> dict[str, Cookie]:
    return {c.name: c for c in page.cookies.jar if c.name.startswith(SEALED_COOKIE)}


def opened(app: FastAPI, page: httpx.AsyncClient) -> ProviderSession:
    parts = sealed_in(page)
    sealed = "".join(parts[f"{SEALED_COOKIE}{n}"].value or "" for n in range(len(parts)))
    return ProviderSessions.of(app).open(sealed)


def put_sealed(app: FastAPI, page: httpx.AsyncClient, session: ProviderSession) -> None:
    """Replaces the browser's sealed session (one part) by `session`, sealed as the app does."""
    parts = sealed_in(page)
    domain = parts[f"{SEALED_COOKIE}0"].domain
    for name in parts:
        page.cookies.delete(name, domain=domain, path="/admin")
    page.cookies.set(
        f"{SEALED_COOKIE}0", ProviderSessions.of(app).seal(session), domain=domain, path="/admin"
    )


async def test_an_expired_access_token_is_renewed_and_a_refused_renewal_signs_out(
    provider: Provider, settings: Settings, dev_env: WorkflowEnvironment, queues: Queues
) -> None:
    app, _ = await app_with(
        settings,
        dev_env,
        queues,
        auth_issuer=provider.issuer,
        auth_audience=AUDIENCE,
        auth_client_id="admin-page",
    )
    async with app.router.lifespan_context(app), page_of(app) as page:
        landed = await page.get("/admin/login/oidc")
        assert landed.url.path == "/admin" and "auth0|ann" in landed.text
        session = opened(app, page)
        assert session.refresh_token in provider.refresh_tokens
        # The token's check says it has expired before the session expected it to: renewed.
        now = int(time.time())
        put_sealed(
            app,
            page,
            replace(session, access_token=provider.token(exp=now - 120), refresh_at=now + 3600),
        )
        again = await page.get("/admin")
        assert again.status_code == 200 and again.url.path == "/admin"
        assert provider.refreshes == 1
        renewed = opened(app, page)
        assert renewed.sid == session.sid and renewed.refresh_token != session.refresh_token
        # The provider no longer honours the refresh token: signed out, and told why.
        provider.refresh_tokens.clear()
        put_sealed(app, page, replace(renewed, access_token=provider.token(exp=now - 120)))
        out = await page.get("/admin")
        assert out.url.path == "/admin/login"
        assert "the identity provider did not renew the session (invalid_grant)" in out.text
        assert not sealed_in(page)


async def test_large_tokens_span_cookies_and_sign_out_without_end_session_is_local(
    provider: Provider, settings: Settings, dev_env: WorkflowEnvironment, queues: Queues
) -> None:
    """Tokens over a cookie's 4 KB (Entra ID's can be) are sealed over several cookies; a
    provider with no end_session_endpoint: sign-out ends the session here only."""
    provider.issued_claims = {"groups": [secrets.token_urlsafe(24) for _ in range(150)]}
    app, _ = await app_with(
        settings,
        dev_env,
        queues,
        auth_issuer=provider.issuer,
        auth_audience=AUDIENCE,
        auth_client_id="admin-page",
    )
    async with app.router.lifespan_context(app), page_of(app) as page:
        landed = await page.get("/admin/login/oidc")
        assert landed.url.path == "/admin", landed.url
        parts = sealed_in(page)
        assert len(parts) >= 2 and all(len(c.value or "") <= 3800 for c in parts.values())
        assert len(opened(app, page).access_token) > 5000
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', landed.text)
        assert csrf
        out = await page.post("/admin/logout", data={"csrf": csrf.group(1)})
        assert out.url.path == "/admin/login" and "signed out" in out.text
        assert not sealed_in(page)
