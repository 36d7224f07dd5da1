"""HTTP clients against the simulator, through bench.http_clients.measure when it is there."""

import importlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from bench.remote import SimulatorControl
from simulator.app import DEFAULT_TOKEN

log = logging.getLogger(__name__)

REQUESTS = 3000
CONNECTIONS = 100
LATENCIES_MS = (0.0, 100.0)

Measure = Callable[..., Awaitable[dict[str, dict[str, float]]]]


def load_measure() -> tuple[Measure | None, str | None]:
    """bench.http_clients.measure, or None and the reason it cannot be had."""
    try:
        module = importlib.import_module("bench.http_clients")
    except Exception as error:
        # Missing, or broken by what it imports: either way not a reason to stop the bench.
        return None, f"bench.http_clients not importable: {error!r}"
    measure = getattr(module, "measure", None)
    if not callable(measure):
        return None, "bench.http_clients has no measure()"
    return cast(Measure, measure), None


async def run_http_clients(
    *,
    simulator: SimulatorControl,
    send_api_url: str,
    latencies_ms: Sequence[float] = LATENCIES_MS,
) -> dict[str, Any]:
    measure, reason = load_measure()
    if measure is None:
        log.info("http clients skipped: %s", reason)
        return {"skipped": reason}
    results: dict[str, Any] = {
        "requests": REQUESTS,
        "connections": CONNECTIONS,
        "base_url": send_api_url,
        "by_latency_ms": {},
    }
    for latency in latencies_ms:
        await simulator.prepare(latency_ms=latency)
        log.info("http clients at %g ms", latency)
        figures: dict[str, Any]
        try:
            figures = await measure(
                base_url=send_api_url,
                token=DEFAULT_TOKEN,
                requests=REQUESTS,
                connections=CONNECTIONS,
            )
        except Exception as error:
            # Someone else's module: its failure is a finding to report, not the bench's end.
            log.exception("http clients failed at %g ms", latency)
            figures = {"error": str(error)}
        results["by_latency_ms"][f"{latency:g}"] = figures
    return results
