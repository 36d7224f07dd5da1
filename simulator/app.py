"""A simulator of the external SMS-sending API, with switches that inject latency and failures.

One app serves several gateways on one port: the root routes are the gateway `default`, and
`/gateways/{name}/...` the same routes of gateway `name`, each with its own switches and counters.
A gateway with `receipts_url` set posts delivery receipts there (simulator.receipts).
"""

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from simulator.gateways import (
    DEFAULT_TOKEN,
    GatewayNameError,
    Gateways,
    Outcome,
    SimulatorConfig,
    SimulatorState,
)

__all__ = ["DEFAULT_TOKEN", "SimulatorConfig", "SimulatorState", "create_app"]

logger = logging.getLogger(__name__)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
PHONE_MIN = 70_000_000_000
PHONE_MAX = 79_999_999_999


class AcceptedSend(BaseModel):
    """One acceptance of a send (a msgId accepted twice appears twice)."""

    msg_id: int
    accepted_at: float = Field(description="Seconds since the epoch.")
    arrived_at: float = Field(
        description="When its request arrived, before the latency: seconds since the epoch."
    )
    text: str


class GatewaySummary(BaseModel):
    """One gateway's switches and counters."""

    name: str
    config: SimulatorConfig
    stats: dict[str, Any]


def _body(code: int, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}, separators=(",", ":")).encode()


# Constant answers are encoded once: the send route is the benchmark's hot path.
_OK = _body(0, "OK")
_REJECTED = _body(400, "rejected")
_ERROR = _body(500, "internal error")
_UNAVAILABLE = _body(503, "service unavailable")
_THROTTLED = _body(429, "too many requests")
_GARBAGE_CODE = _body(1, "rejected")
_GARBAGE = b"<html><body>oops</body></html>"
_UNAUTHORIZED = _body(401, "missing or invalid bearer token")


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _parse_send(path_id: str, raw: bytes) -> tuple[int, int, str] | str:
    """The (msg_id, phone, text) of a send, or why it is invalid."""
    try:
        msg_id = int(path_id)
    except ValueError:
        return "msgId in the path must be an int64"
    if not INT64_MIN <= msg_id <= INT64_MAX:
        return "msgId in the path must be an int64"
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return "body is not valid JSON"
    if not isinstance(body, dict):
        return "body must be a JSON object"
    body_id = body.get("id")
    # bool is an int subclass, and true must not pass for 1.
    if type(body_id) is not int:
        return "id must be an int64"
    if body_id != msg_id:
        return "id must equal msgId in the path"
    phone = body.get("phone")
    if type(phone) is not int or not PHONE_MIN <= phone <= PHONE_MAX:
        return "phone must be an 11-digit integer starting with 7"
    text = body.get("text")
    if not isinstance(text, str):
        return "text must be a string"
    return msg_id, phone, text


def _authorized(header: str | None, token: str) -> bool:
    if header is None:
        return False
    scheme, _, credentials = header.partition(" ")
    return scheme.lower() == "bearer" and credentials.strip() == token


