"""The frequency cap: how many messages one client may get in a trailing period, from every
dispatch together (FREQUENCY_CAP, e.g. `3/24h` or `10/7d`; unset: no cap).

Judged at the moment of sending, like the end time and the stop list: a message that would
exceed its client's cap ends `capped`. A dispatch marked transactional is neither capped nor
counted. The check and its record are one atomic step per client (activities.caps).
"""

import re
from dataclasses import dataclass
from datetime import timedelta

_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_CAP = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*([mhd])\s*")
# Longer than this is not a frequency but a lifetime.
MAX_PERIOD = timedelta(days=366)


@dataclass(frozen=True)
class FrequencyCap:
    messages: int
    period: timedelta
    text: str  # as configured, for reasons and logs

    @classmethod
    def parse(cls, value: str) -> "FrequencyCap":
        """`<messages>/<period><m|h|d>`, e.g. `3/24h`; ValueError naming what is wrong."""
        match = _CAP.fullmatch(value)
        if match is None:
            raise ValueError(
                f"FREQUENCY_CAP: expected <messages>/<period> such as 3/24h or 10/7d "
                f"(units m, h, d), got {value!r}"
            )
        messages, amount, unit = int(match[1]), int(match[2]), match[3]
        period = timedelta(**{_UNITS[unit]: amount})
        if messages < 1:
            raise ValueError(f"FREQUENCY_CAP: at least 1 message per period, got {value!r}")
        if not timedelta(0) < period <= MAX_PERIOD:
            raise ValueError(f"FREQUENCY_CAP: the period must be 1m to 366d, got {value!r}")
        return cls(messages=messages, period=period, text=f"{messages}/{amount}{unit}")

    @property
    def reason(self) -> str:
        return f"frequency cap {self.text}: the client had its messages for the period"
