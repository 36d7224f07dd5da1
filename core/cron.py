"""A schedule's cron expression, judged before Temporal sees it: the subset of Temporal's cron
syntax a schedule takes, with a message naming the field at fault.

Five fields, `minute hour day-of-month month day-of-week`, each a comma list of `*`, `N`, `N-M`,
optionally `/step` (`*/15`, `9-18/2`, `5/10`); months `JAN`-`DEC` and days `SUN`-`SAT` by name
too (any case; day 0 and 7 are Sunday); or one of `@yearly`, `@monthly`, `@weekly`, `@daily`,
`@hourly`. Temporal's extensions are refused here: seconds and years (6 or 7 fields), `CRON_TZ=`
(the zone is a field of its own), `@every`, `#` comments. As in Temporal (and unlike Vixie
cron), a day of the month and a day of the week both given must both match.
"""

from dataclasses import dataclass

CRON_MAX_LENGTH = 100
SHORTHANDS = ("@yearly", "@monthly", "@weekly", "@daily", "@hourly")

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day of month", 1, 31, {}),
    _Field("month", 1, 12, {name: number for number, name in enumerate(_MONTHS, start=1)}),
    _Field("day of week", 0, 7, {name: number for number, name in enumerate(_DAYS)}),
)


class InvalidCron(ValueError):
    """The expression is not one a schedule takes; the message says which part and why."""


def check_cron(expression: str) -> str:
    """The expression with its fields separated by single spaces, or InvalidCron."""
    fields = expression.split()
    if fields and fields[0].startswith("@"):
        shorthand = fields[0].lower()
        if len(fields) > 1 or shorthand not in SHORTHANDS:
            raise InvalidCron(f"{fields[0]!r} is not one of {', '.join(SHORTHANDS)}")
        return shorthand
    if "#" in expression:
        raise InvalidCron("`#` (a comment, or the nth weekday) is not taken")
    if any(field.upper().startswith(("CRON_TZ=", "TZ=")) for field in fields):
        raise InvalidCron("give the zone in `timezone`, not in the expression")
    if len(fields) != len(_FIELDS):
        raise InvalidCron(
            f"{len(fields)} fields; five are needed: minute hour day-of-month month day-of-week "
            "(e.g. `0 10 * * MON`)"
        )
    for text, spec in zip(fields, _FIELDS, strict=True):
        for item in text.split(","):
            _check_item(item, spec)
    return " ".join(fields)


def _check_item(item: str, spec: _Field) -> None:
    where = f"{spec.name} {item!r}"
    span, slash, step = item.partition("/")
    if slash:
        if not step.isdigit() or int(step) < 1:
            raise InvalidCron(f"{where}: the step after `/` must be a positive number")
    if span == "*":
        return
    start_text, dash, end_text = span.partition("-")
    start = _value(start_text, spec, where)
    if dash:
        end = _value(end_text, spec, where)
        if end < start:
            raise InvalidCron(f"{where}: the range ends before it starts")


def _value(text: str, spec: _Field, where: str) -> int:
    if text.isdigit():
        value = int(text)
    elif text.upper() in spec.names:
        value = spec.names[text.upper()]
    else:
        named = f" or a name ({', '.join(spec.names)})" if spec.names else ""
        raise InvalidCron(f"{where}: {text!r} is not a number{named}")
    if not spec.low <= value <= spec.high:
        raise InvalidCron(f"{where}: {value} is not in {spec.low}-{spec.high}")
    return value