async def _answer_send(state: SimulatorState, msg_id: str, request: Request) -> Response:
    if not _authorized(request.headers.get("authorization"), state.token):
        state.note_answer(401, Outcome.UNAUTHORIZED)
        return _json(401, _UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})
    refused = state.config.refuse_credentials
    if refused is not None:
        state.note_answer(refused, Outcome.UNAUTHORIZED)
        return _json(refused, _body(refused, "credentials refused"))

    parsed = _parse_send(msg_id, await request.body())
    if isinstance(parsed, str):
        state.note_answer(400, Outcome.INVALID)
        return _json(400, _body(400, parsed))
    msg, phone, text = parsed
    arrived_at = time.time()
    state.note_received(msg, phone, text)

    # Drawn before the latency sleep: seeded outcomes follow arrival order, not jittered finishes.
    outcome = state.decide()
    if outcome is Outcome.OUTAGE:
        if state.config.outage_mode == "hang":
            await asyncio.sleep(state.config.hang_seconds)
        state.note_answer(503, outcome)
        return _json(503, _UNAVAILABLE)

    delay = state.delay_seconds()
    if delay > 0:
        await asyncio.sleep(delay)

    if outcome is Outcome.OK:
        state.note_accepted(msg, arrived_at)
        if state.config.receipts_url is not None:
            # Queues them, or posts them before the answer (receipt_before_answer_rate).
            await state.receipts.accepted(msg, text)
        if state.config.accept_then_hang:
            # Taken, and the phone gets it: only the acknowledgement is late, or never arrives.
            await asyncio.sleep(state.config.hang_seconds)
        state.note_answer(200, outcome)
        return _json(200, _OK)
    if outcome is Outcome.REJECTED:
        state.note_answer(400, outcome)
        return _json(400, _REJECTED)
    if outcome is Outcome.THROTTLED:
        state.note_answer(429, outcome)
        retry_after = str(state.config.retry_after_seconds)
        return _json(429, _THROTTLED, {"Retry-After": retry_after})
    if outcome is Outcome.ERROR:
        state.note_answer(500, outcome)
        return _json(500, _ERROR)
    if outcome is Outcome.GARBAGE:
        state.note_answer(200, outcome)
        return Response(_GARBAGE, status_code=200, media_type="text/html")
    state.note_answer(200, outcome)
    return _json(200, _GARBAGE_CODE)


async def _serve_send(state: SimulatorState, msg_id: str, request: Request) -> Response:
    state.received += 1
    state.in_flight += 1
    if state.in_flight > state.max_in_flight:
        state.max_in_flight = state.in_flight
    try:
        return await _answer_send(state, msg_id, request)
    finally:
        state.in_flight -= 1


def _gateways(request: Request) -> Gateways:
    gateways: Gateways = request.app.state.gateways
    return gateways


async def default_gateway(request: Request) -> SimulatorState:
    """The gateway of the root routes."""
    return _gateways(request).default


async def named_gateway(name: str, request: Request) -> SimulatorState:
    """The gateway in the path, created on first use."""
    try:
        return _gateways(request).get(name)
    except GatewayNameError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


def _control_router(gateway: Callable[..., Awaitable[SimulatorState]]) -> APIRouter:
    """The control routes of the gateway that the dependency `gateway` finds."""
    GatewayDep = Annotated[SimulatorState, Depends(gateway)]
    router = APIRouter()

    @router.get("/_sim/stats", tags=["control"])
    async def stats(state: GatewayDep) -> dict[str, Any]:
        """Counters of send requests since start or the last reset."""
        return state.stats()

    @router.get("/_sim/messages/{msg_id}", tags=["control"], response_model=None)
    async def message(msg_id: int, state: GatewayDep) -> dict[str, Any] | JSONResponse:
        """What the simulator received and accepted for one msgId."""
        record = state.message(msg_id)
        if record is None:
            return JSONResponse({"code": 404, "message": "message not received"}, status_code=404)
        return record

    @router.get("/_sim/accepted", tags=["control"], response_model=list[AcceptedSend])
    async def accepted(
        state: GatewayDep,
        after_id: int | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]] | JSONResponse:
        """Acceptances in order; after_id starts after that msgId's latest acceptance, offset
        after that many acceptances (pages that skip nothing)."""
        try:
            log = state.accepted_log(after_id=after_id, limit=limit, offset=offset)
            arrivals = state.arrivals_log(after_id=after_id, limit=limit, offset=offset)
        except KeyError:
            return JSONResponse({"code": 404, "message": "after_id not accepted"}, status_code=404)
        return [
            {"msg_id": m, "accepted_at": at, "arrived_at": arrival[0], "text": text}
            for (at, m, text), arrival in zip(log, arrivals, strict=True)
        ]

    @router.get("/_sim/receipts", tags=["control"], response_model=dict[str, str])
    async def receipts(
        state: GatewayDep,
        after_id: int | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    ) -> dict[str, str] | JSONResponse:
        """Final receipt status by msgId, in the order decided; after_id starts after that msgId."""
        try:
            outcomes = state.receipts.outcomes(after_id=after_id, limit=limit)
        except KeyError:
            return JSONResponse(
                {"code": 404, "message": "after_id has no receipt"}, status_code=404
            )
        return {str(msg_id): status for msg_id, status in outcomes.items()}

    @router.get("/_sim/config", tags=["control"])
    async def get_config(state: GatewayDep) -> SimulatorConfig:
        """The current behaviour switches."""
        return state.config

    @router.put("/_sim/config", tags=["control"])
    async def put_config(config: SimulatorConfig, state: GatewayDep) -> SimulatorConfig:
        """Replace all behaviour switches (omitted ones take their defaults)."""
        state.set_config(config)
        logger.info("simulator config replaced: %s", config.model_dump_json())
        return config

    @router.patch("/_sim/config", tags=["control"])
    async def patch_config(
        changes: Annotated[dict[str, Any], Body()], state: GatewayDep
    ) -> SimulatorConfig:
        """Change only the given behaviour switches."""
        try:
            config = SimulatorConfig.model_validate(state.config.model_dump() | changes)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from exc
        state.set_config(config)
        logger.info("simulator config changed: %s", config.model_dump_json())
        return config

    @router.post("/_sim/reset", tags=["control"])
    async def reset(state: GatewayDep, config: bool = False) -> dict[str, str]:
        """Clear counters and message records; ?config=true also restores the default switches."""
        if config:
            state.set_config(SimulatorConfig())
        state.reset_counters()
        logger.info("simulator reset (config=%s)", config)
        return {"status": "ok"}

    return router


