"""Who may call the API: bearer JWTs verified with python-jose, and the permissions they carry.

Two modes, chosen by the settings:
- an OIDC provider (Auth0, Keycloak, Entra ID, Okta: AUTH_ISSUER, AUTH_AUDIENCE): RS256/ES256
  tokens checked against the provider's keys, found from its discovery document and cached
  (refreshed at most once per AUTH_JWKS_REFRESH_SECONDS when a token names an unknown key id);
  the permissions are read where AUTH_PERMISSIONS_CLAIM says, through AUTH_ROLE_PERMISSIONS;
- embedded (no provider): the service signs its own RS256 tokens with a key it creates once
  under DATA_DIR (or AUTH_SIGNING_KEY_FILE); `make token` prints one.

The algorithms accepted come from the settings, never from the token: `alg: none` and an HS256
token "signed" with a public key are refused before any key is used.

The admin page's client at the provider's token endpoint, and the key that seals its sessions,
are in core.oidc.
"""

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt
from jose.exceptions import ExpiredSignatureError, JOSEError, JWTClaimsError, JWTError

from core.settings import Settings

EMBEDDED_ISSUER = "mailing-embedded"
EMBEDDED_ALGORITHM = "RS256"
EMBEDDED_KEY_ID = "embedded-1"
# Clock skew tolerated on exp, nbf and iat.
LEEWAY_SECONDS = 30
DISCOVERY_TIMEOUT_SECONDS = 5
# A token that passed its check is not checked again for this long (nor past its expiry),
# and this many are kept.
VERIFIED_SECONDS = 60.0
VERIFIED_SIZE = 1024


class Permission(StrEnum):
    CLIENTS_READ = "clients:read"
    CLIENTS_WRITE = "clients:write"
    # Only puts a number on the stop list: for the provider's STOP callback or an
    # unsubscribe page, which need no other power over clients.
    CLIENTS_OPT_OUT = "clients:opt-out"
    DISPATCHES_READ = "dispatches:read"  # dispatches, their messages and events, statistics
    DISPATCHES_WRITE = "dispatches:write"  # create, edit, delete
    DISPATCHES_CONTROL = "dispatches:control"  # pause, resume, cancel
    # Only posts delivery receipts: for a gateway's callback, which needs no other power.
    RECEIPTS_WRITE = "receipts:write"


ALL_PERMISSIONS = frozenset(Permission)


@dataclass(frozen=True)
class Principal:
    """The caller a valid token names."""

    subject: str
    permissions: frozenset[str]


class Unauthenticated(Exception):
    """No valid token: 401 with the reason (never the token itself)."""


class TokenExpired(Unauthenticated):
    """A token past its expiry (and the leeway): the admin page renews its session then."""


class Forbidden(Exception):
    """A valid token without the permission the operation needs: 403 naming it."""

    def __init__(self, permission: Permission) -> None:
        super().__init__(f"this token lacks the permission {permission}")
        self.permission = permission


class ProviderUnavailable(Exception):
    """The identity provider's keys cannot be fetched: 503, and no token is taken on trust."""


