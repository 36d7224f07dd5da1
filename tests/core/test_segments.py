"""core.segments on known texts, and against Twilio's open-source segment calculator (npm
sms-segments-calculator, run with Node by segments_oracle.js): the same encoding, units and
segments for every text, and the same Smart Encoding replacements but for our own choices."""

import json
import random
import string
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.segments import Encoding, Segments, measure, normalize
from devstack.npm import ensure_npm_package

GSM7, UCS2 = Encoding.GSM7, Encoding.UCS2

ORACLE = ("sms-segments-calculator", "1.3.0")
ORACLE_SCRIPT = Path(__file__).with_name("segments_oracle.js")

GSM_BASIC = (
    string.ascii_letters + string.digits + " !\"#$%&'()*+,-./:;<=>?@_\n\r"
    "£¥èéùìòÇØøÅåΔΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà"
)
GSM_EXTENSION = "^{}\\[~]|€\f"
CYRILLIC = "".join(map(chr, range(0x410, 0x450))) + "ёЁ"
# Single code points: a sequence of several (a flag, a ZWJ family) is one grapheme cluster that
# Twilio never splits, see test_a_cluster_of_code_points_may_be_split_where_twilio_keeps_it_whole.
EMOJI = "😀🎉👍🚀🔥💬📦✅"
FAMILY = "\N{MAN}\N{ZERO WIDTH JOINER}\N{WOMAN}\N{ZERO WIDTH JOINER}\N{GIRL}"
# 64 + 3 of the family's 8 units fill part 1; Twilio moves the whole cluster to part 2.
FAMILY_STRADDLING = "Я" * 64 + FAMILY + "Я" * 62
TYPOGRAPHIC = (
    "\N{LEFT DOUBLE QUOTATION MARK}\N{RIGHT DOUBLE QUOTATION MARK}\N{DOUBLE LOW-9 QUOTATION MARK}"
    "\N{LEFT SINGLE QUOTATION MARK}\N{RIGHT SINGLE QUOTATION MARK}«»"
    "\N{EN DASH}\N{EM DASH}\N{HORIZONTAL ELLIPSIS}\N{BULLET}"
)
# Outside the GSM 03.38 alphabet though close to it: the codec takes U+001B for a character.
ODD = "\x1b`áíóúâêç"
RUSSIAN = (
    "Уважаемый клиент! До 31 декабря в наших магазинах действует скидка 20% на всю зимнюю "
    "коллекцию. Покажите это сообщение на кассе и получите подарок. Подробности на сайте "
    "и по телефону горячей линии. Ждём вас в гости!"
)[:200]

