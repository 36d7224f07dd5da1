"""The admin web page, served by the API process under /admin: server-rendered templates (Jinja2,
autoescaped) with a little htmx for live parts. Every asset is served from api/admin/static, so
the page works with no internet. Each page and action goes through the same service functions
and permission checks as the JSON API, as the signed-in user (see session.py).

One module per part, as api/routers: `signin` (and `oidc` with a provider), `overview`,
`clients` (with the import), `dispatch_form` (new and edit), `dispatches` and `schedules`;
`common` holds the templates and what every page uses. The routers are gathered here in that
order."""

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.admin import clients, dispatch_form, dispatches, oidc, overview, schedules, signin
from api.admin.common import templates
from api.admin.session import (
    CsrfRefused,
    PermissionRefused,
    SessionCookies,
    SignInNeeded,
    to_sign_in,
)

STATIC = Path(__file__).parent / "static"
# Only this origin's scripts, styles and forms; never framed (clickjacking).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class AdminHeaders:
    """The security headers on every /admin answer (a pure ASGI middleware: nothing is added to
    the cost of an API request but one prefix test)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/admin"):
            await self.app(scope, receive, send)
            return
        names = {name for name, _ in self.headers}

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [h for h in message.get("headers", ()) if h[0].lower() not in names]
                message["headers"] = [*kept, *self.headers]
            await send(message)

        await self.app(scope, receive, answer)


def install_admin(app: FastAPI) -> None:
    for module in (oidc, signin, overview, clients, dispatch_form, dispatches, schedules):
        app.include_router(module.router)
    app.mount("/admin/static", StaticFiles(directory=STATIC), name="admin-static")

    app.add_middleware(AdminHeaders)
    # A provider session renewed (or ended) by a request: its cookies on the answer.
    app.add_middleware(SessionCookies)

    async def sign_in_needed(request: Request, error: Exception) -> Response:
        assert isinstance(error, SignInNeeded)
        if request.headers.get("hx-request"):
            # An htmx poll after the session expired: the whole page goes to sign-in.
            return Response(status_code=401, headers={"HX-Redirect": "/admin/login"})
        return to_sign_in(error.reason)

    async def refused(request: Request, error: Exception) -> Response:
        return admin_error_page(request, 403, str(error))

    async def root(request: Request) -> RedirectResponse:
        return RedirectResponse("/admin", status_code=307)

    app.add_exception_handler(SignInNeeded, sign_in_needed)
    app.add_exception_handler(CsrfRefused, refused)
    app.add_exception_handler(PermissionRefused, refused)
    app.add_api_route("/", root, include_in_schema=False, response_class=HTMLResponse)


def admin_error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    """An error of an admin page as a page (the JSON API answers its own errors as JSON)."""
    return templates.TemplateResponse(
        request,
        "refused.html",
        {"message": message, "session": None, "status_code": status_code},
        status_code=status_code,
    )


__all__ = ["admin_error_page", "install_admin"]