def _names(value: Any) -> set[str]:
    """A claim's names: a list of strings, or one space-separated string."""
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list):
        return {item for item in value if isinstance(item, str)}
    return set()


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`resource_access.mailing.roles`); a key that holds dots
    itself (Auth0's namespaced `https://mailing.example/roles`) is taken whole first."""
    if path in claims:
        return claims[path]
    for at in (i for i, char in enumerate(path) if char == "."):
        inner = claims.get(path[:at])
        if isinstance(inner, Mapping):
            found = _claim(inner, path[at + 1 :])
            if found is not None:
                return found
    return None


def default_names(claims: Mapping[str, Any]) -> set[str]:
    """Auth0's `permissions` list; else the space-separated `scope` (RFC 9068, Keycloak) with
    `scp`, a string (Entra ID) or a list (Okta)."""
    listed = claims.get("permissions")
    if isinstance(listed, list):
        return _names(listed)
    return _names(claims.get("scope")) | _names(claims.get("scp"))


@dataclass(frozen=True)
class ClaimRules:
    """Where a provider's tokens carry their permissions, and what its role names grant.

    `paths` empty: `default_names`. A name that is itself a permission counts as it; a name
    in `roles` grants its permissions; any other name grants nothing."""

    paths: tuple[str, ...] = ()
    roles: Mapping[str, frozenset[str]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "ClaimRules":
        """The rules of AUTH_PERMISSIONS_CLAIM and AUTH_ROLE_PERMISSIONS; an unknown permission
        in the mapping stops the service at start."""
        paths = tuple(path.strip() for path in (settings.auth_permissions_claim or "").split(","))
        roles: dict[str, frozenset[str]] = {}
        for role, granted in settings.auth_role_permissions.items():
            unknown = sorted(set(granted) - ALL_PERMISSIONS)
            if unknown:
                raise ValueError(
                    f"AUTH_ROLE_PERMISSIONS maps {role!r} to unknown permissions "
                    f"{', '.join(unknown)} (known: {', '.join(sorted(ALL_PERMISSIONS))})"
                )
            roles[role] = frozenset(granted)
        return cls(paths=tuple(path for path in paths if path), roles=roles)

    def names(self, claims: Mapping[str, Any]) -> set[str]:
        if not self.paths:
            return default_names(claims)
        return set().union(*(_names(_claim(claims, path)) for path in self.paths))

    def permissions(self, claims: Mapping[str, Any]) -> frozenset[str]:
        roles = self.roles or {}
        granted: set[str] = set()
        for name in self.names(claims):
            if name in ALL_PERMISSIONS:
                granted.add(name)
            granted |= roles.get(name, frozenset())
        return frozenset(granted)


DEFAULT_RULES = ClaimRules()


def permissions_of(claims: Mapping[str, Any], rules: ClaimRules = DEFAULT_RULES) -> frozenset[str]:
    """The permissions a token's claims give, by `rules` (the defaults: Auth0's
    `permissions`, else `scope` and `scp`)."""
    return rules.permissions(claims)


def _decode(token: str, key: Any, *, algorithms: list[str], issuer: str, audience: str) -> Any:
    try:
        return jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=audience,
            issuer=issuer,
            options={
                "leeway": LEEWAY_SECONDS,
                "require_exp": True,
                "require_sub": True,
                # jose skips the audience and issuer checks of a token that has none.
                "require_aud": True,
                "require_iss": True,
            },
        )
    except ExpiredSignatureError:
        raise TokenExpired("the token has expired") from None
    except JWTClaimsError as error:
        raise Unauthenticated(f"the token's claims are not accepted: {error}") from None
    except JWTError as error:
        raise Unauthenticated(f"the token is not valid: {error}") from None
    except (JOSEError, ValueError, TypeError, KeyError):
        # A key that does not fit the token (jose builds it unguarded): a forgery, not a 500.
        raise Unauthenticated("the token is not valid: its key does not fit it") from None


def _header(token: str, algorithms: list[str]) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except JWTError:
        raise Unauthenticated("the bearer value is not a JWT") from None
    algorithm = header.get("alg")
    if algorithm not in algorithms:
        raise Unauthenticated(
            f"tokens signed with {algorithm!a} are not accepted (only {', '.join(algorithms)})"
        )
    return dict(header)


# The key type each accepted algorithm needs: an EC key named for an RS256 token is a forgery.
KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}


def _principal(claims: dict[str, Any], rules: ClaimRules) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("the token names no subject")
    return Principal(subject=subject, permissions=rules.permissions(claims))


@dataclass(frozen=True, slots=True)
class Verified:
    """A token's principal and the time (epoch seconds) until which its check holds."""

    principal: Principal
    until: float


def _verified(claims: dict[str, Any], rules: ClaimRules = DEFAULT_RULES) -> Verified:
    return Verified(_principal(claims, rules), float(claims["exp"]) + LEEWAY_SECONDS)


class VerifiedTokens:
    """Tokens that passed their check, kept for a short while: a gateway posting receipts one
    at a time sends one token thousands of times a second, and an RS256 check costs more than
    the receipt. A token is kept at most `seconds` and never past its own expiry (with the
    leeway the check allows); only successes are kept, so a bad token is checked every time."""

    def __init__(self, *, seconds: float = VERIFIED_SECONDS, size: int = VERIFIED_SIZE) -> None:
        self.seconds = seconds
        self.size = size
        self._kept: dict[str, Verified] = {}

    def get(self, token: str, now: float) -> Principal | None:
        kept = self._kept.get(token)
        if kept is None:
            return None
        if now >= kept.until:
            del self._kept[token]
            return None
        return kept.principal

    def keep(self, token: str, verified: Verified, now: float) -> None:
        if len(self._kept) >= self.size:
            self._kept.pop(next(iter(self._kept)))  # the oldest kept
        self._kept[token] = Verified(verified.principal, min(verified.until, now + self.seconds))


class EmbeddedTokens:
    """Tokens the service signs itself, with one RSA key kept in a file."""

    def __init__(self, key_file: Path, audience: str) -> None:
        self.private_pem = load_or_create_key(key_file)
        private = serialization.load_pem_private_key(self.private_pem, password=None)
        assert isinstance(private, rsa.RSAPrivateKey)
        self.public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.audience = audience

    def mint(
        self,
        *,
        subject: str,
        permissions: frozenset[str] = ALL_PERMISSIONS,
        lifetime: timedelta = timedelta(hours=12),
        now: datetime | None = None,
    ) -> str:
        issued = now or datetime.now(UTC)
        claims = {
            "iss": EMBEDDED_ISSUER,
            "aud": self.audience,
            "sub": subject,
            "iat": int(issued.timestamp()),
            "nbf": int(issued.timestamp()),
            "exp": int((issued + lifetime).timestamp()),
            "jti": uuid.uuid4().hex,
            "permissions": sorted(permissions),
        }
        return str(
            jwt.encode(
                claims,
                self.private_pem.decode(),
                algorithm=EMBEDDED_ALGORITHM,
                headers={"kid": EMBEDDED_KEY_ID},
            )
        )

    async def verify(self, token: str) -> Verified:
        header = _header(token, [EMBEDDED_ALGORITHM])
        if header.get("kid") != EMBEDDED_KEY_ID:
            raise Unauthenticated("the token's key id is unknown")
        claims = _decode(
            token,
            self.public_pem.decode(),
            algorithms=[EMBEDDED_ALGORITHM],
            issuer=EMBEDDED_ISSUER,
            audience=self.audience,
        )
        return _verified(claims)


