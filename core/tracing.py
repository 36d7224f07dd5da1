"""Traces of the whole path, in OpenTelemetry over OTLP/HTTP: off unless the standard `OTEL_*`
variables ask for them.

On when `OTEL_TRACES_EXPORTER` names `otlp` (or `console`), or, with it unset, when an OTLP
endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); off
with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`, whatever else is set. The rest is
the SDK's own reading of the environment: the sampler (`OTEL_TRACES_SAMPLER`, by default
`parentbased_always_on`), the service's name and resource (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`; `mailing-api` or `mailing-worker` otherwise), the exporter's
endpoint, headers, timeout and compression, the batch processor's queue and delay (`OTEL_BSP_*`).

Spans: the API's requests (`RequestSpans`), the Temporal client's calls and every workflow and
activity (the SDK's TracingInterceptor, context through headers), each request to a gateway
and each write of message outcomes. A send activity (a cohort's batch, a delivery's attempt)
starts a trace of its own linked to the span that scheduled it: a dispatch's creation trace
stays the size of its orchestration, and each batch's trace the size of its batch, however
long after the creation it runs.

The provider is this process's own, not OpenTelemetry's global one (which can be set only once
per process): every span here comes from this module's tracer, and a test can set tracing up
and tear it down again.
"""

import logging
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
)

log = logging.getLogger(__name__)

# Activities whose run starts a trace of its own, linked to the workflow's span that scheduled
# it: they send, long after the dispatch was created, a span per message.
LINKED_ACTIVITIES = frozenset({"send_batch", "send_message"})

EXPORTERS = ("otlp", "console")
_TRUE = ("true", "1", "yes", "on")


def exporters_wanted(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The span exporters the environment asks for; empty: tracing off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return []
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not named:
        endpoint_set = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        )
        return ["otlp"] if endpoint_set else []
    names = [name.strip() for name in named.split(",") if name.strip()]
    if "none" in names:
        return []
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        log.warning(
            "OTEL_TRACES_EXPORTER: %s not supported (only %s): ignored",
            ", ".join(unknown),
            ", ".join(EXPORTERS),
        )
    return [name for name in EXPORTERS if name in names]


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol.strip() != "http/protobuf":
        log.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s not supported: spans go over http/protobuf "
            "(the collector's port 4318)",
            protocol,
        )
    # Here, not at the top: it brings in `requests`, which a process without tracing never needs.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Endpoint, headers, timeout, compression and certificates from OTEL_EXPORTER_OTLP_*.
    return OTLPSpanExporter()


def _resource(service_name: str) -> Resource:
    resource = Resource.create()
    named = str(resource.attributes.get(SERVICE_NAME, ""))
    if named.startswith("unknown_service"):
        # Neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES named it: the process's role.
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    return resource


@dataclass
class Tracing:
    """This process's tracing: its provider (batching spans to its exporters) and tracer."""

    provider: TracerProvider
    tracer: Tracer

    def interceptor(self) -> TracingInterceptor:
        """For the Temporal client (its workers take it from the client)."""
        return LinkingTracingInterceptor(self.tracer)

    def flush(self, timeout_seconds: float = 30.0) -> bool:
        """Exports every span ended so far; blocking (from async code, in a thread)."""
        return self.provider.force_flush(int(timeout_seconds * 1000))

    def shutdown(self) -> None:
        """Flushes, then stops the exporters; blocking. Tracing is off from then on."""
        global _current
        if _current is self:
            _current = None
        self.provider.shutdown()


_current: Tracing | None = None


def configure(*, service_name: str) -> Tracing | None:
    """Sets this process's tracing up from its environment (module docstring). Returns the
    Tracing set up now, for its caller to shut down on exit; None when tracing is off, or was
    set up already (then `current()` has it, and its own caller shuts it down)."""
    global _current
    if _current is not None:
        return None
    # Read here and by the SDK alike: the process's environment, not `.env`.
    environ = os.environ
    names = exporters_wanted(environ)
    if not names:
        return None
    # The sampler from OTEL_TRACES_SAMPLER (and _ARG), span limits from OTEL_SPAN_*.
    provider = TracerProvider(resource=_resource(service_name))
    for name in names:
        # Queue size, batch size and delays from OTEL_BSP_*; spans over the queue are dropped
        # (and counted by the SDK's log), never waited for.
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
    _current = Tracing(provider=provider, tracer=provider.get_tracer("mailing"))
    log.info(
        "tracing on: %s to %s, service %s",
        ", ".join(names),
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or "the default endpoint",
        provider.resource.attributes.get(SERVICE_NAME),
    )
    return _current


def current() -> Tracing | None:
    """This process's tracing; None while it is off."""
    return _current


