"""Pages of a list by id: by offset, or by keyset (an opaque cursor naming the last id seen), so
that the millionth page costs what the first does.

Every list takes `limit` (1-1000), and either `offset` or `cursor` (the `next_cursor` of the
page before). `total` (an exact COUNT) is given on a page asked for without a cursor, and on
a cursor page only with `with_total=true`: counting a million rows on every page would cost
more than the page.
"""

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
from fastapi import Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import InvalidRequest

MAX_LIMIT = 1000
_PREFIX = "id:"

T = TypeVar("T")


class BadCursor(InvalidRequest):
    pass


def encode_cursor(after_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_PREFIX}{after_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(_PREFIX):
            raise ValueError(text)
        after_id = int(text.removeprefix(_PREFIX))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        after_id = -1
    if after_id < 0:
        raise BadCursor("cursor: not a cursor of this API; pass a next_cursor back as it came")
    return after_id


@dataclass(frozen=True)
class Paging:
    limit: int
    offset: int
    after_id: int | None
    with_total: bool

    def select(self, query: sa.Select[Any], id_column: Any) -> sa.Select[Any]:
        """The query ordered by id, cut to this page, with one row more than the page to
        tell whether another follows."""
        if self.after_id is not None:
            query = query.where(id_column > self.after_id)
        return query.order_by(id_column).limit(self.limit + 1).offset(self.offset)

    def cut(self, rows: list[T], id_of: Any) -> tuple[list[T], str | None]:
        """The page's rows and the cursor of the next page (None after the last)."""
        if len(rows) <= self.limit:
            return rows, None
        rows = rows[: self.limit]
        return rows, encode_cursor(int(id_of(rows[-1])))

    async def total(self, session: AsyncSession, table: Any, conditions: list[Any]) -> int | None:
        if not self.with_total:
            return None
        count = sa.select(sa.func.count()).select_from(table).where(*conditions)
        return int((await session.execute(count)).scalar_one())


def paging(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = 100,
    offset: Annotated[
        int, Query(ge=0, le=10**9, description="Items to skip (not with cursor).")
    ] = 0,
    cursor: Annotated[
        str | None,
        Query(
            max_length=100,
            description="The next_cursor of the page before: the next page by keyset, as fast "
            "deep in the list as at its start.",
        ),
    ] = None,
    with_total: Annotated[
        bool | None,
        Query(
            description="Count every matching item (default: on a page without a cursor, "
            "off on a cursor page)."
        ),
    ] = None,
) -> Paging:
    if cursor is not None and offset:
        raise BadCursor("offset: give either offset or cursor, not both")
    after_id = None if cursor is None else decode_cursor(cursor)
    return Paging(
        limit=limit,
        offset=offset,
        after_id=after_id,
        with_total=with_total if with_total is not None else cursor is None,
    )


PagingDep = Annotated[Paging, Depends(paging)]
