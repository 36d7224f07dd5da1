"""The SMS API simulator: the contract, the failure switches, the counters and a real server."""

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import uvicorn

from simulator.__main__ import parse_args
from simulator.app import SimulatorConfig, SimulatorState, create_app
from tests.simulator.support import (
    AUTH,
    PHONE,
    TOKEN,
    payload,
    send,
    sim_client,
    stats,
)


async def test_success_and_counters() -> None:
    async with sim_client() as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        for msg_id in (1, 2, 3):
            response = await send(client, msg_id)
            assert response.status_code == 200
            assert response.json() == {"code": 0, "message": "OK"}
        counters = await stats(client)
    assert counters["received"] == 3
    assert counters["accepted"] == 3
    assert counters["unique_accepted"] == 3
    assert counters["duplicates"] == 0
    assert counters["by_status"] == {"200": 3}
    assert counters["in_flight"] == 0
    assert counters["max_in_flight"] == 1


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}],
    ids=["missing", "wrong", "no-scheme"],
)
async def test_bad_token_is_401(headers: dict[str, str]) -> None:
    async with sim_client() as client:
        response = await client.post("/v1/send/1", json=payload(1), headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == 401
        assert isinstance(response.json()["message"], str)
        counters = await stats(client)
    assert counters["received"] == 1
    assert counters["accepted"] == 0
    assert counters["by_status"] == {"401": 1}


@pytest.mark.parametrize(
    ("path_id", "body"),
    [
        ("1", payload(2)),
        ("abc", payload(1)),
        ("1", {"id": "1", "phone": PHONE, "text": "hi"}),
        ("1", {"id": True, "phone": PHONE, "text": "hi"}),
        ("1", {"phone": PHONE, "text": "hi"}),
        ("1", payload(1, text=None)),  # type: ignore[arg-type]
        ("1", [1, 2, 3]),
    ],
    ids=["id-mismatch", "path-not-int", "id-string", "id-bool", "id-missing", "text", "not-object"],
)
async def test_invalid_body_is_400(path_id: str, body: Any) -> None:
    async with sim_client() as client:
        response = await client.post(f"/v1/send/{path_id}", json=body, headers=AUTH)
        assert response.status_code == 400
        assert response.json()["code"] == 400
        assert "detail" not in response.json()
        assert (await stats(client))["accepted"] == 0


@pytest.mark.parametrize("phone", [89161234567, 7916123456, 791612345678, "79161234567", -1])
async def test_bad_phone_is_400(phone: Any) -> None:
    async with sim_client() as client:
        response = await send(client, 1, phone=phone)
    assert response.status_code == 400
    assert response.json() == {
        "code": 400,
        "message": "phone must be an 11-digit integer starting with 7",
    }


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe", b"[" * 100_000])
async def test_invalid_json_is_400(content: bytes) -> None:
    async with sim_client() as client:
        response = await client.post(
            "/v1/send/1", content=content, headers=AUTH | {"Content-Type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json() == {"code": 400, "message": "body is not valid JSON"}


async def test_duplicates_counted() -> None:
    async with sim_client() as client:
        for msg_id in (1, 1, 2, 1):
            assert (await send(client, msg_id)).status_code == 200
        counters = await stats(client)
    assert counters["received"] == 4
    assert counters["accepted"] == 4
    assert counters["unique_accepted"] == 2
    assert counters["duplicates"] == 2


async def test_outage_then_recovery() -> None:
    async with sim_client(outage=True) as client:
        response = await send(client, 1)
        assert response.status_code == 503
        assert response.json()["code"] == 503
        patched = await client.patch("/_sim/config", json={"outage": False})
        assert patched.status_code == 200
        assert (await send(client, 1)).json() == {"code": 0, "message": "OK"}
        counters = await stats(client)
        record = (await client.get("/_sim/messages/1")).json()
    assert counters["by_status"] == {"200": 1, "503": 1}
    assert counters["received"] == 2
    assert counters["accepted"] == 1
    assert record["received"] == 2
    assert record["accepted"] == 1


async def test_outage_hang_waits_before_503() -> None:
    async with sim_client(outage=True, outage_mode="hang", hang_seconds=0.05) as client:
        started = time.perf_counter()
        response = await send(client, 1)
        elapsed = time.perf_counter() - started
    assert response.status_code == 503
    assert elapsed >= 0.045


async def test_hang_times_out_a_client() -> None:
    async with sim_client(outage=True, outage_mode="hang", hang_seconds=30) as client:
        # ASGITransport applies no timeouts, so wait_for stands in for the client's own.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(send(client, 1), timeout=0.1)
        counters = await stats(client)
    assert counters["received"] == 1
    assert counters["in_flight"] == 0


async def test_error_rate_gives_500() -> None:
    async with sim_client(error_rate=1) as client:
        response = await send(client, 1)
        counters = await stats(client)
    assert response.status_code == 500
    assert response.json()["code"] == 500
    assert counters["received"] == 1
    assert counters["accepted"] == 0


async def test_garbage_rate_gives_200_with_non_json() -> None:
    async with sim_client(garbage_rate=1) as client:
        response = await send(client, 1)
        counters = await stats(client)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert counters["accepted"] == 0
    assert counters["by_status"] == {"200": 1}


async def test_garbage_code_rate_gives_nonzero_code() -> None:
    async with sim_client(garbage_code_rate=1) as client:
        response = await send(client, 1)
        counters = await stats(client)
    assert response.status_code == 200
    assert response.json()["code"] != 0
    assert counters["accepted"] == 0


async def test_throttle_rate_gives_429_with_retry_after() -> None:
    async with sim_client(throttle_rate=1, retry_after_seconds=7) as client:
        response = await send(client, 1)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["code"] == 429


async def test_reject_rate_gives_400() -> None:
    async with sim_client(reject_rate=1) as client:
        response = await send(client, 1)
    assert response.status_code == 400
    assert response.json() == {"code": 400, "message": "rejected"}


async def test_failures_decided_in_order() -> None:
    async with sim_client(reject_rate=1, throttle_rate=1, error_rate=1, garbage_rate=1) as client:
        assert (await send(client, 1)).status_code == 400
        await client.patch("/_sim/config", json={"outage": True})
        assert (await send(client, 1)).status_code == 503
        await client.patch("/_sim/config", json={"outage": False, "reject_rate": 0})
        assert (await send(client, 1)).status_code == 429
        await client.patch("/_sim/config", json={"throttle_rate": 0})
        assert (await send(client, 1)).status_code == 500


async def test_latency_applied() -> None:
    latency_ms = 50
    async with sim_client(latency_ms=latency_ms, latency_jitter_ms=10) as client:
        started = time.perf_counter()
        response = await send(client, 1)
        elapsed = time.perf_counter() - started
    assert response.status_code == 200
    # The event loop may fire a timer up to its clock resolution early.
    assert elapsed >= latency_ms / 1000 - 0.001


async def test_seeded_error_rate_is_reproducible() -> None:
    async def statuses() -> list[int]:
        async with sim_client(error_rate=0.5, seed=1234) as client:
            return [(await send(client, msg_id)).status_code for msg_id in range(60)]

    first, second = await statuses(), await statuses()
    assert first == second
    assert set(first) == {200, 500}


async def test_reset() -> None:
    async with sim_client(error_rate=1) as client:
        await send(client, 1)
        assert (await client.post("/_sim/reset")).status_code == 200
        assert await stats(client) == {
            "received": 0,
            "accepted": 0,
            "unique_accepted": 0,
            "duplicates": 0,
            "by_status": {},
            "by_outcome": {},
            "in_flight": 0,
            "max_in_flight": 0,
            "receipts_posted": 0,
            "receipts_failed": 0,
            "receipts_failed_posts": 0,
            "receipts_pending": 0,
            "receipts_by_status": {},
        }
        assert (await client.get("/_sim/messages/1")).status_code == 404
        # A plain reset keeps the switches; ?config=true restores the defaults.
        assert (await send(client, 1)).status_code == 500
        await client.post("/_sim/reset", params={"config": "true"})
        assert (await client.get("/_sim/config")).json() == SimulatorConfig().model_dump()
        assert (await send(client, 1)).status_code == 200


async def test_patch_and_put_config() -> None:
    async with sim_client(latency_ms=5) as client:
        patched = await client.patch("/_sim/config", json={"error_rate": 0.25})
        assert patched.status_code == 200
        assert patched.json()["error_rate"] == 0.25
        assert patched.json()["latency_ms"] == 5
        assert (await client.get("/_sim/config")).json() == patched.json()

        for bad in ({"error_rate": 2}, {"no_such_switch": 1}, {"outage_mode": "explode"}):
            assert (await client.patch("/_sim/config", json=bad)).status_code == 422
        assert (await client.get("/_sim/config")).json() == patched.json()

        replaced = await client.put("/_sim/config", json={"throttle_rate": 1})
        assert replaced.status_code == 200
        assert replaced.json() == SimulatorConfig(throttle_rate=1).model_dump()
        assert (await client.put("/_sim/config", json={"latency_ms": -1})).status_code == 422
        assert (await send(client, 1)).status_code == 429


async def test_message_record() -> None:
    async with sim_client() as client:
        assert (await client.get("/_sim/messages/42")).status_code == 404
        await send(client, 42, text="first")
        await send(client, 42, text="first")
        response = await client.get("/_sim/messages/42")
    assert response.status_code == 200
    record = response.json()
    assert record["msg_id"] == 42
    assert record["received"] == 2
    assert record["accepted"] == 2
    assert record["phone"] == PHONE
    assert record["text"] == "first"
    assert record["first_accepted_at"] <= record["last_received_at"]
    assert record["last_received_at"].endswith("+00:00")


async def test_concurrency_counted() -> None:
    async with sim_client(latency_ms=20) as client:
        responses = await asyncio.gather(*(send(client, msg_id) for msg_id in range(10)))
        counters = await stats(client)
    assert all(response.status_code == 200 for response in responses)
    assert counters["max_in_flight"] == 10
    assert counters["in_flight"] == 0


def test_state_is_exposed_on_app() -> None:
    app = create_app(SimulatorConfig(seed=3), token="t")
    state = app.state.simulator
    assert isinstance(state, SimulatorState)
    assert state.config.seed == 3
    assert state.token == "t"
    assert app.state.gateways.get("default") is state
    assert list(app.state.gateways) == ["default"]
    named = app.state.gateways.get("b")
    assert named.config == SimulatorConfig()
    assert named.token == "t"
    assert list(app.state.gateways) == ["default", "b"]
    # Nothing is shared between two apps of one process.
    other = create_app(token="t")
    assert other.state.simulator is not state
    assert list(other.state.gateways) == ["default"]


def test_cli_defaults_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMULATOR_HOST", "0.0.0.0")
    monkeypatch.setenv("SIMULATOR_PORT", "9999")
    args = parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 9999)
    args = parse_args(["--host", "127.0.0.1", "--port", "8090"])
    assert (args.host, args.port) == ("127.0.0.1", 8090)


async def wait_until(condition: Callable[[], bool], task: "asyncio.Task[None]") -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert not task.done(), "the server stopped before starting"
        assert time.monotonic() < deadline, "the server did not start in 10 s"
        await asyncio.sleep(0.01)


async def test_real_server_over_tcp() -> None:
    # A socket bound here, rather than a port picked and freed, leaves no race for the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(token=TOKEN)
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: server.started, task)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            response = await send(client, 7)
            assert response.status_code == 200
            assert response.json() == {"code": 0, "message": "OK"}
            assert (await stats(client))["accepted"] == 1
    finally:
        server.should_exit = True
        await task
        sock.close()
