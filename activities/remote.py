"""The client of the remote send API: one POST per message, every remote-side failure a
RemoteError that says whether a retry can help.

aiohttp rather than httpx, for the CPU each request costs the worker: measured against the
simulator by bench/http_clients.py, 100 connections, httpx took 4.7 ms of CPU per request (and
more as its pool grows: its pool looks at every connection for every request), aiohttp 0.2 ms.
Once the remote answers quickly, a worker's send rate is bounded by that CPU, not by the remote.
"""

import json
import math
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Self

import aiohttp
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from core import metrics, tracing


class RemoteError(Exception):
    """The remote did not accept the message; `permanent` ones are never retried.

    `retry_after` is the delay in seconds the remote asked for (a 429's Retry-After), if any.
    `credentials`: a 401 or 403, our token or account refused: no message can go until an
    operator fixes it, so the dispatch pauses instead of failing its messages.
    `maybe_taken`: the gateway may have the message (a timeout, a connection lost once the
    request was written, an answer that cannot be read): it is retried on the same route
    only, never sent through another. Otherwise the gateway certainly did not take it.
    `shows_down`: the failure says the gateway is down (refused, reset, timed out, 5xx, 429),
    not that it judged this message: it counts toward opening the route's circuit.
    """

    def __init__(
        self,
        reason: str,
        *,
        kind: str,
        permanent: bool = False,
        retry_after: float | None = None,
        credentials: bool = False,
        maybe_taken: bool = False,
        shows_down: bool = False,
    ) -> None:
        super().__init__(reason)
        # The error class, a bounded label of the metrics: timeout, transport, refused,
        # throttled, server, garbage, rejected, credentials, no_route.
        self.kind = kind
        self.permanent = permanent
        self.retry_after = retry_after
        self.credentials = credentials
        self.maybe_taken = maybe_taken
        self.shows_down = shows_down


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of a header whatever the case of its name (`name` in lower case)."""
    return next((value for key, value in headers.items() if key.lower() == name), None)


RETRY_AFTER_MAX_SECONDS = 86_400.0


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds; None when absent, an HTTP date or not a finite number."""
    try:
        seconds = float(_header(headers, "retry-after") or "")
    except ValueError:
        return None
    # Capped at a day: a remote asking for more is taken at its word for a day, not for ever.
    return min(max(0.0, seconds), RETRY_AFTER_MAX_SECONDS) if math.isfinite(seconds) else None


def _text(body: bytes, limit: int) -> str:
    # A UTF-8 character takes at most 4 bytes: decoding more than that is wasted on a large body.
    return body[: limit * 4].decode("utf-8", errors="replace")[:limit]


def check_answer(*, status: int, headers: Mapping[str, str], body: bytes) -> None:
    """Raises RemoteError unless the answer is HTTP 200 with JSON code 0."""
    if status == 429:
        raise RemoteError(
            "HTTP 429 throttled",
            kind="throttled",
            retry_after=_retry_after(headers),
            shows_down=True,
        )
    if status == 408 or status >= 500:
        raise RemoteError(f"HTTP {status}", kind="server", shows_down=True)
    if status in (401, 403):
        raise RemoteError(
            f"HTTP {status}: {_text(body, 200)}", kind="credentials", credentials=True
        )
    if 400 <= status < 500:
        raise RemoteError(f"HTTP {status}: {_text(body, 200)}", kind="rejected", permanent=True)
    if status != 200:
        raise RemoteError(f"unexpected HTTP {status}", kind="garbage")
    # A 200 that cannot be read may well be the gateway having taken the message.
    try:
        answer = json.loads(body)
    # ValueError covers invalid JSON and bytes that are not UTF-8; RecursionError, JSON nested
    # deeper than the parser's stack.
    except (ValueError, RecursionError):
        raise RemoteError(
            f"garbage answer: {_text(body, 100)!r}", kind="garbage", maybe_taken=True
        ) from None
    if not isinstance(answer, dict) or answer.get("code") != 0:
        raise RemoteError(
            f"answer code is not 0: {str(answer)[:100]}", kind="garbage", maybe_taken=True
        )