def create_app(
    config: SimulatorConfig | None = None,
    token: str = DEFAULT_TOKEN,
    *,
    gateway_tokens: Mapping[str, str] | None = None,
) -> FastAPI:
    """A new simulator app, sharing nothing with any other.

    `app.state.gateways` holds its gateways (Gateways), `app.state.simulator` the default one;
    `config` is the default gateway's; a gateway not in `gateway_tokens` takes `token`. Its
    lifespan's end stops the receipt posters (`await app.state.gateways.aclose()` without it).
    """
    gateways = Gateways(token=token, tokens=gateway_tokens, config=config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Servers run with lifespan="off" (the tests') call gateways.aclose() themselves.
        await gateways.aclose()

    app = FastAPI(
        title="SMS API simulator",
        description="Simulates the external SMS-sending API, with injectable latency and failures.",
        version="1.0",
        lifespan=lifespan,
    )
    default = gateways.default
    app.state.gateways = gateways
    app.state.simulator = default

    # The send routes are the benchmark's hot path: they take no dependency (~20 us a request,
    # against ~62 us for the whole route) and are the app's own (an included router costs ~8 us).
    @app.post("/v1/send/{msg_id}", tags=["api"], response_class=Response)
    async def send(msg_id: str, request: Request) -> Response:
        """Send one SMS: body {"id": msgId, "phone": 7XXXXXXXXXX, "text": "..."}."""
        return await _serve_send(default, msg_id, request)

    @app.post("/gateways/{name}/v1/send/{msg_id}", tags=["api"], response_class=Response)
    async def send_to_gateway(name: str, msg_id: str, request: Request) -> Response:
        """Send one SMS through gateway `name`, as /v1/send/{msgId} does through `default`."""
        try:
            state = gateways.get(name)
        except GatewayNameError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        return await _serve_send(state, msg_id, request)

    @app.get("/healthz", tags=["control"])
    async def healthz() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok"}

    @app.get("/_sim/gateways", tags=["control"], response_model=list[GatewaySummary])
    async def list_gateways() -> list[dict[str, Any]]:
        """Every gateway created so far, with its switches and counters."""
        return [
            {"name": name, "config": state.config, "stats": state.stats()}
            for name, state in gateways.items()
        ]

    app.include_router(_control_router(default_gateway))
    app.include_router(_control_router(named_gateway), prefix="/gateways/{name}")
    return app


app = create_app(token=os.environ.get("SEND_API_TOKEN", DEFAULT_TOKEN))
