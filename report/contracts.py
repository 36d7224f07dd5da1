"""The daily report's workflow input and output, and its workflow type name (its schedule starts
it by name)."""

from dataclasses import dataclass

REPORT_WORKFLOW = "DailyReportWorkflow"


@dataclass
class ReportInput:
    """The daily report of `day` (ISO date; None: yesterday in `timezone`)."""

    timezone: str
    day: str | None = None


@dataclass
class ReportResult:
    day: str
    subject: str
    recipients: int
