"""The API's /metrics (Prometheus text format, open like /healthz) and the middleware that
counts and times every request by its route template (never by its concrete path, which would
carry ids), and gives it a request id (the caller's X-Request-ID, or a new one) that every log
line of the request carries and the answer returns."""

import itertools
import re
import time
import uuid

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import SessionDep, SettingsDep
from api.services import routes as routes_service
from core import metrics
from core.logging import REQUEST_ID
from core.models import DispatchStatus, MessageStatus, dispatch_t, message_count_t
from core.routes import CircuitState
from core.stats import total_counts

router = APIRouter(tags=["health"])

# A caller's X-Request-ID is kept when it is a plain token; otherwise a new one is made.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")

# Pending messages of running dispatches whose client's local time is outside the window now.
_WAITING = sa.text(
    f"""
    SELECT count(*) FROM message m
    JOIN dispatch d ON d.id = m.dispatch_id
    JOIN client c ON c.id = m.client_id
    WHERE m.status = '{MessageStatus.PENDING}' AND d.status = '{DispatchStatus.RUNNING}'
      AND d.window_start IS NOT NULL
      AND NOT CASE WHEN d.window_start < d.window_end
        THEN (now() AT TIME ZONE c.timezone)::time >= d.window_start
             AND (now() AT TIME ZONE c.timezone)::time < d.window_end
        ELSE (now() AT TIME ZONE c.timezone)::time >= d.window_start
             OR (now() AT TIME ZONE c.timezone)::time < d.window_end
      END
    """
)

# Messages a dispatch still owes (pending, retrying), from the counts the triggers keep: by the
# dispatch's status and whether its end_at passed. The alerts tell a stall, and messages left
# past their dispatch's end, from these.
OPEN_STATUSES = (MessageStatus.PENDING, MessageStatus.RETRYING)
_END_PASSED = (dispatch_t.c.end_at <= sa.func.now()).label("end_passed")
_OPEN = (
    sa.select(
        message_count_t.c.status, dispatch_t.c.status, _END_PASSED, sa.func.sum(message_count_t.c.n)
    )
    .join_from(message_count_t, dispatch_t, dispatch_t.c.id == message_count_t.c.dispatch_id)
    .where(message_count_t.c.status.in_(OPEN_STATUSES))
    .group_by(message_count_t.c.status, dispatch_t.c.status, _END_PASSED)
)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(session: SessionDep, settings: SettingsDep) -> Response:
    """Counters of this process, and dispatches and messages by status and each configured
    route's circuit state, read now."""
    dispatches: dict[str, int] = dict(
        (
            await session.execute(
                sa.select(dispatch_t.c.status, sa.func.count()).group_by(dispatch_t.c.status)
            )
        ).all()
    )
    for status in DispatchStatus:
        metrics.DISPATCHES.labels(status).set(dispatches.get(status, 0))
    messages = await total_counts(session=session)
    for message_status in MessageStatus:
        metrics.MESSAGES.labels(message_status).set(messages[message_status])
    metrics.MESSAGES_WAITING.set((await session.execute(_WAITING)).scalar_one())
    open_counts = {
        (status, dispatch_status, "passed" if passed else "ahead"): int(n)
        for status, dispatch_status, passed, n in await session.execute(_OPEN)
    }
    for key in itertools.product(OPEN_STATUSES, DispatchStatus, ("ahead", "passed")):
        metrics.MESSAGES_OPEN.labels(*key).set(open_counts.get(key, 0))
    names = [route.name for route in settings.routes]
    for name, health in (await routes_service.route_health(session=session, names=names)).items():
        for state in CircuitState:
            metrics.ROUTE_STATE.labels(name, state).set(int(state == health.state))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def remember_route(request: Request) -> None:
    """An app-wide dependency: notes the path template of the route that matched (with the
    prefixes it was included under, which the route itself does not carry), for the
    middleware's labels. Async, so that it runs on the loop rather than in a thread."""
    route = request.scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return
    concrete = request.scope["path"].rstrip("/").split("/")
    own = template.strip("/").split("/") if template.strip("/") else []
    prefix = "/".join(concrete[: max(1, len(concrete) - len(own))])
    request.state.route_template = prefix + template


def request_id_of(scope: Scope) -> str:
    """The caller's X-Request-ID when it is a plain token, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            return given if REQUEST_ID_PATTERN.fullmatch(given) else uuid.uuid4().hex
    return uuid.uuid4().hex


class RequestMetrics:
    """Counts and times each request by its route template and gives it a request id: a pure
    ASGI middleware (Starlette's BaseHTTPMiddleware ran each request in a task of its own and
    cost about a fifth of a small request's CPU)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500
        request_id = request_id_of(scope)
        header = (b"x-request-id", request_id.encode())

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, answer)
        finally:
            REQUEST_ID.reset(token)
            route = scope.get("state", {}).get("route_template", "unmatched")
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_SECONDS.labels(method, route).observe(time.monotonic() - started)


def install_metrics(app: FastAPI) -> None:
    app.add_middleware(RequestMetrics)
