"""The simulated gateways: each one's switches, counters and message records, by name."""

import enum
import random
import re
import time
from array import array
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulator.receipts import Receipts

DEFAULT_TOKEN = "simulator-token"
DEFAULT_GATEWAY = "default"
GATEWAY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")

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
    hang_seconds: float = Field(
        default=30,
        ge=0,
        description="How long a hanging outage, or accept_then_hang, holds its answer.",
    )
    accept_then_hang: bool = Field(
        default=False,
        description="Accept every send that would succeed (it counts as accepted: the phone "
        "gets the SMS), then hold the 200 for hang_seconds: a gateway that took the message "
        "but whose acknowledgement arrives late, or after the caller's timeout.",
    )
    seed: int | None = Field(default=None, description="Seed of the random draws, for repeats.")
    refuse_credentials: Literal[401, 403] | None = Field(
        default=None,
        description="Answer every send with this status while set, as a remote that no longer "
        "takes our token (401) or our account (403).",
    )
    # Delivery receipts (simulator.receipts): one per SMS part of each accepted message.
    receipts_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Where to POST delivery receipts; None: no receipts, and no work for them.",
    )
    receipts_token: str | None = Field(
        default=None, description="Sent as Authorization: Bearer with every receipt post."
    )
    receipt_delay_min_ms: float = Field(
        default=100, ge=0, description="A receipt's delay after acceptance: at least this."
    )
    receipt_delay_max_ms: float = Field(
        default=1000,
        ge=0,
        description="At most this; the delay of each receipt is drawn uniformly between the two.",
    )
    undelivered_rate: Rate = Field(
        default=0,
        description='Share of messages not delivered: one random part gets "undelivered", '
        '"expired" or "rejected" with an error text (such as "DLR 01 absent subscriber"), '
        "the other parts delivered.",
    )
    receipt_duplicate_rate: Rate = Field(
        default=0, description="Share of receipts posted twice, the copy one more delay later."
    )
    receipt_before_answer_rate: Rate = Field(
        default=0,
        description="Share of acceptances whose receipts are posted at once, without delay, "
        "and the 200 held until that post is done: the receipt beats the answer.",
    )
    receipt_batch_size: int = Field(
        default=100,
        ge=1,
        description="Receipts per post, as a JSON list; 1 posts each alone, as an object.",
    )
    receipt_batch_ms: float = Field(
        default=50, ge=0, description="How long a list gathers receipts before it is posted."
    )

    @model_validator(mode="after")
    def _delay_range(self) -> Self:
        if self.receipt_delay_min_ms > self.receipt_delay_max_ms:
            raise ValueError("receipt_delay_min_ms must not exceed receipt_delay_max_ms")
        return self


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
    """The current config and the counters of one simulated gateway."""

    __slots__ = (
        "_accepted_at",
        "_accepted_ids",
        "_arrived_at",
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
        "name",
        "receipts",
        "received",
        "token",
        "unique_accepted",
    )

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        token: str = DEFAULT_TOKEN,
        *,
        name: str = DEFAULT_GATEWAY,
    ) -> None:
        self.token = token
        self.name = name
        self.in_flight = 0
        self.config = config or SimulatorConfig()
        # Its receipts name the gateway as their route.
        self.receipts = Receipts(name, self.config)
        self._failures_left = self.config.fail_first
        self.reset_counters()

    def set_config(self, config: SimulatorConfig) -> None:
        """Replace the config and restart the random streams from its seed."""
        self.config = config
        self._failures_left = config.fail_first
        self.receipts.configure(config)
        self._reseed()

    def _reseed(self) -> None:
        seed = self.config.seed
        # Separate streams: the sequence of outcomes must not depend on whether jitter is on.
        self._decide_rng = random.Random(seed)
        self._jitter_rng = random.Random(None if seed is None else seed + 1)
        self.receipts.reseed(None if seed is None else seed + 2)

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
        # Every acceptance, duplicates included, in order: two flat arrays take 16 bytes an
        # acceptance and give the GC nothing to track (a list of tuples: ~70 bytes, tracked).
        self._accepted_at = array("d")
        self._accepted_ids = array("q")
        # When the request of each acceptance arrived (before the latency): the instant the
        # sender judged its window and end time, give or take the transit.
        self._arrived_at = array("d")
        # Receipts waiting for their delay are dropped; posts in flight still count.
        self.receipts.reset()
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

    def note_accepted(self, msg_id: int, arrived_at: float | None = None) -> None:
        """Count one answer of 200 code 0 for msg_id, whose request arrived at `arrived_at`
        (epoch seconds; None: now)."""
        self.accepted += 1
        record = self.messages.get(msg_id)
        if record is None:  # the counters were reset while the request was in flight
            return
        received, accepted, phone, text, first_accepted_at, last_received_at = record
        now = time.time()
        if accepted:
            self.duplicates += 1
        else:
            self.unique_accepted += 1
            first_accepted_at = now
        self.messages[msg_id] = (
            received,
            accepted + 1,
            phone,
            text,
            first_accepted_at,
            last_received_at,
        )
        self._accepted_at.append(now)
        self._accepted_ids.append(msg_id)
        self._arrived_at.append(now if arrived_at is None else arrived_at)

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
            **self.receipts.stats(),
        }

    def receipt_outcome(self, msg_id: int) -> str | None:
        """The final status decided for msg_id's receipts, or None if none was decided."""
        return self.receipts.outcome(msg_id)

    async def close_receipts(self) -> None:
        """Stop posting receipts (the next acceptance starts again)."""
        await self.receipts.close()

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

    def accepted_log(
        self, *, after_id: int | None = None, limit: int | None = None, offset: int = 0
    ) -> list[tuple[float, int, str]]:
        """(accepted at in epoch seconds, msgId, text) of every acceptance, in order.

        Duplicates appear once per acceptance. after_id starts after the latest acceptance of
        that msgId (KeyError if it has none), `offset` after that many acceptances (pages that
        skip nothing); the text is the msgId's last received one.
        """
        messages = self.messages
        ids = self._accepted_ids
        return [
            (self._accepted_at[i], ids[i], messages[ids[i]][3])
            for i in self._span(after_id, limit, offset)
        ]

    def arrivals_log(
        self, *, after_id: int | None = None, limit: int | None = None, offset: int = 0
    ) -> list[tuple[float, float, int]]:
        """(arrived at, accepted at, msgId) of every acceptance, in the order of
        `accepted_log`: when each accepted request reached the gateway, and when it was
        answered."""
        ids = self._accepted_ids
        return [
            (self._arrived_at[i], self._accepted_at[i], ids[i])
            for i in self._span(after_id, limit, offset)
        ]

    def _span(self, after_id: int | None, limit: int | None, offset: int = 0) -> range:
        ids = self._accepted_ids
        start = offset
        if after_id is not None:
            try:
                start = len(ids) - ids[::-1].index(after_id)
            except ValueError:
                raise KeyError(after_id) from None
        stop = len(ids) if limit is None else min(len(ids), start + limit)
        return range(start, stop)


