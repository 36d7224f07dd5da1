"""The clock an activity judges windows and deadlines by."""

from datetime import UTC, datetime

from temporalio import activity


def activity_now() -> datetime:
    """The later of the wall clock and the server's schedule time of this attempt.

    In production they agree to within the queueing delay, and the wall clock wins. On the
    time-skipping test server the server's clock runs ahead of the wall clock, and it is the
    clock the workflow's timers were judged by, so the activity must agree with it.
    """
    wall = datetime.now(UTC)
    if not activity.in_activity():
        return wall
    return max(wall, activity.info().current_attempt_scheduled_time)
