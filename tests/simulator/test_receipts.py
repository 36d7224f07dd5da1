"""Delivery receipts: posted back after their delay, one per part and out of order, some not
delivered, some twice, some before the send's answer, in lists, with the token; none when off."""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from core.segments import measure
from devstack.embedded import free_port
from simulator import receipts as receipts_module
from simulator.app import SimulatorConfig, create_app
from simulator.receipts import FAILURES, POST_ATTEMPTS
from tests.simulator.support import TOKEN, app_client, gateway_path, send, stats
from tests.support import serving

# 150 Cyrillic letters: UCS-2, 150 code units, in parts of 67: 3 parts.
THREE_PARTS = ("Доставка " * 17)[:150]
RECEIPT_KEYS = {"id", "status", "part", "parts", "error", "at", "route"}


@dataclass
class Post:
    at: float  # the event loop's clock
    authorization: str | None
    body: Any
    status: int


@dataclass
class Receiver:
    """The service's end of the receipts: records every post, answers 200 unless told."""

    port: int = 0
    posts: list[Post] = field(default_factory=list)
    # Statuses of the next answers, in order; then 200.
    answers: list[int] = field(default_factory=list)
    # What happened in which order: "receipt <id>" here, "answer <id>" by the tests.
    events: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/receipts"

    def receipts(self) -> list[dict[str, Any]]:
        """Every receipt posted and taken, in arrival order."""
        found: list[dict[str, Any]] = []
        for post in self.posts:
            if post.status == 200:
                found += post.body if isinstance(post.body, list) else [post.body]
        return found

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        """The receipts once `count` have arrived (at most 5 s)."""
        async with asyncio.timeout(5):
            while len(self.receipts()) < count:
                await asyncio.sleep(0.01)
        return self.receipts()


def receiver_app(receiver: Receiver) -> FastAPI:
    app = FastAPI()

    @app.post("/receipts")
    async def take(request: Request) -> JSONResponse:
        body = await request.json()
        status = receiver.answers.pop(0) if receiver.answers else 200
        at = asyncio.get_running_loop().time()
        receiver.posts.append(Post(at, request.headers.get("authorization"), body, status))
        for receipt in body if isinstance(body, list) else [body]:
            receiver.events.append(f"receipt {receipt['id']}")
        if status == 200:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"detail": f"refused with {status}"}, status_code=status)

    return app


@pytest.fixture(scope="module")
async def receiver_server() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with serving(receiver_app(receiver), lifespan="off") as port:
        receiver.port = port
        yield receiver


@pytest.fixture
def receiver(receiver_server: Receiver) -> Iterator[Receiver]:
    yield receiver_server
    receiver_server.posts.clear()
    receiver_server.answers.clear()
    receiver_server.events.clear()


