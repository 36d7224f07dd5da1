"""The traced run's collector: an OTLP/HTTP endpoint in the bench's own process that the workers
and the API export their spans to (OTEL_* of the run, `tracing_env`), counting them by name.

It decodes every request, as a collector would, and keeps nothing but the counts; what it
costs is the bench's, not the services'.
"""

import asyncio
import gzip
import logging
import time
from collections import Counter
from types import TracebackType
from typing import Self

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from devstack.embedded import free_port

log = logging.getLogger(__name__)

# The batch processor's delay in the traced run: every span is in before the counts are read,
# a second or so after the dispatch completes (the SDK's default waits 5 s).
SCHEDULE_DELAY_MS = 1000


def tracing_env(endpoint: str) -> dict[str, str]:
    """The settings that switch tracing on in a worker or the API (core.tracing)."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": str(SCHEDULE_DELAY_MS),
    }


class SpanReceiver:
    """POST /v1/traces on a free port of 127.0.0.1, for as long as `async with` lasts."""

    def __init__(self) -> None:
        self.spans: Counter[str] = Counter()
        self.requests = 0
        self.endpoint = ""
        self._runner: web.AppRunner | None = None
        self._last_at = time.monotonic()

    async def __aenter__(self) -> Self:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        exported = ExportTraceServiceRequest.FromString(body)
        for resource_spans in exported.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.update(span.name for span in scope_spans.spans)
        self.requests += 1
        self._last_at = time.monotonic()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def settled(self, *, quiet_s: float = 3.0, timeout_s: float = 30.0) -> dict[str, int]:
        """The counts by span name, once nothing came for `quiet_s` (or after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and time.monotonic() - self._last_at < quiet_s:
            await asyncio.sleep(0.25)
        log.info("span receiver: %d spans in %d requests", sum(self.spans.values()), self.requests)
        return dict(self.spans.most_common())
