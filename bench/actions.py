"""What one dispatch costs on Temporal Cloud, which bills per action (about USD 50 per million
at list price): its actions counted from the histories of every run of every workflow of the
dispatch, heartbeats from the server's `action` counter.

The rules follow https://docs.temporal.io/cloud/actions (events by type, per run):

- WorkflowExecutionStarted: one "workflow start" for a run started by a client (the API
  starting `dispatch-<id>`), or by a retry or cron; one "continue-as-new" for a run continued
  as new. A child's first run is not counted here: its parent's history counts it.
- Child workflows: Cloud bills two actions per child, the intent
  (StartChildWorkflowExecutionInitiated, "child start intent") and the start itself
  (ChildWorkflowExecutionStarted in the parent, "child workflow start"); the child's own
  WorkflowExecutionStarted is not counted again.
- ActivityTaskScheduled: one "activity" each; ActivityTaskStarted's attempt - 1: "activity
  retries" (intermediate attempts leave no events of their own).
- TimerStarted: one "timer" each (workflow.sleep, wait_condition with a timeout).
- Signals: one action per signal, counted where it lands: every WorkflowExecutionSignaled
  (from a client such as the API, or from another workflow), plus every
  SignalExternalWorkflowExecutionFailed (sent by a workflow, received by none). A
  SignalExternalWorkflowExecutionInitiated is not counted: its WorkflowExecutionSignaled in the
  receiver's history is (all receivers are workflows of the same dispatch), so a signal from
  one of the dispatch's workflows to another counts once.
- WorkflowExecutionUpdateAccepted: one "update" each (rejected updates leave no event).
- MarkerRecorded (local activities, side effects, `workflow.patched`): Cloud counts every
  marker of one workflow task as one action, so "marker tasks" are the distinct workflow tasks
  that recorded a marker.
- UpsertWorkflowSearchAttributes: one each, unless it sets only TemporalChangeVersion (exempt).
- WorkflowExecutionOptionsUpdated: one each.
- Heartbeats reach the server without an event: the delta of the dev server's `action`
  counter (action_type grpc_RecordActivityTaskHeartbeat) over the dispatch, or of its
  RecordActivityTaskHeartbeat request counter. Without either, an estimate from the histories:
  for each activity with a heartbeat timeout, 1 + its run time / (0.8 x that timeout), the SDK's
  throttle (an activity that heartbeats more often reaches the server at most that often).

Queries (the API's progress endpoint) reach no history; the server's counter has them.
"""

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import ContinueAsNewInitiator, EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from bench.figures import ActionFigures
from bench.scrape import ServerCounters

log = logging.getLogger(__name__)

USD_PER_MILLION_ACTIONS = 50.0
# Histories read at once: one dispatch of the per-client shape has one per client.
CONCURRENCY = 8
# After the dispatch shows completed, its workflows may still be closing.
SETTLE_TIMEOUT = 30.0
# The SDK sends a heartbeat at most once per this share of the heartbeat timeout.
HEARTBEAT_THROTTLE_SHARE = 0.8
EXEMPT_SEARCH_ATTRIBUTES = {"TemporalChangeVersion"}

# Display order of the kinds.
KINDS = (
    "workflow starts",
    "continue-as-new",
    "child start intents",
    "child workflow starts",
    "activities",
    "activity retries",
    "timers",
    "signals",
    "updates",
    "marker tasks",
    "search attribute upserts",
    "options updates",
    "heartbeats",
)

RULES = (
    "per run: client/retry/cron WorkflowExecutionStarted; WorkflowExecutionStarted of a run "
    "continued as new; per child 2 (StartChildWorkflowExecutionInitiated + "
    "ChildWorkflowExecutionStarted in the parent; the child's own start not counted); "
    "ActivityTaskScheduled + (attempt - 1) of ActivityTaskStarted; TimerStarted; signals "
    "where they land (WorkflowExecutionSignaled, plus SignalExternalWorkflowExecutionFailed; "
    "SignalExternalWorkflowExecutionInitiated not counted); WorkflowExecutionUpdateAccepted; "
    "workflow tasks with a MarkerRecorded (one each); UpsertWorkflowSearchAttributes (but "
    "TemporalChangeVersion alone); WorkflowExecutionOptionsUpdated; heartbeats from the "
    "server's action counter"
)

