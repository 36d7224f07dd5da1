"""The soak's bounded API load: soak/locustfile.py run by Locust in a process of its own (its
gevent stays out of the driver's asyncio), and what its request log says afterwards.

ApiLoad starts `locust --headless` with N users (two writers, the rest readers) against the API
and no run time: it runs until stopped. Every request becomes one NDJSON line of the request log
(soak/locustfile.py says which fields). `analyse` reads that log back against the intervals in
which the driver was restarting Temporal or PostgreSQL: there a 503, or no answer at all
(status 0: refused, reset), is allowed; any other 5xx, and a 503 or a 0 outside them, is
unexpected. Percentiles are by nearest rank over the recorded response times.
"""

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import PROJECT_ROOT
from devstack.processes import stop_process

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
WRITERS = 2  # the locustfile's Writer.fixed_count
READY_TIMEOUT = 30.0  # seconds to the first request in the log
# Locust's own wait for the users' running tasks once stopped: a writer's pause and resume
# takes up to 5 s and a request; devstack's stop_process kills after 15 s.
STOP_TIMEOUT = 10
LOG_TAIL = 3000  # characters of Locust's output in an error


@dataclass(frozen=True)
class LoadSettings:
    """One load: who, against what, and where it writes."""

    api_url: str  # http://host:port, no trailing path
    token: str  # a bearer token of the API (also the admin pages' cookie)
    dispatch_ids: list[int]  # the dispatches the readers look at
    control_dispatch_id: int  # the one the writers pause and resume
    users: int  # in all: WRITERS writers, the rest readers
    seed: int
    request_log: Path  # NDJSON, appended to
    locust_log: Path  # Locust's own stdout and stderr, appended to


class ApiLoad:
    """Locust running soak/locustfile.py until stopped; start() and stop() block."""

    def __init__(self, settings: LoadSettings) -> None:
        if settings.users <= WRITERS:
            raise ValueError(f"users: {settings.users}; at least {WRITERS + 1} (two are writers)")
        if not settings.dispatch_ids:
            raise ValueError("dispatch_ids: at least one")
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        users = str(self.settings.users)
        return [
            str(Path(sys.executable).with_name("locust")),
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--users",
            users,
            "--spawn-rate",
            users,
            "--host",
            self.settings.api_url,
            "--only-summary",
            "--stop-timeout",
            str(STOP_TIMEOUT),
        ]

    def env(self) -> dict[str, str]:
        s = self.settings
        return os.environ | {
            "SOAK_API_TOKEN": s.token,
            "SOAK_DISPATCH_IDS": json.dumps(s.dispatch_ids),
            "SOAK_CONTROL_DISPATCH": str(s.control_dispatch_id),
            "SOAK_REQUEST_LOG": str(s.request_log),
            "SOAK_SEED": str(s.seed),
            "PYTHONUNBUFFERED": "1",
        }

    def start(self) -> None:
        """Starts Locust and returns once its first request is in the request log."""
        if self.process is not None:
            raise RuntimeError("the load was started already")
        s = self.settings
        s.request_log.parent.mkdir(parents=True, exist_ok=True)
        s.locust_log.parent.mkdir(parents=True, exist_ok=True)
        logged_before = s.request_log.stat().st_size if s.request_log.exists() else 0
        with s.locust_log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command(),
                cwd=PROJECT_ROOT,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not _has_line_after(s.request_log, logged_before):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Locust exited ({self.process.returncode}) before its first request:\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"no request in {s.request_log} after {READY_TIMEOUT:.0f} s:\n"
                    + self.log_tail()
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM (Locust lets running tasks end, then prints its summary), SIGKILL after
        15 s. Idempotent."""
        if self.process is not None:
            stop_process(self.process)

    def log_tail(self) -> str:
        path = self.settings.locust_log
        return path.read_text(errors="replace")[-LOG_TAIL:] if path.exists() else ""


def _has_line_after(path: Path, offset: int) -> bool:
    if not path.exists() or path.stat().st_size <= offset:
        return False
    with path.open("rb") as log:
        log.seek(offset)
        return b"\n" in log.read()


@dataclass(frozen=True)
class RouteFigures:
    """One route's requests: counted by status ("0": no answer), response times in ms."""

    count: int
    by_status: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class LoadFigures:
    """What the load's requests met, by status and by route."""

    requests: int
    by_status: dict[str, int]  # "200": n, ..., "0": no answer
    by_route: dict[str, RouteFigures]  # by "METHOD /path/{template}"
    reads_p50_ms: float  # over every GET
    reads_p99_ms: float
    allowed_503: int  # 503s and unanswered requests (0) overlapping an allowed interval
    unexpected: list[dict[str, Any]]  # {"t", "route", "status"}: other 5xx, 503s and 0s, by t


