"""The "Send a test" box of a dispatch's page in a real headless Chromium against the running
stack (the API over HTTP, a worker, the dev server, the simulator): two numbers typed in, the
rendered text of each shown at once, the recent test messages updating by themselves until
sent; a bad number answered in the page; a reader sees no box and is refused anyway."""

from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from core.auth import embedded_tokens
from core.db import Database
from tests.conftest import RunningSimulator
from tests.e2e.test_admin_browser import (
    browsers,  # noqa: F401 (a fixture)
    chrome,
    fill,
    run,
    shoot,
    sign_in,
    site,  # noqa: F401 (a fixture)
    wait_for,
)
from tests.factories import make_client
from tests.support import api_client

pytestmark = pytest.mark.slow

TEXT = 'Привет, {{ name | default("друг") }}!'


def rows(browser: WebDriver, table_id: str) -> list[list[str]]:
    table = browser.find_element(By.ID, table_id)
    return [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]


def statuses_shown(browser: WebDriver) -> list[str]:
    return [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#tests .test-status")]


async def test_a_test_from_the_dispatch_page(
    site: tuple[FastAPI, str],  # noqa: F811
    browsers: list[WebDriver],  # noqa: F811
    db: Database,
    simulator: RunningSimulator,
) -> None:
    app, base = site
    anna = await make_client(db, phone="79161234567", attributes={"name": "Анна"})
    start = datetime.now(UTC) + timedelta(days=1)
    async with api_client(app) as api:
        answer = await api.post(
            "/api/v1/dispatches",
            json={
                "start_at": start.isoformat(),
                "end_at": (start + timedelta(hours=12)).isoformat(),
                "text": TEXT,
                "filter": {"all": True},
            },
        )
        assert answer.status_code == 201, answer.text
        dispatch_id = answer.json()["id"]

    tokens = embedded_tokens(app.state.settings)
    browser = await run(chrome)
    browsers.append(browser)
    await run(lambda: sign_in(browser, base, tokens.mint(subject="operator")))
    page = f"{base}/admin/dispatches/{dispatch_id}"

    def send(phones: str) -> None:
        browser.get(page)
        wait_for(browser, lambda b: b.find_elements(By.ID, "test-form"))
        fill(browser, "phones", phones)
        browser.find_element(By.ID, "send-test").click()
        wait_for(browser, lambda b: "/test" in b.current_url)

    # A bad number: the page says which, and nothing is sent.
    await run(lambda: send("79161234567\n12345"))
    errors = await run(lambda: wait_for(browser, lambda b: b.find_elements(By.ID, "test-errors")))
    assert "Numbers: 12345 is not" in errors[0].text
    assert await run(lambda: browser.find_element(By.ID, "phones").get_attribute("value")) == (
        "79161234567\n12345"
    )

    await run(lambda: send("79161234567\n+7 (903) 765-43-21"))
    results = await run(lambda: wait_for(browser, lambda b: rows(b, "test-results")))
    assert [(r[0], r[1], r[2], r[4]) for r in results] == [
        ("79161234567", str(anna.id), "Привет, Анна!", "pending"),
        ("79037654321", "", "Привет, друг!", "pending"),
    ]
    # No reload: the recent tests poll until both are sent.
    await run(lambda: wait_for(browser, lambda b: statuses_shown(b) == ["sent", "sent"]))
    await run(lambda: shoot(browser, "dispatch-test-send"))
    recent = await run(lambda: rows(browser, "tests"))
    assert {(r[1], r[3], r[5], r[9]) for r in recent} == {
        ("79161234567", "Привет, Анна!", "default", "operator"),
        ("79037654321", "Привет, друг!", "default", "operator"),
    }
    texts = sorted(str(record[2]) for record in simulator.state.accepted_log())
    assert texts == ["Привет, Анна!", "Привет, друг!"]
    async with api_client(app) as api:
        stats = (await api.get(f"/api/v1/dispatches/{dispatch_id}/stats")).json()
    assert stats["messages"]["total"] == 0

    # A reader sees the tests but no box, and is refused if it posts anyway.
    reader = await run(chrome)
    browsers.append(reader)
    read_only = tokens.mint(subject="reader", permissions=frozenset({"dispatches:read"}))
    await run(lambda: sign_in(reader, base, read_only))
    await run(lambda: reader.get(page))
    await run(lambda: wait_for(reader, lambda b: statuses_shown(b) == ["sent", "sent"]))
    assert await run(lambda: reader.find_elements(By.ID, "test-form")) == []
    status = await run(
        lambda: reader.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const csrf = document.querySelector('input[name=csrf]').value;"
            f"fetch('/admin/dispatches/{dispatch_id}/test', {{method: 'POST',"
            " headers: {'X-CSRF-Token': csrf},"
            " body: new URLSearchParams({phones: '79161234567'})}).then(r => done(r.status));"
        )
    )
    assert status == 403
    assert len(simulator.state.accepted_log()) == 2
