"""The admin page's session: the user's bearer token in an HttpOnly cookie, checked on every
request exactly as the API checks its Authorization header, and a CSRF token derived from it.

The CSRF token is a keyed hash of the session token, so it needs no server state (any API
process checks it) and no page of another origin can know it: it cannot read the cookie. Every
form carries it in a hidden `csrf` field; every request htmx makes carries it in `X-CSRF-Token`.
A POST without it, or with another, is refused (403), and so is one whose Origin is another site.
"""

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from core.auth import Permission, Principal, Unauthenticated, Verifier

COOKIE = "mailing_admin"
PATH = "/admin"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


class SignInNeeded(Exception):
    """No valid session: the page sends the browser to the sign-in page, saying why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfRefused(Exception):
    """A state-changing request without this session's CSRF token (403)."""


@dataclass(frozen=True)
class AdminSession:
    token: str
    principal: Principal

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)

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


def csrf_token(session_token: str) -> str:
    return hmac.new(b"mailing-admin-csrf", session_token.encode(), hashlib.sha256).hexdigest()


async def current_session(request: Request) -> AdminSession:
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInNeeded("")
    verifier: Verifier = request.app.state.verifier
    try:
        principal = await verifier.verify(token)
    except Unauthenticated as error:
        raise SignInNeeded(f"please sign in again: {error}") from None
    return AdminSession(token=token, principal=principal)


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


def set_session(response: Response, token: str, *, secure: bool) -> None:
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=secure,
        path=PATH,
        max_age=12 * 3600,
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH)


def to_sign_in(reason: str) -> RedirectResponse:
    target = f"{PATH}/login" + (f"?reason={_quote(reason)}" if reason else "")
    return RedirectResponse(target, status_code=303)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text[:200])
