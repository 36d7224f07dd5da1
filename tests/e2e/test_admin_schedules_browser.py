"""The schedules page in a real headless Chromium against the running stack (the API over HTTP,
a worker, the dev server): reached from the nav, every schedule with its next runs in its zone,
pause and resume, run now, delete after a confirmation; a reader sees no button and is refused
anyway."""

from datetime import datetime

import pytest
from fastapi import FastAPI
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from core.auth import embedded_tokens
from tests.e2e.test_admin_browser import (
    browsers,  # noqa: F401 (a fixture)
    chrome,
    run,
    shoot,
    sign_in,
    site,  # noqa: F401 (a fixture)
    text,
    wait_for,
)
from tests.e2e.test_schedules import body, eventually, made, schedules_gone  # noqa: F401
from tests.support import api_client

pytestmark = pytest.mark.slow


def row_text(browser: WebDriver, schedule_id: int) -> str:
    return str(browser.find_element(By.ID, f"schedule-{schedule_id}").text)


def next_runs_shown(browser: WebDriver, schedule_id: int) -> list[str]:
    row = browser.find_element(By.ID, f"schedule-{schedule_id}")
    return [str(cell.text) for cell in row.find_elements(By.CSS_SELECTOR, ".next-run")]


async def test_the_schedules_page(
    site: tuple[FastAPI, str],  # noqa: F811
    browsers: list[WebDriver],  # noqa: F811
    dev_env: WorkflowEnvironment,
    schedules_gone: None,  # noqa: F811
) -> None:
    app, base = site
    async with api_client(app) as api:
        weekly = (await api.post("/api/v1/schedules", json=body(cron="0 10 * * MON"))).json()
        nightly = (
            await api.post(
                "/api/v1/schedules",
                json=body(name="nightly", cron="30 22 * * *", timezone="Asia/Yekaterinburg"),
            )
        ).json()
    tokens = embedded_tokens(app.state.settings)
    browser = await run(chrome)
    browsers.append(browser)
    await run(lambda: sign_in(browser, base, tokens.mint(subject="operator")))

    def open_from_the_nav() -> None:
        browser.find_element(By.CSS_SELECTOR, "nav a[href='/admin/schedules']").click()
        wait_for(browser, lambda b: b.find_elements(By.ID, "schedules"))
        shoot(browser, "schedules")

    await run(open_from_the_nav)
    page = await run(lambda: text(browser))
    assert "2 schedules" in page
    weekly_row = await run(lambda: row_text(browser, weekly["id"]))
    assert "weekly" in weekly_row and "0 10 * * MON Europe/Moscow" in weekly_row
    assert "active" in weekly_row
    # Its next five runs, in its own zone, as the API answers them.
    for schedule in (weekly, nightly):
        shown = await run(lambda s=schedule: next_runs_shown(browser, s["id"]))  # type: ignore[misc]
        assert shown == [
            datetime.fromisoformat(t).strftime("%a %Y-%m-%d %H:%M") for t in schedule["next_runs"]
        ]
    weekly_shown = await run(lambda: next_runs_shown(browser, weekly["id"]))
    assert all(line.startswith("Mon ") and line.endswith(" 10:00") for line in weekly_shown)

    def press(button_id: str, notice: str) -> None:
        browser.find_element(By.ID, button_id).click()
        wait_for(browser, lambda b: notice in text(b))

    await run(lambda: press(f"pause-{weekly['id']}", f"schedule #{weekly['id']} paused"))
    paused_row = await run(lambda: row_text(browser, weekly["id"]))
    assert "paused" in paused_row and "none while paused" in paused_row
    assert await run(lambda: browser.find_elements(By.ID, f"run-{weekly['id']}")) == []
    async with api_client(app) as api:
        assert (await api.get(f"/api/v1/schedules/{weekly['id']}")).json()["paused"] is True
    await run(lambda: press(f"resume-{weekly['id']}", f"schedule #{weekly['id']} resumed"))
    assert "active" in await run(lambda: row_text(browser, weekly["id"]))

    # Run now: the worker makes its dispatch.
    await run(lambda: press(f"run-{nightly['id']}", f"schedule #{nightly['id']} is running now"))
    async with api_client(app) as api:
        dispatches = await eventually(lambda: made(api, nightly["id"]))
    assert len(dispatches) == 1 and dispatches[0]["schedule_id"] == nightly["id"]

    def delete() -> None:
        browser.find_element(By.ID, f"delete-{weekly['id']}").click()
        WebDriverWait(browser, 10).until(lambda b: b.switch_to.alert).accept()
        wait_for(browser, lambda b: f"schedule #{weekly['id']} deleted" in text(b))

    await run(delete)
    assert await run(lambda: browser.find_elements(By.ID, f"schedule-{weekly['id']}")) == []
    with pytest.raises(RPCError) as gone:
        await dev_env.client.get_schedule_handle(weekly["temporal_id"]).describe()
    assert gone.value.status == RPCStatusCode.NOT_FOUND

    # A reader sees the schedules but no button, and the server refuses the action anyway.
    reader = await run(chrome)
    browsers.append(reader)
    read_only = tokens.mint(subject="reader", permissions=frozenset({"dispatches:read"}))
    await run(lambda: sign_in(reader, base, read_only))
    await run(lambda: reader.get(f"{base}/admin/schedules"))
    assert "nightly" in await run(lambda: row_text(reader, nightly["id"]))
    assert await run(lambda: reader.find_elements(By.ID, f"pause-{nightly['id']}")) == []
    status = await run(
        lambda: reader.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const csrf = document.body.getAttribute('hx-headers').split('\"')[3];"
            f"fetch('/admin/schedules/{nightly['id']}/pause', {{method: 'POST',"
            " headers: {'X-CSRF-Token': csrf}}).then(r => done(r.status));"
        )
    )
    assert status == 403
    async with api_client(app) as api:
        assert (await api.get(f"/api/v1/schedules/{nightly['id']}")).json()["paused"] is False