def interceptors() -> list[TracingInterceptor]:
    """The Temporal client's interceptors for tracing: none while it is off."""
    return [] if _current is None else [_current.interceptor()]


_OFF: AbstractContextManager[None] = nullcontext()


def span(
    name: str, attributes: Mapping[str, AttributeValue] | None = None
) -> AbstractContextManager[Span | None]:
    """A span of this process's tracer around a block, current inside it; nothing while
    tracing is off (then it costs a call)."""
    traces = _current
    if traces is None:
        return _OFF
    return traces.tracer.start_as_current_span(name, attributes=attributes)


def annotate(attributes: Mapping[str, AttributeValue]) -> None:
    """Attributes on the current span (an activity's, a request's); nothing without one."""
    current_span = trace.get_current_span()
    if current_span.is_recording():
        current_span.set_attributes(attributes)


class RequestSpans:
    """A server span per HTTP request of an ASGI app, its parent the caller's `traceparent`,
    named `{method} {route template}` once routed (the template api.metrics counts requests by,
    never the concrete path with its ids; the method alone when no route matched). A pure ASGI
    middleware doing that and nothing more: OpenTelemetry's FastAPI instrumentation, which
    matches every route again for each request and collects every header and address, cost
    the API 0.35 ms more per request than this (bench: receipts one at a time)."""

    def __init__(self, app: ASGIApp, *, tracer: Tracer, untraced: tuple[str, ...] = ()) -> None:
        self.app = app
        self.tracer = tracer
        # Path prefixes left alone: probes and scrapes, which would bury the requests that matter.
        self.untraced = untraced

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.untraced):
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _CONTEXT_HEADERS
        }
        method = scope["method"]
        status = 0

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # Shared with the app's own scopes, where the route dependency notes its template.
        state = scope.setdefault("state", {})
        with self.tracer.start_as_current_span(
            method,
            context=propagate.extract(carrier) if carrier else None,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as request_span:
            try:
                await self.app(scope, receive, answer)
            finally:
                route = state.get("route_template")
                if route:
                    request_span.update_name(f"{method} {route}")
                    request_span.set_attribute("http.route", route)
                if status:
                    request_span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    request_span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))


# The headers that carry a caller's trace context (W3C trace context and baggage).
_CONTEXT_HEADERS = (b"traceparent", b"tracestate", b"baggage")


class LinkingTracingInterceptor(TracingInterceptor):
    """The SDK's interceptor, but for the send activities (LINKED_ACTIVITIES): their runs start
    a trace of their own, linked to the workflow's StartActivity span, instead of being its
    children. Workflow code and its commands are the SDK's, unchanged."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _LinkedActivityInbound(next, super().intercept_activity(next), self)

    def link_of(self, headers: Mapping[str, Payload]) -> Link | None:
        """A link to the span whose context these headers carry, if any."""
        payload = headers.get(self.header_key)
        if not payload:
            return None
        carrier = self.payload_converter.from_payloads([payload])[0]
        if not carrier:
            return None
        context = self.text_map_propagator.extract(carrier)
        linked = trace.get_current_span(context).get_span_context()
        return Link(linked) if linked.is_valid else None


class _LinkedActivityInbound(ActivityInboundInterceptor):
    def __init__(
        self,
        next: ActivityInboundInterceptor,
        traced: ActivityInboundInterceptor,
        root: LinkingTracingInterceptor,
    ) -> None:
        super().__init__(next)
        # The SDK's span of the activity as the child of the StartActivity span, for the rest.
        self._traced = traced
        self._root = root

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        # The SDK's interceptor passes it on to `next`: once only.
        self._traced.init(outbound)

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.activity_type not in LINKED_ACTIVITIES:
            return await self._traced.execute_activity(input)
        link = self._root.link_of(input.headers)
        attributes: dict[str, AttributeValue] = {
            "temporalActivityID": info.activity_id,
            "temporalWorkflowID": info.workflow_id or "",
            "temporalRunID": info.workflow_run_id or "",
            "temporalAttempt": info.attempt,
        }
        with self._root.tracer.start_as_current_span(
            f"RunActivity:{info.activity_type}",
            # An empty context: a root, its own trace.
            context=Context(),
            links=[link] if link else None,
            kind=SpanKind.SERVER,
            attributes=attributes,
            set_status_on_exception=False,
        ) as activity_span:
            try:
                return await self.next.execute_activity(input)
            except Exception as error:
                # As the SDK's own activity spans: a benign ApplicationError is no error.
                if (
                    not isinstance(error, ApplicationError)
                    or error.category != ApplicationErrorCategory.BENIGN
                ):
                    activity_span.set_status(
                        Status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
                    )
                raise
