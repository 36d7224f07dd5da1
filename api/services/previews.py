"""A dispatch's text tried on its audience: the preview (POST /dispatches/preview, and the admin
form as the text is typed) and the SMS parts a personal text is estimated at, which a
dispatch's answer and /stats/audience carry too.

A plain text is the same for everyone: it is measured once, and nothing is read of the
clients. A personal one (`{{ key }}`) differs by client: it is rendered for a sample of its
audience, the first SAMPLE_SIZE clients by id that have every key it needs; their mean SMS
parts times the clients that will get a message, rounded up, is the estimate. A client who
lacks such a key gets none (its message ends `unrendered`): those are counted in SQL over the
whole audience, never by loading it."""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas.previews import (
    PREVIEW_SHOWN,
    DispatchPreview,
    DispatchPreviewPublic,
    PreviewMissing,
    PreviewSample,
)
from api.services import common as common_service
from core.audience import audience_filter, resend_source
from core.errors import InvalidRequest
from core.models import Dispatch, client_t, message_t
from core.segments import Encoding, measure
from core.templates import (
    CLIENT_FIELDS,
    Missing,
    TemplateRefused,
    TextTemplate,
    check,
    client_values,
)

# Clients a personal text is rendered for to estimate its parts.
SAMPLE_SIZE = 100

_CLIENT_COLUMNS = (
    client_t.c.id,
    client_t.c.phone,
    client_t.c.tag,
    client_t.c.timezone,
    client_t.c.attributes,
)


@dataclass(frozen=True)
class Audience:
    """The clients a dispatch targets, as its layout takes them (core.audience): those its
    filter matches, or a resend's (the first dispatch's clients whose messages ended in its
    statuses), the stop list left out. `source` and `condition` are the FROM and the WHERE of
    a query over client_t."""

    source: sa.FromClause
    condition: sa.ColumnElement[bool]

    @classmethod
    def of_filter(cls, *, operator_codes: Sequence[str], tags: Sequence[str]) -> "Audience":
        return cls(client_t, audience_filter(operator_codes=operator_codes, tags=tags))

    @classmethod
    def of_dispatch(cls, dispatch: Dispatch) -> "Audience":
        if dispatch.resent_from is None or dispatch.resend_statuses is None:
            return cls.of_filter(operator_codes=dispatch.operator_codes, tags=dispatch.tags)
        source = resend_source(
            resent_from=dispatch.resent_from,
            statuses=dispatch.resend_statuses,
            sent_before=dispatch.resend_sent_before,
        )
        return cls(
            message_t.join(client_t, client_t.c.id == message_t.c.client_id),
            sa.and_(source, client_t.c.opted_out.is_(False)),
        )

    def select(self, *columns: Any) -> sa.Select[Any]:
        return sa.select(*columns).select_from(self.source).where(self.condition)


def lacking(keys: Iterable[str]) -> sa.ColumnElement[bool]:
    """Clients that lack one of `keys`, as TextTemplate.render judges them (an empty value is
    missing): no such attribute (`attributes ? 'name'` false) or an empty one; for a client's
    own field (`tag`), an empty one."""
    conditions: list[sa.ColumnElement[bool]] = []
    for key in sorted(keys):
        if key in CLIENT_FIELDS:
            conditions.append(client_t.c[key] == "")
            continue
        attributes = client_t.c.attributes
        conditions.append(
            sa.or_(
                sa.not_(attributes.has_key(key)),
                sa.func.coalesce(attributes[key].astext, "") == "",
            )
        )
    return sa.or_(sa.false(), *conditions)


@dataclass(frozen=True)
class Estimate:
    """The SMS parts of a dispatch's messages: `segments` those of the longest (of the sample,
    for a personal text), `mean` per message sent, and `encoding` UCS-2 if any goes out in
    it."""

    encoding: Encoding
    segments: int
    mean: Fraction

    @classmethod
    def of_text(cls, text: str) -> "Estimate":
        """A text the same for everyone."""
        size = measure(text)
        return cls(size.encoding, size.segments, Fraction(size.segments))

    def total(self, messages: int) -> int:
        """The parts of `messages` messages, rounded up."""
        return math.ceil(self.mean * max(messages, 0))


