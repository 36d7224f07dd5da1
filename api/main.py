"""The FastAPI application: routers under /api/v1, Temporal and the database set up once."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from temporalio.service import RPCError

from api import metrics as api_metrics
from api.admin import admin_error_page, install_admin
from api.auth import install_docs, install_openapi
from api.errors import ErrorItem, error_response
from api.imports.reading import TooLarge, UnsupportedFile
from api.metrics import install_metrics, remember_route
from api.routers import (
    clients,
    dispatch_tests,
    dispatches,
    health,
    receipts,
    routes,
    schedules,
    stats,
)
from api.services import receipts as receipts_service
from api.services.receipt_batches import ReceiptBatches
from core import tracing
from core.auth import Forbidden, ProviderUnavailable, Unauthenticated, Verifier
from core.db import Database, database_unavailable
from core.errors import (
    Conflict,
    DatabaseUnavailable,
    EngineUnavailable,
    InvalidRequest,
    NotFound,
    NotFoundByPhone,
)
from core.logging import configure_logging
from core.search import ensure_search_attributes
from core.settings import Settings, get_settings
from core.temporal import connect

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
REALM = "mailing"

DESCRIPTION = """
A mailing service on Temporal. Keep a directory of **clients** (Russian mobile numbers with an
operator code, a tag and a time zone) and run **dispatches** to them: each dispatch is a durable
workflow that starts by itself at `start_at`, sends one message per matching client inside that
client's local send window, retries while the remote API fails, and sends nothing after `end_at`.
Statistics count every dispatch's messages by status.

Every `/api/v1` operation needs `Authorization: Bearer <JWT>` carrying the permission it names
(`clients:read`, `clients:write`, `clients:opt-out`, `dispatches:read`, `dispatches:write`,
`dispatches:control`): 401 without a valid token, 403 without the permission. `/healthz`,
`/docs` and `/openapi.json` are open.

