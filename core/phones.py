"""Russian mobile numbers: validation, the operator (DEF) code and a default time zone."""

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as phone_timezones

_SEPARATORS = re.compile(r"[\s()\-]")
_MOBILE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


class InvalidPhone(ValueError):
    """The value is not a valid Russian mobile number."""


class InvalidTimezone(ValueError):
    """The value is not an IANA time zone name."""


def normalize_phone(value: str | int) -> str:
    """The number as 11 digits `7XXXXXXXXXX`. Separators and a leading `+` are tolerated, and
    the domestic form `8XXXXXXXXXX` (`8 (916) 123-45-67`) is the same number."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidPhone("phone must be a string or an integer")
    text = _SEPARATORS.sub("", str(value))
    digits = text.removeprefix("+")
    if not text.startswith("+") and re.fullmatch(r"8\d{10}", digits):
        digits = "7" + digits[1:]
    if not re.fullmatch(r"\d+", digits):
        raise InvalidPhone("phone must hold digits only (separators and a leading + allowed)")
    if not re.fullmatch(r"7\d{10}", digits):
        raise InvalidPhone(
            f"{digits[:15]} is not a Russian mobile number: only Russian mobiles are taken, "
            "11 digits starting with 7 (or 8), e.g. 79161234567"
        )
    parsed = phonenumbers.parse("+" + digits)
    if not phonenumbers.is_valid_number(parsed) or parsed.country_code != 7:
        raise InvalidPhone(f"{digits} is not a valid Russian number")
    if phonenumbers.region_code_for_number(parsed) != "RU":
        raise InvalidPhone(f"{digits} is not a Russian number")
    if phonenumbers.number_type(parsed) not in _MOBILE_TYPES:
        raise InvalidPhone(f"{digits} is not a mobile number")
    return digits


def operator_code(phone: str) -> str:
    """The mobile operator (DEF) code: digits 2-4 of the normalized number."""
    return phone[1:4]


def default_timezone(phone: str, *, fallback: str) -> str:
    """The number's own zone when phonenumbers knows exactly one, else the fallback."""
    zones = phone_timezones.time_zones_for_number(phonenumbers.parse("+" + phone))
    if len(zones) == 1:
        try:
            return validate_timezone(str(zones[0]))
        except InvalidTimezone:
            pass
    return fallback


def validate_timezone(name: str) -> str:
    """The name itself when it is a known IANA zone."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise InvalidTimezone(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Moscow"
        ) from error
    return name