def stored_template(text: str) -> TextTemplate | None:
    """A stored text's template; None for one stored before texts could be templates whose
    braces the check refuses: it goes out as written (activities.sender)."""
    try:
        return check(text)
    except TemplateRefused:
        return None


def fixed_estimate(text: str) -> Estimate:
    """The estimate that reads no client: exact for a plain text; for a personal one, the text
    as written (placeholders and all), when no client can be read."""
    template = stored_template(text)
    if template is None or template.personal:
        return Estimate.of_text(text)
    rendered = template.render({})
    assert isinstance(rendered, str)  # nothing required
    return Estimate.of_text(rendered)


def _render(template: TextTemplate, row: Any) -> str | Missing:
    return template.render(
        client_values(
            phone=row.phone, tag=row.tag, timezone=row.timezone, attributes=row.attributes
        )
    )


async def estimate(
    *, session: AsyncSession, template: TextTemplate, audience: Audience
) -> Estimate:
    """The parts of the text's messages to `audience`: measured once for a plain text (no
    read); for a personal one, over its rendering for the audience's first SAMPLE_SIZE clients
    by id that have every key it needs (none: the text as written)."""
    if not template.personal:
        return fixed_estimate(template.text)
    query = (
        audience.select(*_CLIENT_COLUMNS)
        .where(sa.not_(lacking(template.required)))
        .order_by(client_t.c.id)
        .limit(SAMPLE_SIZE)
    )
    sizes = [
        measure(rendered)
        for row in await session.execute(query)
        if isinstance(rendered := _render(template, row), str)
    ]
    if not sizes:
        return Estimate.of_text(template.text)
    encoding = Encoding.UCS2 if any(s.encoding == Encoding.UCS2 for s in sizes) else Encoding.GSM7
    return Estimate(
        encoding=encoding,
        segments=max(s.segments for s in sizes),
        mean=Fraction(sum(s.segments for s in sizes), len(sizes)),
    )


async def missing_clients(
    *, session: AsyncSession, template: TextTemplate, audience: Audience, shown: int = 0
) -> tuple[int, list[int]]:
    """How many of the audience lack a key the text needs (no message for them), and the first
    `shown` of their ids: one query, counting in SQL (a window count over the rows before the
    limit). A text that needs no key reads nothing."""
    if not template.required:
        return 0, []
    condition = lacking(template.required)
    if not shown:
        query = audience.select(sa.func.count()).where(condition)
        return int(await session.scalar(query) or 0), []
    rows = list(
        await session.execute(
            audience.select(client_t.c.id, sa.func.count().over())
            .where(condition)
            .order_by(client_t.c.id)
            .limit(shown)
        )
    )
    return (int(rows[0][1]) if rows else 0), [int(row[0]) for row in rows]


async def audience_estimate(
    *, session: AsyncSession, template: TextTemplate, audience: Audience, clients: int
) -> tuple[Estimate, int]:
    """The estimate and the parts in all for an audience of `clients` clients now, those
    lacking a key left out."""
    found = await estimate(session=session, template=template, audience=audience)
    missing, _ = await missing_clients(session=session, template=template, audience=audience)
    return found, found.total(clients - missing)