E = EventType


@dataclass
class _Tally:
    by_kind: Counter[str] = field(default_factory=Counter)
    exempt: Counter[str] = field(default_factory=Counter)
    runs: int = 0
    events: int = 0
    heartbeat_estimate: float = 0.0


def dispatch_query(dispatch_id: int) -> str:
    parent = f"dispatch-{dispatch_id}"
    return f'WorkflowId = "{parent}" OR WorkflowId STARTS_WITH "{parent}-"'


async def settle(client: Client, dispatch_id: int, timeout_s: float = SETTLE_TIMEOUT) -> bool:
    """Until no workflow of the dispatch runs (True), or the timeout (False)."""
    query = f'({dispatch_query(dispatch_id)}) AND ExecutionStatus = "Running"'
    deadline = time.monotonic() + timeout_s
    while True:
        running = (await client.count_workflows(query)).count
        if running == 0:
            return True
        if time.monotonic() >= deadline:
            log.warning("%d workflows of dispatch %d still running", running, dispatch_id)
            return False
        await asyncio.sleep(0.5)


def _seconds(event: HistoryEvent) -> float:
    return float(event.event_time.ToMicroseconds()) / 1e6


def _count_event(
    event: HistoryEvent,
    tally: _Tally,
    marker_tasks: set[int],
    heartbeat_timeouts: dict[int, float],
    started_at: dict[int, float],
) -> None:
    kind = event.event_type
    kinds = tally.by_kind
    if kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
        started = event.workflow_execution_started_event_attributes
        if started.continued_execution_run_id:
            if started.initiator == ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_WORKFLOW:
                kinds["continue-as-new"] += 1
            else:  # a retry or a cron run
                kinds["workflow starts"] += 1
        elif not started.parent_workflow_execution.workflow_id:
            kinds["workflow starts"] += 1
        # else: a child's first run, counted in its parent
    elif kind == E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
        kinds["child start intents"] += 1
    elif kind == E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
        kinds["child workflow starts"] += 1
    elif kind == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        kinds["activities"] += 1
        scheduled = event.activity_task_scheduled_event_attributes
        timeout = scheduled.heartbeat_timeout.ToMicroseconds() / 1e6
        if timeout > 0:
            heartbeat_timeouts[event.event_id] = timeout
    elif kind == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
        attrs = event.activity_task_started_event_attributes
        if attrs.attempt > 1:
            kinds["activity retries"] += attrs.attempt - 1
        if attrs.scheduled_event_id in heartbeat_timeouts:
            started_at[attrs.scheduled_event_id] = _seconds(event)
    elif kind in (
        E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
        E.EVENT_TYPE_ACTIVITY_TASK_FAILED,
        E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
        E.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
    ):
        _close_activity(event, tally, heartbeat_timeouts, started_at)
    elif kind == E.EVENT_TYPE_TIMER_STARTED:
        kinds["timers"] += 1
    elif kind in (
        E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED,
    ):
        kinds["signals"] += 1
    elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
        kinds["updates"] += 1
    elif kind == E.EVENT_TYPE_MARKER_RECORDED:
        task = event.marker_recorded_event_attributes.workflow_task_completed_event_id
        if task not in marker_tasks:
            marker_tasks.add(task)
            kinds["marker tasks"] += 1
    elif kind == E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
        fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
        if set(fields.indexed_fields) <= EXEMPT_SEARCH_ATTRIBUTES:
            # workflow.patched's own; the OSS server's counter has them, Cloud does not bill
            tally.exempt["TemporalChangeVersion upserts"] += 1
        else:
            kinds["search attribute upserts"] += 1
    elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED:
        kinds["options updates"] += 1


