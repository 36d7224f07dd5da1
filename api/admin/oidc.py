"""Sign-in to the admin page with the configured OIDC provider: authorization code with PKCE
(S256), asking for AUTH_SCOPES (the API's permissions, and offline_access for a refresh token)
for the API: `resource` (RFC 8707) and Auth0's `audience` name AUTH_AUDIENCE. The page is a
public client (AUTH_CLIENT_ID alone) or a confidential one (AUTH_CLIENT_SECRET, sent by HTTP
Basic or in the form). The code verifier and the state wait in a short-lived HttpOnly cookie,
the code is exchanged on the server, and the access token it gets is checked exactly as the API
checks a bearer token before it becomes the session (session.py seals it, with the refresh
token and the id token, and renews it). Sign-out ends the provider's session too when its
discovery document has an end_session_endpoint (OIDC RP-Initiated Logout)."""

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from api.admin.session import (
    PATH,
    AdminSession,
    ProviderSession,
    ProviderSessions,
    new_session_id,
    renew_at,
    set_provider_session,
    to_sign_in,
)
from core.auth import ProviderUnavailable, Unauthenticated, Verifier
from core.oidc import GrantRefused, resource_indicator
from core.settings import Settings

router = APIRouter(prefix=PATH, include_in_schema=False)

FLOW_COOKIE = "mailing_admin_oidc"
FLOW_SECONDS = 600


class ProviderError(Exception):
    pass


async def _endpoints(request: Request) -> dict[str, Any]:
    """The provider's endpoints, from the discovery document the token checks fetch too."""
    verifier: Verifier = request.app.state.verifier
    if verifier.oidc is None:
        raise ProviderError("no identity provider is configured: sign in with a token")
    try:
        document = await verifier.oidc.discovered()
    except ProviderUnavailable as error:
        raise ProviderError(str(error)) from None
    for key in ("authorization_endpoint", "token_endpoint"):
        if not isinstance(document.get(key), str):
            raise ProviderError(f"the identity provider's discovery document has no {key}")
    return document


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _callback_url(request: Request) -> str:
    return str(request.url_for("oidc_callback"))


def _with_query(url: str, query: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(query)


@router.get("/login/oidc")
async def oidc_start(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if settings.auth_client_id is None:
        return to_sign_in("no identity provider is configured: sign in with a token")
    try:
        endpoints = await _endpoints(request)
    except ProviderError as error:
        return to_sign_in(str(error))
    state = secrets.token_urlsafe(24)
    verifier = secrets.token_urlsafe(48)
    query = {
        "response_type": "code",
        "client_id": settings.auth_client_id,
        "redirect_uri": _callback_url(request),
        "scope": settings.auth_scopes,
        "state": state,
        "code_challenge": _challenge(verifier),
        "code_challenge_method": "S256",
        # Auth0 issues an access token for the API only when asked for its audience.
        "audience": settings.auth_audience,
    }
    resource = resource_indicator(settings)
    if resource:
        query["resource"] = resource
    if settings.auth_prompt:
        query["prompt"] = settings.auth_prompt
    response = RedirectResponse(
        _with_query(endpoints["authorization_endpoint"], query), status_code=303
    )
    response.set_cookie(
        FLOW_COOKIE,
        f"{state}.{verifier}",
        httponly=True,
        samesite="lax",  # sent back on the provider's top-level redirect
        secure=request.url.scheme == "https",
        path=PATH,
        max_age=FLOW_SECONDS,
    )
    return response


@router.get("/callback", name="oidc_callback")
async def oidc_callback(
    request: Request,
    code: str = "",
    state: str = "",
    error: str = "",
    error_description: str = "",
) -> Response:
    if error:
        return _failed(f"the identity provider refused: {error} {error_description}".strip())
    flow = request.cookies.get(FLOW_COOKIE, "")
    expected_state, _, code_verifier = flow.partition(".")
    if not code or not expected_state or not hmac.compare_digest(state, expected_state):
        return _failed("the sign-in did not come back as it left (state): try again")
    sessions = ProviderSessions.of(request.app)
    try:
        endpoints = await _endpoints(request)
        tokens = await sessions.client.exchange(
            endpoints["token_endpoint"],
            code=code,
            redirect_uri=_callback_url(request),
            verifier=code_verifier,
        )
        await sessions.verifier.verify(tokens.access_token)
    except GrantRefused as failure:
        return _failed(f"not signed in: the code was not exchanged ({failure})")
    except (ProviderError, ProviderUnavailable, Unauthenticated) as failure:
        return _failed(f"not signed in: {failure}")
    session = ProviderSession(
        sid=new_session_id(),
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        id_token=tokens.id_token,
        refresh_at=renew_at(tokens.access_token, tokens, time.time()),
    )
    response = RedirectResponse(PATH, status_code=303)
    set_provider_session(response, sessions, session, request.url.scheme == "https")
    response.delete_cookie(FLOW_COOKIE, path=PATH)
    return response


async def end_session_url(request: Request, session: AdminSession) -> str | None:
    """Where sign-out sends the browser to end the provider's session too (with the id token
    as `id_token_hint`, and back to /admin/signed-out), or None: a pasted token, no id token,
    a provider without an end_session_endpoint, or one that cannot be reached."""
    provider = session.provider
    verifier: Verifier = request.app.state.verifier
    if provider is None or provider.id_token is None or verifier.oidc is None:
        return None
    try:
        endpoint = (await verifier.oidc.discovered()).get("end_session_endpoint")
    except ProviderUnavailable:
        return None
    if not isinstance(endpoint, str):
        return None
    settings: Settings = request.app.state.settings
    query = {
        "id_token_hint": provider.id_token,
        "post_logout_redirect_uri": str(request.url_for("signed_out")),
        "client_id": settings.auth_client_id or "",
    }
    return _with_query(endpoint, query)


def _failed(reason: str) -> Response:
    response = to_sign_in(reason)
    response.delete_cookie(FLOW_COOKIE, path=PATH)
    return response
