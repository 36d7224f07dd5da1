"""Bodies of a schedule (a recurring dispatch): its create and edit, the dispatch each run makes,
and the schedule as answered with its next and recent runs."""

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from api.schemas.common import NO_NUL, RequestBody
from api.schemas.dispatches import (
    NORMALIZE_DESCRIPTION,
    TEXT_DESCRIPTION,
    TRANSACTIONAL_DESCRIPTION,
    DispatchCreate,
    DispatchFilter,
    Text,
    WindowSchema,
)
from core.contracts.shared import DeliveryShape
from core.cron import CRON_MAX_LENGTH, check_cron
from core.models import SCHEDULE_NAME_MAX_LENGTH
from core.phones import validate_timezone

# A run's dispatch lasts at least a minute and at most a week.
DURATION_MAX_MINUTES = 7 * 24 * 60

CRON_DESCRIPTION = (
    "Five fields, `minute hour day-of-month month day-of-week` (e.g. `0 10 * * MON`, "
    "`*/30 9-18 * * MON-FRI`), each a comma list of `*`, `N`, `N-M`, optionally `/step`; months "
    "and days by name too; or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. A day of "
    "the month and a day of the week both given must both match. Read in `timezone`."
)
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=SCHEDULE_NAME_MAX_LENGTH, pattern=NO_NUL)
]
Cron = Annotated[str, StringConstraints(min_length=1, max_length=CRON_MAX_LENGTH)]
Zone = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class Overlap(StrEnum):
    """What a run does while the schedule's previous dispatch is still open."""

    SKIP = "skip"
    ALLOW = "allow"


class ScheduleDispatch(RequestBody):
    """The dispatch each run makes: what POST /dispatches takes, but for its times. It starts
    at the run's scheduled time and ends `duration_minutes` later."""

    text: Text = Field(description=TEXT_DESCRIPTION)
    filter: DispatchFilter
    window: WindowSchema | None = None
    duration_minutes: int = Field(
        ge=1,
        le=DURATION_MAX_MINUTES,
        description="How long each run's dispatch may send: its end_at is its start (the "
        "scheduled time) plus this many minutes (at most a week).",
    )
    normalize_text: bool = Field(default=False, description=NORMALIZE_DESCRIPTION)
    delivery: DeliveryShape = Field(
        default=DeliveryShape.COHORTS, description="As on POST /dispatches."
    )
    transactional: bool = Field(default=False, description=TRANSACTIONAL_DESCRIPTION)

    def create_body(self, start_at: datetime) -> DispatchCreate:
        """The body of POST /dispatches for the run scheduled at `start_at` (aware)."""
        return DispatchCreate(
            start_at=start_at,
            end_at=start_at + timedelta(minutes=self.duration_minutes),
            text=self.text,
            filter=self.filter,
            window=self.window,
            normalize_text=self.normalize_text,
            delivery=self.delivery,
            transactional=self.transactional,
        )


class ScheduleCreate(RequestBody):
    """A new schedule: a Temporal Schedule that makes a dispatch at each time of `cron`."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "name": "weekly",
                "cron": "0 10 * * MON",
                "timezone": "Europe/Moscow",
                "dispatch": {
                    "text": "Our shop is open on Sunday",
                    "filter": {"tags": ["vip"]},
                    "window": {"start": "09:00", "end": "21:00"},
                    "duration_minutes": 180,
                },
                "overlap": "skip",
            }
        }
    )

    name: Name
    cron: Cron = Field(description=CRON_DESCRIPTION)
    timezone: Zone = Field(description="The IANA zone the cron is read in, e.g. Europe/Moscow.")
    dispatch: ScheduleDispatch
    overlap: Overlap = Field(
        default=Overlap.SKIP,
        description="`skip` (default): a run while the schedule's previous dispatch is still "
        "scheduled, running or paused makes none (counted in `runs_skipped`). `allow`: every "
        "run makes its dispatch.",
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return validate_timezone(value)


class ScheduleUpdate(RequestBody):
    """Fields to change; `dispatch` replaces the whole dispatch part. The next runs follow at
    once; a dispatch already made keeps what it was made with."""

    name: Name | None = None
    cron: Cron | None = Field(default=None, description=CRON_DESCRIPTION)
    timezone: Zone | None = None
    dispatch: ScheduleDispatch | None = None
    overlap: Overlap | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else validate_timezone(value)


class ScheduleRunPublic(BaseModel):
    """A recent run, from the Temporal Schedule's description."""

    scheduled_at: datetime = Field(description="Its time by the cron (or of the run now).")
    started_at: datetime = Field(description="When Temporal started it.")
    workflow_id: str = Field(description="Its workflow, e.g. `schedule-7-2026-12-07T07:00:00Z`.")
    dispatch_id: int | None = Field(
        default=None,
        description="The dispatch it made; null while it runs, when it made none (skipped), or "
        "once that dispatch was deleted.",
    )


class SchedulePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    cron: str
    timezone: str
    dispatch: ScheduleDispatch
    overlap: Overlap
    paused: bool
    pause_reason: str | None = Field(default=None, description="Why it is paused, if given.")
    temporal_id: str = Field(description="Its Temporal Schedule's id (`schedule-<id>`).")
    next_runs: list[AwareDatetime] = Field(
        default_factory=list,
        description="Its next 5 times, in its zone (empty while paused, or when Temporal does "
        "not answer).",
    )
    recent_runs: list[ScheduleRunPublic] = Field(
        default_factory=list, description="Its last runs (up to 10), newest first."
    )
    described: bool = Field(
        default=True,
        description="False when Temporal did not answer: next_runs and recent_runs are empty.",
    )
    dispatch_count: int = Field(description="The dispatches it made that still exist.")
    runs_skipped: int = Field(
        description="Runs that made no dispatch: its previous one still open (overlap `skip`), "
        "the schedule paused, or a run so late that its dispatch would have ended."
    )
    last_skipped_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
