"""A simulator of the external SMS-sending API, with switches that inject latency and failures."""

import asyncio
import enum
import json
import logging
import os
import random
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

logger = logging.getLogger(__name__)

DEFAULT_TOKEN = "simulator-token"

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
PHONE_MIN = 70_000_000_000
PHONE_MAX = 79_999_999_999

# Identical texts (one per dispatch, typically) share one string across all records; the cache
# is bounded so that a run of unique texts costs no more than storing them.
_TEXT_CACHE_SIZE = 10_000

Rate = Annotated[float, Field(ge=0, le=1)]


class SimulatorConfig(BaseModel):
    """Behaviour switches; the defaults answer every valid send with success at once."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    latency_ms: float = Field(default=0, ge=0, description="Delay added to every answer.")
    latency_jitter_ms: float = Field(
        default=0, ge=0, description="Extra delay drawn uniformly from [0, jitter]."
    )
    error_rate: Rate = Field(default=0, description="Probability of 500.")
    fail_first: int = Field(
        default=0,
        ge=0,
        description="Answer the first N sends after this config is set with 500, then go on "
        "as configured (a failure that happens exactly once, for tests).",
    )
    garbage_rate: Rate = Field(default=0, description="Probability of 200 with a non-JSON body.")
    garbage_code_rate: Rate = Field(default=0, description='Probability of 200 with "code": 1.')
    throttle_rate: Rate = Field(default=0, description="Probability of 429 with Retry-After.")
    retry_after_seconds: int = Field(default=1, ge=0, description="Retry-After of a 429.")
    reject_rate: Rate = Field(default=0, description="Probability of a permanent 400.")
    outage: bool = Field(default=False, description="Answer every send with 503 while true.")
    outage_mode: Literal["503", "hang"] = Field(
        default="503", description='"hang" waits hang_seconds before the 503.'
    )
    hang_seconds: float = Field(default=30, ge=0)
    seed: int | None = Field(default=None, description="Seed of the random draws, for repeats.")
    refuse_credentials: Literal[401, 403] | None = Field(
        default=None,
        description="Answer every send with this status while set, as a remote that no longer "
        "takes our token (401) or our account (403).",
    )


class Outcome(enum.Enum):
    """How one send request was answered."""

    OK = "ok"
    UNAUTHORIZED = "unauthorized"
    INVALID = "invalid"
    OUTAGE = "outage"
    REJECTED = "rejected"
    THROTTLED = "throttled"
    ERROR = "error"
    GARBAGE = "garbage"
    GARBAGE_CODE = "garbage_code"


# (received, accepted, phone, text, first_accepted_at, last_received_at) of one msgId. A plain
# tuple, not a NamedTuple: the GC untracks exact tuples of atoms, so a million records add no
# pause to full collections (a NamedTuple stays tracked: ~150 ms per collection at 1M).
MessageRecord = tuple[int, int, int, str, float | None, float]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


class SimulatorState:
    """The current config and the counters of one simulator app."""

    __slots__ = (
        "_decide_rng",
        "_failures_left",
        "_jitter_rng",
        "_texts",
        "accepted",
        "by_outcome",
        "by_status",
        "config",
        "duplicates",
        "in_flight",
        "max_in_flight",
        "messages",
        "received",
        "token",
        "unique_accepted",
    )

    def __init__(self, config: SimulatorConfig | None = None, token: str = DEFAULT_TOKEN) -> None:
        self.token = token
        self.in_flight = 0
        self.config = config or SimulatorConfig()
        self._failures_left = self.config.fail_first
        self.reset_counters()

    def set_config(self, config: SimulatorConfig) -> None:
        """Replace the config and restart the random streams from its seed."""
        self.config = config
        self._failures_left = config.fail_first
        self._reseed()

    def _reseed(self) -> None:
        seed = self.config.seed
        # Separate streams: the sequence of outcomes must not depend on whether jitter is on.
        self._decide_rng = random.Random(seed)
        self._jitter_rng = random.Random(None if seed is None else seed + 1)

    def reset_counters(self) -> None:
        """Forget every counter and message record (requests in flight still finish)."""
        self.received = 0
        self.accepted = 0
        self.unique_accepted = 0
        self.duplicates = 0
        self.by_status: dict[int, int] = {}
        self.by_outcome: dict[str, int] = {}
        # Requests in flight will still decrement in_flight, so it must survive a reset.
        self.max_in_flight = self.in_flight
        self.messages: dict[int, MessageRecord] = {}
        self._texts: dict[str, str] = {}
        # A reset starts a seeded run over, so that it repeats from its first request.
        self._reseed()

    def decide(self) -> Outcome:
        """Draw the outcome of one valid send, in the documented order of failures."""
        config = self.config
        if config.outage:
            return Outcome.OUTAGE
        if self._failures_left > 0:
            self._failures_left -= 1
            return Outcome.ERROR
        draw = self._decide_rng.random
        # A rate of 0 draws nothing, so that switching one failure on keeps the others' stream.
        if config.reject_rate and draw() < config.reject_rate:
            return Outcome.REJECTED
        if config.throttle_rate and draw() < config.throttle_rate:
            return Outcome.THROTTLED
        if config.error_rate and draw() < config.error_rate:
            return Outcome.ERROR
        if config.garbage_rate and draw() < config.garbage_rate:
            return Outcome.GARBAGE
        if config.garbage_code_rate and draw() < config.garbage_code_rate:
            return Outcome.GARBAGE_CODE
        return Outcome.OK

    def delay_seconds(self) -> float:
        """The latency to add to one answer."""
        config = self.config
        delay = config.latency_ms
        if config.latency_jitter_ms:
            delay += self._jitter_rng.uniform(0, config.latency_jitter_ms)
        return delay / 1000

    def note_received(self, msg_id: int, phone: int, text: str) -> None:
        """Count one valid send of msg_id."""
        cached = self._texts.get(text)
        if cached is not None:
            text = cached
        elif len(self._texts) < _TEXT_CACHE_SIZE:
            self._texts[text] = text
        now = time.time()
        record = self.messages.get(msg_id)
        if record is None:
            self.messages[msg_id] = (1, 0, phone, text, None, now)
        else:
            received, accepted, _, _, first_accepted_at, _ = record
            self.messages[msg_id] = (received + 1, accepted, phone, text, first_accepted_at, now)

    def note_accepted(self, msg_id: int) -> None:
        """Count one answer of 200 code 0 for msg_id."""
        self.accepted += 1
        record = self.messages.get(msg_id)
        if record is None:  # the counters were reset while the request was in flight
            return
        received, accepted, phone, text, first_accepted_at, last_received_at = record
        if accepted:
            self.duplicates += 1
        else:
            self.unique_accepted += 1
            first_accepted_at = time.time()
        self.messages[msg_id] = (
            received,
            accepted + 1,
            phone,
            text,
            first_accepted_at,
            last_received_at,
        )

    def note_answer(self, status: int, outcome: Outcome) -> None:
        """Count one answer by HTTP status and by outcome."""
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.by_outcome[outcome.value] = self.by_outcome.get(outcome.value, 0) + 1

    def stats(self) -> dict[str, Any]:
        """The counters as JSON."""
        return {
            "received": self.received,
            "accepted": self.accepted,
            "unique_accepted": self.unique_accepted,
            "duplicates": self.duplicates,
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
            "by_outcome": dict(self.by_outcome),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }

    def message(self, msg_id: int) -> dict[str, Any] | None:
        """The record of one msgId as JSON, or None if it was never received."""
        record = self.messages.get(msg_id)
        if record is None:
            return None
        received, accepted, phone, text, first_accepted_at, last_received_at = record
        return {
            "msg_id": msg_id,
            "received": received,
            "accepted": accepted,
            "phone": phone,
            "text": text,
            "first_accepted_at": _iso(first_accepted_at),
            "last_received_at": _iso(last_received_at),
        }


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
        state.note_accepted(msg)
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


def create_app(config: SimulatorConfig | None = None, token: str = DEFAULT_TOKEN) -> FastAPI:
    """A new simulator app; its state is `app.state.simulator`, a SimulatorState."""
    state = SimulatorState(config, token)
    app = FastAPI(
        title="SMS API simulator",
        description="Simulates the external SMS-sending API, with injectable latency and failures.",
        version="1.0",
    )
    app.state.simulator = state

    @app.post("/v1/send/{msg_id}", tags=["api"], response_class=Response)
    async def send(msg_id: str, request: Request) -> Response:
        """Send one SMS: body {"id": msgId, "phone": 7XXXXXXXXXX, "text": "..."}."""
        state.received += 1
        state.in_flight += 1
        if state.in_flight > state.max_in_flight:
            state.max_in_flight = state.in_flight
        try:
            return await _answer_send(state, msg_id, request)
        finally:
            state.in_flight -= 1

    @app.get("/healthz", tags=["control"])
    async def healthz() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok"}

    @app.get("/_sim/stats", tags=["control"])
    async def stats() -> dict[str, Any]:
        """Counters of send requests since start or the last reset."""
        return state.stats()

    @app.get("/_sim/messages/{msg_id}", tags=["control"], response_model=None)
    async def message(msg_id: int) -> dict[str, Any] | JSONResponse:
        """What the simulator received and accepted for one msgId."""
        record = state.message(msg_id)
        if record is None:
            return JSONResponse({"code": 404, "message": "message not received"}, status_code=404)
        return record

    @app.get("/_sim/config", tags=["control"])
    async def get_config() -> SimulatorConfig:
        """The current behaviour switches."""
        return state.config

    @app.put("/_sim/config", tags=["control"])
    async def put_config(config: SimulatorConfig) -> SimulatorConfig:
        """Replace all behaviour switches (omitted ones take their defaults)."""
        state.set_config(config)
        logger.info("simulator config replaced: %s", config.model_dump_json())
        return config

    @app.patch("/_sim/config", tags=["control"])
    async def patch_config(changes: Annotated[dict[str, Any], Body()]) -> SimulatorConfig:
        """Change only the given behaviour switches."""
        try:
            config = SimulatorConfig.model_validate(state.config.model_dump() | changes)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from exc
        state.set_config(config)
        logger.info("simulator config changed: %s", config.model_dump_json())
        return config

    @app.post("/_sim/reset", tags=["control"])
    async def reset(config: bool = False) -> dict[str, str]:
        """Clear counters and message records; ?config=true also restores the default switches."""
        if config:
            state.set_config(SimulatorConfig())
        state.reset_counters()
        logger.info("simulator reset (config=%s)", config)
        return {"status": "ok"}

    return app


app = create_app(token=os.environ.get("SEND_API_TOKEN", DEFAULT_TOKEN))
