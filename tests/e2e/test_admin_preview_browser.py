"""The dispatch form's live preview of a personal text in a real headless Chromium (driven by
Selenium, with the helpers of test_admin_browser): as the text is typed, the page shows the SMS
parts in all, the text as the first clients would get it, and how many clients lack a key;
a placeholder a text may not use is named at once. The API serves over HTTP; no worker is
needed, nothing is sent."""

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.auth import embedded_tokens
from core.db import Database
from core.settings import Settings
from tests.e2e.test_admin_browser import browsers, chrome, fill, run, shoot, sign_in, wait_for
from tests.factories import make_client
from tests.support import Queues, serving, settings_for

pytestmark = pytest.mark.slow

__all__ = ["browsers"]  # the fixture, shared with test_admin_browser


@pytest.fixture
async def page_site(
    dev_env: WorkflowEnvironment, settings: Settings, queues: Queues, db: Database
) -> AsyncIterator[tuple[FastAPI, str]]:
    app = create_app(settings_for(settings, dev_env.client, queues))
    async with app.router.lifespan_context(app), serving(app, lifespan="off") as port:
        yield app, f"http://127.0.0.1:{port}"


def shown(browser: WebDriver, element_id: str) -> str:
    found = browser.find_elements(By.ID, element_id)
    return str(found[0].text) if found else ""


def sample_texts(browser: WebDriver) -> list[str]:
    rows = browser.find_elements(By.CSS_SELECTOR, "#preview-samples tbody tr")
    return [str(row.find_elements(By.TAG_NAME, "td")[1].text) for row in rows]


async def test_the_form_previews_a_personal_text_as_it_is_typed(
    page_site: tuple[FastAPI, str], browsers: list[WebDriver], db: Database
) -> None:
    app, base = page_site
    await make_client(db, tag="demo", attributes={"name": "Анна"})
    await make_client(db, tag="demo")
    await make_client(db, tag="demo", attributes={"name": "Константин"})
    await make_client(db, tag="other", attributes={"name": "Чужой"})
    browser = await run(chrome)
    browsers.append(browser)
    token = embedded_tokens(app.state.settings).mint(subject="operator")
    await run(lambda: sign_in(browser, base, token))

    def type_a_personal_text() -> None:
        browser.get(f"{base}/admin/dispatches/new")
        wait_for(browser, lambda b: b.find_elements(By.ID, "dispatch-form"))
        fill(browser, "tags", "demo")
        fill(browser, "text", "Здравствуйте, {{ name }}! Скидка 10%")
        wait_for(browser, lambda b: "personal text: name" in shown(b, "preview-keys"))
        assert shown(browser, "audience").startswith(
            "3 clients match now · about 2 SMS parts in all (UCS-2)"
        )
        assert "1 client lacks a key" in shown(browser, "preview-missing")
        assert sample_texts(browser) == [
            "Здравствуйте, Анна! Скидка 10%",
            "no name: not sent",
            "Здравствуйте, Константин! Скидка 10%",
        ]
        shoot(browser, "dispatch-preview")

    await run(type_a_personal_text)

    def give_a_default() -> None:
        fill(browser, "text", 'Здравствуйте, {{ name | default("друг") }}!')
        wait_for(browser, lambda b: "Здравствуйте, друг!" in sample_texts(b))
        assert not browser.find_elements(By.ID, "preview-missing")
        assert shown(browser, "audience").startswith("3 clients match now · about 3 SMS parts")

    await run(give_a_default)

    def refused_at_once() -> None:
        fill(browser, "text", "Здравствуйте, {{ name | upper }}!")
        wait_for(browser, lambda b: "the filter `upper`" in shown(b, "preview-problem"))
        assert not browser.find_elements(By.ID, "preview-samples")
        # A longer name makes two parts: the samples say so, each for its client.
        fill(browser, "text", "{{ name }}, " + "Ж" * 59)
        wait_for(browser, lambda b: b.find_elements(By.ID, "preview-samples"))
        parts = [
            str(row.find_elements(By.TAG_NAME, "td")[2].text)
            for row in browser.find_elements(By.CSS_SELECTOR, "#preview-samples tbody tr")
        ]
        assert parts == ["1 (UCS-2)", "\N{EN DASH}", "2 (UCS-2)"]

    await run(refused_at_once)