# (text, encoding, units, segments)
KNOWN: dict[str, tuple[str, Encoding, int, int]] = {
    "empty": ("", GSM7, 0, 1),
    "latin": ("Hello, world! Your code is 1234.", GSM7, 32, 1),
    "160 GSM": ("a" * 160, GSM7, 160, 1),
    "161 GSM": ("a" * 161, GSM7, 161, 2),
    "306 GSM": ("a" * 306, GSM7, 306, 2),
    "307 GSM": ("a" * 307, GSM7, 307, 3),
    "euro": ("€", GSM7, 2, 1),
    "extension chars": ("€{[~^|\\}]", GSM7, 18, 1),
    "80 euros": ("€" * 80, GSM7, 160, 1),
    "81 euros": ("€" * 81, GSM7, 162, 2),
    # 152 + 2 does not fit in 153: the pair opens part 2, and 1 septet is left for part 3.
    "escape pair at 153": ("a" * 152 + "€" + "a" * 152, GSM7, 306, 3),
    "escape pair before 153": ("a" * 151 + "€" + "a" * 153, GSM7, 306, 2),
    "form feed": ("\f", GSM7, 2, 1),
    "CRLF": ("a\r\nb", GSM7, 4, 1),
    "GSM accents and Greek": ("éèùìòÇØøÅåÄÖÑÜ§¿àäöñüÉÆæß¡ΔΦΓΛΩΠΨΣΘΞ£¥¤", GSM7, 39, 1),
    "privet": ("Привет", UCS2, 6, 1),
    "70 Cyrillic": ("Я" * 70, UCS2, 70, 1),
    "71 Cyrillic": ("Я" * 71, UCS2, 71, 2),
    "134 Cyrillic": ("Я" * 134, UCS2, 134, 2),
    "135 Cyrillic": ("Я" * 135, UCS2, 135, 3),
    "200 Russian": (RUSSIAN, UCS2, 200, 3),
    "Latin and Cyrillic": ("Hello, Мир!", UCS2, 11, 1),
    "extension chars in UCS-2": ("Я€{", UCS2, 3, 1),
    "emoji": ("😀", UCS2, 2, 1),
    "emoji and 68": ("😀" + "a" * 68, UCS2, 70, 1),
    "70 characters with an emoji": ("😀" + "a" * 69, UCS2, 71, 2),
    # 66 + 2 does not fit in 67: the surrogate pair opens part 2, 1 unit is left for part 3.
    "surrogate pair at 67": ("Я" * 66 + "😀" + "Я" * 66, UCS2, 134, 3),
    "surrogate pair before 67": ("Я" * 65 + "😀" + "Я" * 67, UCS2, 134, 2),
    "a acute": ("á", UCS2, 1, 1),
    "i acute": ("í", UCS2, 1, 1),
    "o acute": ("ó", UCS2, 1, 1),
    "u acute": ("ú", UCS2, 1, 1),
    "a circumflex": ("â", UCS2, 1, 1),
    "e circumflex": ("ê", UCS2, 1, 1),
    "small c cedilla": ("ç", UCS2, 1, 1),
    "grave accent": ("`", UCS2, 1, 1),
    "escape": ("a\x1be", UCS2, 3, 1),
    "lone surrogate": ("\ud83d", UCS2, 1, 1),
    "curly quotes": ("\N{LEFT DOUBLE QUOTATION MARK}Hi\N{RIGHT DOUBLE QUOTATION MARK}", UCS2, 4, 1),
}


# By profile, its pools of characters and their weights.
GSM_PROFILES = [
    {GSM_BASIC: 1},
    {GSM_BASIC: 9, GSM_EXTENSION: 1},
    {GSM_BASIC: 1, GSM_EXTENSION: 1},
]
UCS2_PROFILES = [
    {CYRILLIC: 9, GSM_BASIC: 1},
    {CYRILLIC: 8, GSM_BASIC: 1, EMOJI: 1},
    {CYRILLIC: 1, EMOJI: 1},
    {GSM_BASIC: 30, TYPOGRAPHIC: 1},
    {GSM_BASIC: 4, GSM_EXTENSION: 2, CYRILLIC: 2, EMOJI: 1, TYPOGRAPHIC: 1, ODD: 1},
]
# Either side of one SMS's limit and of a whole number of parts.
GSM_TARGETS = [0, 1, 159, 160, 161, 305, 306, 307, 458, 459, 460, 611, 612, 613]
UCS2_TARGETS = [1, 69, 70, 71, 133, 134, 135, 200, 201, 202, 267, 268, 269]


def generated_texts(count: int) -> list[str]:
    """Texts of every mix of alphabets, most of them of a number of units at a boundary: a
    2-unit character that would end a part at the boundary is where a split goes wrong."""
    chance = random.Random(20261127)
    texts = []
    for _ in range(count):
        gsm = chance.random() < 0.5
        pools = chance.choice(GSM_PROFILES if gsm else UCS2_PROFILES)
        targets = GSM_TARGETS if gsm else UCS2_TARGETS
        target = chance.choice(targets) if chance.random() < 0.8 else chance.randint(1, 700)
        # A UCS-2 profile's text holds at least one character from outside GSM-7.
        chars = [] if gsm else [chance.choice(CYRILLIC + EMOJI + TYPOGRAPHIC + ODD)]
        units = sum(width(char, gsm=gsm) for char in chars)
        while units < target:
            pool = chance.choices(list(pools), weights=list(pools.values()))[0]
            char = chance.choice(pool)
            if units + width(char, gsm=gsm) > target:
                char = "a"
            chars.append(char)
            units += width(char, gsm=gsm)
        chance.shuffle(chars)
        texts.append("".join(chars))
    return texts


def width(char: str, *, gsm: bool) -> int:
    if gsm:
        return 2 if char in GSM_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


GENERATED = generated_texts(600)

