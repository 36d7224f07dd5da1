"""Send routes: the gateways a message may go through, each with its token, its cap in segments
or messages per second, its concurrency, the clients it may serve and its priority.

`SEND_ROUTES` (a JSON list) or `SEND_ROUTES_FILE` (a JSON or YAML file of the same list)
defines them; without either, one route `default` is made of SEND_API_URL, SEND_API_TOKEN and
SEND_RATE_PER_SECOND (in messages, as before routes existed). A bad definition is refused when
the settings are read, so the worker and the API stop at start with a message naming the route
and the field.
"""

import json
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.models import ROUTE_NAME_MAX_LENGTH

DEFAULT_ROUTE = "default"


class CircuitState(StrEnum):
    """A route's health (activities.circuits)."""

    CLOSED = "closed"  # in use
    OPEN = "open"  # down: its traffic goes to the next route; probed with backoff
    PROBING = "probing"  # one request is finding out whether it is back


class RateUnit(StrEnum):
    SEGMENTS = "segments"  # each SMS part counts: what gateways bill and throttle
    MESSAGES = "messages"


class RouteSpec(BaseModel):
    """One route as written in SEND_ROUTES; no secret: the token is in the variable named."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=rf"^[a-z0-9][a-z0-9_-]{{0,{ROUTE_NAME_MAX_LENGTH - 1}}}$")
    url: str = Field(pattern=r"^https?://[^\s/]+", description="The base of its send API.")
    token_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    rate_per_second: float | None = Field(default=None, gt=0)
    rate_unit: RateUnit = RateUnit.SEGMENTS
    # Requests in flight through this route from one worker process (within SEND_CONCURRENCY).
    concurrency: int | None = Field(default=None, ge=1)
    # Which clients it may serve; None: all. Both given: a client must match both.
    operator_codes: list[str] | None = None
    prefixes: list[str] | None = None
    priority: int = 100

    @field_validator("operator_codes")
    @classmethod
    def _codes(cls, codes: list[str] | None) -> list[str] | None:
        for code in codes or []:
            if not re.fullmatch(r"\d{3}", code):
                raise ValueError(f"an operator code is 3 digits, got {code!r}")
        return codes

    @field_validator("prefixes")
    @classmethod
    def _prefixes(cls, prefixes: list[str] | None) -> list[str] | None:
        for prefix in prefixes or []:
            if not re.fullmatch(r"\d{1,11}", prefix):
                raise ValueError(
                    f"a prefix is 1 to 11 digits of the number 7XXXXXXXXXX, got {prefix!r}"
                )
        return prefixes


@dataclass(frozen=True)
class Route:
    """A route ready to use: its definition and its token."""

    name: str
    url: str
    token: str = field(repr=False)
    rate_per_second: float | None = None
    rate_unit: RateUnit = RateUnit.MESSAGES
    concurrency: int | None = None
    operator_codes: frozenset[str] | None = None
    prefixes: tuple[str, ...] | None = None
    priority: int = 100

    def serves(self, phone: str | None, operator_code: str | None) -> bool:
        """Whether this route may carry a message to this number."""
        if self.operator_codes is not None and operator_code not in self.operator_codes:
            return False
        if self.prefixes is not None:
            return phone is not None and phone.startswith(self.prefixes)
        return True

    def units(self, segments: int) -> int:
        """What one message of this many segments costs of the route's cap."""
        return segments if self.rate_unit == RateUnit.SEGMENTS else 1

    @property
    def public(self) -> dict[str, Any]:
        """The definition without its token, as the API shows it."""
        return {
            "name": self.name,
            "url": self.url,
            "rate_per_second": self.rate_per_second,
            "rate_unit": self.rate_unit,
            "concurrency": self.concurrency,
            "operator_codes": None if self.operator_codes is None else sorted(self.operator_codes),
            "prefixes": None if self.prefixes is None else list(self.prefixes),
            "priority": self.priority,
        }


class RoutesError(ValueError):
    """The routes definition cannot be used; the message names the route and the field."""


