"""A dispatch's test sends: its text to a few numbers now, and the test messages it sent."""

from fastapi import APIRouter, status

from api.auth import DispatchesWriter, guarded
from api.deps import IdPath, SessionDep, SettingsDep, TemporalClientDep
from api.schemas.test_sends import TestMessagePublic, TestSendAnswer, TestSendCreate
from api.services import test_sends as test_sends_service
from core.auth import Permission

router = APIRouter(prefix="/dispatches", tags=["dispatches"])


@router.post(
    "/{dispatch_id}/test",
    response_model=TestSendAnswer,
    status_code=status.HTTP_202_ACCEPTED,
    **guarded(Permission.DISPATCHES_WRITE),
)
async def send_test(
    principal: DispatchesWriter,
    dispatch_id: IdPath,
    data: TestSendCreate,
    session: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
) -> TestSendAnswer:
    """Send the dispatch's text now to 1-10 numbers, rendered for the client of each (or with
    the placeholders' defaults for a number no client has), through the normal send path but
    with no window, start or end time; never counted with the dispatch's messages. A number
    whose rendering misses a key, or whose client opted out, is answered and not sent. 409
    once the dispatch has ended."""
    entries = await test_sends_service.send_tests(
        session=session,
        temporal=temporal,
        settings=settings,
        dispatch_id=dispatch_id,
        phones=data.phones,
        actor=principal.subject,
    )
    return TestSendAnswer(messages=entries)


@router.get(
    "/{dispatch_id}/tests",
    response_model=list[TestMessagePublic],
    **guarded(Permission.DISPATCHES_READ),
)
async def list_tests(dispatch_id: IdPath, session: SessionDep) -> list[TestMessagePublic]:
    """The dispatch's test messages, newest first (the last 100), with their outcome."""
    return await test_sends_service.list_tests(session=session, dispatch_id=dispatch_id)
