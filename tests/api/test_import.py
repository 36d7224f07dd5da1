"""Bulk import of clients: every row judged as a single create, both duplicate policies, both
error policies, the quirks of real CSV files, JSON lines and a browser's form upload."""

import re
from collections.abc import AsyncIterator
from datetime import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from core.db import Database
from core.models import Client, Dispatch, Message
from tests.factories import make_client, make_dispatch, make_messages

IMPORT = "/api/v1/clients/import"
CSV = {"Content-Type": "text/csv"}
NDJSON = {"Content-Type": "application/x-ndjson"}


async def stored(db: Database) -> dict[str, Client]:
    async with db.sessions() as session:
        clients = (await session.execute(sa.select(Client))).scalars().all()
    return {client.phone: client for client in clients}


async def post_csv(api: httpx.AsyncClient, text: str | bytes, **params: str) -> httpx.Response:
    return await api.post(IMPORT, content=text, headers=CSV, params=params)


async def test_rows_are_stored_as_single_creates_would_store_them(
    api: httpx.AsyncClient, db: Database
) -> None:
    text = (
        "phone,tag,timezone,operator_code,opted_out\n"
        "79161234567,vip,,,\n"
        "+7 (903) 123-45-67,,Asia/Tokyo,999,true\n"
        "8 926 123 45 67,b,,,no\n"
    )
    response = await post_csv(api, text)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report == {
        "rows": 3,
        "created": 3,
        "updated": 0,
        "skipped": 0,
        "rejected": 0,
        "rejected_rows": [],
        "committed": True,
    }
    clients = await stored(db)
    single = await api.post("/api/v1/clients", json={"phone": "79851234567", "tag": "vip"})
    assert single.status_code == 201
    first = clients["79161234567"]
    # The same derived fields as a single create: code from the number, the default zone.
    assert (first.operator_code, first.timezone, first.tag) == (
        single.json()["operator_code"].replace("985", "916"),
        single.json()["timezone"],
        "vip",
    )
    second = clients["79031234567"]
    assert (second.operator_code, second.timezone, second.tag) == ("999", "Asia/Tokyo", "")
    assert second.opted_out and second.opted_out_at is not None
    assert not clients["79261234567"].opted_out


async def test_every_row_error_is_reported_with_its_line_and_field(
    api: httpx.AsyncClient, db: Database
) -> None:
    text = (
        "phone,tag,timezone,operator_code,opted_out\n"
        "79161234567,ok,,,\n"  # line 2: valid
        "12345,,,,\n"  # 3: not a number of ours
        "74951234567,,,,\n"  # 4: a Moscow landline
        "19161234567,,,,\n"  # 5: foreign
        "79161234568,,Mars/Olympus,,\n"  # 6: unknown zone
        "79161234569,,,91,\n"  # 7: bad operator code
        f"79161234570,{'x' * 65},,,\n"  # 8: tag too long
        "79161234571,,,,maybe\n"  # 9: not a flag
        ",vip,,,\n"  # 10: no phone
        "79161234572,only-two\n"  # 11: a missing column
        "abc,,,,\n"  # 12: letters
    )
    response = await post_csv(api, text, on_error="skip_row")
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["rows"], report["created"], report["rejected"]) == (11, 1, 10)
    fields = {row["line"]: row["field"] for row in report["rejected_rows"]}
    assert fields == {
        3: "phone",
        4: "phone",
        5: "phone",
        6: "timezone",
        7: "operator_code",
        8: "tag",
        9: "opted_out",
        10: "phone",
        11: None,
        12: "phone",
    }
    messages = {row["line"]: row["message"] for row in report["rejected_rows"]}
    assert "not a mobile number" in messages[4]
    assert "only Russian mobiles" in messages[5]
    assert "expected 5 fields" in messages[11] and "found 2" in messages[11]
    assert not any(m.startswith("Value error") for m in messages.values())
    assert set(await stored(db)) == {"79161234567"}


