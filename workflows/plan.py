"""The one read every workflow of a dispatch makes of its row: the dispatch's plan (status,
times, window, shape), through the `load_dispatch` activity."""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.dispatch import DispatchActivities
    from core.contracts.shared import DB_TIMEOUT, DispatchPlan, LoadDispatchInput


async def load_plan(dispatch_id: int) -> DispatchPlan:
    """The dispatch as stored now (`found` False once it is deleted)."""
    return await workflow.execute_activity_method(
        DispatchActivities.load_dispatch,
        LoadDispatchInput(dispatch_id),
        start_to_close_timeout=DB_TIMEOUT,
    )