class RemoteClient:
    """One keep-alive connection pool to the remote, shared by every send of a worker process.

    aiohttp for its CPU cost per request, a twentieth of httpx's at 100 connections (measured
    by bench/http_clients.py). The session is made on the first send, inside the running loop, as
    aiohttp requires; `aclose` (or leaving `async with`) closes it for good.

    The timeout bounds a whole send: waiting for a free connection, connecting, the request
    and reading the whole answer.
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        timeout_seconds: float,
        max_connections: int,
        name: str = "default",
    ) -> None:
        # The route's name: a label of the metrics.
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.max_connections = max_connections
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the remote client is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                limit_per_host=self.max_connections,
                force_close=False,  # keep-alive: a connection per request would cost more CPU
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
            )
        return self._session

    async def send(self, *, message_id: int, phone: str, text: str) -> None:
        """POSTs one message; returns once the remote accepted it, raises RemoteError if not."""
        traces = tracing.current()
        if traces is None:
            await self._post(message_id=message_id, phone=phone, text=text)
            return
        # A client span per request, sent along as its traceparent (for a gateway that traces).
        # Lean, as it is one per message: never made current (nothing under it makes spans),
        # the header written out rather than through a propagator, a few attributes (each
        # costs as much again to export); about half what a current span with the HTTP
        # conventions' full set costs.
        span = traces.tracer.start_span(
            "POST /send/{message_id}",
            kind=SpanKind.CLIENT,
            attributes={
                "url.full": f"{self.base_url}/send/{message_id}",
                "mailing.message_id": message_id,
                "mailing.route": self.name,
            },
        )
        context = span.get_span_context()
        headers = {
            "traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-"
            f"{context.trace_flags:02x}"
        }
        try:
            await self._post(
                message_id=message_id, phone=phone, text=text, headers=headers, span=span
            )
        except RemoteError as error:
            span.set_attribute("error.type", error.kind)
            span.set_status(Status(StatusCode.ERROR, str(error)))
            raise
        except BaseException as error:
            # Cancelled (the batch stops) or a bug: the span still ends, saying so.
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            span.end()

    async def _post(
        self,
        *,
        message_id: int,
        phone: str,
        text: str,
        headers: dict[str, str] | None = None,
        span: Span | None = None,
    ) -> None:
        session = self._open()
        payload = json.dumps(
            {"id": message_id, "phone": int(phone), "text": text},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        started = time.monotonic()
        try:
            async with session.post(
                f"{self.base_url}/send/{message_id}",
                data=payload,
                headers=headers,
                # A redirect is an answer to judge, never a second POST of the message.
                allow_redirects=False,
            ) as response:
                body = await response.read()
            if span is not None:
                span.set_attribute("http.response.status_code", response.status)
        # Before OSError: TimeoutError is one, and so are aiohttp's own timeouts. The request
        # may have been written and taken: the message stays on this route.
        except TimeoutError as error:
            metrics.observe_remote(started, "timeout", self.name)
            raise RemoteError(
                "timed out", kind="timeout", maybe_taken=True, shows_down=True
            ) from error
        # No connection could be made (refused, unreachable, DNS, TLS): nothing was written.
        except aiohttp.ClientConnectorError as error:
            metrics.observe_remote(started, "refused", self.name)
            raise RemoteError(
                f"cannot connect: {type(error).__name__}: {error}", kind="refused", shows_down=True
            ) from error
        # aiohttp wraps what goes wrong on the wire once connected (reset, a malformed or
        # truncated answer) in ClientError; OSError for anything from the socket that it lets
        # through. The request may have been written and taken.
        except (aiohttp.ClientError, OSError) as error:
            metrics.observe_remote(started, "transport", self.name)
            raise RemoteError(
                f"transport error: {type(error).__name__}: {error}",
                kind="transport",
                maybe_taken=True,
                shows_down=True,
            ) from error
        try:
            check_answer(status=response.status, headers=response.headers, body=body)
        except RemoteError as error:
            metrics.observe_remote(started, error.kind, self.name)
            raise
        metrics.observe_remote(started, "accepted", self.name)

    async def aclose(self) -> None:
        """Closes the connections; a later send raises RuntimeError."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