def _serves_nobody(spec: RouteSpec) -> str | None:
    """Why no client's number could match the route, if none could."""
    if spec.operator_codes == []:
        return "operator_codes is empty"
    if spec.prefixes == []:
        return "prefixes is empty"
    if spec.operator_codes is not None:
        codes = [code for code in spec.operator_codes if code.startswith("9")]
        if not codes:
            return "operator_codes has no mobile code (9XX), and every client has one"
    else:
        codes = ["9??"]
    # The start of a client's number: 7, then its operator code ("?" any digit).
    starts = ["7" + code for code in codes]

    def matches(prefix: str, start: str) -> bool:
        return all(p == s or s == "?" for p, s in zip(prefix, start, strict=False))

    if not any(matches(prefix, start) for prefix in spec.prefixes or ["7"] for start in starts):
        return "prefixes match no client's number (7 9XX XXX XX XX)" + (
            " of its operator_codes" if spec.operator_codes else ""
        )
    return None


def _spec_errors(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()
    )


def parse_routes(raw: Any, environ: dict[str, str] | None = None) -> list[Route]:
    """The routes of a definition (a list of objects), by priority; raises RoutesError."""
    environ = dict(os.environ) if environ is None else environ
    if not isinstance(raw, list) or not raw:
        raise RoutesError("the routes definition must be a non-empty list of routes")
    routes, names = [], set()
    for index, item in enumerate(raw):
        try:
            spec = RouteSpec.model_validate(item)
        except ValidationError as error:
            name = item.get("name") if isinstance(item, dict) else None
            who = f"route {name!r}" if isinstance(name, str) else f"route number {index + 1}"
            raise RoutesError(f"{who}: {_spec_errors(error)}") from None
        where = f"route {spec.name!r}"
        if spec.name in names:
            raise RoutesError(f"{where}: name: another route has this name")
        names.add(spec.name)
        token = environ.get(spec.token_env, "")
        if not token:
            raise RoutesError(
                f"{where}: token_env: the environment variable {spec.token_env} is not set"
            )
        nobody = _serves_nobody(spec)
        if nobody:
            raise RoutesError(f"{where}: serves no client: {nobody}")
        routes.append(
            Route(
                name=spec.name,
                url=spec.url.rstrip("/"),
                token=token,
                rate_per_second=spec.rate_per_second,
                rate_unit=spec.rate_unit,
                concurrency=spec.concurrency,
                operator_codes=None
                if spec.operator_codes is None
                else frozenset(spec.operator_codes),
                prefixes=None if spec.prefixes is None else tuple(spec.prefixes),
                priority=spec.priority,
            )
        )
    # Stable: routes of one priority keep the order they were written in.
    return sorted(routes, key=lambda route: route.priority)


def load_routes(
    *, routes_json: str | None, routes_file: Path | None, environ: dict[str, str] | None = None
) -> list[Route] | None:
    """The routes of SEND_ROUTES or SEND_ROUTES_FILE; None when neither is set."""
    if routes_json and routes_file:
        raise RoutesError("set SEND_ROUTES or SEND_ROUTES_FILE, not both")
    if routes_json:
        try:
            raw = json.loads(routes_json)
        except ValueError as error:
            raise RoutesError(f"SEND_ROUTES is not JSON: {error}") from None
        return parse_routes(raw, environ)
    if routes_file:
        try:
            text = routes_file.read_text()
        except OSError as error:
            raise RoutesError(f"SEND_ROUTES_FILE: cannot read {routes_file}: {error}") from None
        try:
            # YAML is a superset of JSON: one parser reads both.
            raw = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise RoutesError(
                f"SEND_ROUTES_FILE {routes_file} is not JSON or YAML: {error}"
            ) from None
        return parse_routes(raw, environ)
    return None


def covers_everyone(routes: list[Route]) -> bool:
    """Whether some route may serve any client (else some numbers have no route at all)."""
    return any(
        route.operator_codes is None
        and (route.prefixes is None or bool({"7", "79"} & set(route.prefixes)))
        for route in routes
    )