def _close_activity(
    event: HistoryEvent,
    tally: _Tally,
    heartbeat_timeouts: dict[int, float],
    started_at: dict[int, float],
) -> None:
    """The heartbeat estimate of a closed activity that had a heartbeat timeout."""
    kind = event.event_type
    if kind == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
        scheduled_id = event.activity_task_completed_event_attributes.scheduled_event_id
    elif kind == E.EVENT_TYPE_ACTIVITY_TASK_FAILED:
        scheduled_id = event.activity_task_failed_event_attributes.scheduled_event_id
    elif kind == E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
        scheduled_id = event.activity_task_timed_out_event_attributes.scheduled_event_id
    else:
        scheduled_id = event.activity_task_canceled_event_attributes.scheduled_event_id
    timeout = heartbeat_timeouts.pop(scheduled_id, None)
    began = started_at.pop(scheduled_id, None)
    if timeout is None or began is None:
        return
    tally.heartbeat_estimate += 1 + (_seconds(event) - began) // (
        HEARTBEAT_THROTTLE_SHARE * timeout
    )


async def _count_run(client: Client, workflow_id: str, run_id: str, tally: _Tally) -> None:
    marker_tasks: set[int] = set()
    heartbeat_timeouts: dict[int, float] = {}
    started_at: dict[int, float] = {}
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events():
        tally.events += 1
        _count_event(event, tally, marker_tasks, heartbeat_timeouts, started_at)
    tally.runs += 1


def _per_1000(count: float, messages: int) -> float | None:
    return round(count * 1000 / messages, 2) if messages else None


def _usd_per_million_messages(per_1000: float | None) -> float | None:
    # actions per message x 1e6 messages x USD per action
    return None if per_1000 is None else round(per_1000 / 1000 * USD_PER_MILLION_ACTIONS, 4)


async def dispatch_actions(
    client: Client,
    *,
    dispatch_id: int,
    messages: int,
    server: ServerCounters | None,
) -> ActionFigures:
    """`server`: the server's counters over the dispatch (after minus before), if any."""
    runs = [(w.id, w.run_id) async for w in client.list_workflows(dispatch_query(dispatch_id))]
    tally = _Tally()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def count(workflow_id: str, run_id: str) -> None:
        async with gate:
            await _count_run(client, workflow_id, run_id, tally)

    started = time.monotonic()
    await asyncio.gather(*(count(workflow_id, run_id) for workflow_id, run_id in runs))
    log.info(
        "dispatch %d: %d events of %d runs read in %.1f s",
        dispatch_id,
        tally.events,
        tally.runs,
        time.monotonic() - started,
    )

    estimate = int(tally.heartbeat_estimate)
    note = None
    heartbeats: int | None
    if server is None:
        heartbeats, method = estimate, "estimate"
        note = (
            "the server's metrics were not readable: heartbeats estimated as 1 + run time / "
            f"({HEARTBEAT_THROTTLE_SHARE} x heartbeat timeout) per activity with one"
        )
    elif server.heartbeat_actions > 0 or not server.heartbeat_requests:
        heartbeats, method = int(server.heartbeat_actions), "server action metric"
    else:
        heartbeats, method = int(server.heartbeat_requests), "server RPC metric"
    by_kind = {kind: int(tally.by_kind[kind]) for kind in KINDS if tally.by_kind[kind]}
    if heartbeats:
        by_kind["heartbeats"] = heartbeats
    total = sum(by_kind.values())
    per_1000 = _per_1000(total, messages)
    server_total = None if server is None else int(sum(server.actions.values()))
    return ActionFigures(
        messages=messages,
        runs=tally.runs,
        events=tally.events,
        by_kind=by_kind,
        not_billed=dict(tally.exempt),
        total=total,
        per_1000_messages=per_1000,
        usd_per_million_messages=_usd_per_million_messages(per_1000),
        heartbeats=heartbeats,
        heartbeats_method=method,
        heartbeats_estimate=estimate,
        server_total=server_total,
        server_per_1000_messages=(
            None if server_total is None else _per_1000(server_total, messages)
        ),
        server_by_type=(
            None
            if server is None
            else {kind: int(value) for kind, value in sorted(server.actions.items())}
        ),
        usd_per_million_actions=USD_PER_MILLION_ACTIONS,
        rules=RULES,
        note=note,
    )
