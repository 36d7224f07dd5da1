"""/docs in a real browser on a machine without internet: Chromium (headless) renders Swagger UI
from the assets the API serves itself, with every operation listed."""

import asyncio
import shutil
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from tests.support import serving

pytestmark = pytest.mark.slow


@pytest.fixture
async def api_port(api_app: FastAPI) -> AsyncIterator[int]:
    async with serving(api_app, lifespan="off") as port:
        yield port


async def rendered(url: str) -> str:
    chromium = shutil.which("chromium")
    assert chromium, "make test installs chromium (python -m devstack.system chromium)"
    process = await asyncio.create_subprocess_exec(
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=90)
    return out.decode()


async def test_swagger_ui_renders_offline(api_port: int) -> None:
    dom = await rendered(f"http://127.0.0.1:{api_port}/docs")
    # Rendered by the script, not just the page's empty <div id="swagger-ui">.
    assert "opblock" in dom, dom[:2000]
    assert "/api/v1/dispatches/{dispatch_id}/pause" in dom
    assert "Authorize" in dom


async def test_redoc_renders_offline(api_port: int) -> None:
    dom = await rendered(f"http://127.0.0.1:{api_port}/redoc")
    assert "Mailing service" in dom and "dispatches:control" in dom, dom[:2000]
