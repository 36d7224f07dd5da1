"""Sign in and out. The embedded mode takes a token from `make token`, checked as the API checks
it; with a provider the sign-in goes through `oidc`, and so does the end of the provider's
session at sign-out."""

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from api.admin.common import SessionUser, admin_router, back, render
from api.admin.oidc import end_session_url
from api.admin.session import (
    check_csrf,
    check_origin,
    clear_session,
    forget_pending,
    set_session,
)
from core.auth import Unauthenticated, Verifier

router = admin_router()


@router.get("/login")
async def login_page(request: Request, reason: str = "", notice: str = "") -> HTMLResponse:
    verifier: Verifier = request.app.state.verifier
    return render(
        request,
        "login.html",
        None,
        reason=reason,
        notice=notice,
        provider=verifier.oidc is not None,
    )


@router.post("/login")
async def login(request: Request, token: Annotated[str, Form(max_length=20_000)]) -> Response:
    """The embedded mode: a token from `make token`, checked as the API checks it."""
    check_origin(request)
    verifier: Verifier = request.app.state.verifier
    token = token.strip().removeprefix("Bearer ").strip()
    try:
        await verifier.verify(token)
    except Unauthenticated as error:
        return render(
            request,
            "login.html",
            None,
            status_code=401,
            reason=f"not signed in: {error}",
            provider=verifier.oidc is not None,
        )
    response = back("/admin")
    set_session(response, token, secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionUser) -> Response:
    """Ends the session here, then at the provider when it offers to (end_session_endpoint)."""
    await check_csrf(request, session)
    provider_end = await end_session_url(request, session)
    response = back(provider_end) if provider_end else back("/admin/login", "signed out")
    forget_pending(request)  # a renewal of this very request must not outlive the sign-out
    clear_session(response)
    return response


@router.get("/signed-out", name="signed_out")
async def signed_out(request: Request) -> Response:
    """Where the provider sends the browser back after its own sign-out."""
    return back("/admin/login", "signed out, at the identity provider too")