async def test_one_bad_row_rejects_the_whole_file_by_default(
    api: httpx.AsyncClient, db: Database
) -> None:
    rows = "".join(f"7916{n:07d}\n" for n in range(1000, 1000 + 12_000))
    response = await post_csv(api, "phone\n" + rows + "not-a-phone\n")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["report"]["committed"] is False
    assert body["report"]["created"] == 0
    assert body["report"]["rejected"] == 1
    assert body["errors"][1] == {
        "field": "line 12002, phone",
        "message": "phone must hold digits only (separators and a leading + allowed)",
    }
    assert "nothing imported" in body["detail"]
    # Two batches had been written before the bad row was read: rolled back.
    assert await stored(db) == {}


async def test_rejected_rows_listed_are_bounded_and_all_counted(api: httpx.AsyncClient) -> None:
    response = await post_csv(api, "phone\n" + "bad\n" * 500, on_error="skip_row")
    report = response.json()
    assert report["rejected"] == 500
    assert len(report["rejected_rows"]) == 100
    assert report["rejected_rows"][-1]["line"] == 101


async def test_duplicates_skip_keeps_the_stored_client(
    api: httpx.AsyncClient, db: Database
) -> None:
    await api.post("/api/v1/clients", json={"phone": "79161234567", "tag": "old"})
    text = "phone,tag\n79161234567,new\n79031234567,a\n79031234567,b\n"
    report = (await post_csv(api, text)).json()
    assert (report["created"], report["updated"], report["skipped"]) == (1, 0, 2)
    clients = await stored(db)
    assert clients["79161234567"].tag == "old"
    assert clients["79031234567"].tag == "a"  # the first row of the file wins


async def test_duplicates_update_take_the_rows_given_fields(
    api: httpx.AsyncClient, db: Database
) -> None:
    created = await api.post(
        "/api/v1/clients", json={"phone": "79161234567", "tag": "old", "timezone": "Asia/Tokyo"}
    )
    text = (
        "phone,tag,timezone\n"
        "79161234567,new,\n"  # an empty zone keeps the stored one
        "79031234567,a,\n"
        "79031234567,b,Europe/Samara\n"  # the later row updates the one the first made
    )
    report = (await post_csv(api, text, on_duplicate="update")).json()
    assert (report["created"], report["updated"], report["skipped"]) == (1, 2, 0)
    clients = await stored(db)
    kept = clients["79161234567"]
    assert (kept.tag, kept.timezone, kept.id) == ("new", "Asia/Tokyo", created.json()["id"])
    assert (clients["79031234567"].tag, clients["79031234567"].timezone) == ("b", "Europe/Samara")


async def test_csv_quirks(api: httpx.AsyncClient, db: Database) -> None:
    # A byte order mark, CRLF line ends, quoted commas and quotes, a quoted line break, a
    # blank line, columns in another order, spaces around header names.
    text = (
        "\ufefftag , Phone\r\n"
        '"vip, gold",79161234567\r\n'
        '"say ""hi""",79031234567\r\n'
        "\r\n"
        '"two\nlines",79261234567\r\n'
    ).encode()
    report = (await post_csv(api, text)).json()
    assert (report["created"], report["rejected"], report["rows"]) == (3, 0, 3), report
    tags = {phone: client.tag for phone, client in (await stored(db)).items()}
    assert tags == {
        "79161234567": "vip, gold",
        "79031234567": 'say "hi"',
        "79261234567": "two\nlines",
    }


async def test_files_that_cannot_be_read_are_422_naming_why(
    api: httpx.AsyncClient, db: Database
) -> None:
    cases: list[tuple[bytes, str]] = [
        (b"", "the file is empty"),
        (b"tag\nvip\n", "no phone column"),
        (b"phone,timzone\n79161234567,UTC\n", "unknown column 'timzone'"),
        (b"phone,phone\n1,2\n", "named twice"),
    ]
    for content, reason in cases:
        response = await post_csv(api, content)
        assert response.status_code == 422, (content, response.text)
        assert reason in response.json()["detail"]
    # Even when only bad rows would be left out: the rows of a block that is not UTF-8
    # cannot be told apart, so nothing of the file is taken.
    not_utf8 = "phone,tag\n79031234567,ok\n79161234567,клиент\n".encode("cp1251")
    refused = await post_csv(api, not_utf8, on_error="skip_row")
    assert refused.status_code == 422
    assert "not UTF-8" in refused.json()["detail"]
    wrong_type = await api.post(IMPORT, content=b"phone\n", headers={"Content-Type": "text/xml"})
    assert wrong_type.status_code == 415
    assert "text/csv" in wrong_type.json()["detail"]
    header_only = await post_csv(api, "phone,tag\r\n")
    assert header_only.json()["rows"] == 0 and header_only.json()["committed"] is True
    assert await stored(db) == {}