@asynccontextmanager
async def simulator(
    receiver: Receiver, **config: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """A simulator app posting its default gateway's receipts to the receiver (no delay unless
    told), its posters stopped when the block ends."""
    base = {"receipts_url": receiver.url, "receipt_delay_min_ms": 0, "receipt_delay_max_ms": 0}
    app = create_app(SimulatorConfig(**(base | config)), token=TOKEN)
    try:
        async with app_client(app) as client:
            yield client, app
    finally:
        await app.state.gateways.aclose()


def by_id(receipts: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for receipt in receipts:
        grouped.setdefault(receipt["id"], []).append(receipt)
    return grouped


async def outcomes(client: httpx.AsyncClient, gateway: str | None = None, **params: Any) -> Any:
    response = await client.get(gateway_path(gateway, "/_sim/receipts"), params=params)
    assert response.status_code == 200
    return response.json()


async def test_off_means_no_task_no_post_and_no_work(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    def measured(text: str) -> None:
        raise AssertionError("a text was measured with receipts off")

    monkeypatch.setattr(receipts_module, "measure", measured)
    async with simulator(receiver, receipts_url=None) as (client, app):
        for msg_id in range(1, 6):
            assert (await send(client, msg_id)).status_code == 200
        await asyncio.sleep(0.2)
        state = app.state.simulator
        assert not state.receipts.running
        assert state.receipt_outcome(1) is None
        assert await outcomes(client) == {}
        counters = await stats(client)
    assert receiver.posts == []
    assert counters["receipts_posted"] == counters["receipts_pending"] == 0


async def test_one_receipt_after_its_delay_with_the_token(receiver: Receiver) -> None:
    config = {
        "receipt_delay_min_ms": 300,
        "receipt_delay_max_ms": 300,
        "receipt_batch_size": 1,
        "receipts_token": "dlr-secret",
    }
    async with simulator(receiver, **config) as (client, app):
        sent = asyncio.get_running_loop().time()
        assert (await send(client, 42)).status_code == 200
        assert app.state.simulator.receipts.running
        [receipt] = await receiver.wait_for(1)
        # The receiver has it a moment before the poster counts its answer.
        async with asyncio.timeout(5):
            while (counters := await stats(client))["receipts_posted"] < 1:
                await asyncio.sleep(0.01)
    [post] = receiver.posts
    assert 0.3 <= post.at - sent < 0.3 + 0.5
    assert post.authorization == "Bearer dlr-secret"
    assert isinstance(post.body, dict)  # receipt_batch_size 1: an object, not a list
    assert set(receipt) == RECEIPT_KEYS
    assert receipt | {"at": None} == {
        "id": 42,
        "status": "delivered",
        "part": 1,
        "parts": 1,
        "error": None,
        "at": None,
        "route": "default",
    }
    assert datetime.fromisoformat(receipt["at"]).tzinfo is not None
    assert counters["receipts_posted"] == 1
    assert counters["receipts_by_status"] == {"delivered": 1}


async def test_delays_are_drawn_within_the_range(receiver: Receiver) -> None:
    config = {"receipt_delay_min_ms": 100, "receipt_delay_max_ms": 300, "seed": 1}
    async with simulator(receiver, receipt_batch_size=1, **config) as (client, _):
        loop = asyncio.get_running_loop()
        sent: dict[int, float] = {}
        for msg_id in range(1, 21):
            sent[msg_id] = loop.time()
            assert (await send(client, msg_id)).status_code == 200
        await receiver.wait_for(20)
    delays = [post.at - sent[post.body["id"]] for post in receiver.posts]
    assert all(0.1 <= delay < 0.3 + 0.3 for delay in delays), delays
    assert max(delays) - min(delays) > 0.05  # drawn, not one fixed delay
    assert receiver.posts[0].authorization is None  # no receipts_token, no header


async def test_undelivered_share_is_as_configured_and_repeats_with_a_seed(
    receiver: Receiver,
) -> None:
    config = {"undelivered_rate": 0.25, "seed": 7}
    async with simulator(receiver, **config) as (client, app):
        for msg_id in range(1, 401):
            assert (await send(client, msg_id)).status_code == 200
        posted = by_id(await receiver.wait_for(400))
        decided = await outcomes(client)
        counters = await stats(client)
        assert app.state.simulator.receipt_outcome(1) == decided["1"]
    async with simulator(receiver, **config) as (again, _):
        for msg_id in range(1, 401):
            await send(again, msg_id)
        assert await outcomes(again) == decided  # the same seed, the same decisions

    failing = {msg_id: s for msg_id, s in decided.items() if s != "delivered"}
    assert 0.18 < len(failing) / 400 < 0.32
    assert set(failing.values()) == set(FAILURES)
    for msg_id, [receipt] in posted.items():
        assert receipt["status"] == decided[str(msg_id)]
        if receipt["status"] == "delivered":
            assert receipt["error"] is None
        else:
            assert receipt["error"] in FAILURES[receipt["status"]]
    expected = {s: list(decided.values()).count(s) for s in set(decided.values())}
    assert counters["receipts_by_status"] == dict(sorted(expected.items()))


async def test_one_receipt_per_part_out_of_order_one_part_undelivered(
    receiver: Receiver,
) -> None:
    assert measure(THREE_PARTS).segments == 3
    async with simulator(receiver, undelivered_rate=0.5, seed=3) as (client, _):
        for msg_id in range(1, 9):
            assert (await send(client, msg_id, text=THREE_PARTS)).status_code == 200
        posted = by_id(await receiver.wait_for(8 * 3))
        decided = await outcomes(client)
    orders = []
    for msg_id, parts in posted.items():
        assert sorted(r["part"] for r in parts) == [1, 2, 3]
        assert {r["parts"] for r in parts} == {3}
        failed = [r for r in parts if r["status"] != "delivered"]
        if decided[str(msg_id)] == "delivered":
            assert failed == []
        else:
            assert [r["status"] for r in failed] == [decided[str(msg_id)]]
        orders.append([r["part"] for r in parts])
    assert "delivered" in decided.values()
    assert set(decided.values()) != {"delivered"}
    assert any(order != [1, 2, 3] for order in orders), orders


async def test_duplicated_receipts_are_posted_twice(receiver: Receiver) -> None:
    config = {"receipt_duplicate_rate": 1, "receipt_batch_size": 1}
    async with simulator(receiver, **config) as (client, _):
        for msg_id in range(1, 4):
            assert (await send(client, msg_id)).status_code == 200
        posted = by_id(await receiver.wait_for(6))
        # The receiver has the sixth a moment before the poster counts its answer.
        async with asyncio.timeout(5):
            while (counters := await stats(client))["receipts_posted"] < 6:
                await asyncio.sleep(0.01)
    assert sorted(posted) == [1, 2, 3]
    for first, copy in posted.values():
        assert first == copy
    assert counters["receipts_posted"] == 6
    assert counters["unique_accepted"] == 3


async def test_a_second_acceptance_is_reported_with_the_first_status(
    receiver: Receiver,
) -> None:
    async with simulator(receiver, undelivered_rate=1, seed=5) as (client, app):
        assert (await send(client, 9)).status_code == 200
        [first] = await receiver.wait_for(1)
        await client.patch("/_sim/config", json={"undelivered_rate": 0})
        assert (await send(client, 9)).status_code == 200
        [_, second] = await receiver.wait_for(2)
        final = app.state.simulator.receipt_outcome(9)
    assert first["status"] != "delivered"
    assert second["status"] == first["status"] == final
    assert second["error"] == first["error"]


@pytest.mark.parametrize(("rate", "order"), [(1, "receipt first"), (0, "answer first")])
async def test_receipts_before_the_answer(receiver: Receiver, rate: float, order: str) -> None:
    config = {"receipt_before_answer_rate": rate, "receipt_delay_min_ms": 200}
    async with simulator(receiver, receipt_delay_max_ms=200, **config) as (client, _):
        assert (await send(client, 7, text=THREE_PARTS)).status_code == 200
        receiver.events.append("answer 7")
        await receiver.wait_for(3)
    answer = receiver.events.index("answer 7")
    if order == "receipt first":
        assert receiver.events[:answer] == ["receipt 7"] * 3
    else:
        assert answer == 0


async def test_receipts_are_posted_in_lists_of_up_to_n(receiver: Receiver) -> None:
    async with simulator(receiver, receipt_batch_size=3, receipt_batch_ms=100) as (client, _):
        await asyncio.gather(*(send(client, msg_id) for msg_id in range(1, 11)))
        await receiver.wait_for(10)
    sizes = [len(post.body) for post in receiver.posts]
    assert all(isinstance(post.body, list) for post in receiver.posts)
    assert sum(sizes) == 10
    assert max(sizes) == 3
    assert len(sizes) == 4  # 3 + 3 + 3 + 1: all were due within one gathering


async def test_failed_posts_are_retried_then_counted(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.answers += [503, 503]
    async with simulator(receiver, receipt_batch_size=1) as (client, _):
        await send(client, 1)
        await receiver.wait_for(1)
        assert [post.status for post in receiver.posts] == [503, 503, 200]

        receiver.answers.append(422)
        with caplog.at_level(logging.WARNING, logger="simulator.receipts"):
            await send(client, 2)
            async with asyncio.timeout(5):
                while (await stats(client))["receipts_failed_posts"] < 1:
                    await asyncio.sleep(0.01)
        assert len(receiver.posts) == 4  # a 4xx is not tried again
        assert "refused with 422" in caplog.text

        await client.patch(
            "/_sim/config", json={"receipts_url": f"http://127.0.0.1:{free_port()}/"}
        )
        await send(client, 3)
        async with asyncio.timeout(5):
            while (await stats(client))["receipts_failed_posts"] < 2:
                await asyncio.sleep(0.01)
        counters = await stats(client)
    assert counters["receipts_posted"] == 1
    assert counters["receipts_failed"] == 2
    assert POST_ATTEMPTS > 1


async def test_receipts_of_a_named_gateway_and_paging(receiver: Receiver) -> None:
    async with simulator(receiver, receipts_url=None) as (client, _):
        config = {"receipts_url": receiver.url, "receipt_delay_max_ms": 0}
        await client.put("/gateways/b/_sim/config", json=config | {"receipt_delay_min_ms": 0})
        for msg_id in (5, 3, 8, 1):
            assert (await send(client, msg_id, gateway="b")).status_code == 200
        receipts = await receiver.wait_for(4)
        first = await outcomes(client, "b", limit=2)
        rest = await outcomes(client, "b", after_id=3, limit=2)
        unknown = await client.get("/gateways/b/_sim/receipts", params={"after_id": 99})
        root = await outcomes(client)
    assert {r["route"] for r in receipts} == {"b"}
    assert first == {"5": "delivered", "3": "delivered"}
    assert rest == {"8": "delivered", "1": "delivered"}
    assert unknown.status_code == 404
    assert root == {}


async def test_receipts_leave_the_seeded_send_outcomes_alone(receiver: Receiver) -> None:
    async def statuses(**config: Any) -> list[int]:
        async with simulator(receiver, error_rate=0.5, seed=11, **config) as (client, _):
            return [(await send(client, msg_id)).status_code for msg_id in range(1, 41)]

    assert await statuses() == await statuses(receipts_url=None, undelivered_rate=0.5)


@pytest.mark.parametrize(
    "changes",
    [
        {"receipt_delay_min_ms": 500, "receipt_delay_max_ms": 100},
        {"receipts_url": "ftp://example.org/"},
        {"receipt_batch_size": 0},
        {"undelivered_rate": 1.5},
    ],
)
async def test_invalid_receipt_switches_are_refused(
    receiver: Receiver, changes: dict[str, Any]
) -> None:
    async with simulator(receiver) as (client, _):
        assert (await client.patch("/_sim/config", json=changes)).status_code == 422


async def test_switching_off_or_closing_stops_the_poster(receiver: Receiver) -> None:
    async with simulator(receiver, receipt_delay_min_ms=5000, receipt_delay_max_ms=5000) as (
        client,
        app,
    ):
        state = app.state.simulator
        await send(client, 1)
        assert state.receipts.running
        assert (await stats(client))["receipts_pending"] == 1
        await client.patch("/_sim/config", json={"receipts_url": None})
        assert (await stats(client))["receipts_pending"] == 0
        await asyncio.sleep(0)
        assert not state.receipts.running

        await client.patch("/_sim/config", json={"receipts_url": receiver.url})
        await send(client, 2)
        assert state.receipts.running
        async with app.router.lifespan_context(app):
            pass  # the end of the lifespan stops every poster
        assert not state.receipts.running
    assert receiver.posts == []
