"""The simulator's named gateways: several on one port, each with its own switches,
counters and token; a gateway that takes and never answers; one on its own port."""

import asyncio
import os
import subprocess
import sys
import time

import httpx
import pytest

from devstack.embedded import free_port, wait_for_port
from simulator.__main__ import parse_args
from simulator.app import SimulatorConfig, create_app
from tests.simulator.support import (
    AUTH,
    TOKEN,
    app_client,
    payload,
    send,
    sim_client,
    stats,
)


async def test_gateways_keep_their_own_switches_and_counters() -> None:
    async with sim_client() as client:
        put = await client.put("/gateways/down/_sim/config", json={"outage": True})
        assert put.status_code == 200
        assert (await send(client, 1, gateway="down")).status_code == 503
        assert (await send(client, 1, gateway="up")).status_code == 200
        assert (await send(client, 2, gateway="up")).status_code == 200
        down, up, root = await stats(client, "down"), await stats(client, "up"), await stats(client)
        up_config = (await client.get("/gateways/up/_sim/config")).json()
        record = (await client.get("/gateways/up/_sim/messages/2")).json()
        missing = await client.get("/gateways/down/_sim/messages/2")
        await client.post("/gateways/up/_sim/reset")
        up_after_reset = await stats(client, "up")
        down_after_reset = await stats(client, "down")
    assert (down["received"], down["accepted"], down["by_status"]) == (1, 0, {"503": 1})
    assert (up["received"], up["accepted"], up["by_status"]) == (2, 2, {"200": 2})
    assert root["received"] == 0
    assert up_config == SimulatorConfig().model_dump()
    assert record["accepted"] == 1
    assert missing.status_code == 404
    assert up_after_reset["received"] == 0
    assert down_after_reset["received"] == 1


async def test_root_is_gateway_default() -> None:
    app = create_app(token=TOKEN)
    async with app_client(app) as client:
        assert (await send(client, 1)).status_code == 200
        assert (await send(client, 2, gateway="default")).status_code == 200
        await client.patch("/gateways/default/_sim/config", json={"error_rate": 1})
        assert (await send(client, 3)).status_code == 500
        assert (await stats(client))["accepted"] == 2
        assert await stats(client, "default") == await stats(client)
    assert app.state.simulator.config.error_rate == 1


async def test_gateway_tokens() -> None:
    app = create_app(token=TOKEN, gateway_tokens={"own": "own-token"})
    own = {"Authorization": "Bearer own-token"}
    async with app_client(app) as client:
        assert (await send(client, 1, gateway="own")).status_code == 401
        assert (await send(client, 1, gateway="own", headers=own)).status_code == 200
        assert (await send(client, 1, gateway="other", headers=own)).status_code == 401
        assert (await send(client, 1, gateway="other")).status_code == 200
        assert (await send(client, 1, headers=own)).status_code == 401
    assert app.state.gateways.get("own").token == "own-token"


def test_invalid_gateway_token_name_is_refused() -> None:
    with pytest.raises(ValueError, match="gateway names"):
        create_app(token=TOKEN, gateway_tokens={"Not Valid": "x"})


@pytest.mark.parametrize(
    "name", ["Upper", "-dash", "_under", "a" * 33, "a.b", "%C3%A9"], ids=lambda name: name[:8]
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/send/1"), ("GET", "/_sim/stats"), ("PUT", "/_sim/config")],
    ids=["send", "stats", "config"],
)
async def test_invalid_gateway_name_is_404(name: str, method: str, path: str) -> None:
    app = create_app(token=TOKEN)
    async with app_client(app) as client:
        response = await client.request(
            method, f"/gateways/{name}{path}", json=payload(1), headers=AUTH
        )
    assert response.status_code == 404
    assert "gateway names" in response.json()["detail"]
    assert list(app.state.gateways) == ["default"]


async def test_longest_gateway_name_is_valid() -> None:
    async with sim_client() as client:
        assert (await send(client, 1, gateway="a" * 32)).status_code == 200
        assert (await send(client, 1, gateway="0-a_b")).status_code == 200


async def test_accept_then_hang_counts_accepted_and_answers_late() -> None:
    async with sim_client(accept_then_hang=True, hang_seconds=0.05) as client:
        started = time.perf_counter()
        response = await send(client, 1)
        elapsed = time.perf_counter() - started
        counters = await stats(client)
    assert response.status_code == 200
    assert response.json() == {"code": 0, "message": "OK"}
    assert elapsed >= 0.045
    assert (counters["received"], counters["accepted"], counters["by_status"]) == (1, 1, {"200": 1})


async def test_accept_then_hang_times_out_a_client_after_accepting() -> None:
    async with sim_client(accept_then_hang=True, hang_seconds=30) as client:
        # ASGITransport applies no timeouts, so wait_for stands in for the client's own.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(send(client, 1), timeout=0.1)
        counters = await stats(client)
        record = (await client.get("/_sim/messages/1")).json()
        # The caller's retry is a duplicate: the phone got the first one.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(send(client, 1), timeout=0.1)
        after_retry = await stats(client)
    assert (counters["received"], counters["accepted"], counters["unique_accepted"]) == (1, 1, 1)
    assert counters["by_status"] == {}
    assert counters["in_flight"] == 0
    assert record["accepted"] == 1
    assert record["first_accepted_at"] is not None
    assert (after_retry["accepted"], after_retry["duplicates"]) == (2, 1)


async def test_accept_then_hang_leaves_failures_as_they_are() -> None:
    async with sim_client(accept_then_hang=True, error_rate=1) as client:
        assert (await send(client, 1)).status_code == 500
        await client.patch("/_sim/config", json={"error_rate": 0, "outage": True})
        assert (await send(client, 1)).status_code == 503
        assert (await stats(client))["accepted"] == 0


