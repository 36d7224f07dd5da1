"""Control of the simulator between scenarios: its latency, its switches, its counters; of the
root gateway (`default`) or of a named one (`/gateways/{name}`, made on first use)."""

from dataclasses import dataclass
from typing import Any

import httpx

from bench.figures import RemoteFigures

# Entries per page of /_sim/accepted and /_sim/receipts: the most the simulator serves at once.
ACCEPTED_PAGE = 100_000


@dataclass(frozen=True)
class Acceptance:
    """One 200 of a gateway: the message's id and when (epoch seconds, the simulator's clock:
    the same machine's as the bench's `time.time()`)."""

    msg_id: int
    at: float


class SimulatorControl:
    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    def gateway(self, name: str) -> "SimulatorControl":
        """The control of the simulator's gateway `name` (the same process and port)."""
        return SimulatorControl(self.http, f"{self.base_url}/gateways/{name}")

    @property
    def send_api_url(self) -> str:
        """The base URL of this gateway's send API, as SEND_API_URL or a route's `url`."""
        return f"{self.base_url}/v1"

    async def prepare(self, *, latency_ms: float) -> None:
        """Zeroed counters and this latency (every other switch healthy)."""
        response = await self.http.post(f"{self.base_url}/_sim/reset", params={"config": "true"})
        response.raise_for_status()
        await self.configure(latency_ms=latency_ms)

    async def configure(self, **changes: Any) -> None:
        """Changes only these switches (simulator.gateways.SimulatorConfig's fields)."""
        response = await self.http.patch(f"{self.base_url}/_sim/config", json=changes)
        response.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        response = await self.http.get(f"{self.base_url}/_sim/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    async def figures(self) -> RemoteFigures:
        stats = await self.stats()
        return RemoteFigures(
            received=int(stats["received"]),
            accepted=int(stats["accepted"]),
            unique_accepted=int(stats["unique_accepted"]),
            duplicates=int(stats["duplicates"]),
            max_in_flight=int(stats["max_in_flight"]),
        )

    async def received(self, msg_id: int) -> int:
        """How many requests for this msgId the gateway got (answered or not, hung ones too)."""
        response = await self.http.get(f"{self.base_url}/_sim/messages/{msg_id}")
        if response.status_code == 404:
            return 0
        response.raise_for_status()
        return int(response.json()["received"])

    async def accepted(self) -> list[Acceptance]:
        """Every acceptance since the last reset, in order (duplicates once per acceptance).

        Past the first page, the next starts after the latest acceptance of the page's last id:
        a page that ends on a message accepted again later skips what lies between (the
        gateway's `duplicates` counts them all the same)."""
        found: list[Acceptance] = []
        while True:
            params: dict[str, int] = {"limit": ACCEPTED_PAGE}
            if found:
                params["after_id"] = found[-1].msg_id
            response = await self.http.get(f"{self.base_url}/_sim/accepted", params=params)
            response.raise_for_status()
            page = [Acceptance(int(a["msg_id"]), float(a["accepted_at"])) for a in response.json()]
            found += page
            if len(page) < ACCEPTED_PAGE:
                return found

    async def receipt_outcomes(self) -> dict[int, str]:
        """The final status decided for each msgId's receipts since the last reset."""
        found: dict[int, str] = {}
        while True:
            params: dict[str, int] = {"limit": ACCEPTED_PAGE}
            if found:
                params["after_id"] = next(reversed(found))
            response = await self.http.get(f"{self.base_url}/_sim/receipts", params=params)
            response.raise_for_status()
            page = {int(msg_id): str(status) for msg_id, status in response.json().items()}
            found |= page
            if len(page) < ACCEPTED_PAGE:
                return found
