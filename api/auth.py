"""The API's side of authentication: the bearer dependency each operation declares with the
permission it needs, the 401/403/503 answers, the security schemes of the OpenAPI schema, and
the Swagger UI and ReDoc pages served from the service's own assets (no CDN)."""

from collections.abc import Awaitable, Callable
from functools import cache
from importlib.resources import files
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from api.schemas.common import ErrorBody
from core.auth import (
    ALL_PERMISSIONS,
    Forbidden,
    Permission,
    Principal,
    Unauthenticated,
    Verifier,
)
from core.oidc import resource_indicator
from core.settings import Settings

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="JWT",
    description="A JWT of the configured OIDC provider, or of `make token` in the embedded mode.",
)
OIDC_SCHEME = "oidc"
PERMISSION_KEY = "x-required-permission"
DOCS_ASSETS = "/docs/assets"
# Every 503 (a dependency unavailable) carries it: api.main.RETRY_AFTER_SECONDS.
RETRY_AFTER_HEADER = {
    "description": "Seconds to wait before trying again.",
    "schema": {"type": "integer"},
}
ANONYMOUS = Principal(subject="anonymous (authentication disabled)", permissions=ALL_PERMISSIONS)


@cache
def _caller(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """One dependency per permission, so that a route that both guards with it and takes the
    caller verifies the token once per request."""

    async def caller(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Principal:
        verifier: Verifier = request.app.state.verifier
        if verifier.disabled:
            return ANONYMOUS
        if credentials is None:
            raise Unauthenticated("an Authorization: Bearer token is required")
        principal = await verifier.verify(credentials.credentials)
        if permission not in principal.permissions:
            raise Forbidden(permission)
        return principal

    return caller


def requires(permission: Permission) -> Any:
    """The caller, or a 401 (no valid token) or 403 (no such permission)."""
    return Depends(_caller(permission))


def guarded(permission: Permission) -> dict[str, Any]:
    """Route decorator arguments: the operation needs `permission`, and its schema says so."""
    return {
        "dependencies": [requires(permission)],
        "openapi_extra": {PERMISSION_KEY: str(permission)},
    }


# For a parameter, when the route needs the caller (the actor of its events).
ClientsWriter = Annotated[Principal, requires(Permission.CLIENTS_WRITE)]
DispatchesWriter = Annotated[Principal, requires(Permission.DISPATCHES_WRITE)]
DispatchesController = Annotated[Principal, requires(Permission.DISPATCHES_CONTROL)]


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """The schema says, per operation, the permission it needs and how to authenticate."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = document.setdefault("components", {})
        schemes = components.setdefault("securitySchemes", {})
        error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        components.setdefault("schemas", {}).update(error_schema.pop("$defs", {}))
        components["schemas"]["ErrorBody"] = error_schema
        error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        if settings.auth_issuer:
            schemes[OIDC_SCHEME] = {
                "type": "openIdConnect",
                "openIdConnectUrl": settings.auth_issuer.rstrip("/")
                + "/.well-known/openid-configuration",
            }
        for path in document.get("paths", {}).values():
            for operation in path.values():
                permission = operation.get(PERMISSION_KEY)
                if permission is None:
                    continue
                operation["description"] = (
                    operation.get("description", "")
                    + f"\n\nRequires the permission `{permission}`."
                ).strip()
                security: list[dict[str, list[str]]] = [{"bearer": []}]
                if settings.auth_issuer:
                    security.append({OIDC_SCHEME: [str(permission)]})
                operation["security"] = security
                responses = operation.setdefault("responses", {})
                for code, description in (
                    ("401", "No valid bearer token (WWW-Authenticate says why)."),
                    ("403", f"The token lacks `{permission}`."),
                    ("422", "Invalid input, each problem naming its field."),
                    ("4XX", "Not found (404), or in conflict with the stored state (409)."),
                    ("503", "The database, Temporal or the identity provider is unavailable."),
                ):
                    responses[code] = {"description": description, "content": error_content}
                responses["503"]["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
        app.openapi_schema = document
        return document

    app.openapi = schema  # type: ignore[method-assign]


def install_docs(app: FastAPI, settings: Settings) -> None:
    """/docs (Swagger UI, with a bearer token, or the provider's authorization code flow with
    PKCE when one is configured) and /redoc, from assets the service serves itself."""
    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    oauth_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        init_oauth = None
        if settings.auth_issuer and settings.auth_client_id:
            # Auth0's `audience`, and RFC 8707's `resource` for the providers that take it.
            extra = {"audience": settings.auth_audience}
            resource = resource_indicator(settings)
            if resource:
                extra["resource"] = resource
            init_oauth = {
                "clientId": settings.auth_client_id,
                "usePkceWithAuthorizationCodeGrant": True,
                # AUTH_SCOPES, but for a refresh token: Swagger UI keeps none.
                "scopes": " ".join(
                    scope for scope in settings.auth_scopes.split() if scope != "offline_access"
                ),
                "additionalQueryStringParams": extra,
            }
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url=oauth_redirect,
            init_oauth=init_oauth,
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get(oauth_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