async def test_json_lines(api: httpx.AsyncClient, db: Database) -> None:
    lines = [
        '{"phone": 79161234567, "tag": "vip", "opted_out": true}',
        "",
        '{"phone": "79031234567", "timezone": "Asia/Tokyo"}',
        "[1, 2]",
        "{not json",
        '{"phone": "79261234567", "colour": "red"}',
    ]
    response = await api.post(
        IMPORT, content="\n".join(lines) + "\n", headers=NDJSON, params={"on_error": "skip_row"}
    )
    report = response.json()
    assert (report["created"], report["rejected"]) == (2, 3), report
    assert [(r["line"], r["field"]) for r in report["rejected_rows"]] == [
        (4, None),
        (5, None),
        (6, "colour"),
    ]
    clients = await stored(db)
    assert clients["79161234567"].opted_out
    assert clients["79031234567"].timezone == "Asia/Tokyo"


async def test_a_browser_form_upload(api: httpx.AsyncClient, db: Database) -> None:
    files: dict[str, Any] = {"file": ("clients.csv", b"phone,tag\n79161234567,form\n", "text/csv")}
    response = await api.post(IMPORT, files=files)
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1
    missing = await api.post(IMPORT, files={"other": ("x.csv", b"phone\n", "text/csv")})
    assert missing.status_code == 415
    assert (await stored(db))["79161234567"].tag == "form"


def peak_rss_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def reset_peak_rss() -> None:
    """The kernel's peak RSS of this process starts again from its RSS now."""
    Path("/proc/self/clear_refs").write_text("5")


async def test_a_100_mb_file_in_flat_memory(api: httpx.AsyncClient, db: Database) -> None:
    # 1.2 million rows over 2,000 numbers: every row is judged, the duplicates skipped, so
    # that the test measures the API's memory rather than PostgreSQL's inserts.
    phones = [f"79{n:09d}" for n in range(161_000_000, 161_000_000 + 2000)]
    tag = "x" * 60
    rows = 1_200_000
    size = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal size
        header = b"phone,tag,timezone,operator_code\n"
        size += len(header)
        yield header
        for start in range(0, rows, 10_000):
            chunk = "".join(
                f"{phones[n % len(phones)]},{tag},Europe/Moscow,916\n"
                for n in range(start, start + 10_000)
            ).encode()
            size += len(chunk)
            yield chunk

    reset_peak_rss()
    before = peak_rss_kb()
    response = await api.post(IMPORT, content=body(), headers=CSV)
    growth_mb = (peak_rss_kb() - before) / 1024
    assert response.status_code == 200, response.text
    assert size > 100 * 1024 * 1024
    report = response.json()
    assert (report["rows"], report["created"], report["skipped"]) == (rows, 2000, rows - 2000)
    # The file is spooled to disk and read back a batch at a time: the process grows by a
    # few batches, not by the file (the test's own generator holds 10,000 rows at a time).
    assert growth_mb < 40, f"peak RSS grew by {growth_mb:.0f} MB for a {size >> 20} MB file"
    assert len(await stored(db)) == 2000


async def test_an_update_that_moves_a_client_moves_its_waiting_message(
    api: httpx.AsyncClient, db: Database
) -> None:
    client = await make_client(db, timezone="Europe/Moscow")
    dispatch = await make_dispatch(db, window=(time(9), time(18)))
    async with db.sessions() as session:
        await session.execute(
            sa.update(Dispatch).where(Dispatch.id == dispatch.id).values(status="running")
        )
        await session.commit()
    [message] = await make_messages(db, dispatch, [client], cohort="Europe/Moscow")
    text = f"phone,timezone\n{client.phone},Asia/Vladivostok\n"
    report = (await post_csv(api, text, on_duplicate="update")).json()
    assert report["updated"] == 1
    async with db.sessions() as session:
        moved = await session.get(Message, message.id)
    # As after a PATCH: the cohort owes it a delivery that waits for the new zone's window.
    assert moved is not None and moved.sender == "owed"