# Typographic characters on which normalize() and Twilio's Smart Encoding agree.
SMART_AGREED = (
    TYPOGRAPHIC + "\N{SINGLE LOW-9 QUOTATION MARK}\N{SINGLE HIGH-REVERSED-9 QUOTATION MARK}"
    "\N{DOUBLE HIGH-REVERSED-9 QUOTATION MARK}\N{HORIZONTAL BAR}\N{HYPHEN}"
    "\N{SINGLE LEFT-POINTING ANGLE QUOTATION MARK}\N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK}"
    "\N{DOUBLE EXCLAMATION MARK}\N{ZERO WIDTH SPACE}\N{ZERO WIDTH NON-JOINER}\N{WORD JOINER}"
    "\N{ZERO WIDTH NO-BREAK SPACE}½÷\N{FULLWIDTH LATIN CAPITAL LETTER A}"
    "\N{LATIN LETTER SMALL CAPITAL R}\N{FULLWIDTH TILDE}\N{EM QUAD}"
)


def smart_texts(count: int) -> list[str]:
    chance = random.Random(11)
    texts = []
    for _ in range(count):
        letters = CYRILLIC if chance.random() < 0.2 else GSM_BASIC
        length = chance.choice([20, 150, 158, 160, 165, 300, 310])
        texts.append(
            "".join(
                chance.choice(SMART_AGREED if chance.random() < 0.1 else letters)
                for _ in range(length)
            )
        )
    return texts


SMART = [
    *smart_texts(100),
    "\N{LEFT DOUBLE QUOTATION MARK}Smart\N{RIGHT DOUBLE QUOTATION MARK} quotes, it"
    "\N{RIGHT SINGLE QUOTATION MARK}s \N{EM DASH} fine\N{HORIZONTAL ELLIPSIS}",
    "«Ёлочки» \N{EN DASH} по-русски",
]


@dataclass(frozen=True)
class Verdict:
    encoding: str
    units: int
    segments: int
    characters: int
    text: str


@dataclass(frozen=True)
class Oracle:
    smart_encoding_map: dict[str, str]
    plain: dict[str, Verdict]  # by text, Smart Encoding off
    smart: dict[str, Verdict]  # by text before Smart Encoding


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    """Every text of this module through the calculator, in one run of Node."""
    modules = ensure_npm_package(*ORACLE)
    plain = [text for text, *_ in KNOWN.values()] + GENERATED + [FAMILY_STRADDLING]
    requests = [(text, False) for text in plain] + [(text, True) for text in SMART]
    completed = subprocess.run(
        ["node", str(ORACLE_SCRIPT), str(modules)],
        input=json.dumps(requests),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout)
    verdicts = [Verdict(**result) for result in answer["results"]]
    return Oracle(
        smart_encoding_map=answer["smartEncodingMap"],
        plain=dict(zip(plain, verdicts[: len(plain)], strict=True)),
        smart=dict(zip(SMART, verdicts[len(plain) :], strict=True)),
    )


def ours(text: str) -> tuple[str, int, int, int]:
    found = measure(text)
    return found.encoding.value, found.units, found.segments, found.characters


def theirs(verdict: Verdict) -> tuple[str, int, int, int]:
    return verdict.encoding, verdict.units, verdict.segments, verdict.characters


@pytest.mark.parametrize(("text", "encoding", "units", "segments"), KNOWN.values(), ids=KNOWN)
def test_known_texts(text: str, encoding: Encoding, units: int, segments: int) -> None:
    assert measure(text) == Segments(encoding, units, segments, characters=len(text))


def test_every_text_is_measured_as_twilio_calculator_does(oracle: Oracle) -> None:
    wrong = [
        f"{text!r}: ours {ours(text)}, Twilio's {theirs(verdict)}"
        for text, verdict in oracle.plain.items()
        if text != FAMILY_STRADDLING and ours(text) != theirs(verdict)
    ]
    assert not wrong, f"{len(wrong)} of {len(oracle.plain)} texts differ:\n" + "\n".join(wrong)


