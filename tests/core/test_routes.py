"""Send route definitions: what SEND_ROUTES may say, which clients a route serves, and the
refusals that name the route and the field."""

import json
from pathlib import Path

import pytest

from core.routes import RateUnit, RoutesError, covers_everyone, load_routes, parse_routes
from core.settings import Settings

ENV = {"TOKEN_A": "secret-a", "TOKEN_B": "secret-b"}


def spec(name: str, **fields: object) -> dict[str, object]:
    return {"name": name, "url": "http://gw.example/v1/", "token_env": "TOKEN_A", **fields}


def test_routes_by_priority_with_their_tokens() -> None:
    routes = parse_routes(
        [
            spec("spare", token_env="TOKEN_B", priority=2, rate_unit="messages"),
            spec("main", priority=1, rate_per_second=20, operator_codes=["916"]),
            spec("also-two", priority=2),
        ],
        ENV,
    )
    assert [route.name for route in routes] == ["main", "spare", "also-two"]
    main, spare, _ = routes
    assert (main.token, main.rate_unit, main.url) == (
        "secret-a",
        RateUnit.SEGMENTS,
        "http://gw.example/v1",
    )
    assert (spare.token, spare.rate_unit) == ("secret-b", RateUnit.MESSAGES)
    # The token never shows: not in the repr, not in the public view.
    assert "secret" not in repr(main) and "secret" not in json.dumps(main.public)
    assert main.units(3) == 3 and spare.units(3) == 1


def test_which_clients_a_route_serves() -> None:
    [both, codes, prefixes, anyone] = parse_routes(
        [
            spec("both", operator_codes=["916", "903"], prefixes=["7916"], priority=1),
            spec("codes", operator_codes=["903"], priority=2),
            spec("prefixes", prefixes=["79031", "7905"], priority=3),
            spec("anyone", priority=4),
        ],
        ENV,
    )
    assert both.serves("79161234567", "916") and not both.serves("79031234567", "903")
    assert codes.serves("79031234567", "903") and not codes.serves("79161234567", "916")
    assert prefixes.serves("79031234567", "903") and not prefixes.serves("79032234567", "903")
    assert prefixes.serves("79051234567", "905")
    assert anyone.serves("79991234567", "999")
    assert covers_everyone([both, codes, anyone]) and not covers_everyone([both, codes, prefixes])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "a non-empty list of routes"),
        ({"name": "a"}, "a non-empty list of routes"),
        ([spec("a", colour="red")], "route 'a': colour: Extra inputs are not permitted"),
        ([spec("A b")], "route 'A b': name: String should match pattern"),
        ([{"url": "http://x/v1", "token_env": "TOKEN_A"}], "route number 1: name: Field required"),
        ([spec("a", url="ftp://x")], "route 'a': url: String should match pattern"),
        ([spec("a", rate_per_second=0)], "route 'a': rate_per_second: Input should be greater"),
        ([spec("a", rate_unit="parts")], "route 'a': rate_unit: Input should be 'segments'"),
        ([spec("a", operator_codes=["91"])], "route 'a': operator_codes: Value error, an operator"),
        (
            [spec("a", token_env="NOT_SET")],
            "route 'a': token_env: the environment variable NOT_SET",
        ),
        ([spec("a"), spec("a")], "route 'a': name: another route has this name"),
        ([spec("a", operator_codes=[])], "route 'a': serves no client: operator_codes is empty"),
        ([spec("a", prefixes=[])], "route 'a': serves no client: prefixes is empty"),
        ([spec("a", operator_codes=["495"])], "serves no client: operator_codes has no mobile"),
        ([spec("a", prefixes=["8916"])], "serves no client: prefixes match no client's number"),
        (
            [spec("a", operator_codes=["916"], prefixes=["7903"])],
            "serves no client: prefixes match no client's number (7 9XX XXX XX XX) of its",
        ),
    ],
)
def test_a_bad_definition_names_the_route_and_field(raw: object, message: str) -> None:
    with pytest.raises(RoutesError) as refused:
        parse_routes(raw, ENV)
    assert message in str(refused.value), str(refused.value)


def test_json_or_a_file_not_both(tmp_path: Path) -> None:
    with pytest.raises(RoutesError, match="not JSON"):
        load_routes(routes_json="[{", routes_file=None, environ=ENV)
    path = tmp_path / "routes.json"
    path.write_text(json.dumps([spec("a")]))
    assert [r.name for r in load_routes(routes_json=None, routes_file=path, environ=ENV) or []] == [
        "a"
    ]
    with pytest.raises(RoutesError, match="not both"):
        load_routes(routes_json="[]", routes_file=path, environ=ENV)
    with pytest.raises(RoutesError, match="cannot read"):
        load_routes(routes_json=None, routes_file=tmp_path / "none.yaml", environ=ENV)
    assert load_routes(routes_json=None, routes_file=None, environ=ENV) is None


def test_without_routes_one_default_route_as_before() -> None:
    settings = Settings(
        send_api_url="http://remote.example/v1",
        send_api_token="tok",
        send_rate_per_second=30,
        _env_file=None,
    )
    [default] = settings.routes
    assert (default.name, default.url, default.token) == (
        "default",
        "http://remote.example/v1",
        "tok",
    )
    assert (default.rate_per_second, default.rate_unit) == (30, RateUnit.MESSAGES)
    # The settings of a test changed by copy give the route of the copy.
    assert settings.model_copy(update={"send_rate_per_second": 5}).routes[0].rate_per_second == 5


def test_settings_refuse_a_bad_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKEN_A", raising=False)
    with pytest.raises(ValueError, match="send routes: route 'a': token_env"):
        Settings(send_routes=json.dumps([spec("a")]), _env_file=None)
