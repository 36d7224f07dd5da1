"""The HTTP client of the send path, side by side: httpx as it was, and RemoteClient (aiohttp).

Requests per second and CPU per request, each client driven by as many concurrent tasks as it
has connections, against the simulator. The CPU is this process's alone (time.process_time):
what a worker would spend per send on HTTP, without the remote's share.

    python -m bench.http_clients [--requests 3000] [--connections 100] [--latencies-ms 0 100]

starts the simulator in a subprocess, measures at each latency, writes a table and JSON to
stdout and stops the simulator. `make bench` calls `measure` against its own stack.
"""

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import httpx

from activities.remote import RemoteClient, RemoteError, check_answer
from bench.remote import SimulatorControl
from core.logging import configure_logging
from core.settings import PROJECT_ROOT
from devstack.embedded import free_port, wait_for_port
from simulator.app import DEFAULT_TOKEN

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
TIMEOUT_SECONDS = 10.0
# An SMS of a typical length, in Cyrillic: two bytes a character in UTF-8.
TEXT = "Скидка 20% на всё до воскресенья. Покажите это сообщение на кассе: код 4821."

# Distinct across every run of this process, so that the remote never sees a repeated id.
_message_ids = itertools.count(1)

Send = Callable[[int], Awaitable[None]]


def _phone(message_id: int) -> str:
    return str(79_000_000_000 + message_id % 1_000_000_000)


@contextlib.asynccontextmanager
async def _httpx_send(*, base_url: str, token: str, connections: int) -> AsyncIterator[Send]:
    """Sends as the send activity did before RemoteClient: httpx, its default transport."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(limits=limits, timeout=TIMEOUT_SECONDS) as http:

        async def send(message_id: int) -> None:
            try:
                response = await http.post(
                    f"{base_url}/send/{message_id}",
                    json={"id": message_id, "phone": int(_phone(message_id)), "text": TEXT},
                    headers=headers,
                )
            except httpx.HTTPError as error:
                raise RemoteError(f"{type(error).__name__}: {error}", kind="transport") from error
            check_answer(
                status=response.status_code, headers=response.headers, body=response.content
            )

        yield send


@contextlib.asynccontextmanager
async def _remote_send(*, base_url: str, token: str, connections: int) -> AsyncIterator[Send]:
    async with RemoteClient(
        base_url=base_url,
        token=token,
        timeout_seconds=TIMEOUT_SECONDS,
        max_connections=connections,
    ) as remote:

        async def send(message_id: int) -> None:
            await remote.send(message_id=message_id, phone=_phone(message_id), text=TEXT)

        yield send


async def _drive(send: Send, *, requests: int, connections: int) -> tuple[int, RemoteError | None]:
    """Sends `requests` messages from `connections` tasks; the errors and the first one."""
    message_ids = itertools.islice(_message_ids, requests)
    errors = 0
    first: RemoteError | None = None

    async def sender() -> None:
        nonlocal errors, first
        for message_id in message_ids:
            try:
                await send(message_id)
            except RemoteError as error:
                errors += 1
                first = first or error

    await asyncio.gather(*(sender() for _ in range(connections)))
    return errors, first


async def _figures(name: str, send: Send, *, requests: int, connections: int) -> dict[str, float]:
    # Every connection opened before the clock starts: the figures are of a warm pool.
    await _drive(send, requests=connections, connections=connections)
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    errors, first = await _drive(send, requests=requests, connections=connections)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if first is not None:
        log.warning("%s: %d errors, the first: %s", name, errors, first)
    return {
        "requests_per_second": round(requests / wall, 1),
        "cpu_ms_per_request": round(cpu * 1000 / requests, 3),
        "errors": float(errors),
    }


async def measure(
    *, base_url: str, token: str, requests: int, connections: int
) -> dict[str, dict[str, float]]:
    """Figures of httpx and of RemoteClient, one after the other, against `base_url`."""
    base_url = base_url.rstrip("/")
    results: dict[str, dict[str, float]] = {}
    clients = {"httpx": _httpx_send, "aiohttp": _remote_send}
    for name, client in clients.items():
        async with client(base_url=base_url, token=token, connections=connections) as send:
            results[name] = await _figures(name, send, requests=requests, connections=connections)
        log.info("%s: %s", name, results[name])
    return results


async def _measure_latencies(
    *, port: int, requests: int, connections: int, latencies_ms: Sequence[float]
) -> dict[str, dict[str, dict[str, float]]]:
    results: dict[str, dict[str, dict[str, float]]] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        simulator = SimulatorControl(http, f"http://{HOST}:{port}")
        for latency in latencies_ms:
            await simulator.prepare(latency_ms=latency)
            log.info("%d requests over %d connections at %g ms", requests, connections, latency)
            results[f"{latency:g}"] = await measure(
                base_url=f"http://{HOST}:{port}/v1",
                token=DEFAULT_TOKEN,
                requests=requests,
                connections=connections,
            )
            log.info("simulator: %s", await simulator.figures())
    return results


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [f"{'latency':>8}  {'client':<8}{'req/s':>9}{'CPU ms/req':>12}{'errors':>8}"]
    for latency, clients in results.items():
        for name, figures in clients.items():
            lines.append(
                f"{latency + ' ms':>8}  {name:<8}{figures['requests_per_second']:>9.0f}"
                f"{figures['cpu_ms_per_request']:>12.3f}{figures['errors']:>8.0f}"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http_clients", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--latencies-ms", type=float, nargs="+", default=[0.0, 100.0])
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # The project's logging: httpx's line per request, left on, would double its CPU figure.
    configure_logging(level="INFO")
    port = free_port()
    # In a process of its own, so that its CPU is not counted as the clients'.
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level=warning",
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "SEND_API_TOKEN": DEFAULT_TOKEN},
    )
    try:
        wait_for_port(HOST, port, timeout=30, process=simulator)
        results = asyncio.run(
            _measure_latencies(
                port=port,
                requests=args.requests,
                connections=args.connections,
                latencies_ms=args.latencies_ms,
            )
        )
    finally:
        simulator.terminate()
        try:
            simulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            simulator.kill()
            simulator.wait()
    sys.stdout.write(table(results))
    sys.stdout.write(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
