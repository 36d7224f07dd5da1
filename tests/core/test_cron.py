"""A schedule's cron: the subset of Temporal's syntax it takes, and a message naming the part at
fault for the rest (each refused here was refused by the dev server too, or is an extension a
schedule does not take)."""

import pytest

from core.cron import InvalidCron, check_cron


@pytest.mark.parametrize(
    ("expression", "stored"),
    [
        ("* * * * *", "* * * * *"),
        ("0 10 * * MON", "0 10 * * MON"),
        ("  0  10 * *   mon ", "0 10 * * mon"),
        ("*/15 9-18 * * MON-FRI", "*/15 9-18 * * MON-FRI"),
        ("0 10 1,15 * *", "0 10 1,15 * *"),
        ("0 10 * JAN,JUL *", "0 10 * JAN,JUL *"),
        ("0 10 * * 1-5/2", "0 10 * * 1-5/2"),
        ("5/10 * * * *", "5/10 * * * *"),
        ("0 10 * * 7", "0 10 * * 7"),
        ("@daily", "@daily"),
        ("@Weekly", "@weekly"),
    ],
)
def test_taken(expression: str, stored: str) -> None:
    assert check_cron(expression) == stored


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("bogus", "five are needed"),
        ("* * *", "3 fields"),
        ("0 0 10 * * MON", "6 fields"),
        ("61 * * * *", "minute '61': 61 is not in 0-59"),
        ("0 24 * * *", "hour '24'"),
        ("0 0 0 * *", "day of month '0'"),
        ("0 0 * 13 *", "month '13'"),
        ("0 0 * * 8", "day of week '8'"),
        ("0 10 * * FRI-MON", "ends before it starts"),
        ("10-5 * * * *", "ends before it starts"),
        ("0 10 L * *", "'L' is not a number"),
        ("0 10 ? * *", "'?' is not a number"),
        ("*/0 * * * *", "positive number"),
        ("1,,2 * * * *", "'' is not a number"),
        ("0 10 * * 1#2", "`#`"),
        ("CRON_TZ=Asia/Tokyo 0 10 * * *", "timezone"),
        ("@every 5m", "'@every' is not one of"),
        ("@reboot", "is not one of"),
        ("", "0 fields"),
    ],
)
def test_refused_saying_why(expression: str, says: str) -> None:
    with pytest.raises(InvalidCron) as refused:
        check_cron(expression)
    assert says in str(refused.value)
