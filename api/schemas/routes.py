"""A send route as answered: its definition (never its token) and its circuit's health."""

from datetime import datetime

from pydantic import BaseModel, Field

from core.routes import CircuitState, RateUnit


class RouteHealth(BaseModel):
    """The route's circuit as every worker process shares it; a route whose circuit never
    opened is `closed` with nulls."""

    state: CircuitState = Field(
        description="`closed`: in use. `open`: down, its traffic goes to the next route that "
        "may serve each client. `probing`: one request is finding out whether it is back."
    )
    since: datetime | None = Field(description="When it entered this state (null: never moved).")
    down_since: datetime | None = Field(
        description="When its current outage began (open, probing), or its last one (closed); "
        "null if it was never down."
    )
    next_probe_at: datetime | None = Field(
        description="Open: when the next probe may go. Probing: when the probe in flight's "
        "claim lapses and another may go. Null when closed."
    )
    failed_probes: int = Field(description="Probes that found it down in this outage.")
    last_error: str | None = Field(description="What it last failed with.")
    last_error_at: datetime | None = Field(description="When it last failed so.")


class RoutePublic(BaseModel):
    """A configured send route (gateway), as SEND_ROUTES defines it, and its health."""

    name: str = Field(description="Its name, as messages' `route` and the statistics give it.")
    url: str = Field(description="The base of its send API.")
    rate_per_second: float | None = Field(
        description="Its cap across every worker, in `rate_unit` per second (null: none)."
    )
    rate_unit: RateUnit = Field(
        description="`segments` (each SMS part counts) or `messages` (each message counts 1)."
    )
    concurrency: int | None = Field(
        description="Requests in flight through it from one worker process (null: only "
        "SEND_CONCURRENCY bounds them)."
    )
    operator_codes: list[str] | None = Field(
        description="The operator codes of the clients it may serve (null: any)."
    )
    prefixes: list[str] | None = Field(
        description="The starts of the numbers it may serve (null: any); with operator_codes, "
        "a client must match both."
    )
    priority: int = Field(
        description="Lower first: a message takes the first route that may serve its client "
        "and is up."
    )
    health: RouteHealth
