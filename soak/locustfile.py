"""The soak run's bounded API load: a few operators reading and writing while the faults go on.

Run by soak.load.ApiLoad as `locust -f soak/locustfile.py --headless ...`, in a process of its
own: Locust patches the standard library for gevent on import, which must stay out of the
asyncio driver. Configured from the environment alone:

- SOAK_API_TOKEN: the bearer token of every API request; the admin pages get it as their
  `mailing_admin` cookie.
- SOAK_DISPATCH_IDS: a JSON list of the ids of the dispatches being sent during the run.
- SOAK_CONTROL_DISPATCH: the one dispatch the writers pause and resume.
- SOAK_REQUEST_LOG: the file every request is appended to, one NDJSON line each:
  `{"t", "route", "method", "status", "ms", "user"}`, with `t` the epoch seconds at its start,
  `route` the method and path template (`GET /api/v1/dispatches/{id}/stats`, never a concrete
  id, so that figures group by route), `status` 0 for no answer (refused, reset, timed out).
- SOAK_SEED: seeds Locust's own choices (tasks, waits) and each user's (ids, filters, zones) with
  this number and the user's rank, so that a run repeats as closely as Locust allows; only the
  writers' phone numbers are not seeded, so that a repeat run on the same database creates new
  clients rather than conflicting with the last run's.

Readers (every user but two) browse statistics, dispatches, their messages, clients and the
admin pages. Writers (two, `fixed_count`) create clients tagged `soak-writer`, change their
attributes (never a zone: clients being sent to keep theirs), and pause the control dispatch
for 2-5 s before resuming it; a 409 there is an expected answer when another writer or the
driver paused or resumed it first. Each user first runs every one of its tasks once, in an
order of its own, so that every route is asked within the first seconds of even a short run;
then Locust picks them by weight.

Every answer is recorded as it came. Locust counts a request as failed only for a 5xx other
than 503 (its own statistics then stop nothing); the driver's analysis (soak.load.analyse)
judges each status against the restarts it made.
"""

import itertools
import json
import logging
import os
import random
import time
from typing import IO, Any
from urllib.parse import urlencode

from locust import FastHttpUser, TaskSet, between, events, task
from locust.env import Environment

from core.windows import RUSSIA_ZONES

log = logging.getLogger(__name__)


def _setting(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise RuntimeError(f"{name} is not set: soak.load.ApiLoad sets every SOAK_* variable")
    return value


TOKEN = _setting("SOAK_API_TOKEN")
DISPATCH_IDS: list[int] = [int(n) for n in json.loads(_setting("SOAK_DISPATCH_IDS"))]
CONTROL_DISPATCH = int(_setting("SOAK_CONTROL_DISPATCH"))
REQUEST_LOG = _setting("SOAK_REQUEST_LOG")
SEED = int(_setting("SOAK_SEED"))
if not DISPATCH_IDS:
    raise RuntimeError("SOAK_DISPATCH_IDS: give at least one dispatch id")

WRITER_TAG = "soak-writer"
# A reader remembers this many client ids from the lists it saw.
SEEN_CLIENTS = 200
PAGE = 50

# Locust's task picks and waits draw from the module's random; each user's own choices from a
# generator of its own (see Soaker).
random.seed(SEED)
_ranks = itertools.count()

# A writer's numbers: +7 958 and seven digits from a base of this process and a counter. Unseeded
# on purpose (see the module's docstring).
_PHONE_BASE = random.SystemRandom().randrange(10**7)
_phones = itertools.count()


def _new_phone() -> str:
    return f"7958{(_PHONE_BASE + next(_phones)) % 10**7:07d}"


_request_log: IO[str] = open(REQUEST_LOG, "a", buffering=1, encoding="utf-8")


def _record(
    request_type: str,
    name: str,
    response_time: float,
    response: Any,
    context: dict[str, Any],
    start_time: float | None = None,
    **_: Any,
) -> None:
    """Every request, answered or not, as one line of the request log."""
    status = getattr(response, "status_code", 0) or 0
    line = {
        "t": round(start_time if start_time is not None else time.time(), 6),
        "route": f"{request_type} {name}",
        "method": request_type,
        "status": int(status),
        "ms": round(float(response_time or 0.0), 3),
        "user": context.get("user", ""),
    }
    try:
        _request_log.write(json.dumps(line) + "\n")
    except OSError as error:  # a full disk loses lines, never a user
        log.warning("request log: %r", error)


def _close_log(**_: Any) -> None:
    _request_log.flush()


events.request.add_listener(_record)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_close_log)  # type: ignore[no-untyped-call]


