"""The ceiling's one activity: a single POST to the send API, nothing else."""

from dataclasses import dataclass

import httpx
from temporalio import activity


@dataclass
class PostInput:
    """One request to the remote; ids far above the service's own message ids."""

    message_id: int
    phone: int  # 7XXXXXXXXXX
    text: str


class CeilingActivities:
    """Shares one HTTP client (and its connection pool) between every attempt."""

    def __init__(self, *, http: httpx.AsyncClient, base_url: str, token: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}

    @activity.defn(name="bench_ceiling_post")
    async def post_once(self, input: PostInput) -> None:
        response = await self.http.post(
            f"{self.base_url}/send/{input.message_id}",
            json={"id": input.message_id, "phone": input.phone, "text": input.text},
            headers=self.headers,
        )
        # A failure is retried by Temporal like any activity; the simulator is healthy here.
        response.raise_for_status()
