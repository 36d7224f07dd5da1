"""Traces of the whole path, exported over OTLP/HTTP to a real receiver in the test's process:
the API's request, the Temporal client's start, the dispatch's and the cohort's workflows, the
batch activity (a trace of its own, linked to its cohort's), the gateway's request and the
write of its outcome. Off by default; replays unchanged with the interceptor and without."""

import asyncio
import gzip
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from fastapi import FastAPI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.remote import RemoteClient
from api.main import create_app
from core import tracing
from core.contracts.shared import dispatch_workflow_id
from core.db import Database
from core.settings import Settings
from core.temporal import connect
from devstack.embedded import free_port
from tests.conftest import RunningSimulator
from tests.support import Queues, api_client, running_workers, settings_for
from worker import WORKFLOWS

pytestmark = pytest.mark.slow

# The histories tests/workflows/test_replay.py replays without tracing.
HISTORIES = {
    path.stem: path.read_text()
    for path in sorted((Path(__file__).parent.parent / "workflows" / "histories").glob("*.json"))
}


@dataclass
class ReceivedSpan:
    name: str
    service: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass
class Receiver:
    """An OTLP/HTTP endpoint: POST /v1/traces, protobuf, every span kept."""

    url: str = ""
    spans: list[ReceivedSpan] = field(default_factory=list)

    async def traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        exported = ExportTraceServiceRequest.FromString(body)
        for resource_spans in exported.resource_spans:
            service = next(
                (
                    _value(a.value)
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            service=service,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=[
                                (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                            ],
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def named(self, name: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.name == name]

    def by_id(self) -> dict[str, ReceivedSpan]:
        return {span.span_id: span for span in self.spans}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", found.traces)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    found.url = f"http://127.0.0.1:{port}"
    try:
        yield found
    finally:
        await runner.cleanup()


def _without_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)


@pytest.fixture
async def traces(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> AsyncIterator[tracing.Tracing]:
    """Tracing on, as an operator switches it on: an OTLP endpoint, nothing else."""
    _without_otel(monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    traces = tracing.configure(service_name="mailing-test")
    assert traces is not None
    try:
        yield traces
    finally:
        # The exporter posts to the receiver on this loop: never block it.
        await asyncio.to_thread(traces.shutdown)
    assert tracing.current() is None


async def flushed(traces: tracing.Tracing) -> None:
    assert await asyncio.to_thread(traces.flush)


def traced_client(client: Client) -> Client:
    """The session's client, with the interceptors `core.temporal.connect` gives it."""
    return Client(**{**client.config(), "interceptors": tracing.interceptors()})


def traced_requests(app: FastAPI) -> bool:
    return any(middleware.cls is tracing.RequestSpans for middleware in app.user_middleware)


def ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> Iterator[ReceivedSpan]:
    """The span, its parent, and so on up to its trace's root."""
    while True:
        yield span
        if not span.parent_span_id:
            return
        span = by_id[span.parent_span_id]


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "mailing"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, []),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ],
)
def test_what_switches_tracing_on(environ: dict[str, str], exporters: list[str]) -> None:
    assert tracing.exporters_wanted(environ) == exporters


async def test_tracing_is_off_by_default(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    dev_env: WorkflowEnvironment,
    queues: Queues,
) -> None:
    _without_otel(monkeypatch)

    def no_provider(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a tracer provider was made with tracing off")

    monkeypatch.setattr(tracing, "TracerProvider", no_provider)
    monkeypatch.setattr(tracing, "_exporter", no_provider)
    assert tracing.configure(service_name="mailing-test") is None
    assert tracing.current() is None
    assert tracing.interceptors() == []
    with tracing.span("nothing") as span:
        assert span is None
    app = create_app(settings)
    assert not traced_requests(app)
    assert app.state.tracing is None
    client = await connect(settings_for(settings, dev_env.client, queues))
    assert client.config()["interceptors"] == []


@dataclass(frozen=True)
class Shape:
    """What a dispatch's shape makes of its sends' spans."""

    delivery: str
    child: str  # the workflow that schedules the sends
    send: str  # the send activity
    write: str  # the span of its outcome's write

    def writes(self, span: ReceivedSpan, message_id: int) -> bool:
        if self.write == "record_outcomes":
            return message_id in span.attributes["mailing.message_ids"]
        return bool(span.attributes["mailing.message_id"] == message_id)


SHAPES = [
    Shape("cohorts", "CohortWorkflow", "send_batch", "record_outcomes"),
    Shape("per_client", "DeliveryWorkflow.v2", "send_message", "record_attempt"),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.delivery)
async def test_a_dispatch_is_traced_from_its_request_to_each_write(
    shape: Shape,
    traces: tracing.Tracing,
    receiver: Receiver,
    dev_env: WorkflowEnvironment,
    settings: Settings,
    queues: Queues,
    db: Database,
    simulator: RunningSimulator,
) -> None:
    temporal = traced_client(dev_env.client)
    s = settings_for(settings, temporal, queues)
    app = create_app(s)
    assert traced_requests(app)
    async with (
        running_workers(s, temporal, db),
        app.router.lifespan_context(app),
        api_client(app) as api,
    ):
        assert isinstance(
            app.state.temporal.config()["interceptors"][0], tracing.TracingInterceptor
        )
        for phone in ("79161234567", "79031234567"):
            response = await api.post("/api/v1/clients", json={"phone": phone, "tag": "traced"})
            assert response.status_code == 201, response.text
        now = datetime.now(UTC)
        response = await api.post(
            "/api/v1/dispatches",
            json={
                "start_at": now.isoformat(),
                "end_at": (now + timedelta(hours=1)).isoformat(),
                "text": "Traced",
                "filter": {"tags": ["traced"]},
                "delivery": shape.delivery,
            },
        )
        assert response.status_code == 201, response.text
        dispatch_id = response.json()["id"]
        async with asyncio.timeout(60):
            while (await api.get(f"/api/v1/dispatches/{dispatch_id}")).json()[
                "status"
            ] != "completed":
                await asyncio.sleep(0.2)
        messages = (await api.get(f"/api/v1/dispatches/{dispatch_id}/messages")).json()["items"]
        message_ids = sorted(m["id"] for m in messages)
        # A list of receipts is one request: one span, none per receipt.
        response = await api.post(
            "/api/v1/receipts",
            json=[
                {"id": m, "status": "delivered", "part": 1, "parts": 1, "at": now.isoformat()}
                for m in message_ids
            ],
        )
        assert response.status_code == 200, response.text
        await flushed(traces)

    by_id = receiver.by_id()
    message_id = message_ids[0]
    # The gateway's request: a client span naming its message, answered 200.
    (request,) = [
        span
        for span in receiver.named("POST /send/{message_id}")
        if span.attributes["mailing.message_id"] == message_id
    ]
    assert request.kind == ProtoSpan.SPAN_KIND_CLIENT
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["url.full"] == f"{simulator.base_url}/send/{message_id}"
    # Its parent, the send activity: the root of a trace of its own ...
    sending = by_id[request.parent_span_id]
    assert sending.name == f"RunActivity:{shape.send}"
    assert sending.parent_span_id == ""
    if shape.send == "send_batch":
        assert sending.attributes["mailing.dispatch_id"] == dispatch_id
        # (each lane of the cohort a batch of its own)
        batches = receiver.named("RunActivity:send_batch")
        assert sum(b.attributes.get("mailing.sent", 0) for b in batches) == len(message_ids)
    # ... in which the write of the message's outcome is the activity's child too.
    (write,) = [span for span in receiver.named(shape.write) if shape.writes(span, message_id)]
    assert (write.trace_id, write.parent_span_id) == (sending.trace_id, sending.span_id)
    assert write.attributes["db.operation.name"] == "UPDATE"
    # ... linked to the workflow's StartActivity span, in the dispatch's creation trace, whose
    # root is the API's request.
    ((linked_trace, linked_span),) = sending.links
    scheduled = by_id[linked_span]
    assert scheduled.trace_id == linked_trace != sending.trace_id
    chain = list(reversed(list(ancestors(scheduled, by_id))))
    assert [span.name for span in chain] == [
        "POST /api/v1/dispatches",
        "StartWorkflow:DispatchWorkflow.v2",
        f"StartChildWorkflow:{shape.child}",
        f"StartActivity:{shape.send}",
    ]
    root, start, child, _ = chain
    assert root.kind == ProtoSpan.SPAN_KIND_SERVER
    assert root.attributes["http.route"] == "/api/v1/dispatches"
    assert root.attributes["http.response.status_code"] == 201
    assert start.attributes["temporalWorkflowID"] == dispatch_workflow_id(dispatch_id)
    creation = {span.name for span in receiver.spans if span.trace_id == root.trace_id}
    # The workflows' own spans, and their activities', in the same trace.
    assert {
        "RunWorkflow:DispatchWorkflow.v2",
        f"RunWorkflow:{shape.child}",
        "RunActivity:load_dispatch",
        "CompleteWorkflow:DispatchWorkflow.v2",
    } <= creation, creation
    # The child's run is its StartChildWorkflow's child (the workflow's context is its start's).
    (run_child,) = [
        span
        for span in receiver.named(f"RunWorkflow:{shape.child}")
        if span.parent_span_id == child.span_id
    ]
    # Every message's request, and no span per receipt: one for the list.
    assert len(receiver.named("POST /send/{message_id}")) == len(message_ids)
    (receipts,) = [s for s in receiver.spans if s.name == "POST /api/v1/receipts"]
    assert receipts.parent_span_id == ""

    # The traced runs' histories (headers in them) replay with the interceptor and without.
    workflow_ids = [dispatch_workflow_id(dispatch_id), run_child.attributes["temporalWorkflowID"]]
    for workflow_id in workflow_ids:
        history = await dev_env.client.get_workflow_handle(workflow_id).fetch_history()
        await Replayer(workflows=WORKFLOWS).replay_workflow(history)
        await Replayer(workflows=WORKFLOWS, interceptors=[traces.interceptor()]).replay_workflow(
            history
        )


@pytest.mark.parametrize("name", list(HISTORIES))
async def test_recorded_histories_replay_with_the_interceptor(
    name: str, traces: tracing.Tracing, receiver: Receiver
) -> None:
    """The interceptor adds headers and spans, never a command: every history recorded without
    it replays with it, and a replay makes no span."""
    history = WorkflowHistory.from_json(name, HISTORIES[name])
    await Replayer(workflows=WORKFLOWS, interceptors=[traces.interceptor()]).replay_workflow(
        history
    )
    await flushed(traces)
    assert receiver.spans == []


async def test_the_gateway_gets_the_request_span_as_traceparent(
    traces: tracing.Tracing, receiver: Receiver
) -> None:
    seen: list[str] = []

    async def send(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent", ""))
        return web.json_response({"code": 0})

    gateway = web.Application()
    gateway.router.add_post("/send/{id}", send)
    runner = web.AppRunner(gateway)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with RemoteClient(
            base_url=f"http://127.0.0.1:{port}", token="t", timeout_seconds=5, max_connections=1
        ) as remote:
            await remote.send(message_id=7, phone="79161234567", text="hi")
    finally:
        await runner.cleanup()
    await flushed(traces)
    (request,) = receiver.named("POST /send/{message_id}")
    ((version, trace_id, span_id, flags),) = [value.split("-") for value in seen]
    assert (version, trace_id, span_id) == ("00", request.trace_id, request.span_id)
    assert int(flags, 16) & 1  # sampled
    assert request.attributes["url.full"] == f"http://127.0.0.1:{port}/send/7"


async def test_a_request_joins_its_callers_trace(
    traces: tracing.Tracing, receiver: Receiver, api: httpx.AsyncClient
) -> None:
    caller = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    traceparent = f"00-{caller[0]}-{caller[1]}-01"
    response = await api.get("/api/v1/dispatches/999999", headers={"traceparent": traceparent})
    assert response.status_code == 404
    assert (await api.get("/healthz")).status_code == 200
    await flushed(traces)
    # The probe made none; the request, one span under the caller's, named by its route.
    (span,) = receiver.spans
    assert span.name == "GET /api/v1/dispatches/{dispatch_id}"
    assert (span.trace_id, span.parent_span_id) == caller
    assert span.attributes["http.response.status_code"] == 404
    assert span.attributes["url.path"] == "/api/v1/dispatches/999999"
