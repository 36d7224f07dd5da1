"""The tokens kept after their check: never past their expiry or the time kept, bounded."""

from core.auth import Principal, Verified, VerifiedTokens

GATEWAY = Principal(subject="gateway", permissions=frozenset({"receipts:write"}))


def test_a_token_is_kept_until_its_expiry_or_the_time_kept() -> None:
    kept = VerifiedTokens(seconds=60, size=10)
    kept.keep("short", Verified(GATEWAY, until=1_030.0), now=1_000.0)
    kept.keep("long", Verified(GATEWAY, until=99_999.0), now=1_000.0)
    assert kept.get("short", 1_029.9) == GATEWAY
    assert kept.get("short", 1_030.0) is None  # its own expiry (with the leeway) is first
    assert kept.get("long", 1_059.9) == GATEWAY
    assert kept.get("long", 1_060.0) is None  # checked again after the time kept
    assert kept.get("never-kept", 1_000.0) is None


def test_the_oldest_goes_when_full() -> None:
    kept = VerifiedTokens(seconds=60, size=2)
    for token in ("a", "b", "c"):
        kept.keep(token, Verified(GATEWAY, until=2_000.0), now=1_000.0)
    assert [kept.get(token, 1_001.0) for token in ("a", "b", "c")] == [None, GATEWAY, GATEWAY]
