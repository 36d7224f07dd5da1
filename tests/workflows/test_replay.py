"""Workflow code never breaks running workflows: histories recorded from earlier code replay on
today's workers without non-determinism.

`histories/` holds JSON histories (`temporal workflow show --output json`, or
`WorkflowHistory.to_json()`), each named after the code that recorded it. Some are complete, some
stop mid-way (sleeping until start, waiting for a window): a worker deployed over running
workflows resumes them from exactly such histories. Record new ones from the code in force
before every change of workflow code, and keep the old ones.
"""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from worker import WORKFLOWS

HISTORIES = {
    path.stem: path.read_text()
    for path in sorted((Path(__file__).parent / "histories").glob("*.json"))
}


def test_histories_are_recorded() -> None:
    assert len(HISTORIES) >= 6


@pytest.mark.parametrize("name", list(HISTORIES))
async def test_recorded_history_replays_on_todays_code(name: str) -> None:
    history = WorkflowHistory.from_json(name, HISTORIES[name])
    await Replayer(workflows=WORKFLOWS).replay_workflow(history)
