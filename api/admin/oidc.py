"""Sign-in to the admin page with the configured OIDC provider: authorization code with PKCE
(S256). The page is a public client (AUTH_CLIENT_ID, no secret): the code verifier and the state
wait in a short-lived HttpOnly cookie, the code is exchanged on the server, and the access token
it gets is checked exactly as the API checks a bearer token before it becomes the session."""

import base64
import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import urlencode

import aiohttp
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from api.admin.session import PATH, set_session, to_sign_in
from core.auth import ProviderUnavailable, Unauthenticated, Verifier
from core.settings import Settings

router = APIRouter(prefix=PATH, include_in_schema=False)

FLOW_COOKIE = "mailing_admin_oidc"
FLOW_SECONDS = 600
TIMEOUT = aiohttp.ClientTimeout(total=10)


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
        "scope": "openid profile",
        "state": state,
        "code_challenge": _challenge(verifier),
        "code_challenge_method": "S256",
        # Auth0 issues an access token for the API only when asked for its audience.
        "audience": settings.auth_audience,
    }
    response = RedirectResponse(
        endpoints["authorization_endpoint"] + "?" + urlencode(query), status_code=303
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
    settings: Settings = request.app.state.settings
    if error:
        return _failed(f"the identity provider refused: {error} {error_description}".strip())
    flow = request.cookies.get(FLOW_COOKIE, "")
    expected_state, _, verifier = flow.partition(".")
    if not code or not expected_state or not hmac.compare_digest(state, expected_state):
        return _failed("the sign-in did not come back as it left (state): try again")
    try:
        endpoints = await _endpoints(request)
        token = await _exchange(endpoints["token_endpoint"], settings, request, code, verifier)
        checker: Verifier = request.app.state.verifier
        await checker.verify(token)
    except (ProviderError, Unauthenticated) as failure:
        return _failed(f"not signed in: {failure}")
    response = RedirectResponse(PATH, status_code=303)
    set_session(response, token, secure=request.url.scheme == "https")
    response.delete_cookie(FLOW_COOKIE, path=PATH)
    return response


async def _exchange(
    url: str, settings: Settings, request: Request, code: str, verifier: str
) -> str:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": _callback_url(request),
        "client_id": settings.auth_client_id or "",
        "code_verifier": verifier,
    }
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as http,
            http.post(url, data=form) as response,
        ):
            body = await response.json(content_type=None)
            if response.status != 200:
                reason = body.get("error", response.status) if isinstance(body, dict) else ""
                raise ProviderError(f"the code was not exchanged ({reason})")
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        raise ProviderError(
            f"the identity provider did not answer: {type(error).__name__}"
        ) from None
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str):
        raise ProviderError("the identity provider gave no access token")
    return token


def _failed(reason: str) -> Response:
    response = to_sign_in(reason)
    response.delete_cookie(FLOW_COOKIE, path=PATH)
    return response
