"""The worker's own HTTP endpoints on WORKER_METRICS_PORT: /metrics for Prometheus, /livez and
/readyz for the orchestrator."""

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from temporalio.client import Client

from core.db import SessionFactory
from core.health import dependencies
from core.settings import Settings

log = logging.getLogger(__name__)


async def serve_probes(
    settings: Settings, sessions: SessionFactory, client: Client, stop: asyncio.Event
) -> web.AppRunner | None:
    """/metrics, /livez and /readyz on WORKER_METRICS_PORT: live while the process serves,
    ready while PostgreSQL and Temporal answer and the worker is not stopping."""
    if not settings.worker_metrics_port:
        return None

    async def metrics_page(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    async def livez(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        states = await dependencies(sessions, client)
        states["worker"] = "stopping" if stop.is_set() else "ok"
        ready = all(state == "ok" for state in states.values())
        return web.json_response(
            {"status": "ok" if ready else "degraded", **states}, status=200 if ready else 503
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.metrics_host, settings.worker_metrics_port).start()
    log.info(
        "metrics and probes on http://%s:%d (/metrics, /livez, /readyz)",
        settings.metrics_host,
        settings.worker_metrics_port,
    )
    return runner
