"""The remote client against the simulator over TCP, and against raw sockets for answers the
simulator never gives (a hang-up, a truncated body); check_answer on answers built by hand."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from activities.remote import RemoteClient, RemoteError, check_answer
from devstack.embedded import free_port
from simulator.app import SimulatorConfig
from tests.conftest import TOKEN, RunningSimulator

PHONE = "79001234567"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def remotes() -> AsyncIterator[Callable[..., RemoteClient]]:
    """Makes remote clients (token TOKEN, timeout 2 s unless told), closed after the test."""
    made: list[RemoteClient] = []

    def make(
        base_url: str,
        *,
        token: str = TOKEN,
        timeout_seconds: float = 2.0,
        max_connections: int = 10,
    ) -> RemoteClient:
        remote = RemoteClient(
            base_url=base_url,
            token=token,
            timeout_seconds=timeout_seconds,
            max_connections=max_connections,
        )
        made.append(remote)
        return remote

    yield make
    for remote in made:
        await remote.aclose()


async def send_error(remote: RemoteClient, message_id: int = 1) -> RemoteError:
    with pytest.raises(RemoteError) as raised:
        await remote.send(message_id=message_id, phone=PHONE, text="hello")
    return raised.value


async def test_accepted_send_reaches_the_remote(
    remotes: Callable[..., RemoteClient], simulator: RunningSimulator
) -> None:
    remote = remotes(simulator.base_url)
    text = "Скидка 10% до пятницы: «ждём вас»"
    await remote.send(message_id=42, phone=PHONE, text=text)
    record = simulator.state.message(42)
    assert record is not None
    assert record["accepted"] == 1
    assert record["phone"] == int(PHONE)
    assert record["text"] == text


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (SimulatorConfig(outage=True), "HTTP 503"),
        (SimulatorConfig(error_rate=1.0), "HTTP 500"),
        (SimulatorConfig(garbage_rate=1.0), "garbage answer: '<html><body>oops</body></html>'"),
        (
            SimulatorConfig(garbage_code_rate=1.0),
            "answer code is not 0: {'code': 1, 'message': 'rejected'}",
        ),
    ],
    ids=["503", "500", "garbage", "code-1"],
)
async def test_transient_answers(
    remotes: Callable[..., RemoteClient],
    simulator: RunningSimulator,
    config: SimulatorConfig,
    reason: str,
) -> None:
    simulator.state.set_config(config)
    error = await send_error(remotes(simulator.base_url))
    assert str(error) == reason
    assert not error.permanent
    assert error.retry_after is None


async def test_throttle_carries_retry_after(
    remotes: Callable[..., RemoteClient], simulator: RunningSimulator
) -> None:
    simulator.state.set_config(SimulatorConfig(throttle_rate=1.0, retry_after_seconds=7))
    error = await send_error(remotes(simulator.base_url))
    assert str(error) == "HTTP 429 throttled"
    assert not error.permanent
    assert error.retry_after == 7.0


async def test_reject_is_permanent_with_the_remote_text(
    remotes: Callable[..., RemoteClient], simulator: RunningSimulator
) -> None:
    simulator.state.set_config(SimulatorConfig(reject_rate=1.0))
    error = await send_error(remotes(simulator.base_url))
    assert str(error) == 'HTTP 400: {"code":400,"message":"rejected"}'
    assert error.permanent


async def test_wrong_token_is_a_credentials_error(
    remotes: Callable[..., RemoteClient], simulator: RunningSimulator
) -> None:
    error = await send_error(remotes(simulator.base_url, token="not-the-token"))
    assert str(error).startswith("HTTP 401: ")
    assert "invalid bearer token" in str(error)
    assert error.credentials and not error.permanent
    assert simulator.state.stats()["accepted"] == 0


async def test_hanging_remote_times_out(
    remotes: Callable[..., RemoteClient], simulator: RunningSimulator
) -> None:
    simulator.state.set_config(SimulatorConfig(outage=True, outage_mode="hang", hang_seconds=1.5))
    remote = remotes(simulator.base_url, timeout_seconds=0.3)
    started = time.monotonic()
    error = await send_error(remote)
    elapsed = time.monotonic() - started
    assert str(error) == "timed out"
    assert not error.permanent
    assert (error.maybe_taken, error.shows_down) == (True, True)
    assert 0.25 <= elapsed < 1.0, elapsed


async def test_refused_connection_certainly_sent_nothing(
    remotes: Callable[..., RemoteClient],
) -> None:
    error = await send_error(remotes(f"http://127.0.0.1:{free_port()}/v1"))
    assert str(error).startswith("cannot connect: ClientConnectorError: "), str(error)
    assert (error.kind, error.permanent) == ("refused", False)
    # Nothing was written: another route may take the message; the gateway is down.
    assert (error.maybe_taken, error.shows_down) == (False, True)


async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Reads one request; its body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize(
    ("answer", "error_type"),
    [
        (b"", "ServerDisconnectedError"),
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"code":', "ClientPayloadError"),
        (b'{"code":0}', "ClientResponseError"),
    ],
    ids=["hang-up", "truncated-body", "not-http"],
)
async def test_broken_answers_are_transport_errors(
    remotes: Callable[..., RemoteClient], answer: bytes, error_type: str
) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_once(reader, writer)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server, base_url = await serve(handle)
    async with server:
        error = await send_error(remotes(base_url))
    assert str(error).startswith(f"transport error: {error_type}: "), str(error)
    assert not error.permanent
    # The request was written: the gateway may have it, so it stays on its route.
    assert (error.maybe_taken, error.shows_down) == (True, True)


async def test_connections_are_kept_alive(remotes: Callable[..., RemoteClient]) -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                await answer_once(reader, writer)
            except asyncio.IncompleteReadError:
                break
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{"code":0}')
            await writer.drain()
        writer.close()

    server, base_url = await serve(handle)
    async with server:
        remote = remotes(base_url)
        for message_id in range(20):
            await remote.send(message_id=message_id, phone=PHONE, text="hello")
        # Before the server stops: a server waits for its open connections (Python 3.12+).
        await remote.aclose()
    assert connections == 1


async def test_concurrent_sends_stay_within_max_connections(
    remotes: Callable[..., RemoteClient], simulator: RunningSimulator
) -> None:
    simulator.state.set_config(SimulatorConfig(latency_ms=30))
    remote = remotes(simulator.base_url, max_connections=5)
    await asyncio.gather(
        *(remote.send(message_id=i, phone=PHONE, text=f"hello {i}") for i in range(1, 51))
    )
    stats = simulator.state.stats()
    assert stats["accepted"] == stats["unique_accepted"] == 50
    # Equal rather than at most: the limit was reached, so it is what held the rest back.
    assert stats["max_in_flight"] == 5


async def test_closing(remotes: Callable[..., RemoteClient], simulator: RunningSimulator) -> None:
    never_used = remotes(simulator.base_url)
    await never_used.aclose()
    await never_used.aclose()

    async with RemoteClient(
        base_url=simulator.base_url, token=TOKEN, timeout_seconds=2, max_connections=1
    ) as remote:
        await remote.send(message_id=7, phone=PHONE, text="hello")
    await remote.aclose()
    with pytest.raises(RuntimeError):
        await remote.send(message_id=8, phone=PHONE, text="hello")
    assert simulator.state.stats()["received"] == 1


def answer_error(status: int, body: bytes, headers: dict[str, str] | None = None) -> RemoteError:
    with pytest.raises(RemoteError) as raised:
        check_answer(status=status, headers=headers or {}, body=body)
    return raised.value


def test_check_answer_accepts_code_0() -> None:
    check_answer(status=200, headers={}, body=b'{"code": 0, "message": "OK"}')


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"RETRY-AFTER": "-4"}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),
        ({"Retry-After": "inf"}, None),
        ({}, None),
    ],
)
def test_check_answer_throttled(headers: dict[str, str], retry_after: float | None) -> None:
    error = answer_error(429, b"{}", headers)
    assert str(error) == "HTTP 429 throttled"
    assert not error.permanent
    assert error.retry_after == retry_after


@pytest.mark.parametrize(
    ("status", "body", "reason", "permanent"),
    [
        (408, b"", "HTTP 408", False),
        (502, b"bad gateway", "HTTP 502", False),
        (599, b"", "HTTP 599", False),
        (404, b"x" * 300, f"HTTP 404: {'x' * 200}", True),
        (400, "нет".encode(), "HTTP 400: нет", True),
        (302, b"", "unexpected HTTP 302", False),
        (204, b"", "unexpected HTTP 204", False),
        (200, b'{"code": 1}', "answer code is not 0: {'code': 1}", False),
        (200, b'{"message": "OK"}', "answer code is not 0: {'message': 'OK'}", False),
        (200, b"[0]", "answer code is not 0: [0]", False),
        (200, b"0", "answer code is not 0: 0", False),
        (200, b"", "garbage answer: ''", False),
        (200, b"\xff\xfe\xfd", "garbage answer: '\ufffd\ufffd\ufffd'", False),
        (200, b"[" * 100_000, f"garbage answer: {'[' * 100!r}", False),
    ],
    ids=[
        "408",
        "502",
        "599",
        "404-cut",
        "400-utf8",
        "302",
        "204",
        "code-1",
        "no-code",
        "list",
        "scalar",
        "empty",
        "not-utf8",
        "too-deep",
    ],
)
def test_check_answer_classifies(status: int, body: bytes, reason: str, permanent: bool) -> None:
    error = answer_error(status, body)
    assert str(error) == reason
    assert error.permanent is permanent
    assert error.retry_after is None
