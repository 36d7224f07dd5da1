"""The admin page's session, checked on every request exactly as the API checks its
Authorization header, and a CSRF token derived from it. Two kinds:

- a pasted token (`make token`, or a provider's access token pasted by hand): the JWT itself in
  an HttpOnly cookie, for 12 hours at most (its own expiry decides);
- a sign-in with the provider (oidc.py): its access token, refresh token and id token sealed
  (Fernet: AES-CBC and HMAC-SHA256, with a key from AUTH_SESSION_KEY or the embedded signing
  key) in HttpOnly cookies, split in parts a browser keeps. Shortly before the access token
  expires (or when its check says it has) the session spends the refresh token at the
  provider's token endpoint and the cookies are sealed again with what it gave; a provider that
  refuses signs the user out, saying so. No server state: any API process opens the cookies.

The CSRF token is a keyed hash of the pasted token or of the sealed session's random id (which
outlives its refreshes), so it needs no server state and no page of another origin can know
it: it cannot read the cookie. Every form carries it in a hidden `csrf` field; every request
htmx makes carries it in `X-CSRF-Token`. A POST without it, or with another, is refused (403),
and so is one whose Origin is another site.
"""

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlsplit

from cryptography.fernet import Fernet, InvalidToken
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from jose import jwt
from jose.exceptions import JWTError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.auth import (
    Permission,
    Principal,
    ProviderUnavailable,
    TokenExpired,
    Unauthenticated,
    Verifier,
)
from core.oidc import GrantRefused, TokenClient, TokenSet, session_key
from core.settings import Settings

log = logging.getLogger(__name__)

COOKIE = "mailing_admin"
# The sealed provider session: mailing_admin_sealed_0, _1, ... (a browser keeps about 4 KB a
# cookie; Entra ID's tokens alone can pass that).
SEALED_COOKIE = "mailing_admin_sealed_"
SEALED_PART = 3800
SEALED_PARTS = 6
PATH = "/admin"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
TOKEN_SECONDS = 12 * 3600
# A sealed session's cookies live this long; the provider's refresh decides before that.
SEALED_SECONDS = 30 * 24 * 3600
# The access token is renewed this long before its expiry (half its lifetime if shorter).
RENEW_AHEAD_SECONDS = 60.0
# A refresh is remembered this long by the refresh token it spent: the page's requests in
# flight with the old cookie (htmx polls) take its result instead of spending a token that the
# provider rotated away, which a provider takes for a replay and ends the session.
RENEWED_SECONDS = 60.0
# After the provider did not answer a refresh, sessions still valid wait this long before the
# next attempt (rather than each request waiting for its timeout).
RENEW_RETRY_SECONDS = 10.0
# Where a request's cookie changes wait for the answer (SessionCookies adds them).
PENDING = "admin_session_cookies"


class SignInNeeded(Exception):
    """No valid session: the page sends the browser to the sign-in page, saying why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfRefused(Exception):
    """A state-changing request without this session's CSRF token (403)."""


@dataclass(frozen=True)
class ProviderSession:
    """A sign-in with the provider, as sealed in the cookies. `refresh_at` in epoch seconds."""

    sid: str
    access_token: str
    refresh_token: str | None
    id_token: str | None
    refresh_at: float

    def pack(self) -> bytes:
        fields = [self.sid, self.access_token, self.refresh_token, self.id_token]
        return zlib.compress(json.dumps([*fields, self.refresh_at]).encode())

    @classmethod
    def unpack(cls, data: bytes) -> "ProviderSession":
        sid, access, refresh, id_token, refresh_at = json.loads(zlib.decompress(data))
        return cls(sid, access, refresh, id_token, float(refresh_at))


@dataclass(frozen=True)
class AdminSession:
    token: str
    principal: Principal
    # The CSRF token's source: the pasted token, or the sealed session's id.
    csrf_key: str = ""
    provider: ProviderSession | None = None

    @property
    def csrf(self) -> str:
        return csrf_token(self.csrf_key or self.token)

    def can(self, permission: str) -> bool:
        return permission in self.principal.permissions

    def require(self, permission: Permission) -> None:
        if not self.can(permission):
            raise PermissionRefused(permission)


class PermissionRefused(Exception):
    """The signed-in user lacks the permission an action needs (403, as the API says)."""

    def __init__(self, permission: Permission) -> None:
        super().__init__(f"this needs the permission {permission}")
        self.permission = permission


def csrf_token(session_key: str) -> str:
    return hmac.new(b"mailing-admin-csrf", session_key.encode(), hashlib.sha256).hexdigest()


