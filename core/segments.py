"""The SMS encoding of a text (GSM-7 or UCS-2), its size and the number of segments it is sent
in, as Twilio's open-source segment calculator counts them (tests/core/test_segments.py checks
every count against it); and the typographic characters that can be replaced to keep it GSM-7.
"""

import functools
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

import gsm0338

# One SMS carries 140 octets: 160 septets or 70 UTF-16 code units. A concatenated one gives 6
# octets to its User Data Header (the part's number), leaving 153 septets or 67 code units.
_GSM7_SINGLE, _GSM7_PART = 160, 153
_UCS2_SINGLE, _UCS2_PART = 70, 67

_ESCAPE = 0x1B


class Encoding(StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True)
class Segments:
    """How a text goes out as SMS."""

    encoding: Encoding
    # GSM-7 septets (an extension-table character, such as `€` or `{`, takes 2), or UCS-2
    # UTF-16 code units (a character beyond the BMP, such as an emoji, takes 2).
    units: int
    # 1 up to 160 septets / 70 code units, else parts of at most 153 / 67; an empty text is 1.
    segments: int
    characters: int  # code points: len(text)


def _gsm_alphabet() -> tuple[frozenset[str], frozenset[str]]:
    """The basic character set and its extension table, as the gsm0338 codec decodes them."""
    codec = gsm0338.Codec()
    # 0x1B is the escape to the extension table, not a character, though the codec's encoder
    # maps U+001B to it: "\x1be" would go out as ESC e, which the phone shows as "€". A text
    # holding U+001B is UCS-2, as in Twilio's calculator.
    basic = {codec.decode(bytes([code]))[0] for code in range(128) if code != _ESCAPE}
    # The escape codes that the table leaves undefined decode to "" here.
    extension = {codec.decode(bytes([_ESCAPE, code]), "ignore")[0] for code in range(128)}
    return frozenset(basic), frozenset(extension - {""})


_BASIC, _EXTENSION = _gsm_alphabet()
_GSM7 = _BASIC | _EXTENSION


# A dispatch has one text, measured again for each of its messages.
@functools.lru_cache(maxsize=1024)
def measure(text: str) -> Segments:
    """The encoding, size and number of segments of `text` sent as one SMS: GSM-7 when every
    character is in the GSM 03.38 basic set or its extension table, else UCS-2."""
    if _GSM7.issuperset(text):
        units = len(text) + sum(map(text.count, _EXTENSION))
        widths = (2 if char in _EXTENSION else 1 for char in text)
        segments = _count_segments(widths, units, len(text), _GSM7_SINGLE, _GSM7_PART)
        return Segments(Encoding.GSM7, units, segments, len(text))
    # surrogatepass: a lone surrogate (a JSON "\ud83d" decodes to one) is one code unit too.
    units = len(text.encode("utf-16-le", "surrogatepass")) // 2
    widths = (2 if ord(char) > 0xFFFF else 1 for char in text)
    segments = _count_segments(widths, units, len(text), _UCS2_SINGLE, _UCS2_PART)
    return Segments(Encoding.UCS2, units, segments, len(text))


