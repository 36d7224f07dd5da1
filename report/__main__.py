"""`make report` (python -m report): mails the daily report now, through the worker (the
same workflow the schedule starts every day).

    make report                                 # yesterday, in REPORT_TIMEZONE
    make report REPORT_ARGS="--day 2026-11-27"
"""

import argparse
import asyncio
import os
import sys
import uuid
from datetime import date

from core.settings import get_settings
from core.temporal import connect
from report.contracts import REPORT_WORKFLOW, ReportInput, ReportResult


async def run(day: str | None) -> ReportResult:
    settings = get_settings()
    client = await connect(settings)
    result: ReportResult = await client.execute_workflow(
        REPORT_WORKFLOW,
        ReportInput(timezone=settings.report_timezone, day=day),
        id=f"report-now-{uuid.uuid4().hex[:8]}",
        task_queue=settings.temporal_task_queue,
        result_type=ReportResult,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make report", description=__doc__.splitlines()[0])
    parser.add_argument("--day", type=date.fromisoformat, help="ISO date; default yesterday")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.day.isoformat() if args.day else None))
    sys.stdout.write(f"{result.subject} (mailed to {result.recipients} recipients)\n")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal client's native runtime has no close; left to interpreter finalization its
    # threads can abort the process (PyGILState_Release) after the work is done. Exit at once.
    os._exit(code)
