"""The fast path of core.phones gives phonenumbers' own verdicts: the public calls, written out
here as the reference, judge every number the same way, with the same message and zone."""

import random
import re

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as phone_timezones

from core.phones import InvalidPhone, default_timezone, normalize_phone

FALLBACK = "Europe/Moscow"


def reference_verdict(digits: str) -> str:
    """What the public phonenumbers calls say of 11 digits 7…: the error, or the number."""
    parsed = phonenumbers.parse("+" + digits)
    if not phonenumbers.is_valid_number(parsed) or parsed.country_code != 7:
        return f"{digits} is not a valid Russian number"
    if phonenumbers.region_code_for_number(parsed) != "RU":
        return f"{digits} is not a Russian number"
    if phonenumbers.number_type(parsed) not in {
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
    }:
        return f"{digits} is not a mobile number"
    return digits


def reference_zone(digits: str) -> str:
    zones = phone_timezones.time_zones_for_number(phonenumbers.parse("+" + digits))
    return str(zones[0]) if len(zones) == 1 else FALLBACK


def fast_verdict(digits: str) -> str:
    try:
        return normalize_phone(digits)
    except InvalidPhone as error:
        return str(error)


def numbers(per_prefix: int) -> list[str]:
    """`per_prefix` random numbers under every 3-digit national prefix (000-999), and the
    edges of each: all zeros and all nines."""
    chance = random.Random(7)
    found = []
    for prefix in range(1000):
        head = f"7{prefix:03d}"
        found += [head + "0000000", head + "9999999"]
        found += [head + f"{chance.randrange(10**7):07d}" for _ in range(per_prefix)]
    return found


def test_every_verdict_and_zone_is_phonenumbers_own() -> None:
    checked = numbers(per_prefix=30)
    valid = 0
    for digits in checked:
        verdict = reference_verdict(digits)
        assert fast_verdict(digits) == verdict, digits
        if verdict == digits:
            valid += 1
            assert default_timezone(digits, fallback=FALLBACK) == reference_zone(digits), digits
    # The sample holds every kind of verdict, mobiles among them.
    assert valid > 1000
    kinds = {re.sub(r"^\d+ ", "", fast_verdict(d)) for d in checked if fast_verdict(d) != d}
    assert kinds == {
        "is not a valid Russian number",
        "is not a Russian number",
        "is not a mobile number",
    }


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("+7 (916) 123-45-67", "79161234567"),
        ("8 916 123 45 67", "79161234567"),
        (79161234567, "79161234567"),
    ],
)
def test_forms_of_one_number(given: str | int, expected: str) -> None:
    assert normalize_phone(given) == expected
