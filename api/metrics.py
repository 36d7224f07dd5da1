"""The API's /metrics (Prometheus text format, open like /healthz) and the middleware that
counts and times every request by its route template (never by its concrete path, which would
carry ids), and gives it a request id (the caller's X-Request-ID, or a new one) that every log
line of the request carries and the answer returns."""

import re
import time
import uuid
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import SessionDep, SettingsDep
from api.services import routes as routes_service
from core import metrics
from core.logging import REQUEST_ID
from core.models import DispatchStatus, MessageStatus, dispatch_t
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
    names = [route.name for route in settings.routes]
    for name, health in (await routes_service.route_health(session=session, names=names)).items():
        for state in CircuitState:
            metrics.ROUTE_STATE.labels(name, state).set(int(state == health.state))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def remember_route(request: Request) -> None:
    """An app-wide dependency: notes the path template of the route that matched (with the
    prefixes it was included under, which the route itself does not carry), for the
    middleware's labels."""
    route = request.scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return
    concrete = request.scope["path"].rstrip("/").split("/")
    own = template.strip("/").split("/") if template.strip("/") else []
    prefix = "/".join(concrete[: max(1, len(concrete) - len(own))])
    request.state.route_template = prefix + template


def install_metrics(app: FastAPI) -> None:
    @app.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.monotonic()
        status = 500
        given = request.headers.get("x-request-id", "")
        request_id = given if REQUEST_ID_PATTERN.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = request_id
            return response
        finally:
            REQUEST_ID.reset(token)
            route = getattr(request.state, "route_template", "unmatched")
            metrics.HTTP_REQUESTS.labels(request.method, route, str(status)).inc()
            metrics.HTTP_SECONDS.labels(request.method, route).observe(time.monotonic() - started)