def renew_at(access_token: str, tokens: TokenSet, now: float) -> float:
    """When to renew an access token: shortly before its expiry (its `exp`, else the token
    endpoint's `expires_in`)."""
    try:
        expiry = float(jwt.get_unverified_claims(access_token)["exp"])
    except (KeyError, TypeError, ValueError, JWTError):
        expiry = now + (tokens.expires_in or 300.0)
    lifetime = max(expiry - now, 0.0)
    return now + lifetime - min(RENEW_AHEAD_SECONDS, lifetime / 2)


class ProviderSessions:
    """An app's sealed sessions: the seal, the client at the token endpoint, and the refreshes
    just made."""

    def __init__(self, settings: Settings, verifier: Verifier) -> None:
        self.fernet = Fernet(session_key(settings))
        self.client = TokenClient(settings)
        self.verifier = verifier
        self._lock = asyncio.Lock()
        self._renewed: dict[str, tuple[float, ProviderSession]] = {}
        self._quiet_until = 0.0

    @staticmethod
    def of(app: FastAPI) -> "ProviderSessions":
        found: ProviderSessions | None = getattr(app.state, "admin_provider_sessions", None)
        if found is None:
            found = ProviderSessions(app.state.settings, app.state.verifier)
            app.state.admin_provider_sessions = found
        return found

    def seal(self, session: ProviderSession) -> str:
        return self.fernet.encrypt(session.pack()).decode()

    def open(self, sealed: str) -> ProviderSession:
        try:
            return ProviderSession.unpack(self.fernet.decrypt(sealed, ttl=SEALED_SECONDS))
        except (InvalidToken, ValueError, TypeError, zlib.error):
            raise SignInNeeded("please sign in again: the session cookie is not valid") from None

    async def token_endpoint(self) -> str:
        if self.verifier.oidc is None:
            raise ProviderUnavailable("no identity provider is configured")
        url = (await self.verifier.oidc.discovered()).get("token_endpoint")
        if not isinstance(url, str):
            raise ProviderUnavailable(
                "the identity provider's discovery document has no token_endpoint"
            )
        return url

    async def renew(self, session: ProviderSession) -> ProviderSession:
        """The session with the tokens its refresh token gets (once per refresh token: a
        request that comes with the old cookie takes the same result)."""
        assert session.refresh_token is not None
        # One refresh at a time in this process (they are rare: one per access token's life).
        spent = hashlib.sha256(session.refresh_token.encode()).hexdigest()
        async with self._lock:
            now = time.time()
            self._renewed = {k: v for k, v in self._renewed.items() if now - v[0] < RENEWED_SECONDS}
            if spent in self._renewed:
                return self._renewed[spent][1]
            if now < self._quiet_until:
                raise ProviderUnavailable("the identity provider did not answer a moment ago")
            try:
                url = await self.token_endpoint()
                tokens = await self.client.refresh(url, refresh_token=session.refresh_token)
            except ProviderUnavailable:
                self._quiet_until = now + RENEW_RETRY_SECONDS
                raise
            renewed = replace(
                session,
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token or session.refresh_token,
                id_token=tokens.id_token or session.id_token,
                refresh_at=renew_at(tokens.access_token, tokens, now),
            )
            self._renewed[spent] = (now, renewed)
            return renewed


def read_sealed(request: Request) -> str | None:
    parts = []
    for n in range(SEALED_PARTS):
        part = request.cookies.get(f"{SEALED_COOKIE}{n}")
        if part is None:
            break
        parts.append(part)
    return "".join(parts) or None


async def current_session(request: Request) -> AdminSession:
    sealed = read_sealed(request)
    if sealed is not None:
        return await _provider_session(request, sealed)
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInNeeded("")
    verifier: Verifier = request.app.state.verifier
    try:
        principal = await verifier.verify(token)
    except Unauthenticated as error:
        raise SignInNeeded(f"please sign in again: {error}") from None
    return AdminSession(token=token, principal=principal)


async def _provider_session(request: Request, sealed: str) -> AdminSession:
    sessions = ProviderSessions.of(request.app)
    try:
        session = sessions.open(sealed)
    except SignInNeeded:
        _pending(request, clear_session)
        raise
    if session.refresh_token and time.time() >= session.refresh_at:
        session = await _renewed(request, sessions, session, expired=False)
    try:
        principal = await sessions.verifier.verify(session.access_token)
    except TokenExpired:
        if not session.refresh_token:
            _pending(request, clear_session)
            raise SignInNeeded("please sign in again: the session has expired") from None
        session = await _renewed(request, sessions, session, expired=True)
        principal = await _verified(request, sessions, session)
    except Unauthenticated as error:
        _pending(request, clear_session)
        raise SignInNeeded(f"please sign in again: {error}") from None
    return AdminSession(
        token=session.access_token, principal=principal, csrf_key=session.sid, provider=session
    )


