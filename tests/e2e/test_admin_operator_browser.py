"""The admin page as an operator meets it (issue 24), in one headless Chromium against one
running stack (the API over HTTP, a worker, the dev server, the simulator) for the whole module.

A dispatch of 21 clients over seven time zones with a window 09:00-21:00, made with the form:
its cohorts, counts, messages and edit form say what the API says, and refresh by themselves;
its charts have axes with units, hover values and sane bars, at a laptop's width and a phone's;
no element leaves the viewport, action cells sit in their rows, a phone shows cards; times come
in the zone the operator picked, UTC on hover; errors and notices speak the form's words; the
text's size and the audience's SMS parts show as one types; axe-core finds nothing serious on
any page, and the Content-Security-Policy refuses nothing. Screenshots at 1400 and 390 px go to
tests/artifacts/screenshots/ (and docs/screenshots/ with UPDATE_DOCS_SCREENSHOTS=1).

The tests run in order and share the dispatch; each is one part of the story.
"""

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait
from temporalio.testing import WorkflowEnvironment

from api.admin.common import ZONES
from api.main import create_app
from core.auth import embedded_tokens
from core.db import Database
from core.settings import Settings
from core.windows import RUSSIA_ZONES
from simulator.gateways import SimulatorConfig
from tests.conftest import RunningSimulator
from tests.e2e.test_admin_browser import (
    SCREENSHOTS,
    chrome,
    create_dispatch,
    fill,
    press,
    run,
    sign_in,
    status_shown,
    text,
    wait_for,
)
from tests.factories import make_client
from tests.support import auth_headers, new_queues, running_workers, serving, settings_for

pytestmark = pytest.mark.slow

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
AXE = Path(__file__).resolve().parents[2] / "api/admin/static/vendor/axe-core/axe.min.js"
WIDE, PHONE = 1400, 390
# The pages whose screenshots the README and docs/operations.md show.
DOCS_PAGES = {"overview", "dispatch", "dispatch-form", "clients", "import-refused"}
TEXT = "Hello from the shop: our Sunday sale starts at 10"

# Zones around the world, one per offset or so; the dispatch takes four whose 09:00-21:00 window
# is open now and three where it is closed, each a quarter of an hour away from its edges.
CANDIDATE_ZONES = (
    *RUSSIA_ZONES,
    "Asia/Dubai",
    "Asia/Dhaka",
    "Asia/Tokyo",
    "Europe/London",
    "Atlantic/Azores",
    "America/Sao_Paulo",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "Pacific/Auckland",
)


def seven_zones(now: datetime) -> tuple[list[str], list[str]]:
    """Four zones whose window is open now and three whose window is closed, for an hour."""
    opened, closed = [], []
    for zone in CANDIDATE_ZONES:
        local = now.astimezone(ZoneInfo(zone))
        minutes = local.hour * 60 + local.minute
        if 9 * 60 + 15 <= minutes <= 20 * 60 - 15:
            opened.append(zone)
        elif minutes >= 21 * 60 + 15 or minutes <= 8 * 60 - 15:
            closed.append(zone)
    assert len(opened) >= 4 and len(closed) >= 3, (opened, closed)
    return opened[:4], closed[:3]


@dataclass
class Stack:
    app: FastAPI
    base: str
    api: httpx.Client  # the JSON API over HTTP, with every permission
    browser: WebDriver
    dispatch_id: int = 0
    opened: tuple[str, ...] = ()
    closed: tuple[str, ...] = ()


TRUNCATE = (
    "TRUNCATE message, message_count, message_sent_minute, message_route_count, send_route, "
    "dispatch, client CASCADE"
)


