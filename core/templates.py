"""Personal texts: a dispatch's text may hold placeholders, rendered for each client at the moment
of its send.

A placeholder is `{{ key }}` or `{{ key | default("…") }}`, where the key is `phone`, `tag`,
`timezone` or one of the client's attributes (`[a-z][a-z0-9_]{0,31}`). `{{ "{{" }}` writes
braces. Nothing else of Jinja is allowed: no statements (`{% ... %}`), no comments, no
attribute or item access, no filters but `default`, no calls, no operators. A text using
anything else is refused with a message naming it, before it is stored.

The text is parsed and rendered by Jinja2's immutable sandboxed environment; the check of its
syntax tree comes first, so the sandbox is a second wall. A client that lacks a key used
without a default gets no message with a hole: `render` says which keys are missing, and the
message ends `unrendered` with that reason. A text without `{{`, `{%` or `{#` is never handed
to Jinja: it is its own rendering.
"""

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

ATTRIBUTE_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
# The client's own fields a text may name, beside its attributes.
CLIENT_FIELDS = ("phone", "tag", "timezone")
# Marks that make a text a template.
_MARKS = ("{{", "{%", "{#")

_ENVIRONMENT = ImmutableSandboxedEnvironment(
    autoescape=False,
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    # An SMS is plain text: no line statements, no whitespace tricks.
    trim_blocks=False,
    lstrip_blocks=False,
)
# Jinja's globals (range, lipsum, namespace...) would answer for a key a client lacks, through
# `default`: `{{ range | default("x") }}` printed a function. A text sees its client's values only.
_ENVIRONMENT.globals.clear()
# Names Jinja itself binds in every template, whatever the values: never a client's key.
_RESERVED = frozenset({"self"})


class TemplateRefused(ValueError):
    """The text uses something a template may not, named in the message."""


@dataclass(frozen=True, slots=True)
class Missing:
    """The keys a client lacks that the text uses without a default."""

    keys: tuple[str, ...]

    @property
    def reason(self) -> str:
        named = ", ".join(f"`{key}`" for key in self.keys)
        return f"the client has no {named} for the text's placeholders (and no default)"


@dataclass(frozen=True)
class TextTemplate:
    """A checked text: the keys it uses, those it needs (no default), and how to render it."""

    text: str
    keys: frozenset[str]
    required: frozenset[str]

    @property
    def personal(self) -> bool:
        return bool(self.keys)

    @property
    def plain(self) -> bool:
        """No placeholder at all: the text is its own rendering (`{{ "{{" }}` is one)."""
        return not _has_marks(self.text)

    def render(self, values: Mapping[str, str]) -> str | Missing:
        """The text for a client whose fields and attributes are `values` (an empty value
        counts as missing)."""
        if not self.keys and not _has_marks(self.text):
            return self.text
        missing = tuple(sorted(key for key in self.required if not values.get(key)))
        if missing:
            return Missing(missing)
        present = {key: value for key, value in values.items() if value and key in self.keys}
        return str(_compiled(self.text).render(present))


def _has_marks(text: str) -> bool:
    return any(mark in text for mark in _MARKS)


@functools.lru_cache(maxsize=256)
def _compiled(text: str):  # type: ignore[no-untyped-def]
    return _ENVIRONMENT.from_string(text)


@functools.lru_cache(maxsize=1024)
def check(text: str) -> TextTemplate:
    """The text as a template, or TemplateRefused naming what it may not use."""
    if not _has_marks(text):
        return TextTemplate(text, frozenset(), frozenset())
    try:
        for _, token, _ in _ENVIRONMENT.lex(text):
            if token == "comment_begin":
                raise TemplateRefused("comments ({# ... #}) are not allowed in a text")
            if token in ("block_begin", "linestatement_begin"):
                raise TemplateRefused(
                    "statements ({% ... %}) are not allowed in a text: only {{ key }} and "
                    '{{ key | default("...") }}'
                )
        tree = _ENVIRONMENT.parse(text)
    except TemplateSyntaxError as error:
        raise TemplateRefused(f"the text's placeholders do not parse: {error.message}") from None
    except RecursionError:
        # Hundreds of nested brackets exhaust the parser's stack: refused, not a crash.
        raise TemplateRefused("the text's placeholders nest too deeply") from None
    keys: set[str] = set()
    required: set[str] = set()
    for node in tree.body:
        if not isinstance(node, nodes.Output):
            raise TemplateRefused(f"{type(node).__name__} is not allowed in a text")
        for part in node.nodes:
            _check_part(part, keys, required)
    return TextTemplate(text, frozenset(keys), frozenset(required))


def _check_part(part: nodes.Node, keys: set[str], required: set[str]) -> None:
    if isinstance(part, nodes.TemplateData):
        return
    if isinstance(part, nodes.Const) and isinstance(part.value, str):
        return  # {{ "{{" }}: literal braces
    if isinstance(part, nodes.Name):
        keys.add(_key(part.name))
        required.add(part.name)
        return
    if isinstance(part, nodes.Filter):
        if part.name != "default":
            raise TemplateRefused(
                f"the filter `{part.name}` is not allowed in a text: only `default`"
            )
        if not isinstance(part.node, nodes.Name):
            target = "nothing" if part.node is None else _shown(part.node)
            raise TemplateRefused(f"`default` applies to a key, not to {target}")
        if (
            len(part.args) != 1
            or part.kwargs
            or part.dyn_args
            or part.dyn_kwargs
            or not isinstance(part.args[0], nodes.Const)
            or not isinstance(part.args[0].value, str)
        ):
            raise TemplateRefused(
                f'`{part.node.name} | default(...)` takes one quoted text, e.g. default("friend")'
            )
        keys.add(_key(part.node.name))
        return
    raise TemplateRefused(f"{_shown(part)} is not allowed in a text: only keys and `default`")


def _key(name: str) -> str:
    if name in CLIENT_FIELDS or (ATTRIBUTE_KEY.fullmatch(name) and name not in _RESERVED):
        return name
    raise TemplateRefused(
        f"`{name}` cannot be a key: phone, tag, timezone or an attribute ([a-z][a-z0-9_]*)"
    )


def _shown(node: nodes.Node) -> str:
    """A construct's name as an operator knows it."""
    if isinstance(node, nodes.Getattr):
        return f"attribute access (`.{node.attr}`)"
    if isinstance(node, nodes.Getitem):
        return "item access (`[...]`)"
    if isinstance(node, nodes.Call):
        return "a call"
    if isinstance(node, (nodes.BinExpr, nodes.UnaryExpr, nodes.Compare, nodes.Concat)):
        return "an operator"
    if isinstance(node, nodes.Filter):
        return f"the filter `{node.name}`"
    if isinstance(node, nodes.Const):
        return f"the constant `{node.value!r}`"
    if isinstance(node, nodes.CondExpr):
        return "an inline if"
    if isinstance(node, nodes.Test):
        return f"the test `{node.name}`"
    return type(node).__name__


def client_values(
    *,
    phone: str | None,
    tag: str | None,
    timezone: str | None,
    attributes: Mapping[str, str] | None,
) -> dict[str, str]:
    """What a client gives a template: its attributes, then its own fields (which win)."""
    values = dict(attributes or {})
    values.update(phone=phone or "", tag=tag or "", timezone=timezone or "")
    return values
