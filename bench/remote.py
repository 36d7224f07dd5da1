"""Control of the simulator between scenarios: its latency, its counters."""

import httpx

from bench.figures import RemoteFigures


class SimulatorControl:
    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    async def prepare(self, *, latency_ms: float) -> None:
        """Zeroed counters and this latency (every other switch healthy)."""
        response = await self.http.post(f"{self.base_url}/_sim/reset", params={"config": "true"})
        response.raise_for_status()
        response = await self.http.patch(
            f"{self.base_url}/_sim/config", json={"latency_ms": latency_ms}
        )
        response.raise_for_status()

    async def figures(self) -> RemoteFigures:
        response = await self.http.get(f"{self.base_url}/_sim/stats")
        response.raise_for_status()
        stats = response.json()
        return RemoteFigures(
            received=int(stats["received"]),
            accepted=int(stats["accepted"]),
            unique_accepted=int(stats["unique_accepted"]),
            duplicates=int(stats["duplicates"]),
            max_in_flight=int(stats["max_in_flight"]),
        )