class GatewayNameError(ValueError):
    """A gateway name outside [a-z0-9][a-z0-9_-]{0,31}."""


def check_gateway_name(name: str) -> str:
    """The name, or GatewayNameError if no gateway may have it."""
    if GATEWAY_NAME.fullmatch(name) is None:
        raise GatewayNameError(f"gateway names match {GATEWAY_NAME.pattern}, not {name!r}")
    return name


class Gateways:
    """The gateways of one simulator app by name, each created on first use.

    A new gateway starts with the default switches and its own token (the app's one unless
    `tokens` names it); `default` is the gateway of the root routes.
    """

    __slots__ = ("_states", "_token", "_tokens")

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        tokens: Mapping[str, str] | None = None,
        config: SimulatorConfig | None = None,
    ) -> None:
        self._token = token
        self._tokens = {check_gateway_name(name): value for name, value in (tokens or {}).items()}
        self._states = {DEFAULT_GATEWAY: SimulatorState(config, self._token_of(DEFAULT_GATEWAY))}

    def _token_of(self, name: str) -> str:
        return self._tokens.get(name, self._token)

    @property
    def default(self) -> SimulatorState:
        return self._states[DEFAULT_GATEWAY]

    def get(self, name: str) -> SimulatorState:
        """The gateway of that name, created if new; GatewayNameError for an invalid name."""
        state = self._states.get(name)
        if state is None:
            state = SimulatorState(token=self._token_of(check_gateway_name(name)), name=name)
            self._states[name] = state
        return state

    def items(self) -> list[tuple[str, SimulatorState]]:
        return list(self._states.items())

    def __contains__(self, name: object) -> bool:
        return name in self._states

    def __iter__(self) -> Iterator[str]:
        # Over a copy: a request may create a gateway between two steps of a caller's loop.
        return iter(tuple(self._states))

    def __len__(self) -> int:
        return len(self._states)

    async def aclose(self) -> None:
        """Stop every gateway's receipts."""
        for state in list(self._states.values()):
            await state.close_receipts()