def nearest_rank(values: Sequence[float], percent: float) -> float:
    """The smallest value with at least `percent` % of the values at or below it; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def read_requests(request_log: Path, *, since: float | None = None) -> list[dict[str, Any]]:
    """The log's requests (from `since`, epoch seconds, if given). A line cut short by a kill
    is left out."""
    requests: list[dict[str, Any]] = []
    if not request_log.exists():
        return requests
    with request_log.open(encoding="utf-8", errors="replace") as log:
        for line in log:
            try:
                request = json.loads(line)
                t = float(request["t"])
            except (ValueError, KeyError, TypeError):
                continue
            if since is None or t >= since:
                requests.append(request)
    return requests


def analyse(
    request_log: Path, allowed: Sequence[tuple[float, float]], *, since: float | None = None
) -> LoadFigures:
    """The request log's figures. `allowed`: (start, end) epoch seconds of the restarts of
    Temporal and PostgreSQL, grace included; a 503 or a 0 is allowed when the request (from
    its start to its start plus its time) overlaps one."""
    requests = read_requests(request_log, since=since)
    by_status: Counter[str] = Counter()
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    times: dict[str, list[float]] = defaultdict(list)
    reads: list[float] = []
    allowed_503 = 0
    unexpected: list[dict[str, Any]] = []
    for request in requests:
        route = str(request.get("route", "?"))
        status = int(request.get("status", 0))
        ms = float(request.get("ms", 0.0))
        t = float(request["t"])
        by_status[str(status)] += 1
        statuses[route][str(status)] += 1
        times[route].append(ms)
        if str(request.get("method", route.partition(" ")[0])) == "GET":
            reads.append(ms)
        if status in (0, 503) and _overlaps(t, t + ms / 1000, allowed):
            allowed_503 += 1
        elif status == 0 or status >= 500:
            unexpected.append({"t": t, "route": route, "status": status})
    by_route = {
        route: RouteFigures(
            count=len(times[route]),
            by_status=_sorted(statuses[route]),
            p50_ms=nearest_rank(times[route], 50),
            p99_ms=nearest_rank(times[route], 99),
            max_ms=max(times[route]),
        )
        for route in sorted(times)
    }
    return LoadFigures(
        requests=len(requests),
        by_status=_sorted(by_status),
        by_route=by_route,
        reads_p50_ms=nearest_rank(reads, 50),
        reads_p99_ms=nearest_rank(reads, 99),
        allowed_503=allowed_503,
        unexpected=sorted(unexpected, key=lambda u: float(u["t"])),
    )


def _overlaps(start: float, end: float, intervals: Sequence[tuple[float, float]]) -> bool:
    return any(start <= until and end >= since for since, until in intervals)


def _sorted(counts: Counter[str]) -> dict[str, int]:
    return {status: counts[status] for status in sorted(counts, key=int)}


def figures_lines(figures: LoadFigures) -> list[str]:
    """A compact table: each route's requests, statuses and response times, then the totals."""
    width = max([len("route"), *(len(route) for route in figures.by_route)])
    lines = [
        f"{'route':<{width}}  {'count':>6}  {'p50 ms':>8}  {'p99 ms':>8}  {'max ms':>8}  statuses"
    ]
    for route, r in figures.by_route.items():
        lines.append(
            f"{route:<{width}}  {r.count:>6}  {r.p50_ms:>8.1f}  {r.p99_ms:>8.1f}  "
            f"{r.max_ms:>8.1f}  {_statuses(r.by_status)}"
        )
    lines.append(
        f"{'all':<{width}}  {figures.requests:>6}  reads p50 {figures.reads_p50_ms:.1f} ms, "
        f"p99 {figures.reads_p99_ms:.1f} ms  {_statuses(figures.by_status)}"
    )
    lines.append(
        f"503/no answer within restarts: {figures.allowed_503}; "
        f"unexpected 5xx/no answer: {len(figures.unexpected)}"
    )
    return lines


def _statuses(counts: dict[str, int]) -> str:
    return " ".join(f"{status}:{n}" for status, n in counts.items())