async def empty(database: Database) -> None:
    async with database.sessions() as session:
        await session.execute(sa.text(TRUNCATE))
        await session.commit()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One browser for the module; it records what the Content-Security-Policy refused."""
    opened = chrome()
    opened.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "window.refused = [];"
            "document.addEventListener('securitypolicyviolation',"
            " (e) => window.refused.push(e.violatedDirective + ' ' + e.blockedURI));"
        },
    )
    opened.set_window_size(WIDE, 1000)
    viewport(opened, WIDE)
    yield opened
    opened.quit()


@pytest.fixture(scope="module")
async def stack(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    database: Database,
    simulator_server: RunningSimulator,
    browser: WebDriver,
) -> AsyncIterator[Stack]:
    """The API and a worker over HTTP for the module, 21 clients tagged `zones` over seven zones
    (and 6 others), the operator signed in."""
    await empty(database)
    simulator_server.state.set_config(SimulatorConfig())
    s = settings_for(settings, dev_env.client, new_queues())
    app = create_app(s)
    opened, closed = seven_zones(datetime.now(UTC))
    for zone in (*opened, *closed):
        for _ in range(3):
            await make_client(database, tag="zones", timezone=zone)
    for _ in range(6):
        await make_client(database, tag="other")
    async with running_workers(s, dev_env.client, database), app.router.lifespan_context(app):
        async with serving(app, lifespan="off") as port:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, headers=auth_headers(s), timeout=10) as api:
                token = embedded_tokens(s).mint(subject="operator")
                await run(lambda: sign_in(browser, base, token))
                yield Stack(app, base, api, browser, opened=tuple(opened), closed=tuple(closed))
    await empty(database)


CHARTS_FIT = """
return [...document.querySelectorAll("canvas")].every((c) =>
  c.getBoundingClientRect().width <= c.parentElement.getBoundingClientRect().width + 1);
"""


def viewport(browser: WebDriver, width: int, height: int = 900) -> None:
    """The page as a screen this wide shows it, laid out again before anything is
    measured."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    wait_for(browser, lambda b: b.execute_script("return window.innerWidth") == width)
    browser.execute_async_script(
        "const done = arguments[arguments.length - 1]; requestAnimationFrame(() => done())"
    )
    # The charts follow their boxes a frame or two later.
    wait_for(browser, lambda b: b.execute_script(CHARTS_FIT), seconds=5)


def shoot(browser: WebDriver, name: str, width: int) -> None:
    """The whole page at this width, to the artifacts (and the docs when asked)."""
    viewport(browser, width)
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    viewport(browser, width, max(900, min(height, 5000)))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}-{width}.png"
    browser.save_screenshot(str(path))
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") and name in DOCS_PAGES:
        shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
    viewport(browser, WIDE)