class Soaker(FastHttpUser):
    """What readers and writers share: authenticated requests that never raise, each recorded
    under its path template, and a random generator of the user's own."""

    abstract = True
    # A request still unanswered after this long is a status 0 (the API hung).
    network_timeout = 30.0
    connection_timeout = 5.0

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.rng = random.Random(f"{SEED}:{next(_ranks)}")

    def on_start(self) -> None:
        """Each task once first, in an order of this user's own, so that every route is
        asked within the first seconds of a run however short; then Locust picks by weight."""
        first = [run for run in dict.fromkeys(self.tasks) if not isinstance(run, TaskSet)]
        self.rng.shuffle(first)
        for run in first:
            run(self)
            self.wait()  # type: ignore[no-untyped-call]

    def context(self) -> dict[str, Any]:
        return {"user": type(self).__name__}

    def call(
        self,
        method: str,
        path: str,
        template: str,
        *,
        query: dict[str, str | int] | None = None,
        json_body: Any = None,
        admin: bool = False,
    ) -> tuple[int, Any]:
        """The status (0 without an answer) and the JSON body of a 2xx (else None)."""
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if admin:
            headers = {"Cookie": f"mailing_admin={TOKEN}", "Accept": "text/html"}
        url = path + ("?" + urlencode(query) if query else "")
        started = time.time()
        try:
            with self.client.request(
                method,
                url,
                name=template,
                headers=headers,
                json=json_body,
                catch_response=True,
                # An admin page that sends to its login form is a refusal, not a page.
                allow_redirects=not admin,
            ) as response:
                status = int(response.status_code or 0)
                if status < 500 or status == 503:
                    response.success()
                else:
                    response.failure(f"HTTP {status}")
        except Exception as error:  # anything Locust itself did not catch: still recorded
            log.warning("%s %s: %r", method, template, error)
            self.environment.events.request.fire(
                request_type=method,
                name=template,
                response_time=(time.time() - started) * 1000,
                response_length=0,
                response=None,
                context=self.context(),
                exception=error,
                start_time=started,
                url=url,
            )
            return 0, None
        if not 200 <= status < 300 or admin:
            return status, None
        try:
            return status, response.json()
        except Exception:
            return status, None

    def dispatch_id(self) -> int:
        return self.rng.choice(DISPATCH_IDS)