async def test_accepted_lists_in_order() -> None:
    app = create_app(token=TOKEN)
    async with app_client(app) as client:
        await client.put("/gateways/b/_sim/config", json={"fail_first": 1})
        for msg_id, text in ((3, "three"), (1, "one"), (2, "two"), (3, "three")):
            assert (await send(client, msg_id, gateway="b", text=text)).status_code in (200, 500)
        assert (await send(client, 9, text="root")).status_code == 200
        listed = (await client.get("/gateways/b/_sim/accepted")).json()
        after = (await client.get("/gateways/b/_sim/accepted", params={"after_id": 1})).json()
        limited = (await client.get("/gateways/b/_sim/accepted", params={"limit": 1})).json()
        unknown = await client.get("/gateways/b/_sim/accepted", params={"after_id": 9})
        root = (await client.get("/_sim/accepted")).json()
    # The first send of 3 failed, so 3 appears once, last.
    assert [(item["msg_id"], item["text"]) for item in listed] == [
        (1, "one"),
        (2, "two"),
        (3, "three"),
    ]
    times = [item["accepted_at"] for item in listed]
    assert times == sorted(times)
    assert abs(times[0] - time.time()) < 60
    assert [item["msg_id"] for item in after] == [2, 3]
    assert [item["msg_id"] for item in limited] == [1]
    assert unknown.status_code == 404
    assert [item["msg_id"] for item in root] == [9]
    log = app.state.gateways.get("b").accepted_log()
    assert [(msg_id, text) for _, msg_id, text in log] == [(1, "one"), (2, "two"), (3, "three")]
    assert [at for at, _, _ in log] == times


async def test_accepted_tells_when_each_request_arrived() -> None:
    """`arrived_at` is the request's arrival, before the latency: the instant the sender judged
    its window, which the soak checks the window against."""
    app = create_app(token=TOKEN)
    async with app_client(app) as client:
        await client.patch("/_sim/config", json={"latency_ms": 200})
        before = time.time()
        assert (await send(client, 1)).status_code == 200
        [item] = (await client.get("/_sim/accepted")).json()
        assert (await send(client, 2)).status_code == 200
        paged = (await client.get("/_sim/accepted", params={"offset": 1})).json()
    assert before <= item["arrived_at"] <= before + 0.1
    assert item["accepted_at"] - item["arrived_at"] >= 0.2
    assert [entry["msg_id"] for entry in paged] == [2]
    arrived, accepted, msg_id = app.state.simulator.arrivals_log()[0]
    assert (arrived, accepted, msg_id) == (item["arrived_at"], item["accepted_at"], 1)


async def test_accepted_lists_duplicates_and_forgets_on_reset() -> None:
    app = create_app(token=TOKEN)
    async with app_client(app) as client:
        for msg_id in (1, 2, 1):
            await send(client, msg_id)
        listed = (await client.get("/_sim/accepted")).json()
        after = (await client.get("/_sim/accepted", params={"after_id": 1})).json()
        await client.post("/_sim/reset")
        assert (await client.get("/_sim/accepted")).json() == []
    assert [item["msg_id"] for item in listed] == [1, 2, 1]
    # after_id starts after the latest acceptance of that msgId.
    assert after == []
    assert app.state.simulator.accepted_log() == []


async def test_gateways_listed() -> None:
    async with sim_client() as client:
        await send(client, 1, gateway="b")
        await client.patch("/gateways/a/_sim/config", json={"outage": True})
        response = await client.get("/_sim/gateways")
    assert response.status_code == 200
    listed = {gateway["name"]: gateway for gateway in response.json()}
    assert list(listed) == ["default", "b", "a"]
    assert listed["b"]["stats"]["accepted"] == 1
    assert listed["default"]["stats"]["received"] == 0
    assert listed["a"]["config"]["outage"] is True


def test_cli_gateway_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_args([]).gateway_tokens == {}
    monkeypatch.setenv("SIMULATOR_GATEWAY_TOKENS", '{"a": "env-a", "b": "env-b"}')
    args = parse_args(["--gateway-token", "b=cli=b", "--gateway-token", "c=cli-c"])
    assert args.gateway_tokens == {"a": "env-a", "b": "cli=b", "c": "cli-c"}
    for argv in (["--gateway-token", "B=x"], ["--gateway-token", "b"], ["--gateway-token", "b="]):
        with pytest.raises(SystemExit):
            parse_args(argv)
    for raw in ("not json", "[]", '{"a": 1}', '{"A": "x"}'):
        monkeypatch.setenv("SIMULATOR_GATEWAY_TOKENS", raw)
        with pytest.raises(SystemExit):
            parse_args([])


def test_cli_server_on_its_own_port_then_refused() -> None:
    # A second simulator in a process of its own: stopping it gives a refused connection.
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", str(port), "--log-level", "warning"],
        env={**os.environ, "SEND_API_TOKEN": TOKEN, "SIMULATOR_GATEWAY_TOKENS": '{"b": "tb"}'},
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30, process=process)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            response = client.post("/v1/send/1", json=payload(1), headers=AUTH)
            assert response.status_code == 200
            headers = {"Authorization": "Bearer tb"}
            response = client.post("/gateways/b/v1/send/2", json=payload(2), headers=headers)
            assert response.status_code == 200
            assert client.get("/gateways/b/_sim/stats").json()["accepted"] == 1
    finally:
        process.terminate()
        process.wait(timeout=10)
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{port}/v1/send/3", json=payload(3), headers=AUTH)
