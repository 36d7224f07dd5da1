"""The admin page in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium) against the running stack: the API over HTTP, a worker, the dev server, the simulator.

Sign in, import a small CSV, create a dispatch with the form and watch it complete (the page
updates by itself), pause, resume and cancel another, compare the page's numbers with the API's;
a user who may only read sees no create button and is refused when trying anyway. Screenshots of
the main pages go to tests/artifacts/screenshots/.
"""

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from selenium import webdriver
from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.auth import embedded_tokens
from core.db import Database
from core.settings import Settings
from tests.support import Queues, api_client, running_workers, serving, settings_for

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
T = TypeVar("T")


def chrome() -> WebDriver:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, (
        "make test installs them: python -m devstack.system chromium chromium-driver"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture
def browsers() -> Iterator[list[WebDriver]]:
    opened: list[WebDriver] = []
    yield opened
    for browser in opened:
        browser.quit()


@pytest.fixture
async def site(
    dev_env: WorkflowEnvironment, settings: Settings, queues: Queues, db: Database
) -> AsyncIterator[tuple[FastAPI, str]]:
    s = settings_for(settings, dev_env.client, queues)
    app = create_app(s)
    async with running_workers(s, dev_env.client, db), app.router.lifespan_context(app):
        async with serving(app, lifespan="off") as port:
            yield app, f"http://127.0.0.1:{port}"


async def run(step: Callable[[], T]) -> T:
    """A blocking browser step, off the event loop that serves the page."""
    return await asyncio.to_thread(step)


def wait_for(browser: WebDriver, found: Callable[[WebDriver], Any], seconds: float = 30) -> Any:
    try:
        # A page being replaced (a navigation, an htmx swap) answers with errors meanwhile.
        waiting = WebDriverWait(
            browser, seconds, poll_frequency=0.2, ignored_exceptions=[WebDriverException]
        )
        return waiting.until(found)
    except TimeoutException:
        shoot(browser, "timeout")
        page = browser.page_source[:1500]
        raise AssertionError(f"timed out on {browser.current_url}: {page}") from None


def text(browser: WebDriver) -> str:
    return str(browser.find_element(By.TAG_NAME, "body").text)


def shoot(browser: WebDriver, name: str, width: int = 1280) -> None:
    """The whole page at this width (a laptop's, or a phone's)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(width, 1000)
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(width, max(1000, min(int(height) + 40, 4000)))
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    if width != 1280:
        browser.set_window_size(1280, 1000)


def sign_in(browser: WebDriver, base: str, token: str) -> None:
    browser.get(f"{base}/admin")
    wait_for(browser, lambda b: "/admin/login" in b.current_url)
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "form[action='/admin/login'] button").click()
    wait_for(browser, lambda b: "Messages by status" in text(b))


def fill(browser: WebDriver, element_id: str, value: str) -> None:
    field = browser.find_element(By.ID, element_id)
    if field.get_attribute("type") in {"datetime-local", "time"}:
        # Typing into these depends on the locale: the value is set as the form would send it.
        browser.execute_script(
            "arguments[0].value = arguments[1];"
            "arguments[0].dispatchEvent(new Event('input', {bubbles: true}))",
            field,
            value,
        )
        return
    field.clear()
    field.send_keys(value)


def create_dispatch(browser: WebDriver, base: str, fields: dict[str, str]) -> int:
    browser.get(f"{base}/admin/dispatches/new")
    wait_for(browser, lambda b: b.find_elements(By.ID, "dispatch-form"))
    for element_id, value in fields.items():
        fill(browser, element_id, value)
    wait_for(browser, lambda b: "clients match now" in b.find_element(By.ID, "audience").text)
    browser.find_element(By.CSS_SELECTOR, "#dispatch-form button[type=submit]").click()
    wait_for(
        browser, lambda b: "/admin/dispatches/" in b.current_url and "/new" not in b.current_url
    )
    return int(browser.current_url.split("/admin/dispatches/")[1].split("?")[0])


def press(browser: WebDriver, element_id: str) -> None:
    """Clicks a button of the live part, which htmx replaces every 2 s: found again if the
    click lands between two versions."""
    for _ in range(20):
        try:
            browser.find_element(By.ID, element_id).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"#{element_id} kept going stale")


def status_shown(browser: WebDriver) -> str:
    return str(browser.find_element(By.ID, "dispatch-status").text)


def local(instant: datetime) -> str:
    return instant.astimezone(ZoneInfo("Europe/Moscow")).strftime("%Y-%m-%dT%H:%M")


async def test_an_operators_morning(
    site: tuple[FastAPI, str], browsers: list[WebDriver], tmp_path: Path
) -> None:
    app, base = site
    tokens = embedded_tokens(app.state.settings)
    browser = await run(chrome)
    browsers.append(browser)
    await run(lambda: sign_in(browser, base, tokens.mint(subject="operator")))
    await run(lambda: shoot(browser, "overview-empty"))

    # Import a small CSV through the form; the report is shown row by row.
    csv = tmp_path / "clients.csv"
    csv.write_text(
        "phone,tag,timezone\n"
        "79161234567,demo,Europe/Moscow\n"
        "79031234567,demo,Asia/Yekaterinburg\n"
        "79261234567,later,Europe/Moscow\n"
        "12345,demo,Europe/Moscow\n"
    )

    def import_file() -> str:
        browser.get(f"{base}/admin/clients/import")
        browser.find_element(By.ID, "file").send_keys(str(csv))
        browser.find_element(By.CSS_SELECTOR, "input[value=skip_row]").click()
        browser.find_element(By.CSS_SELECTOR, "form[enctype] button").click()
        report = wait_for(browser, lambda b: b.find_elements(By.ID, "import-report"))[0]
        shoot(browser, "import")
        return str(report.text)

    report = await run(import_file)
    assert "3 created" in report and "1 rejected" in report and "only Russian mobiles" in report

    # A dispatch to the tag, from the form: it shows how many clients match, then runs to the end.
    now = datetime.now(UTC)
    fields = {
        "start_at": local(now - timedelta(minutes=1)),
        "end_at": local(now + timedelta(hours=2)),
        "text": "Good morning <b>everyone</b>",
        "tags": "demo",
    }

    # The text's size comes from the server as it is typed: characters, SMS parts, encoding.
    size = f"{len(fields['text'])} chars · GSM-7 · 1 SMS"

    def fill_form_and_shoot() -> None:
        browser.get(f"{base}/admin/dispatches/new")
        for element_id, value in fields.items():
            fill(browser, element_id, value)
        wait_for(browser, lambda b: "2 clients match" in b.find_element(By.ID, "audience").text)
        wait_for(browser, lambda b: b.find_element(By.ID, "text-length").text == size)
        shoot(browser, "dispatch-form")
        fill(browser, "text", "«Доброе утро» — " + "x" * 60)
        wait_for(browser, lambda b: "UCS-2 · 2 SMS" in b.find_element(By.ID, "text-length").text)
        fill(browser, "text", fields["text"])
        wait_for(browser, lambda b: b.find_element(By.ID, "text-length").text == size)

    await run(fill_form_and_shoot)
    dispatch_id = await run(lambda: create_dispatch(browser, base, fields))
    # No reload: the page's live part polls until the dispatch is done.
    await run(lambda: wait_for(browser, lambda b: status_shown(b) == "completed", seconds=60))
    await run(lambda: shoot(browser, "dispatch-completed"))
    page = await run(lambda: text(browser))
    assert "Good morning <b>everyone</b>" in page  # markup shown as text
    async with api_client(app) as api:
        answer = (await api.get(f"/api/v1/dispatches/{dispatch_id}")).json()
    counts = await run(
        lambda: {
            cell.get_attribute("data-status"): int(cell.text)
            for cell in browser.find_elements(By.CSS_SELECTOR, "#live .counts td")
        }
    )
    assert counts == answer["messages"] and answer["messages"]["sent"] == 2
    # No receipt came back (the simulator posts none here): none delivered yet.
    delivered = await run(lambda: browser.find_element(By.ID, "delivered").text)
    assert delivered.startswith("Delivered 0 of 2 sent (0 %)")

    def message_rows() -> list[tuple[str, str]]:
        browser.refresh()
        table = wait_for(browser, lambda b: b.find_elements(By.ID, "messages"))[0]
        heads = [cell.text for cell in table.find_elements(By.CSS_SELECTOR, "th")]
        route, parts = heads.index("Route"), heads.index("SMS parts")
        assert heads[-1] == "Receipt"
        rows = [
            [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")
        ]
        return [(cells[route], cells[parts]) for cells in rows]

    # Every message went through the one route, in one part.
    assert await run(message_rows) == [("default", "1"), ("default", "1")]

    # Another dispatch waits for a window hours away: pause, resume, cancel from its page.
    moscow = now.astimezone(ZoneInfo("Europe/Moscow"))
    opens = (moscow + timedelta(hours=3)).strftime("%H:00")
    closes = (moscow + timedelta(hours=4)).strftime("%H:00")
    waiting = {
        **fields,
        "end_at": local(now + timedelta(hours=8)),
        "text": "Later",
        "tags": "later",
        "window_start": opens,
        "window_end": closes,
    }
    second = await run(lambda: create_dispatch(browser, base, waiting))

    def cohort_waits(b: WebDriver) -> bool:
        found = b.find_elements(By.ID, "cohorts")
        return bool(found) and "waiting for the window" in found[0].text

    await run(lambda: wait_for(browser, cohort_waits, seconds=60))
    await run(lambda: shoot(browser, "dispatch-waiting"))
    await run(lambda: shoot(browser, "dispatch-waiting-phone", width=390))
    for command, after in (("pause", "paused"), ("resume", "running")):
        await run(lambda c=command: press(browser, c))  # type: ignore[misc]
        await run(
            lambda a=after: wait_for(browser, lambda b: status_shown(b) == a)  # type: ignore[misc]
        )

    def cancel() -> None:
        press(browser, "cancel")
        WebDriverWait(browser, 10).until(lambda b: b.switch_to.alert).accept()
        wait_for(browser, lambda b: status_shown(b) == "cancelled")

    await run(cancel)
    async with api_client(app) as api:
        events = (await api.get(f"/api/v1/dispatches/{second}/events")).json()["items"]
        assert [e["action"] for e in events] == ["created", "paused", "resumed", "cancelled"]
        assert {e["actor"] for e in events} == {"operator"}
        final = (await api.get(f"/api/v1/dispatches/{second}")).json()
    assert final["messages"]["cancelled"] == 1

    await run(lambda: browser.get(f"{base}/admin"))
    await run(lambda: shoot(browser, "overview"))
    overview = await run(lambda: text(browser))
    assert "3 messages in all" in overview
    routes = await run(lambda: browser.find_element(By.ID, "routes").text)
    assert "default closed" in routes

    # A reader: no create button, and the server refuses the action if sent anyway.
    reader = await run(chrome)
    browsers.append(reader)
    read_only = tokens.mint(
        subject="reader", permissions=frozenset({"dispatches:read", "clients:read"})
    )
    await run(lambda: sign_in(reader, base, read_only))
    await run(lambda: reader.get(f"{base}/admin/dispatches"))
    assert await run(lambda: reader.find_elements(By.ID, "new-dispatch")) == []
    assert await run(lambda: reader.find_elements(By.ID, "pause")) == []
    status = await run(
        lambda: reader.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const csrf = document.querySelector('input[name=csrf]').value;"
            "fetch('/admin/dispatches', {method: 'POST', headers: {'X-CSRF-Token': csrf},"
            " body: new URLSearchParams({text: 'x', all: 'on'})}).then(r => done(r.status));"
        )
    )
    assert status == 403
    async with httpx.AsyncClient(base_url=base) as raw:
        bearer = {"Authorization": f"Bearer {read_only}"}
        refused = await raw.post("/api/v1/dispatches", json={}, headers=bearer)
    assert refused.status_code == 403
