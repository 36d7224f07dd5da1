"""core.templates: the placeholders a text may hold, what it may not (each refusal naming the
construct), and a text rendered for a client with and without its values."""

import pytest

from core.templates import Missing, TemplateRefused, check, client_values


@pytest.mark.parametrize(
    ("text", "keys", "required"),
    [
        ("Sale on Sunday", set(), set()),
        ("Hello, {{ name }}", {"name"}, {"name"}),
        ('Hello, {{ name | default("друг") }}', {"name"}, set()),
        ('{{name|default("")}} {{ phone }}', {"name", "phone"}, {"phone"}),
        ("{{ tag }} {{ city_2 }}", {"tag", "city_2"}, {"tag", "city_2"}),
        ('{{ "{{" }} braces {{ "}}" }}', set(), set()),
    ],
)
def test_allowed_texts_and_their_keys(text: str, keys: set[str], required: set[str]) -> None:
    template = check(text)
    assert template.keys == keys
    assert template.required == required
    assert template.personal == bool(keys)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("{% for x in y %}{{ x }}{% endfor %}", "statements ({% ... %})"),
        ("{% if name %}Hi{% endif %}", "statements ({% ... %})"),
        ("Hi {# a note #}", "comments ({# ... #})"),
        ("{{ x.__class__ }}", "attribute access (`.__class__`)"),
        ("{{ x['a'] }}", "item access (`[...]`)"),
        ("{{ a | upper }}", "the filter `upper`"),
        ('{{ a | d("x") }}', "the filter `d`"),
        ("{{ lipsum() }}", "a call"),
        ("{{ a + b }}", "an operator"),
        ('{{ "a" ~ b }}', "an operator"),
        ("{{ -a }}", "an operator"),
        ("{{ a if b }}", "an inline if"),
        ("{{ a is defined }}", "the test `defined`"),
        ("{{ 1 }}", "the constant `1`"),
        ("{{ none }}", "the constant `None`"),
        ("{{ a | default(b) }}", "takes one quoted text"),
        ('{{ a | default("x", true) }}', "takes one quoted text"),
        ('{{ a | default("x") | default("y") }}', "not to the filter `default`"),
        ("{{ Name }}", "`Name` cannot be a key"),
        ("{{ _x }}", "`_x` cannot be a key"),
        ("{{ self }}", "`self` cannot be a key"),
        ("{{ " + "a" * 33 + " }}", "cannot be a key"),
        ("{{ name }", "do not parse"),
        ("Smile {{", "do not parse"),
        ("{{" + "(" * 400 + "a" + ")" * 400 + "}}", "nest too deeply"),
    ],
)
def test_refused_texts_name_the_construct(text: str, named: str) -> None:
    with pytest.raises(TemplateRefused) as refused:
        check(text)
    assert named in str(refused.value)
    assert isinstance(refused.value, ValueError)


def test_render_with_and_without_defaults() -> None:
    template = check('Hello, {{ name | default("друг") }}! Your code: {{ code }}')
    assert template.render({"name": "Anna", "code": "X1"}) == "Hello, Anna! Your code: X1"
    assert template.render({"code": "X1"}) == "Hello, друг! Your code: X1"
    missing = template.render({"name": "Anna"})
    assert missing == Missing(("code",))
    assert isinstance(missing, Missing)
    assert "`code`" in missing.reason and "no default" in missing.reason
    # Every missing key, sorted.
    both = check("{{ b }} {{ a }}").render({})
    assert isinstance(both, Missing) and both.keys == ("a", "b")


def test_an_empty_value_is_missing() -> None:
    assert check("{{ name }}").render({"name": ""}) == Missing(("name",))
    assert check('{{ name | default("друг") }}').render({"name": ""}) == "друг"
    assert check("{{ tag }}").render(
        client_values(phone="79161234567", tag="", timezone="Europe/Moscow", attributes={})
    ) == Missing(("tag",))


def test_literal_braces_and_values_are_text() -> None:
    assert check('{{ "{{" }} name {{ "}}" }}').render({}) == "{{ name }}"
    # A value is written as it is, never read as a template, nor escaped as HTML.
    template = check("{{ name }}")
    assert template.render({"name": "{{ phone }} <b>&"}) == "{{ phone }} <b>&"
    # A plain text is its own rendering, braces-free or not a template at all.
    assert check("Sale } on { Sunday").render({}) == "Sale } on { Sunday"


def test_jinja_globals_do_not_answer_for_a_missing_key() -> None:
    template = check('{{ range | default("x") }}{{ lipsum | default("y") }}')
    assert template.render({}) == "xy"
    assert check("{{ range }}").render({}) == Missing(("range",))


def test_client_values_put_the_clients_own_fields_last() -> None:
    values = client_values(
        phone="79161234567",
        tag=None,
        timezone="Asia/Omsk",
        attributes={"name": "Anna", "phone": "not this one"},
    )
    assert values == {
        "name": "Anna",
        "phone": "79161234567",
        "tag": "",
        "timezone": "Asia/Omsk",
    }
    rendered = check("{{ name }} {{ phone }} {{ timezone }}").render(values)
    assert rendered == "Anna 79161234567 Asia/Omsk"
