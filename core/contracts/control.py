"""Pause, resume and cancel of a dispatch: the dispatch workflow's `control` update and
signals, the activity that applies a command to the row, and the wake-up of its deliveries."""

from dataclasses import dataclass

CONTROL_REFUSED = "ControlRefused"  # a pause, resume or cancel the dispatch's status refuses

DISPATCH_NOT_FOUND = "DispatchNotFound"  # a command for a dispatch deleted meanwhile

CONTROL_UPDATE = "control"  # the dispatch workflow's update: pause, resume or cancel


@dataclass
class ControlInput:
    """A pause, resume or cancel of a dispatch, from the Temporal UI or CLI (signals of the same
    names on the dispatch workflow) or from the API."""

    dispatch_id: int
    command: str
    reason: str | None = None
    # Who asked: "temporal" for a signal from the Temporal UI or CLI, or the API's actor.
    actor: str = "temporal"


@dataclass
class ControlUpdate:
    """The `control` update of the dispatch workflow (what the API sends): the command, and
    the reason and actor kept with it."""

    command: str
    reason: str | None = None
    actor: str = "api"


@dataclass
class ControlResult:
    status: str
    changed: bool
    messages_cancelled: int = 0


@dataclass
class ControlSignal:
    """The body of the `pause`, `resume` and `cancel` signals (all fields optional)."""

    reason: str | None = None


@dataclass
class WakeDeliveriesInput:
    dispatch_id: int
    reason: str


@dataclass
class WakeDeliveriesResult:
    signalled: int
