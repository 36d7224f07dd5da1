"""Russian mobile numbers: validation, the operator (DEF) code and a default time zone."""

import functools
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType, is_number_type_geographical
from phonenumbers import timezone as phone_timezones
from phonenumbers.phonenumberutil import _number_type_helper

# The zones phonenumbers gives every non-geographical number of country code 7.
_COUNTRY_ZONES: tuple[str, ...] = tuple(
    phone_timezones._country_level_time_zones_for_number(
        phonenumbers.PhoneNumber(country_code=7, national_number=9161234567)
    )
)

_SEPARATORS = re.compile(r"[\s()\-]")
_DOMESTIC = re.compile(r"8\d{10}")
_DIGITS = re.compile(r"\d+")
_RUSSIAN_FORM = re.compile(r"7\d{10}")
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
    if not text.startswith("+") and _DOMESTIC.fullmatch(digits):
        digits = "7" + digits[1:]
    if not _DIGITS.fullmatch(digits):
        raise InvalidPhone("phone must hold digits only (separators and a leading + allowed)")
    if not _RUSSIAN_FORM.fullmatch(digits):
        raise InvalidPhone(
            f"{digits[:15]} is not a Russian mobile number: only Russian mobiles are taken, "
            "11 digits starting with 7 (or 8), e.g. 79161234567"
        )
    region, kind = _classify(digits)
    # The verdicts of phonenumbers' is_valid_number, region_code_for_number and number_type,
    # in that order, from one region lookup and one type match (see _classify).
    if region is None or kind == PhoneNumberType.UNKNOWN:
        raise InvalidPhone(f"{digits} is not a valid Russian number")
    if region != "RU":
        raise InvalidPhone(f"{digits} is not a Russian number")
    if kind not in _MOBILE_TYPES:
        raise InvalidPhone(f"{digits} is not a mobile number")
    return digits


def operator_code(phone: str) -> str:
    """The mobile operator (DEF) code: digits 2-4 of the normalized number."""
    return phone[1:4]


def default_timezone(phone: str, *, fallback: str) -> str:
    """The number's own zone when phonenumbers knows exactly one, else the fallback."""
    zones = _zones(phone)
    if len(zones) == 1:
        try:
            return validate_timezone(str(zones[0]))
        except InvalidTimezone:
            pass
    return fallback


# A bulk import judges tens of thousands of numbers a second: phonenumbers' public calls
# each parse the number and find its region and type again (about 46 µs a row for a number
# and its zone). The same verdicts come from one parse-free number object, one region lookup
# and one type match per number, remembered for the zone lookup that follows.
# tests/core/test_phones.py checks every verdict against the public calls.


def _number(digits: str) -> phonenumbers.PhoneNumber:
    """What phonenumbers.parse("+" + digits) gives for 11 digits starting with 7."""
    if digits[1] == "0":  # a national number with a leading zero: let parse mark it
        return phonenumbers.parse("+" + digits)
    return phonenumbers.PhoneNumber(country_code=7, national_number=int(digits[1:]))


@functools.lru_cache(maxsize=4096)
def _classify(digits: str) -> tuple[str | None, int]:
    """The region (RU, KZ or None) and the PhoneNumberType of an 11-digit number 7…, as
    is_valid_number and number_type judge them."""
    number = _number(digits)
    region = phonenumbers.region_code_for_number(number)
    if region is None:
        return None, PhoneNumberType.UNKNOWN
    metadata = PhoneMetadata.metadata_for_region(region, None)
    if metadata is None:
        return None, PhoneNumberType.UNKNOWN
    national = phonenumbers.national_significant_number(number)
    return region, _number_type_helper(national, metadata)


def _zones(phone: str) -> tuple[str, ...]:
    """phonenumbers.timezone.time_zones_for_number, with the type already known."""
    _, kind = _classify(phone)
    if kind == PhoneNumberType.UNKNOWN:
        return tuple(phone_timezones.time_zones_for_number(_number(phone)))
    number = _number(phone)
    if is_number_type_geographical(kind, 7):
        return tuple(phone_timezones.time_zones_for_geographical_number(number))
    return _COUNTRY_ZONES


def validate_timezone(name: str) -> str:
    """The name itself when it is a known IANA zone."""
    try:
        _known_zone(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise InvalidTimezone(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Moscow"
        ) from error
    return name


@functools.lru_cache(maxsize=1024)
def _known_zone(name: str) -> ZoneInfo:
    """ZoneInfo keeps only its last 8 zones: an import cycling through Russia's 11 would read
    the zone file again for every row (about 50 µs). Unknown names raise, and are not kept."""
    return ZoneInfo(name)