def test_the_generated_texts_reach_every_boundary_and_straddle_it() -> None:
    """The oracle sees every boundary, and parts that a 2-unit character leaves a unit short
    of full: texts where dividing the units by a part's size would count one segment too few."""
    for encoding, targets, single, part in (
        (GSM7, GSM_TARGETS, 160, 153),
        (UCS2, UCS2_TARGETS, 70, 67),
    ):
        measured = [m for m in map(measure, GENERATED) if m.encoding == encoding]
        assert set(targets) <= {m.units for m in measured}, encoding
        straddled = [m for m in measured if m.units > single and m.segments > -(-m.units // part)]
        assert len(straddled) >= 5, encoding


def test_a_cluster_of_code_points_may_be_split_where_twilio_keeps_it_whole(
    oracle: Oracle,
) -> None:
    """A part ends between two code points, never inside one (a surrogate pair): the phone
    joins the parts before it shows the text. Twilio's calculator keeps a grapheme cluster
    (a ZWJ family, a flag, a letter and its accent) in one part, one more here."""
    assert ours(FAMILY_STRADDLING) == ("UCS-2", 134, 2, 131)
    assert theirs(oracle.plain[FAMILY_STRADDLING]) == ("UCS-2", 134, 3, 131)


def test_normalize_replaces_typographic_characters() -> None:
    text = (
        "\N{LEFT DOUBLE QUOTATION MARK}Sale\N{RIGHT DOUBLE QUOTATION MARK} \N{EN DASH} it"
        "\N{RIGHT SINGLE QUOTATION MARK}s on\N{HORIZONTAL ELLIPSIS} \N{BULLET} "
        "\N{DOUBLE LOW-9 QUOTATION MARK}20%\N{DOUBLE HIGH-REVERSED-9 QUOTATION MARK} "
        "«off» \N{EM DASH}\N{NO-BREAK SPACE}today\N{ZERO WIDTH SPACE}"
    )
    assert normalize(text) == '"Sale" - it\'s on... - "20%" "off" - today'
    assert measure(text).encoding == UCS2
    assert measure(normalize(text)) == Segments(GSM7, 41, 1, 41)


def test_normalize_of_our_own_choices() -> None:
    assert normalize("5\N{PRIME} 2\N{DOUBLE PRIME}") == "5' 2\""
    assert normalize("\N{FIGURE DASH}\N{MINUS SIGN}\N{NON-BREAKING HYPHEN}") == "---"
    assert normalize("co\N{SOFT HYPHEN}op") == "coop"
    assert normalize("\N{FULLWIDTH LATIN SMALL LETTER A}\N{FULLWIDTH DIGIT ONE}") == "a1"
    assert normalize("a\tb\N{THIN SPACE}c") == "a b c"
    # A decomposed n with tilde stays as it is, where Twilio makes it "n~" (GSM-7 has only
    # the precomposed one).
    assert normalize("n\N{COMBINING TILDE}") == "n\N{COMBINING TILDE}"


def test_normalize_keeps_what_has_no_lookalike() -> None:
    for text in ("Привет, мир!", RUSSIAN, "Hello {world} €5 @ 10:00", "😀", FAMILY, ""):
        assert normalize(text) == text
    assert normalize("«Ёлочки» \N{EN DASH} да") == '"Ёлочки" - да'


def test_normalize_has_twilio_smart_encoding_table(oracle: Oracle) -> None:
    """Twilio's replacement for every character of its table, but where we chose otherwise:
    one space for any whitespace, and combining marks and C1 controls left as they are."""
    wrong = []
    for char, twilio in oracle.smart_encoding_map.items():
        if unicodedata.category(char) == "Mn" or "\x80" <= char <= "\x9f":
            expected = char
        elif twilio and not twilio.strip(" "):
            expected = " "
        else:
            expected = twilio
        if normalize(char) != expected:
            wrong.append(f"U+{ord(char):04X}: {normalize(char)!r}, expected {expected!r}")
    assert not wrong, "\n".join(wrong)


def test_normalized_texts_are_measured_as_twilio_smart_encoding_does(oracle: Oracle) -> None:
    wrong = [
        f"{text!r}: ours {ours(normalize(text))}, Twilio's {theirs(verdict)}"
        for text, verdict in oracle.smart.items()
        if (normalize(text), ours(normalize(text))) != (verdict.text, theirs(verdict))
    ]
    assert not wrong, f"{len(wrong)} of {len(oracle.smart)} texts differ:\n" + "\n".join(wrong)
    assert {measure(normalize(text)).encoding for text in SMART} == {GSM7, UCS2}
