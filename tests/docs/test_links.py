"""Every relative link of README.md and docs/*.md leads somewhere: the file or folder exists and,
for a `#anchor`, the target Markdown file has that heading (GitHub's anchors: lower case, marks
dropped, spaces as hyphens, `-1`, `-2` for repeats). Links to web addresses are not followed."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), with an optional "title"; text may hold one level of [].
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(markdown: str) -> str:
    """The text outside code: links inside fences or backticks are examples, not links."""
    return INLINE_CODE.sub("", FENCE.sub("", markdown))


def slug(heading: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(document: Path) -> list[str]:
    return LINK.findall(prose(document.read_text(encoding="utf-8")))


def broken(document: Path, target: str) -> str | None:
    """Why the link goes nowhere, or None."""
    path, _, anchor = target.partition("#")
    destination = (document.parent / path).resolve() if path else document
    if not destination.exists():
        return f"{destination.relative_to(ROOT) if destination.is_relative_to(ROOT) else path}"
    if anchor and destination.suffix == ".md":
        if anchor.lower() not in anchors(destination.read_text(encoding="utf-8")):
            return f"no heading #{anchor} in {destination.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("document", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_somewhere(document: Path) -> None:
    problems = []
    for target in links(document):
        if SCHEME.match(target) or target.startswith("//"):
            continue
        why = broken(document, target)
        if why:
            problems.append(f"({target}): {why}")
    if problems:
        pytest.fail(f"{document.relative_to(ROOT)} links to nothing:\n" + "\n".join(problems))


def test_the_checks_own_reading() -> None:
    markdown = (
        "# Operating a dispatch\n## The admin page's sign-in\n## `make run`: the local stack\n"
        "## Limits\n## Limits\n```sh\n# not a heading\n```\n"
        '[a](x.md) ![b](img/c.png "t") [`code`](y.md#z) `[no](inline.md)` [web](https://e.x)\n'
    )
    assert anchors(markdown) == {
        "operating-a-dispatch",
        "the-admin-pages-sign-in",
        "make-run-the-local-stack",
        "limits",
        "limits-1",
    }
    assert LINK.findall(prose(markdown)) == ["x.md", "img/c.png", "y.md#z", "https://e.x"]