def api_json(stack: Stack, path: str, **params: Any) -> Any:
    answer = stack.api.get(f"/api/v1{path}", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def cohorts_shown(browser: WebDriver) -> dict[str, tuple[str, int, int]]:
    return {
        str(row.get_attribute("data-cohort")): (
            row.find_element(By.CLASS_NAME, "phase").text,
            int(row.find_element(By.CLASS_NAME, "sent").text),
            int(row.find_element(By.CLASS_NAME, "handed-off").text),
        )
        for row in browser.find_elements(By.CSS_SELECTOR, "#cohorts tbody tr")
    }


def cohorts_of_api(stack: Stack) -> dict[str, tuple[str, int, int]]:
    progress = api_json(stack, f"/dispatches/{stack.dispatch_id}/progress")
    return {c["cohort"]: (c["phase"], c["sent"], c["handed_off"]) for c in progress["cohorts"]}


async def test_numbers_equal_the_apis(stack: Stack) -> None:
    browser, start = stack.browser, datetime.now(UTC)
    moscow = ZoneInfo("Europe/Moscow")
    fields = {
        "start_at": (start - timedelta(minutes=1)).astimezone(moscow).strftime("%Y-%m-%dT%H:%M"),
        "end_at": (start + timedelta(days=2)).astimezone(moscow).strftime("%Y-%m-%dT%H:%M"),
        "text": TEXT,
        "tags": "zones",
        "window_start": "09:00",
        "window_end": "21:00",
    }
    stack.dispatch_id = await run(lambda: create_dispatch(browser, stack.base, fields))
    assert await run(lambda: browser.find_element(By.CLASS_NAME, "notice").text) == (
        f"Dispatch {stack.dispatch_id} created."
    )

    # No reload: the open zones' cohorts finish, the closed ones wait; every cohort says what
    # it sent, as GET /dispatches/{id}/progress does, finished ones included.
    def settled(b: WebDriver) -> bool:
        shown = cohorts_shown(b)
        phases = {zone: phase for zone, (phase, _, _) in shown.items()}
        return len(shown) == 7 and all(phases[z] == "finished" for z in stack.opened)

    await run(lambda: wait_for(browser, settled, seconds=60))
    await run(lambda: wait_for(browser, lambda b: cohorts_shown(b) == cohorts_of_api(stack)))
    shown = await run(lambda: cohorts_shown(browser))
    assert all(shown[z] == ("finished", 3, 0) for z in stack.opened), shown
    assert all(shown[z][0] == "waiting for the window" for z in stack.closed), shown

    # The messages table refreshed with the rest: it is not "0 messages" any more.
    def messages_match(b: WebDriver) -> bool:
        listed = api_json(stack, f"/dispatches/{stack.dispatch_id}/messages", limit=50)
        rows = b.find_elements(By.CSS_SELECTOR, "#messages tbody tr")
        total = b.find_element(By.ID, "messages-total").text
        return total == f"{listed['total']} messages." and len(rows) == len(listed["items"])

    await run(lambda: wait_for(browser, messages_match))
    assert await run(lambda: browser.find_element(By.ID, "messages-total").text) == "21 messages."

    def counts_match(b: WebDriver) -> bool:
        counts = {
            cell.get_attribute("data-status"): int(cell.text)
            for cell in b.find_elements(By.CSS_SELECTOR, "#live .counts td")
        }
        return counts == api_json(stack, f"/dispatches/{stack.dispatch_id}")["messages"]

    await run(lambda: wait_for(browser, counts_match))
    summary = await run(lambda: browser.find_element(By.ID, "audience-summary").text)
    assert summary == "clients tagged zones"  # not "tags zones ;"

    # The edit form counts the dispatch's own audience (its filter cannot change now).
    def edit_form_count() -> str:
        browser.get(f"{stack.base}/admin/dispatches/{stack.dispatch_id}/edit")
        return str(
            wait_for(
                browser,
                lambda b: (
                    "match its filter now" in (t := b.find_element(By.ID, "audience").text) and t
                ),
            )
        )

    shown_count = await run(edit_form_count)
    audience = await run(lambda: api_json(stack, "/stats/audience", tag="zones", text=TEXT))
    assert shown_count == (
        f"{audience['clients']} clients match its filter now · "
        f"{audience['segments_total']} SMS parts in all (GSM-7)."
    )
    assert audience["clients"] == 21


def chart(browser: WebDriver, chart_id: str, script: str) -> Any:
    """`script` run with `chart`, the Chart.js instance of the canvas `chart_id`."""
    return browser.execute_script(
        f"const chart = Chart.getChart(document.getElementById('{chart_id}-canvas')); {script}"
    )


def hover_bar(browser: WebDriver, chart_id: str, index: int) -> list[str]:
    """Moves the mouse over bar `index` and answers the tooltip's lines."""
    canvas = browser.find_element(By.ID, f"{chart_id}-canvas")
    x, y = chart(
        browser,
        chart_id,
        f"const bar = chart.getDatasetMeta(0).data[{index}];"
        "const box = chart.canvas.getBoundingClientRect();"
        "return [bar.x - box.width / 2, (bar.y + chart.chartArea.bottom) / 2 - box.height / 2];",
    )
    ActionChains(browser).move_to_element_with_offset(canvas, int(x), int(y)).perform()
    return list(
        wait_for(
            browser,
            lambda b: chart(
                b,
                chart_id,
                "const t = chart.tooltip; return t.opacity > 0 && t.body.length"
                " ? [...t.title, ...t.body.flatMap((line) => line.lines)] : null;",
            ),
            seconds=5,
        )
    )


async def test_charts_have_axes_units_hover_values_and_sane_bars(stack: Stack) -> None:
    browser = stack.browser
    page = f"{stack.base}/admin/dispatches/{stack.dispatch_id}"
    await run(lambda: browser.get(page))
    await run(lambda: wait_for(browser, lambda b: chart(b, "per-minute", "return !!chart")))
    axes = await run(
        lambda: chart(
            browser,
            "per-minute",
            "return [chart.options.scales.x.title.text, chart.options.scales.y.title.text,"
            " chart.data.labels.length, chart.data.datasets[0].data];",
        )
    )
    assert axes[:2] == ["minute (Europe/Moscow)", "messages / minute"]
    # One minute of sends is one bar among 30, as wide as a bar should be, not the whole chart.
    assert axes[2] >= 30 and sum(axes[3]) == 12
    widths = await run(
        lambda: chart(
            browser, "per-minute", "return chart.getDatasetMeta(0).data.map(b => b.width)"
        )
    )
    assert 0 < max(widths) <= 36
    sent_at = next(i for i, value in enumerate(axes[3]) if value)
    lines = await run(lambda: hover_bar(browser, "per-minute", sent_at))
    assert lines[-1] == f"sent: {axes[3][sent_at]:g} messages" and "(Europe/Moscow)" in lines[0]
    # The live part updates the chart's data in place: the same chart, its tooltip still up.
    before = await run(
        lambda: chart(
            browser,
            "per-minute",
            "window.firstSummary = document.getElementById('per-minute-summary'); return chart.id",
        )
    )
    replaced = "return document.getElementById('per-minute-summary') !== window.firstSummary"
    await run(lambda: wait_for(browser, lambda b: b.execute_script(replaced), seconds=10))
    still = "return [chart.id, chart.tooltip.opacity]"
    assert await run(lambda: chart(browser, "per-minute", still)) == [before, 1]

    # Per route, as GET /dispatches/{id}/stats counts them.
    stats = await run(lambda: api_json(stack, f"/dispatches/{stack.dispatch_id}/stats"))
    routes = await run(
        lambda: chart(
            browser,
            "per-route",
            "return [chart.data.labels, chart.data.datasets.map(d => [d.label, d.data]),"
            " chart.options.scales.x.title.text];",
        )
    )
    assert routes[0] == [r["route"] for r in stats["routes"]] == ["default"]
    sent = stats["routes"][0]["messages"]["sent"]
    pending = stats["routes"][0]["messages"]["pending"] + stats["routes"][0]["messages"]["retrying"]
    assert routes[1] == [["sent, no receipt yet", [sent]]] + (
        [["not sent yet", [pending]]] if pending else []
    )
    assert routes[2] == "messages"

    # Receipts for five messages: the overview charts their share, and the gateway's errors.
    listed = await run(
        lambda: api_json(
            stack, f"/dispatches/{stack.dispatch_id}/messages", status="sent", limit=50
        )
    )
    at = datetime.now(UTC).isoformat()
    receipts = [{"id": m["id"], "status": "delivered", "at": at} for m in listed["items"][:4]]
    receipts.append({"id": listed["items"][4]["id"], "status": "undelivered", "at": at})
    posted = await run(lambda: stack.api.post("/api/v1/receipts", json=receipts))
    assert posted.status_code == 200, posted.text
    # The open page's route chart takes them in place at its next poll.
    outcomes = "return chart.data.datasets.map((d) => [d.label, d.data[0]])"
    await run(
        lambda: wait_for(
            browser,
            lambda b: (
                ["delivered", 4] in chart(b, "per-route", outcomes)
                and ["undelivered", 1] in chart(b, "per-route", outcomes)
            ),
            seconds=10,
        )
    )
    await run(lambda: browser.get(f"{stack.base}/admin"))
    await run(lambda: wait_for(browser, lambda b: chart(b, "delivered-share", "return !!chart")))
    share = await run(
        lambda: chart(
            browser,
            "delivered-share",
            "return [chart.options.scales.y.title.text, chart.options.scales.y.max,"
            " chart.data.datasets[0].data.filter(v => v !== null)];",
        )
    )
    every = await run(
        lambda: api_json(stack, f"/dispatches/{stack.dispatch_id}/messages", limit=50)
    )
    went_out = every["items"]
    hours: dict[str, list[bool]] = {}
    for m in went_out:
        if m["sent_at"]:
            hours.setdefault(m["sent_at"][:13], []).append(m["status"] == "delivered")
    shares = [round(100 * sum(d) / len(d), 1) for _, d in sorted(hours.items())]
    assert share == ["% delivered", 100, shares] and sum(map(sum, hours.values())) == 4
    remote = await run(lambda: api_json(stack, "/stats/remote"))
    errors = await run(
        lambda: chart(
            browser,
            "error-rate",
            "return [chart.options.scales.y.title.text, chart.data.datasets[0].data"
            ".filter(v => v !== null)];",
        )
    )
    assert errors[0] == "% of requests failed" and remote["error_rate"] == 0
    assert errors[1] and set(errors[1]) == {0}
    hourly = await run(
        lambda: chart(
            browser,
            "per-hour",
            "return [chart.options.scales.y.title.text, chart.data.datasets[0].data"
            ".reduce((a, b) => a + b, 0)];",
        )
    )
    timeline = await run(lambda: api_json(stack, "/stats/timeline", hours=72))
    assert hourly == ["messages / hour", sum(point["sent"] for point in timeline)]

    # On a phone: the charts fit, and their labels leave room to read them.
    await run(lambda: viewport(browser, PHONE))
    fitted = await run(
        lambda: chart(
            browser,
            "per-hour",
            "return [chart.width, chart.scales.x.ticks.length, window.innerWidth];",
        )
    )
    assert fitted[0] <= fitted[2] and fitted[1] * 45 <= fitted[0], fitted
    await run(lambda: viewport(browser, WIDE))


# Every element's box inside the viewport (those hidden on purpose aside: clipped away for
# screen readers, or the skip link waiting for focus), and the page no wider than it.
OVERFLOWING = """
const width = document.documentElement.clientWidth;
const clipped = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const style = getComputedStyle(e);
    if (style.clip !== "auto" && style.position === "absolute") return true;
  }
  return false;
};
const out = [];
for (const el of document.querySelectorAll("body *")) {
  const box = el.getBoundingClientRect();
  if (!box.width || !box.height || el.closest(".skip, option, datalist") || clipped(el)) continue;
  if (box.right > width + 1 || box.left < -1) {
    out.push(`${el.tagName.toLowerCase()}#${el.id}.${el.className} ${box.left}-${box.right}`);
  }
}
return [document.documentElement.scrollWidth, width, out.slice(0, 8)];
"""
# Tables as wide as what holds them (its content box).
NARROW_TABLES = """
const room = (el) => {
  const style = getComputedStyle(el);
  return el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
};
return [...document.querySelectorAll("table.list, table.counts")]
  .filter((t) => t.offsetParent)
  .map((t) => [t.id || t.className, t.getBoundingClientRect().width, room(t.parentElement)])
  .filter(([, own, room]) => Math.abs(own - room) > 1);
"""
# Each client row: the row's box, its actions cell's, its first cell's text, Edit and Delete.
ROW_BOXES = """
const box = (el) => {
  const b = el.getBoundingClientRect();
  return [b.left, b.top, b.right, b.bottom];
};
return [...document.querySelectorAll("#clients tbody tr")].map((tr) => {
  const range = document.createRange();
  range.selectNodeContents(tr.cells[0]);
  return {row: box(tr), cell: box(tr.querySelector(".actions-cell")), first: box(range),
          edit: box(tr.querySelector(".actions-cell a")),
          remove: box(tr.querySelector(".actions-cell button"))};
});
"""


def middle(box: list[float]) -> float:
    return (box[1] + box[3]) / 2


def serious_violations(browser: WebDriver) -> list[str]:
    """axe-core's serious and critical findings on the page as it is."""
    if not browser.execute_script("return !!window.axe"):
        browser.execute_script(AXE.read_text())
    found = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then((r) => done(r.violations"
        ".filter((v) => ['serious', 'critical'].includes(v.impact))"
        ".map((v) => `${v.id}: ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`)))"
    )
    return list(found)


def check_page(browser: WebDriver, name: str) -> None:
    """At both widths: nothing beyond the viewport, tables at full width, no serious
    accessibility violation, nothing the CSP refused; a screenshot of each."""
    for width in (WIDE, PHONE):
        viewport(browser, width)
        scroll, room, out = browser.execute_script(OVERFLOWING)
        assert scroll <= room and not out, (name, width, scroll, room, out)
        assert browser.execute_script(NARROW_TABLES) == [], (name, width)
        assert serious_violations(browser) == [], (name, width)
        shoot(browser, name, width)
    assert browser.execute_script("return window.refused") == [], name


async def test_the_layout_holds_at_a_laptops_and_a_phones_width(stack: Stack) -> None:
    browser, base = stack.browser, stack.base
    pages = {
        "overview": "/admin",
        "dispatches": "/admin/dispatches",
        "dispatch": f"/admin/dispatches/{stack.dispatch_id}",
        "dispatch-form": "/admin/dispatches/new",
        "dispatch-edit": f"/admin/dispatches/{stack.dispatch_id}/edit",
        "clients": "/admin/clients",
        "client-form": "/admin/clients/new",
        "import": "/admin/clients/import",
        "schedules": "/admin/schedules",
        "sign-in": "/admin/login",
    }
    for name, path in pages.items():

        def visit(name: str = name, path: str = path) -> None:
            browser.get(base + path)
            wait_for(
                browser, lambda b: b.execute_script("return document.readyState") == "complete"
            )
            if name == "dispatch-form":
                fill(browser, "tags", "zones")
                fill(browser, "text", "Распродажа в воскресенье: скидки до 50% на всё")
                wait_for(
                    browser,
                    lambda b: (
                        "21 clients match now · 21 SMS parts"
                        in b.find_element(By.ID, "audience").text
                    ),
                )
            if name == "sign-in":
                # What this sign-in is: the embedded mode's, for developers, with a JWT.
                said = browser.find_element(By.ID, "sign-in-kind").text
                assert "a developer's sign-in" in said and "JWT" in said, said
            check_page(browser, name)

        await run(visit)

    def dispatches_counted() -> str:
        browser.get(f"{base}/admin/dispatches")
        return str(browser.find_element(By.ID, "dispatch-total").text)

    assert await run(dispatches_counted) == "1 dispatch."

    # The clients' Edit and Delete sit in their rows: at a laptop's width on the row's line,
    # the cell's borders the row's; on a phone inside the row's card, on the screen.
    def rows_at(width: int) -> list[dict[str, list[float]]]:
        browser.get(f"{base}/admin/clients")
        viewport(browser, width)
        return list(browser.execute_script(ROW_BOXES))

    wide = await run(lambda: rows_at(WIDE))
    assert len(wide) == 27
    for row in wide:
        assert abs(row["cell"][1] - row["row"][1]) < 1 and abs(row["cell"][3] - row["row"][3]) < 1
        for action in (row["edit"], row["remove"]):
            assert abs(middle(action) - middle(row["first"])) <= 3, row
    narrow = await run(lambda: rows_at(PHONE))
    for row in narrow:
        for action in (row["edit"], row["remove"]):
            assert row["row"][0] <= action[0] and action[2] <= min(row["row"][2], PHONE), row
            assert row["row"][1] <= action[1] and action[3] <= row["row"][3], row
    await run(lambda: viewport(browser, WIDE))


async def test_times_show_in_the_zone_the_operator_picked(stack: Stack) -> None:
    browser, base = stack.browser, stack.base
    page = f"{base}/admin/dispatches/{stack.dispatch_id}"

    def pick(zone: str) -> list[list[str]]:
        browser.find_element(By.ID, "zone-link").click()
        wait_for(browser, lambda b: b.find_elements(By.ID, "zone-form"))
        groups = [
            [
                str(o.get_attribute("value") or o.text)
                for o in g.find_elements(By.TAG_NAME, "option")
            ]
            for g in browser.find_elements(By.CSS_SELECTOR, "#zone-choice optgroup")
        ]
        assert serious_violations(browser) == []
        Select(browser.find_element(By.ID, "zone-choice")).select_by_visible_text(zone)
        browser.find_element(By.ID, "save-zone").click()
        wait_for(browser, lambda b: f"Times are now shown in {zone}." in text(b))
        return groups

    await run(lambda: browser.get(page))
    groups = await run(lambda: pick("America/New_York"))
    # Every IANA zone, Russia's first.
    assert groups[0] == list(RUSSIA_ZONES) and len(groups[0]) + len(groups[1]) == len(ZONES)
    assert "UTC" in groups[1] and "America/New_York" in groups[1] and len(ZONES) > 400
    assert await run(lambda: browser.current_url.split("?")[0]) == page

    answer = await run(lambda: api_json(stack, f"/dispatches/{stack.dispatch_id}"))
    start = datetime.fromisoformat(answer["start_at"])
    shown = await run(
        lambda: [
            (t.text, t.get_attribute("title"))
            for t in browser.find_elements(By.CSS_SELECTOR, "#facts time")
        ]
    )
    assert shown[0] == (
        start.astimezone(ZoneInfo("America/New_York")).strftime("%Y-%m-%d %H:%M"),
        start.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
    assert await run(lambda: browser.find_element(By.ID, "zone-link").text) == (
        "Times in America/New_York"
    )
    # The waiting cohorts' times too, as the API has them (the cohorts load apart).
    progress = await run(lambda: api_json(stack, f"/dispatches/{stack.dispatch_id}/progress"))
    waits = {c["cohort"]: c["waiting_until"] for c in progress["cohorts"] if c["waiting_until"]}
    await run(
        lambda: wait_for(
            browser, lambda b: bool(b.find_elements(By.CSS_SELECTOR, "#cohorts tbody tr time"))
        )
    )
    cells = await run(
        lambda: {
            str(row.get_attribute("data-cohort")): row.find_element(
                By.TAG_NAME, "time"
            ).get_attribute("title")
            for row in browser.find_elements(By.CSS_SELECTOR, "#cohorts tbody tr")
            if row.find_elements(By.TAG_NAME, "time")
        }
    )
    assert cells == {
        zone: datetime.fromisoformat(at).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        for zone, at in waits.items()
    }

    # Kept for the other pages, and the form reads its times in it.
    def form_zone() -> str:
        browser.get(f"{base}/admin/dispatches/new")
        return str(Select(browser.find_element(By.ID, "zone")).first_selected_option.text)

    assert await run(form_zone) == "America/New_York"
    await run(lambda: pick("Europe/Moscow"))


async def test_words_an_operator_reads(stack: Stack, tmp_path: Path) -> None:
    browser, base = stack.browser, stack.base

    # A refused form names its fields as the form does, and says what to type.
    def refused_form() -> str:
        browser.get(f"{base}/admin/dispatches/new")
        wait_for(browser, lambda b: b.find_elements(By.ID, "dispatch-form"))
        fill(browser, "text", "Hello")
        fill(browser, "window_start", "09:00")
        browser.find_element(By.CSS_SELECTOR, "#dispatch-form button[type=submit]").click()
        errors = wait_for(browser, lambda b: b.find_elements(By.ID, "form-errors"))[0]
        assert serious_violations(browser) == []
        return str(errors.text)

    errors = await run(refused_form)
    assert "Send window, until: type a time, such as 09:00" in errors, errors
    assert "Who gets it: name a tag or an operator code, or tick “every client”" in errors
    page = await run(lambda: text(browser))
    for jargon in ("window.end", "all: true", "expected a time", "zone cohorts"):
        assert jargon not in page
    options = await run(
        lambda: [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#delivery option")]
    )
    assert options == [
        "In batches, the clients of each time zone together (any size)",
        "One client at a time, each followed on its own (small dispatches only)",
    ]

    # A pause and a cancel take a reason, and the notice says what happened.
    dispatch_page = f"{base}/admin/dispatches/{stack.dispatch_id}"
    d = stack.dispatch_id

    # A reason being typed survives the polls; the commands change when the status does,
    # whoever changed it.
    def polls_keep_the_reason() -> None:
        browser.get(dispatch_page)
        fill(browser, "reason", "half typed")
        browser.execute_script("window.firstLive = document.getElementById('live')")
        replaced = "return document.getElementById('live') !== window.firstLive"
        wait_for(browser, lambda b: b.execute_script(replaced), seconds=10)
        assert browser.find_element(By.ID, "reason").get_attribute("value") == "half typed"

    await run(polls_keep_the_reason)
    paused = await run(lambda: stack.api.post(f"/api/v1/dispatches/{d}/pause", json={}))
    assert paused.status_code == 200, paused.text
    await run(lambda: wait_for(browser, lambda b: b.find_elements(By.ID, "resume")))
    assert await run(lambda: browser.find_elements(By.ID, "pause")) == []
    resumed = await run(lambda: stack.api.post(f"/api/v1/dispatches/{d}/resume", json={}))
    assert resumed.status_code == 200, resumed.text
    await run(lambda: wait_for(browser, lambda b: b.find_elements(By.ID, "pause")))

    def command(name: str, reason: str = "") -> str:
        browser.get(dispatch_page)
        wait_for(browser, lambda b: b.find_elements(By.ID, name))
        if reason:
            fill(browser, "reason", reason)
        press(browser, name)
        if name == "cancel":
            WebDriverWait(browser, 10).until(lambda b: b.switch_to.alert).accept()
        notice = wait_for(browser, lambda b: b.find_elements(By.CLASS_NAME, "notice"))[0]
        return str(notice.text)

    assert await run(lambda: command("pause", "a typo in the text")) == (
        f"Dispatch {d} paused: a typo in the text."
    )
    assert await run(lambda: status_shown(browser)) == "paused"
    assert await run(lambda: command("resume")) == f"Dispatch {d} resumed."
    assert (
        await run(lambda: command("cancel", "wrong day")) == f"Dispatch {d} cancelled: wrong day."
    )
    history = await run(lambda: api_json(stack, f"/dispatches/{d}/events"))
    events = history["items"]
    assert [(e["action"], e["reason"]) for e in events[3:]] == [
        ("paused", "a typo in the text"),
        ("resumed", None),
        ("cancelled", "wrong day"),
    ]

    # A refused import keeps its file and its options: import again with one change.
    csv = tmp_path / "clients.csv"
    csv.write_text("phone,tag\n79161230001,new\n12345,new\n")

    def import_twice() -> tuple[str, str]:
        browser.get(f"{base}/admin/clients/import")
        browser.find_element(By.ID, "file").send_keys(str(csv))
        browser.find_element(By.CSS_SELECTOR, "input[value=update]").click()
        browser.find_element(By.ID, "import").click()
        first = wait_for(browser, lambda b: b.find_elements(By.ID, "import-report"))[0].text
        assert browser.execute_script("return document.getElementById('file').files.length") == 1
        assert browser.find_element(By.CSS_SELECTOR, "input[value=update]").is_selected()
        check_page(browser, "import-refused")
        browser.find_element(By.CSS_SELECTOR, "input[value=skip_row]").click()
        browser.find_element(By.ID, "import").click()
        wait_for(browser, lambda b: "Imported" in b.find_element(By.ID, "import-report").text)
        return str(first), str(browser.find_element(By.ID, "import-report").text)

    refused, imported = await run(import_twice)
    assert refused.startswith("Nothing imported\n2 rows: 0 created") and "1 rejected" in refused
    assert imported.startswith("Imported\n2 rows: 1 created") and "1 rejected" in imported


async def test_the_text_says_its_parts_as_it_is_typed(stack: Stack) -> None:
    browser = stack.browser
    russian = "Ж" * 200

    def type_it() -> tuple[str, str]:
        browser.get(f"{stack.base}/admin/dispatches/new")
        wait_for(browser, lambda b: b.find_elements(By.ID, "dispatch-form"))
        fill(browser, "tags", "zones")
        fill(browser, "text", russian)
        size = wait_for(
            browser,
            lambda b: "UCS-2" in (t := b.find_element(By.ID, "text-length").text) and t,
        )
        audience = wait_for(
            browser,
            lambda b: "UCS-2" in (t := b.find_element(By.ID, "audience").text) and t,
        )
        return str(size), str(audience)

    size, audience = await run(type_it)
    assert size == "200 chars · UCS-2 · 3 SMS"
    counted = await run(lambda: api_json(stack, "/stats/audience", tag="zones", text=russian))
    assert audience == (
        f"{counted['clients']} clients match now · "
        f"{counted['segments_total']} SMS parts in all (UCS-2)."
    )
    assert (counted["clients"], counted["segments_total"]) == (21, 63)