async def _verified(
    request: Request, sessions: ProviderSessions, session: ProviderSession
) -> Principal:
    try:
        return await sessions.verifier.verify(session.access_token)
    except Unauthenticated as error:
        _pending(request, clear_session)
        raise SignInNeeded(f"signed out: the renewed token was refused: {error}") from None


async def _renewed(
    request: Request, sessions: ProviderSessions, session: ProviderSession, *, expired: bool
) -> ProviderSession:
    """The session renewed at the provider, its cookies rewritten with the answer. Refused:
    signed out. Provider unreachable: the current token while it holds, else sign-in (the
    cookies stay, to renew once the provider is back)."""
    try:
        renewed = await sessions.renew(session)
    except GrantRefused as error:
        _pending(request, clear_session)
        raise SignInNeeded(
            f"signed out: the identity provider did not renew the session ({error}); "
            "please sign in again"
        ) from None
    except ProviderUnavailable as error:
        if expired:
            raise SignInNeeded(f"the session could not be renewed: {error}") from None
        log.warning("admin session not renewed yet: %s", error)
        return session
    secure = request.url.scheme == "https"
    _pending(request, lambda response: set_provider_session(response, sessions, renewed, secure))
    return renewed


def _pending(request: Request, change: Callable[[Response], None]) -> None:
    """Cookie changes for this request's answer, whatever route or error handler makes it."""
    scratch = Response()
    change(scratch)
    state: dict[str, Any] = request.scope.setdefault("state", {})
    state.setdefault(PENDING, []).extend(scratch.headers.getlist("set-cookie"))


def forget_pending(request: Request) -> None:
    """Drops this request's pending cookie changes (sign-out writes its own)."""
    request.scope.get("state", {}).pop(PENDING, None)


class SessionCookies:
    """Adds a request's pending session cookies (a renewed or ended provider session) to its
    answer, whichever route or error handler made it (a pure ASGI middleware on /admin)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PATH):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookies = state.get(PENDING) or []
                headers = [(b"set-cookie", value.encode("latin-1")) for value in cookies]
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, answer)


async def check_csrf(request: Request, session: AdminSession) -> None:
    """Refuses a state-changing request that does not carry this session's CSRF token, or
    that comes from another origin."""
    check_origin(request)
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not given or not hmac.compare_digest(given, session.csrf):
        raise CsrfRefused("the form's CSRF token is missing or not this session's: reload the page")


def check_origin(request: Request) -> None:
    """A browser names the page a POST comes from: another site's is refused (sign-in
    included, so that no page can sign a visitor in as someone else)."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise CsrfRefused(f"a request from another origin ({origin}) is refused")


def _cookie(response: Response, name: str, value: str, *, secure: bool, max_age: int) -> None:
    response.set_cookie(
        name, value, httponly=True, samesite="lax", secure=secure, path=PATH, max_age=max_age
    )


def set_session(response: Response, token: str, *, secure: bool) -> None:
    """A pasted token's session (any sealed one ends)."""
    clear_session(response)
    _cookie(response, COOKIE, token, secure=secure, max_age=TOKEN_SECONDS)


def set_provider_session(
    response: Response, sessions: ProviderSessions, session: ProviderSession, secure: bool
) -> None:
    """A provider session sealed in its cookies (a pasted token's ends)."""
    sealed = sessions.seal(session)
    parts = [sealed[i : i + SEALED_PART] for i in range(0, len(sealed), SEALED_PART)]
    if len(parts) > SEALED_PARTS:
        raise SignInNeeded("the identity provider's tokens are too large for the session cookie")
    response.delete_cookie(COOKIE, path=PATH)
    for n in range(SEALED_PARTS):
        name = f"{SEALED_COOKIE}{n}"
        if n < len(parts):
            _cookie(response, name, parts[n], secure=secure, max_age=SEALED_SECONDS)
        else:
            response.delete_cookie(name, path=PATH)


def clear_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH)
    for n in range(SEALED_PARTS):
        response.delete_cookie(f"{SEALED_COOKIE}{n}", path=PATH)


def new_session_id() -> str:
    return secrets.token_urlsafe(24)


def to_sign_in(reason: str) -> RedirectResponse:
    target = f"{PATH}/login" + (f"?reason={quote(reason[:200])}" if reason else "")
    return RedirectResponse(target, status_code=303)
