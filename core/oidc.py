"""The admin page's side of an OIDC provider beyond checking tokens (core.auth): its client at
the provider's token endpoint (`TokenClient`: the code exchange and the refreshes, with the
client's own authentication), the `resource` it names (RFC 8707), and the key that seals the
admin page's sessions."""

import base64
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote_plus, urlsplit

import aiohttp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.auth import ProviderUnavailable, load_or_create_key, signing_key_file
from core.settings import Settings


def session_key(settings: Settings) -> bytes:
    """A Fernet key (urlsafe base64 of 32 bytes) for the admin page's sealed sessions, derived
    from AUTH_SESSION_KEY, else from the embedded signing key (made once if need be): every
    API process with the same settings opens the others' cookies."""
    if settings.auth_session_key is not None:
        secret = settings.auth_session_key.get_secret_value().encode()
    else:
        secret = load_or_create_key(signing_key_file(settings))
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"mailing-admin-session"
    ).derive(secret)
    return base64.urlsafe_b64encode(derived)


class GrantRefused(Exception):
    """The provider's token endpoint refused a grant: a code used twice, a refresh token
    revoked or expired, a client not authenticated (its `error` and description)."""


@dataclass(frozen=True)
class TokenSet:
    """What a token endpoint answered; `expires_in` in seconds when it said."""

    access_token: str
    refresh_token: str | None = None
    id_token: str | None = None
    expires_in: float | None = None


ClientAuth = Literal["none", "client_secret_basic", "client_secret_post"]


class TokenClient:
    """The admin page at the provider's token endpoint: the authorization code's exchange and
    the refreshes, authenticated as the settings say (a public client sends only its id)."""

    def __init__(self, settings: Settings) -> None:
        self.client_id = settings.auth_client_id or ""
        secret = settings.auth_client_secret
        self.secret = secret.get_secret_value() if secret is not None else None
        self.method: ClientAuth = (
            "none"
            if self.secret is None
            else settings.auth_token_endpoint_auth or "client_secret_basic"
        )
        self.resource = resource_indicator(settings)

    async def exchange(self, url: str, *, code: str, redirect_uri: str, verifier: str) -> TokenSet:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        return await self._grant(url, form)

    async def refresh(self, url: str, *, refresh_token: str) -> TokenSet:
        return await self._grant(
            url, {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )

    async def _grant(self, url: str, form: dict[str, str]) -> TokenSet:
        headers = {"Accept": "application/json"}
        if self.resource:
            form["resource"] = self.resource
        if self.method == "client_secret_basic":
            # RFC 6749 2.3.1: each part form-urlencoded before the Basic encoding.
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self.secret or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self.client_id
            if self.method == "client_secret_post":
                form["client_secret"] = self.secret or ""
        timeout = aiohttp.ClientTimeout(total=TOKEN_TIMEOUT_SECONDS)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.post(url, data=form, headers=headers) as response,
            ):
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise ProviderUnavailable(
                f"the identity provider's token endpoint did not answer: {type(error).__name__}"
            ) from None
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"the identity provider's token endpoint answered {status}")
        if status != 200:
            reason = str(body.get("error", status))
            description = body.get("error_description")
            raise GrantRefused(f"{reason}: {description}" if description else reason)
        access = body.get("access_token")
        if not isinstance(access, str):
            raise GrantRefused("the identity provider gave no access token")
        expires_in = body.get("expires_in")
        return TokenSet(
            access_token=access,
            refresh_token=_text(body.get("refresh_token")),
            id_token=_text(body.get("id_token")),
            expires_in=float(expires_in) if isinstance(expires_in, int | float) else None,
        )


TOKEN_TIMEOUT_SECONDS = 10


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def resource_indicator(settings: Settings) -> str | None:
    """The `resource` (RFC 8707) the admin page's sign-in names: the audience, when it is an
    absolute URI (a compliant provider refuses anything else) and AUTH_RESOURCE_INDICATOR."""
    audience = settings.auth_audience
    if not settings.auth_resource_indicator or not urlsplit(audience).scheme:
        return None
    return audience