class Reader(Soaker):
    """An operator watching: statistics, dispatches, their messages, clients, the admin pages."""

    weight = 1
    wait_time = between(0.5, 1.5)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.client_ids: list[int] = []

    @task(3)
    def overall_stats(self) -> None:
        self.call("GET", "/api/v1/stats", "/api/v1/stats", query={"limit": 20})

    @task(4)
    def dispatch(self) -> None:
        self.call("GET", f"/api/v1/dispatches/{self.dispatch_id()}", "/api/v1/dispatches/{id}")

    @task(4)
    def dispatch_stats(self) -> None:
        self.call(
            "GET",
            f"/api/v1/dispatches/{self.dispatch_id()}/stats",
            "/api/v1/dispatches/{id}/stats",
        )

    @task(2)
    def dispatches(self) -> None:
        self.call("GET", "/api/v1/dispatches", "/api/v1/dispatches", query={"limit": 20})

    @task(3)
    def messages(self) -> None:
        """A page of a dispatch's messages, a third of the time only the sent ones, and now
        and then the next pages by their cursor."""
        path = f"/api/v1/dispatches/{self.dispatch_id()}/messages"
        query: dict[str, str | int] = {"limit": PAGE}
        if self.rng.random() < 1 / 3:
            query["status"] = "sent"
        for _ in range(3):
            _, page = self.call("GET", path, "/api/v1/dispatches/{id}/messages", query=query)
            cursor = page.get("next_cursor") if isinstance(page, dict) else None
            if not cursor or self.rng.random() < 0.5:
                return
            query["cursor"] = cursor

    @task(2)
    def clients(self) -> None:
        """A page of clients, a third of the time only the writers' ones; their ids kept for
        `one_client`."""
        query: dict[str, str | int] = {"limit": PAGE}
        if self.rng.random() < 1 / 3:
            query["tag"] = WRITER_TAG
        for _ in range(2):
            _, page = self.call("GET", "/api/v1/clients", "/api/v1/clients", query=query)
            if not isinstance(page, dict):
                return
            items = page.get("items") or []
            seen = [item["id"] for item in items if isinstance(item, dict) and "id" in item]
            self.client_ids = (self.client_ids + seen)[-SEEN_CLIENTS:]
            cursor = page.get("next_cursor")
            if not cursor or self.rng.random() < 0.5:
                return
            query["cursor"] = cursor

    @task(2)
    def one_client(self) -> None:
        if not self.client_ids:
            self.clients()
            return
        client_id = self.rng.choice(self.client_ids)
        self.call("GET", f"/api/v1/clients/{client_id}", "/api/v1/clients/{id}")

    @task(1)
    def admin_overview(self) -> None:
        self.call("GET", "/admin", "/admin", admin=True)

    @task(1)
    def admin_dispatch(self) -> None:
        self.call(
            "GET", f"/admin/dispatches/{self.dispatch_id()}", "/admin/dispatches/{id}", admin=True
        )

    @task(1)
    def admin_dispatch_live(self) -> None:
        """What an open dispatch page polls: its counts, charts, failures and messages."""
        path = f"/admin/dispatches/{self.dispatch_id()}/live"
        self.call("GET", path, "/admin/dispatches/{id}/live", admin=True)

    @task(1)
    def admin_dispatch_cohorts(self) -> None:
        """What an open dispatch page asks apart: its cohorts, answered by the workflow."""
        path = f"/admin/dispatches/{self.dispatch_id()}/progress"
        self.call("GET", path, "/admin/dispatches/{id}/progress", admin=True)


class Writer(Soaker):
    """An operator at work: new clients, changes to their attributes, and a short pause of the
    control dispatch."""

    fixed_count = 2
    wait_time = between(2, 5)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.created: list[int] = []
        self.notes = itertools.count(1)
        # Whether this writer's own pause is still to be resumed (see on_stop).
        self.paused = False

    @task(2)
    def create_client(self) -> None:
        body = {
            "phone": _new_phone(),
            "tag": WRITER_TAG,
            "timezone": self.rng.choice(RUSSIA_ZONES),
            "attributes": {"note": "created by the soak"},
        }
        status, client = self.call("POST", "/api/v1/clients", "/api/v1/clients", json_body=body)
        if status == 201 and isinstance(client, dict) and "id" in client:
            self.created.append(int(client["id"]))

    @task(2)
    def edit_client(self) -> None:
        """New attributes for a client of this writer's (a new client first, if none yet)."""
        if not self.created:
            self.create_client()
            return
        client_id = self.rng.choice(self.created)
        body = {"attributes": {"note": f"edit {next(self.notes)}"}}
        self.call("PATCH", f"/api/v1/clients/{client_id}", "/api/v1/clients/{id}", json_body=body)

    @task(1)
    def pause_and_resume(self) -> None:
        """Pause the control dispatch, wait 2-5 s, resume it: a 409 on either is another
        writer or the driver having done it first."""
        path = f"/api/v1/dispatches/{CONTROL_DISPATCH}"
        status, _ = self.call("POST", f"{path}/pause", "/api/v1/dispatches/{id}/pause")
        self.paused = status == 200
        # Not self.wait(): a stop waits for the task to end, so the resume still goes.
        time.sleep(self.rng.uniform(2, 5))  # gevent-patched by Locust
        self.resume()

    def resume(self) -> None:
        path = f"/api/v1/dispatches/{CONTROL_DISPATCH}/resume"
        status, _ = self.call("POST", path, "/api/v1/dispatches/{id}/resume")
        if status in (200, 409):
            self.paused = False

    def on_stop(self) -> None:
        # Killed between its pause and its resume (the stop timeout ran out): resume now.
        if self.paused:
            self.resume()