def load_or_create_key(path: Path) -> bytes:
    """The PEM of the RSA signing key at `path`, created (mode 0600) the first time; two
    processes starting together end up with the same key."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    temporary = Path(name)
    with os.fdopen(descriptor, "wb") as out:  # mkstemp: mode 0600
        out.write(pem)
    try:
        os.link(temporary, path)  # fails if another process was first: its key wins
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return path.read_bytes()


class OidcTokens:
    """Tokens of an OIDC provider, checked against its JWKS."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: list[str],
        refresh_seconds: float,
        rules: ClaimRules = DEFAULT_RULES,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self.refresh_seconds = refresh_seconds
        self.rules = rules
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self.discovery: dict[str, Any] | None = None

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    async def verify(self, token: str) -> Verified:
        header = _header(token, self.algorithms)
        key_id = header.get("kid")
        if not isinstance(key_id, str):
            raise Unauthenticated("the token names no key id")
        key = await self._key(key_id)
        algorithm = header["alg"]
        if key.get("kty") != KEY_TYPES.get(algorithm) or key.get("alg", algorithm) != algorithm:
            raise Unauthenticated(f"the token's key does not sign {algorithm}")
        claims = _decode(
            token, key, algorithms=self.algorithms, issuer=self.issuer, audience=self.audience
        )
        return _verified(claims, self.rules)

    async def _key(self, key_id: str) -> dict[str, Any]:
        key = self._keys.get(key_id)
        if key is not None:
            return key  # cached: no lock, no wait behind a fetch
        async with self._lock:
            if key_id not in self._keys and self._may_fetch():
                await self._fetch()
        if self._fetched_at is None:
            raise ProviderUnavailable("the identity provider's keys could not be fetched yet")
        key = self._keys.get(key_id)
        if key is None:
            raise Unauthenticated("the token's key id is unknown to the provider")
        return key

    async def discovered(self) -> dict[str, Any]:
        """The provider's discovery document, fetched with its keys (the admin page's
        sign-in reads its endpoints)."""
        if self.discovery is None:
            async with self._lock:
                if self.discovery is None and self._may_fetch():
                    await self._fetch()
        if self.discovery is None:
            raise ProviderUnavailable("the identity provider could not be reached yet")
        return self.discovery

    def _may_fetch(self) -> bool:
        """At most one attempt per refresh interval, failed ones included: neither unknown key
        ids nor a provider that is down make every request wait for a fetch."""
        return (
            self._attempted_at is None
            or time.monotonic() - self._attempted_at >= self.refresh_seconds
        )

    async def _fetch(self) -> None:
        self._attempted_at = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=DISCOVERY_TIMEOUT_SECONDS)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                async with http.get(self.discovery_url) as response:
                    response.raise_for_status()
                    discovery = await response.json(content_type=None)
                async with http.get(discovery["jwks_uri"]) as response:
                    response.raise_for_status()
                    jwks = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError, TypeError) as error:
            raise ProviderUnavailable(
                f"the identity provider's keys could not be fetched: {type(error).__name__}"
            ) from None
        keys = jwks.get("keys") if isinstance(jwks, dict) else None
        if not isinstance(keys, list):
            raise ProviderUnavailable("the identity provider's JWKS holds no key list")
        self.discovery = discovery
        self._keys = {
            str(key["kid"]): key for key in keys if isinstance(key, dict) and "kid" in key
        }
        self._fetched_at = time.monotonic()


class Verifier:
    """The token check the API uses, as the settings choose."""

    def __init__(self, settings: Settings) -> None:
        self.disabled = settings.auth_disabled
        self.oidc: OidcTokens | None = None
        self.embedded: EmbeddedTokens | None = None
        if settings.auth_issuer:
            self.oidc = OidcTokens(
                issuer=settings.auth_issuer,
                audience=settings.auth_audience,
                algorithms=list(settings.auth_algorithms),
                refresh_seconds=settings.auth_jwks_refresh_seconds,
                rules=ClaimRules.from_settings(settings),
            )
        elif not settings.auth_disabled:
            self.embedded = EmbeddedTokens(signing_key_file(settings), settings.auth_audience)
        self.verified = VerifiedTokens()

    async def verify(self, token: str) -> Principal:
        now = time.time()
        principal = self.verified.get(token, now)
        if principal is not None:
            return principal
        tokens = self.oidc or self.embedded
        assert tokens is not None
        verified = await tokens.verify(token)
        self.verified.keep(token, verified, now)
        return verified.principal


def signing_key_file(settings: Settings) -> Path:
    return settings.auth_signing_key_file or settings.data_dir / "auth" / "signing-key.pem"


def embedded_tokens(settings: Settings) -> EmbeddedTokens:
    return EmbeddedTokens(signing_key_file(settings), settings.auth_audience)
