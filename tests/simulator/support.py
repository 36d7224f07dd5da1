"""What the simulator's tests share: a client of an app in process, sends, counters."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from simulator.app import SimulatorConfig, create_app

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PHONE = 79161234567


def payload(msg_id: int, phone: int = PHONE, text: str = "hello") -> dict[str, Any]:
    return {"id": msg_id, "phone": phone, "text": text}


@asynccontextmanager
async def app_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client


@asynccontextmanager
async def sim_client(**config: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(SimulatorConfig(**config), token=TOKEN)) as client:
        yield client


def gateway_path(gateway: str | None, path: str) -> str:
    """The path of a route of this gateway, or of the root (the default gateway) for None."""
    return path if gateway is None else f"/gateways/{gateway}{path}"


async def send(
    client: httpx.AsyncClient,
    msg_id: int,
    *,
    gateway: str | None = None,
    headers: dict[str, str] = AUTH,
    **body: Any,
) -> httpx.Response:
    return await client.post(
        gateway_path(gateway, f"/v1/send/{msg_id}"), json=payload(msg_id, **body), headers=headers
    )


async def stats(client: httpx.AsyncClient, gateway: str | None = None) -> dict[str, Any]:
    response = await client.get(gateway_path(gateway, "/_sim/stats"))
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result