def _count_segments(
    widths: Iterator[int], units: int, characters: int, single: int, part: int
) -> int:
    """1 when all `units` fit in `single`, else parts of at most `part` units."""
    if units <= single:
        return 1
    if units == characters:  # no 2-unit character: every part but the last is full
        return -(-units // part)
    # A 2-unit character (an escape pair, a surrogate pair) is never cut across two parts: one
    # that does not fit opens the next part, leaving a unit of this one unused.
    count, used = 1, 0
    for width in widths:
        if used + width > part:
            count += 1
            used = 0
        used += width
    return count


# Several names a line: the tables read as lists, not as a column.
# fmt: off
_SPACE_NAMES = (
    "CHARACTER TABULATION", "NO-BREAK SPACE", "EN QUAD", "EM QUAD", "EN SPACE", "EM SPACE",
    "THREE-PER-EM SPACE", "FOUR-PER-EM SPACE", "SIX-PER-EM SPACE", "FIGURE SPACE",
    "PUNCTUATION SPACE", "THIN SPACE", "HAIR SPACE", "NARROW NO-BREAK SPACE",
    "MEDIUM MATHEMATICAL SPACE", "IDEOGRAPHIC SPACE", "LINE SEPARATOR", "PARAGRAPH SEPARATOR",
)

# Nothing to see: zero-width characters, the soft hyphen, the C0 controls of Twilio's table.
_INVISIBLE_NAMES = (
    "ZERO WIDTH SPACE", "ZERO WIDTH NON-JOINER", "WORD JOINER", "ZERO WIDTH NO-BREAK SPACE",
    "SOFT HYPHEN", "NULL", "END OF TEXT", "END OF TRANSMISSION", "DATA LINK ESCAPE",
    "DEVICE CONTROL ONE", "DEVICE CONTROL TWO", "DEVICE CONTROL THREE", "DEVICE CONTROL FOUR",
    "END OF TRANSMISSION BLOCK", "END OF MEDIUM",
)

# By replacement, the characters it stands for, by their Unicode names.
_LOOKALIKE_NAMES: dict[str, tuple[str, ...]] = {
    '"': (
        "LEFT-POINTING DOUBLE ANGLE QUOTATION MARK", "RIGHT-POINTING DOUBLE ANGLE QUOTATION MARK",
        "LEFT DOUBLE QUOTATION MARK", "RIGHT DOUBLE QUOTATION MARK", "DOUBLE LOW-9 QUOTATION MARK",
        "DOUBLE HIGH-REVERSED-9 QUOTATION MARK", "MODIFIER LETTER DOUBLE PRIME",
        "MODIFIER LETTER DOUBLE APOSTROPHE", "HEAVY DOUBLE TURNED COMMA QUOTATION MARK ORNAMENT",
        "HEAVY DOUBLE COMMA QUOTATION MARK ORNAMENT", "REVERSED DOUBLE PRIME QUOTATION MARK",
        "DOUBLE PRIME QUOTATION MARK", "DOUBLE PRIME",
    ),
    "'": (
        "LEFT SINGLE QUOTATION MARK", "RIGHT SINGLE QUOTATION MARK",
        "SINGLE HIGH-REVERSED-9 QUOTATION MARK", "MODIFIER LETTER TURNED COMMA",
        "MODIFIER LETTER VERTICAL LINE", "MODIFIER LETTER APOSTROPHE",
        "MODIFIER LETTER REVERSED COMMA", "MODIFIER LETTER PRIME", "ACUTE ACCENT",
        "MODIFIER LETTER ACUTE ACCENT", "GRAVE ACCENT", "MODIFIER LETTER GRAVE ACCENT",
        "HEAVY SINGLE TURNED COMMA QUOTATION MARK ORNAMENT",
        "HEAVY SINGLE COMMA QUOTATION MARK ORNAMENT", "PRESENTATION FORM FOR VERTICAL COMMA",
        "PRESENTATION FORM FOR VERTICAL IDEOGRAPHIC COMMA", "PRIME",
    ),
    # The low single quote is Twilio's comma, which it looks like.
    ",": (
        "SINGLE LOW-9 QUOTATION MARK", "SMALL COMMA", "SMALL IDEOGRAPHIC COMMA",
        "HALFWIDTH IDEOGRAPHIC COMMA", "IDEOGRAPHIC COMMA",
    ),
    "-": (
        "HYPHEN", "NON-BREAKING HYPHEN", "FIGURE DASH", "EN DASH", "EM DASH", "HORIZONTAL BAR",
        "MINUS SIGN", "HYPHEN BULLET", "BULLET", "SMALL HYPHEN-MINUS", "HORIZONTAL SCAN LINE-7",
        "HORIZONTAL SCAN LINE-9",
    ),
    "...": ("HORIZONTAL ELLIPSIS",),
    "/": ("DIVISION SIGN", "BIG SOLIDUS", "FRACTION SLASH", "DIVISION SLASH"),
    "\\": ("BIG REVERSE SOLIDUS", "REVERSE SOLIDUS OPERATOR", "SMALL REVERSE SOLIDUS"),
    "_": ("DOUBLE LOW LINE",),
    "|": (
        "DIVIDES", "LEFT VERTICAL BOX LINE", "RIGHT VERTICAL BOX LINE", "VERTICAL LINE EXTENSION",
        "LEFT PARENTHESIS EXTENSION", "RIGHT PARENTHESIS EXTENSION",
    ),
    "@": ("SMALL COMMERCIAL AT",),
    "$": ("SMALL DOLLAR SIGN",),
    "!": (
        "LATIN LETTER RETROFLEX CLICK", "PRESENTATION FORM FOR VERTICAL EXCLAMATION MARK",
        "SMALL EXCLAMATION MARK",
    ),
    "!!": ("DOUBLE EXCLAMATION MARK",),
    "#": ("SMALL NUMBER SIGN",),
    "%": ("SMALL PERCENT SIGN",),
    "&": ("SMALL AMPERSAND",),
    "(": (
        "MEDIUM LEFT PARENTHESIS ORNAMENT", "MEDIUM FLATTENED LEFT PARENTHESIS ORNAMENT",
        "SMALL LEFT PARENTHESIS", "MATHEMATICAL LEFT FLATTENED PARENTHESIS",
        "LEFT WHITE PARENTHESIS",
    ),
    ")": (
        "MEDIUM RIGHT PARENTHESIS ORNAMENT", "MEDIUM FLATTENED RIGHT PARENTHESIS ORNAMENT",
        "SMALL RIGHT PARENTHESIS", "MATHEMATICAL RIGHT FLATTENED PARENTHESIS",
        "RIGHT WHITE PARENTHESIS",
    ),
    "*": (
        "LOW ASTERISK", "ASTERISK OPERATOR", "CIRCLED ASTERISK OPERATOR",
        "FOUR TEARDROP-SPOKED ASTERISK", "FOUR BALLOON-SPOKED ASTERISK",
        "HEAVY FOUR BALLOON-SPOKED ASTERISK", "FOUR CLUB-SPOKED ASTERISK", "HEAVY ASTERISK",
        "OPEN CENTRE ASTERISK", "EIGHT SPOKED ASTERISK", "SIXTEEN POINTED ASTERISK",
        "TEARDROP-SPOKED ASTERISK", "OPEN CENTRE TEARDROP-SPOKED ASTERISK",
        "HEAVY TEARDROP-SPOKED ASTERISK", "HEAVY TEARDROP-SPOKED PINWHEEL ASTERISK",
        "BALLOON-SPOKED ASTERISK", "EIGHT TEARDROP-SPOKED PROPELLER ASTERISK",
        "HEAVY EIGHT TEARDROP-SPOKED PROPELLER ASTERISK", "SQUARED ASTERISK", "SMALL ASTERISK",
    ),
    "+": ("MODIFIER LETTER PLUS SIGN", "SMALL PLUS SIGN"),
    ".": ("IDEOGRAPHIC FULL STOP", "SMALL FULL STOP", "HALFWIDTH IDEOGRAPHIC FULL STOP"),
    ":": (
        "MODIFIER LETTER TRIANGULAR COLON", "MODIFIER LETTER RAISED COLON", "Z NOTATION TYPE COLON",
        "MODIFIER LETTER COLON", "PRESENTATION FORM FOR VERTICAL COLON",
    ),
    ";": ("REVERSED SEMICOLON", "PRESENTATION FORM FOR VERTICAL SEMICOLON", "SMALL SEMICOLON"),
    "<": ("SMALL LESS-THAN SIGN", "SINGLE LEFT-POINTING ANGLE QUOTATION MARK"),
    ">": ("SMALL GREATER-THAN SIGN", "SINGLE RIGHT-POINTING ANGLE QUOTATION MARK"),
    "=": ("MODIFIER LETTER SHORT EQUALS SIGN", "SMALL EQUALS SIGN"),
    "?": ("PRESENTATION FORM FOR VERTICAL QUESTION MARK", "SMALL QUESTION MARK"),
    "^": ("MODIFIER LETTER CIRCUMFLEX ACCENT",),
    "{": ("MEDIUM LEFT CURLY BRACKET ORNAMENT", "SMALL LEFT CURLY BRACKET"),
    "}": ("MEDIUM RIGHT CURLY BRACKET ORNAMENT", "SMALL RIGHT CURLY BRACKET"),
    "~": ("SMALL TILDE", "MODIFIER LETTER LOW TILDE", "TILDE OPERATOR"),
    "1/4": ("VULGAR FRACTION ONE QUARTER",),
    "1/2": ("VULGAR FRACTION ONE HALF",),
    "3/4": ("VULGAR FRACTION THREE QUARTERS",),
    " ": _SPACE_NAMES,
    "": _INVISIBLE_NAMES,
}
# fmt: on


def _lookalikes() -> dict[int, str]:
    table = {
        ord(unicodedata.lookup(name)): replacement
        for replacement, names in _LOOKALIKE_NAMES.items()
        for name in names
    }
    # The letters of Twilio's table: Unicode has no small capital X, and Twilio leaves out Q.
    for letter in "ABCDEFGHIJKLMNOPRSTUVWYZ":
        table[ord(unicodedata.lookup(f"LATIN LETTER SMALL CAPITAL {letter}"))] = letter
    # The fullwidth forms (U+FF01-U+FF5E) are ASCII shifted by 0xFEE0; all but the grave accent
    # stand for a GSM-7 character.
    for code in range(0x21, 0x7F):
        if chr(code) in _GSM7:
            table[code + 0xFEE0] = chr(code)
    return table


_LOOKALIKES = _lookalikes()


def normalize(text: str) -> str:
    """`text` with typographic characters (curly quotes, dashes, the ellipsis, unicode spaces,
    invisible ones) replaced by their GSM-7 look-alikes or removed, as Twilio's Smart Encoding
    does; every other character, Cyrillic among them, is kept. Whether to send the result is the
    caller's choice: it may still be UCS-2 (`measure` tells).

    The table is Twilio's (its calculator's copy), but for these: unicode spaces and the tab
    become one space, not two (seven for the tab); combining marks are kept, not replaced by a
    spacing look-alike, which would turn a decomposed "ñ" into "n~"; the C1 controls are kept;
    and primes, the figure dash, the minus sign, the non-breaking and the soft hyphen and the
    fullwidth small letters are replaced too."""
    return text.translate(_LOOKALIKES)
