"""The daily report workflow: started every day by the report schedule (or at once by `make
report`), it mails the previous local day's figures, retrying while the SMTP server is down."""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from report.activities import ReportActivities
    from report.contracts import REPORT_WORKFLOW, ReportInput, ReportResult
    from report.figures import previous_day

# The SMTP server may be down for a while: keep trying for half a day, at most every 10 min.
MAIL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
)


@workflow.defn(name=REPORT_WORKFLOW)
class DailyReportWorkflow:
    @workflow.run
    async def run(self, input: ReportInput) -> ReportResult:
        day = input.day or previous_day(workflow.now(), input.timezone)
        return await workflow.execute_activity_method(
            ReportActivities.send_report,
            ReportInput(timezone=input.timezone, day=day),
            start_to_close_timeout=timedelta(minutes=2),
            schedule_to_close_timeout=timedelta(hours=12),
            retry_policy=MAIL_RETRY,
        )