Every error answer has one shape: `{"detail": "end_at: must be after start_at",
"errors": [{"field": "end_at", "message": "must be after start_at"}]}` (`field` is null when
the problem is the request as a whole, such as a 409 naming the dispatch's status).

Message statuses: `pending` (waiting for its window), `retrying` (the remote failed, another
attempt is scheduled), `sent`, `failed` (the remote refused it for good), `expired` (not sent by
`end_at`), `cancelled` (its dispatch or client was deleted), `opted_out` (the client went on
the stop list before it was sent), `unrendered` (a personal text needs a key the client lacks,
with no default: nothing was sent), `capped` (the client had had FREQUENCY_CAP's messages
for the period), and, from the gateway's receipts, `delivered` and
`undelivered`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.auth_disabled:
        log.warning(
            "AUTHENTICATION IS DISABLED (AUTH_DISABLED=true): anyone who reaches the port may "
            "do anything; for local experiments only"
        )
    app.state.database = Database(settings, pool_timeout=POOL_TIMEOUT_SECONDS)
    app.state.temporal = await connect(settings)
    try:
        # Also done by the worker; here too, so that a dispatch created before any worker
        # started can start its workflow.
        await ensure_search_attributes(app.state.temporal, settings.temporal_namespace)
    except RPCError as error:
        log.warning("search attributes not registered: %s", error)
    log.info("API ready: Temporal at %s", settings.temporal_target)
    app.state.receipt_batches = ReceiptBatches(app.state.database.sessions)
    tasks = [
        asyncio.create_task(apply_waiting_receipts(app.state.database)),
        asyncio.create_task(app.state.receipt_batches.run()),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await app.state.database.dispose()
        if app.state.tracing is not None:
            # The spans not yet exported go out now (blocking: in a thread).
            await asyncio.to_thread(app.state.tracing.shutdown)


# A request waits this long at most for a free database connection, then answers 503.
POOL_TIMEOUT_SECONDS = 10.0
# Receipts that came before their send was recorded are applied this often.
WAITING_RECEIPTS_SECONDS = 1.0


async def apply_waiting_receipts(database: Database) -> None:
    """Applies, for as long as the API runs, the receipts that waited for their send. A failure
    (PostgreSQL down, say) is logged once, as a line, and tried again each time quietly."""
    failures = 0
    while True:
        try:
            async with database.sessions() as session:
                while await receipts_service.apply_waiting(session=session):
                    pass
        except (OSError, SQLAlchemyError) as error:
            failures += 1
            (log.debug if failures > 1 else log.warning)(
                "waiting receipts not applied (tried again every %.0f s): %s",
                WAITING_RECEIPTS_SECONDS,
                error,
            )
        else:
            if failures:
                log.info("waiting receipts applied again after %d failed tries", failures)
            failures = 0
        await asyncio.sleep(WAITING_RECEIPTS_SECONDS)


# A 503 (a dependency unavailable) says to try again after this long: PostgreSQL restarts, a
# failover or a Temporal frontend's restart take seconds, and a client that retries at once
# only adds to the load that meets the dependency coming back.
RETRY_AFTER_SECONDS = 5

# Domain errors as HTTP answers; service code never raises HTTP errors itself.
ERROR_STATUS: dict[type[Exception], int] = {
    NotFound: status.HTTP_404_NOT_FOUND,
    NotFoundByPhone: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    InvalidRequest: status.HTTP_422_UNPROCESSABLE_CONTENT,
    EngineUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    DatabaseUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    TooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
    UnsupportedFile: status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Mailing service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(remember_route)],
    )
    app.state.settings = settings
    app.state.verifier = Verifier(settings)
    install_docs(app, settings)
    install_openapi(app, settings)
    for router in (
        clients.router,
        dispatches.router,
        dispatch_tests.router,
        stats.router,
        routes.router,
        receipts.router,
        schedules.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(health.router)
    install_admin(app)
    app.include_router(api_metrics.router)
    install_metrics(app)
    install_tracing(app)

    async def domain_error(request: Request, error: Exception) -> Response:
        code = next(ERROR_STATUS[kind] for kind in type(error).__mro__ if kind in ERROR_STATUS)
        response: Response
        if request.url.path.startswith("/admin"):
            response = admin_error_page(request, code, str(error))
        else:
            response = error_response(code, [ErrorItem(getattr(error, "field", None), str(error))])
        if code == status.HTTP_503_SERVICE_UNAVAILABLE:
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    async def database_failure(request: Request, error: Exception) -> Response:
        # The driver's and the pool's errors: an outage answers as DatabaseUnavailable, any
        # other (a bug, a constraint no service expected) stays the 500 it always was.
        if not database_unavailable(error):
            raise error
        log.warning("%s %s: database unavailable: %r", request.method, request.url.path, error)
        return await domain_error(request, DatabaseUnavailable())

    async def invalid_input(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return error_response(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [ErrorItem.of_validation(item) for item in error.errors()],
        )

    async def unauthenticated(request: Request, error: Exception) -> JSONResponse:
        # RFC 6750: no token at all gets the bare challenge; a bad one says why.
        has_token = request.headers.get("authorization", "").lower().startswith("bearer ")
        challenge = f'Bearer realm="{REALM}"'
        if has_token:
            # Header values are Latin-1: anything else in the reason is escaped.
            description = ascii(str(error))[1:-1].replace('"', "'")
            challenge += f', error="invalid_token", error_description="{description}"'
        response = error_response(status.HTTP_401_UNAUTHORIZED, [ErrorItem(None, str(error))])
        response.headers["WWW-Authenticate"] = challenge
        return response

    async def forbidden(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, Forbidden)
        response = error_response(status.HTTP_403_FORBIDDEN, [ErrorItem(None, str(error))])
        response.headers["WWW-Authenticate"] = (
            f'Bearer realm="{REALM}", error="insufficient_scope", scope="{error.permission}"'
        )
        return response

    async def provider_unavailable(request: Request, error: Exception) -> JSONResponse:
        response = error_response(
            status.HTTP_503_SERVICE_UNAVAILABLE, [ErrorItem(None, str(error))]
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    for error_type in ERROR_STATUS:
        app.add_exception_handler(error_type, domain_error)
    app.add_exception_handler(RequestValidationError, invalid_input)
    app.add_exception_handler(Unauthenticated, unauthenticated)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(ProviderUnavailable, provider_unavailable)
    # OSError: asyncpg raises a refused or timed-out connect as the OSError itself.
    for error_type in (SQLAlchemyError, OSError):
        app.add_exception_handler(error_type, database_failure)
    return app


def create_configured_app() -> FastAPI:
    """Entry point for uvicorn (`--factory`): settings, logging and tracing from the
    environment."""
    settings = get_settings()
    configure_logging(level=settings.log_level, json_output=settings.log_json)
    traces = tracing.configure(service_name="mailing-api")
    app = create_app(settings)
    # Shut down (its last spans flushed) when the lifespan ends.
    app.state.tracing = traces
    return app


# Probes and scrapes get no span: one every few seconds would bury the requests that matter.
UNTRACED_PATHS = ("/healthz", "/livez", "/readyz", "/metrics", "/admin/static/")


def install_tracing(app: FastAPI) -> None:
    """A span per request while tracing is on (core.tracing): one for a list of receipts, none
    per receipt. The Temporal client's spans (the dispatch's workflow started) are its
    children."""
    app.state.tracing = None
    traces = tracing.current()
    if traces is None:
        return
    # Added last, so outermost: the request's span covers the metrics middleware too.
    app.add_middleware(tracing.RequestSpans, tracer=traces.tracer, untraced=UNTRACED_PATHS)
