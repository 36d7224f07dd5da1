"""The ceiling's workflows: a bare parent and a minimal child per client, nothing else.

What remains of the one-child-per-client shape without any of the service's work: a child
start, one activity and a completion per client. Its rate bounds what that shape can reach
on this server.
"""

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bench.ceiling_activities import CeilingActivities, PostInput

FIRST_MESSAGE_ID = 10**12
TEXT = "ceiling"


@dataclass
class CeilingInput:
    """Children `done`..`children`-1 are still to run, at most `per_run` per run."""

    prefix: str  # workflow ids of the children: <prefix>-child-<n>
    children: int
    per_run: int
    done: int = 0


@workflow.defn(name="BenchCeilingChild")
class CeilingChildWorkflow:
    """One POST, then done."""

    @workflow.run
    async def run(self, input: PostInput) -> None:
        await workflow.execute_activity_method(
            CeilingActivities.post_once, input, start_to_close_timeout=timedelta(seconds=30)
        )


@workflow.defn(name="BenchCeilingParent")
class CeilingParentWorkflow:
    """Starts every child of a run at once and awaits them; continues as new between runs,
    which keeps its history bounded (about four events per child)."""

    @workflow.run
    async def run(self, input: CeilingInput) -> int:
        end = min(input.children, input.done + input.per_run)
        await asyncio.gather(*(self._child(input, n) for n in range(input.done, end)))
        if end < input.children:
            workflow.continue_as_new(
                CeilingInput(input.prefix, input.children, input.per_run, done=end)
            )
        return end

    async def _child(self, input: CeilingInput, n: int) -> None:
        await workflow.execute_child_workflow(
            CeilingChildWorkflow.run,
            PostInput(message_id=FIRST_MESSAGE_ID + n, phone=79_000_000_000 + n, text=TEXT),
            id=f"{input.prefix}-child-{n}",
        )