async def _named_clients(*, session: AsyncSession, refs: Sequence[int | str]) -> list[Any]:
    """The clients named by id (an integer) or phone (a string, normalized), in their order,
    each once; one that does not exist is an InvalidRequest naming its place in `clients`."""
    ids = [ref for ref in refs if isinstance(ref, int)]
    phones = [ref for ref in refs if isinstance(ref, str)]
    rows = await session.execute(
        sa.select(*_CLIENT_COLUMNS).where(
            sa.or_(client_t.c.id.in_(ids), client_t.c.phone.in_(phones))
        )
    )
    by_ref: dict[int | str, Any] = {}
    for row in rows:
        by_ref[row.id] = by_ref[row.phone] = row
    found: dict[int, Any] = {}
    for place, ref in enumerate(refs):
        client = by_ref.get(ref)
        if client is None:
            named = f"id {ref}" if isinstance(ref, int) else f"phone {ref}"
            raise InvalidRequest(f"no client has {named}", field=f"clients.{place}")
        found.setdefault(client.id, client)
    return list(found.values())


def _sample(template: TextTemplate, row: Any) -> PreviewSample:
    rendered = _render(template, row)
    if isinstance(rendered, Missing):
        return PreviewSample(
            client_id=row.id,
            phone=row.phone,
            text=None,
            encoding=None,
            segments=None,
            missing=list(rendered.keys),
        )
    size = measure(rendered)
    return PreviewSample(
        client_id=row.id,
        phone=row.phone,
        text=rendered,
        encoding=size.encoding,
        segments=size.segments,
        missing=[],
    )


async def preview_text(
    *,
    session: AsyncSession,
    text: str,
    normalize_text: bool,
    audience: Audience,
    max_segments: int,
    clients: Sequence[int | str] = (),
) -> DispatchPreviewPublic:
    """What a dispatch with this text would send to `audience` now: the text as a create would
    store it (normalized when asked; refused as a create refuses it, InvalidRequest on
    `text`), rendered for the named `clients` or the audience's first clients, those of the
    audience lacking a key, and the SMS parts in all. Nothing is written."""
    prepared = common_service.storable_text(
        text, normalize_text=normalize_text, max_segments=max_segments
    )
    template = common_service.text_template(prepared.text)  # checked: cached
    if clients:
        rows = await _named_clients(session=session, refs=clients)
    else:
        query = audience.select(*_CLIENT_COLUMNS).order_by(client_t.c.id).limit(PREVIEW_SHOWN)
        rows = list(await session.execute(query))
    size = await session.scalar(audience.select(sa.func.count()))
    count = int(size or 0)
    found = await estimate(session=session, template=template, audience=audience)
    missing, missing_ids = await missing_clients(
        session=session, template=template, audience=audience, shown=PREVIEW_SHOWN
    )
    return DispatchPreviewPublic(
        audience=count,
        personal=template.personal,
        keys=sorted(template.keys),
        samples=[_sample(template, row) for row in rows],
        missing=PreviewMissing(count=missing, client_ids=missing_ids),
        segments_total=found.total(count - missing),
        encoding=found.encoding,
    )


async def preview_dispatch(
    *, session: AsyncSession, data: DispatchPreview, max_segments: int
) -> DispatchPreviewPublic:
    """POST /dispatches/preview: `preview_text` for the body's text and filter."""
    audience = Audience.of_filter(operator_codes=data.filter.operator_codes, tags=data.filter.tags)
    return await preview_text(
        session=session,
        text=data.text,
        normalize_text=data.normalize_text,
        audience=audience,
        max_segments=max_segments,
        clients=data.clients,
    )


async def dispatch_estimate(*, session: AsyncSession, dispatch: Dispatch) -> Estimate:
    """A stored dispatch's estimate over its audience now (a plain text reads nothing)."""
    template = stored_template(dispatch.text)
    if template is None:
        return fixed_estimate(dispatch.text)
    return await estimate(
        session=session, template=template, audience=Audience.of_dispatch(dispatch)
    )


async def dispatch_missing(*, session: AsyncSession, dispatch: Dispatch) -> int:
    """How many of a stored dispatch's audience lack a key its text needs (0 without a read
    for a text that needs none)."""
    template = stored_template(dispatch.text)
    if template is None:
        return 0
    missing, _ = await missing_clients(
        session=session, template=template, audience=Audience.of_dispatch(dispatch)
    )
    return missing
